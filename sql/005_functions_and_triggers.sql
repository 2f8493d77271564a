-- Step 3 of the draft: the analytics trigger, plus the two audit triggers the draft's tables imply but never wrote.
-- The trigger functions are SECURITY DEFINER with an empty search_path and schema-qualified names: they write
-- tables the acting user may not write (RLS would deny a teacher's check-in otherwise), and nobody can steer them
-- through search_path. They are trigger functions only: the API roles cannot execute them.
--
-- Analytics keep the draft's contract: session_analytics is each session's time series, its newest row (by
-- recorded_at, then id) the session's current state. What changes is how a snapshot is computed:
-- - once per statement, not per row: statement-level triggers see the changed rows in transition tables (which
--   PostgreSQL allows for one event per trigger, hence one trigger per event), and write one snapshot per session
--   the statement touched (insert, update, delete, a move between sessions);
-- - from running totals, not a recount. Each session's counts live in a row of private.session_attendance_totals
--   and every statement applies its deltas to it with `insert ... on conflict do update`. The draft's recount cost
--   grew with the session (4,000 check-ins into a session of 1,000 took seconds), and under READ COMMITTED two
--   concurrent writers each missed the other's uncommitted rows, so the newest snapshot was wrong after both
--   committed. The totals row's lock serialises the writers of one session until they commit, and each update
--   starts from the latest committed counts: no delta is lost, and a check-in costs the same at any class size
--   (`attendance-kit bench triggers` measures it against the draft's trigger);
-- - a snapshot's time is taken while holding that lock and is strictly increasing per session, so a
--   later-committed snapshot always sorts after an earlier one;
-- - every channel of the session counts towards connection_count; a session without channels has 0.
-- A statement locks its sessions' totals rows in session order, but a transaction of several statements (or an
-- INSERT ... ON CONFLICT DO UPDATE, which runs the insert and then the update trigger) locks them statement by
-- statement, until it commits: such writers touching several sessions may deadlock, and should retry (40P01).

create table private.session_attendance_totals (
    session_id uuid primary key references public.live_sessions (id) on delete cascade,
    total_students int not null default 0,
    present_count int not null default 0,
    -- recorded_at of the session's newest snapshot: the next one is stamped strictly later.
    last_recorded_at timestamp with time zone not null default '-infinity'
);

-- Only the trigger (its owner) reads or writes it.
alter table private.session_attendance_totals enable row level security;
revoke all on private.session_attendance_totals from public, anon, authenticated, service_role;

-- The time of a session's next snapshot: the as-of time (sql/002: now, unless an import sets it), and strictly
-- after its previous one. Called with the session's totals row locked, so it orders the series by commit
-- whatever the clocks do.
create function private.snapshot_time(previous timestamp with time zone)
returns timestamp with time zone
language sql
volatile
set search_path = ''
as $$
    select greatest(private.as_of(clock_timestamp()), previous + interval '1 microsecond')
$$;

revoke all on function private.snapshot_time(timestamp with time zone)
    from public, anon, authenticated, service_role;

create function public.update_session_analytics()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    -- One entry per changed row set: session, change of total_students, change of present_count.
    delta_sessions uuid[] := '{}';
    delta_students bigint[] := '{}';
    delta_present bigint[] := '{}';
begin
    if tg_op = 'TRUNCATE' then
        -- Every session's attendance is gone: zero the totals, one snapshot per session that had any.
        with zeroed as (
            update private.session_attendance_totals t
            set total_students = 0,
                present_count = 0,
                last_recorded_at = private.snapshot_time(t.last_recorded_at)
            where t.total_students <> 0 or t.present_count <> 0
            returning t.session_id, t.last_recorded_at
        )
        insert into public.session_analytics (
            session_id, total_students, present_count, connection_count, status_distribution, recorded_at
        )
        select z.session_id, 0, 0,
               coalesce((select sum(wc.active_connections) from public.websocket_channels wc
                         where wc.session_id = z.session_id), 0),
               jsonb_build_object('present', 0, 'absent', 0),
               z.last_recorded_at
        from zeroed z;
        return null;
    end if;

    -- Transition tables exist only for their own event (PL/pgSQL plans each query on first use).
    if tg_op in ('INSERT', 'UPDATE') then
        select delta_sessions || array_agg(n.session_id),
               delta_students || array_agg(n.students),
               delta_present || array_agg(n.present)
        into delta_sessions, delta_students, delta_present
        from (select nr.session_id, count(*) as students, count(*) filter (where nr.status) as present
              from new_rows nr group by nr.session_id) n;
    end if;
    if tg_op in ('UPDATE', 'DELETE') then
        select delta_sessions || array_agg(o.session_id),
               delta_students || array_agg(-o.students),
               delta_present || array_agg(-o.present)
        into delta_sessions, delta_students, delta_present
        from (select orw.session_id, count(*) as students, count(*) filter (where orw.status) as present
              from old_rows orw group by orw.session_id) o;
    end if;

    with deltas as (
        select d.session_id, sum(d.students)::int as students, sum(d.present)::int as present
        from unnest(delta_sessions, delta_students, delta_present) as d (session_id, students, present)
        where d.session_id is not null
        group by d.session_id
    ),
    applied as (
        -- Sessions deleted meanwhile (e.g. the cascade of a session's delete) get neither totals nor a snapshot.
        -- Rows are locked in session order, so two statements touching the same sessions cannot deadlock here.
        insert into private.session_attendance_totals as t (
            session_id, total_students, present_count, last_recorded_at
        )
        select d.session_id, d.students, d.present, private.snapshot_time('-infinity')
        from deltas d
        where exists (select 1 from public.live_sessions ls where ls.id = d.session_id)
        order by d.session_id
        on conflict (session_id) do update
        set total_students = t.total_students + excluded.total_students,
            present_count = t.present_count + excluded.present_count,
            -- Taken once the row is locked: after the previous writer committed, and never equal to its time.
            last_recorded_at = private.snapshot_time(t.last_recorded_at)
        returning t.session_id, t.total_students, t.present_count, t.last_recorded_at
    )
    insert into public.session_analytics (
        session_id, total_students, present_count, connection_count, status_distribution, recorded_at
    )
    select
        a.session_id,
        a.total_students,
        a.present_count,
        -- Every channel of the session counts; a session without channels has 0 connections.
        coalesce((select sum(wc.active_connections) from public.websocket_channels wc
                  where wc.session_id = a.session_id), 0),
        jsonb_build_object('present', a.present_count, 'absent', a.total_students - a.present_count),
        a.last_recorded_at
    from applied a;

    return null;
end;
$$;

create trigger attendance_analytics_trigger
after insert on public.attendance_records
referencing new table as new_rows
for each statement
execute function public.update_session_analytics();

create trigger attendance_analytics_update_trigger
after update on public.attendance_records
referencing old table as old_rows new table as new_rows
for each statement
execute function public.update_session_analytics();

create trigger attendance_analytics_delete_trigger
after delete on public.attendance_records
referencing old table as old_rows
for each statement
execute function public.update_session_analytics();

create trigger attendance_analytics_truncate_trigger
after truncate on public.attendance_records
for each statement
execute function public.update_session_analytics();

-- Totals for attendance recorded before this step (none on a fresh database). Counted after the triggers exist:
-- CREATE TRIGGER holds a lock that keeps writers of attendance_records out until this file's transaction ends
-- (the kit's runner, the Supabase CLI and `psql -1` run a file in one), so no check-in falls between the two.
insert into private.session_attendance_totals (session_id, total_students, present_count)
select session_id, count(*), count(*) filter (where status) from public.attendance_records group by session_id
on conflict (session_id) do nothing;

-- Attendance audit: every change of attendance_records.status, by whom (auth.uid(); NULL for service_role
-- and maintenance) and why: the transaction's `attendance_kit.change_reason` setting, e.g.
--     select set_config('attendance_kit.change_reason', 'arrived late: bus strike', true);
create function public.record_attendance_status_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    insert into public.attendance_status_changes (attendance_id, old_status, new_status, change_reason, changed_by)
    values (
        new.id,
        old.status,
        new.status,
        nullif(current_setting('attendance_kit.change_reason', true), ''),
        (select auth.uid())
    );
    return null;
end;
$$;

create trigger attendance_status_audit_trigger
after update of status on public.attendance_records
for each row
when (old.status is distinct from new.status)
execute function public.record_attendance_status_change();

-- Session audit: every change of live_sessions.status, with the same `attendance_kit.change_reason` setting,
-- so the history in session_status_changes cannot be skipped.
create function public.record_session_status_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    insert into public.session_status_changes (session_id, old_status, new_status, change_reason, changed_by)
    values (
        new.id,
        old.status,
        new.status,
        nullif(current_setting('attendance_kit.change_reason', true), ''),
        (select auth.uid())
    );
    return null;
end;
$$;

create trigger session_status_audit_trigger
after update of status on public.live_sessions
for each row
when (old.status is distinct from new.status)
execute function public.record_session_status_change();

-- Trigger functions are not API endpoints: no role but their owner may call them (Supabase grants EXECUTE on
-- new functions in public to anon and authenticated by default). Triggers fire regardless.
revoke all on function public.update_session_analytics(), public.record_attendance_status_change(),
    public.record_session_status_change() from public, anon, authenticated, service_role;

-- Retention: session_analytics grows by a row per statement. This deletes the snapshots older than `keep`,
-- except each session's newest, which is its current state; it returns how many it deleted. It runs with the
-- caller's rights and only the owner and service_role may call it (e.g. from pg_cron, daily):
--     select private.prune_session_analytics(interval '30 days');
create function private.prune_session_analytics(keep interval)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
    pruned bigint;
begin
    if keep is null or keep < interval '0' then
        raise exception 'prune_session_analytics: keep must be an interval >= 0, not %', keep;
    end if;
    delete from public.session_analytics sa
    where sa.recorded_at < now() - keep
      and exists (
          select 1 from public.session_analytics newer
          where newer.session_id = sa.session_id
            and (newer.recorded_at, newer.id) > (sa.recorded_at, sa.id)
      );
    get diagnostics pruned = row_count;
    return pruned;
end;
$$;

revoke all on function private.prune_session_analytics(interval) from public, anon, authenticated;
grant execute on function private.prune_session_analytics(interval) to service_role;
