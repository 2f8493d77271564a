-- Analytics from running totals (issue 5). 005's trigger recounted each touched session from attendance_records:
-- a check-in cost grew with the session, and under READ COMMITTED two concurrent writers each missed the other's
-- uncommitted rows, so the newest snapshot could be wrong after both committed. Now each session's counts live in
-- a row of private.session_attendance_totals (not exposed by the API) and every statement applies its deltas to
-- it with `insert ... on conflict do update`: the row lock serialises the writers of one session until they
-- commit, and the update always starts from the latest committed counts, so no delta is lost and the cost of a
-- check-in does not depend on the session's size. The snapshot's time is taken while holding that lock and is
-- kept strictly increasing per session, so a later-committed snapshot always sorts after an earlier one.
-- The contract is the seed's: session_analytics is each session's time series, its newest row (by recorded_at,
-- then id) the current state; one snapshot per session a statement touched. 005's three triggers stay (they call
-- this function by name); a fourth resets the totals on TRUNCATE.
-- A statement locks its sessions' totals rows in session order, but a transaction of several statements (or an
-- INSERT ... ON CONFLICT DO UPDATE, which runs the insert and then the update trigger) locks them statement by
-- statement, until it commits: such writers touching several sessions may deadlock, and should retry (40P01).

-- No writes to attendance while the totals are counted and the function is replaced.
lock table public.attendance_records in share row exclusive mode;

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

-- The time of a session's next snapshot: now by the clock, and strictly after its previous one. Called with the
-- session's totals row locked, so it orders the series by commit whatever the clocks do. A later migration may
-- redefine it (e.g. to stamp imports with a given time); the strict order must stay.
create function private.snapshot_time(previous timestamp with time zone)
returns timestamp with time zone
language sql
volatile
set search_path = ''
as $$
    select greatest(clock_timestamp(), previous + interval '1 microsecond')
$$;

revoke all on function private.snapshot_time(timestamp with time zone)
    from public, anon, authenticated, service_role;

create or replace function public.update_session_analytics()
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

create trigger attendance_analytics_truncate_trigger
after truncate on public.attendance_records
for each statement
execute function public.update_session_analytics();

-- Trigger functions are not API endpoints (CREATE OR REPLACE keeps 005's privileges; said again here).
revoke all on function public.update_session_analytics() from public, anon, authenticated, service_role;

-- Totals for the data already there. A session whose newest snapshot disagrees with its rows (e.g. after
-- concurrent writes under 005's recount) gets a snapshot of the truth.
insert into private.session_attendance_totals (session_id, total_students, present_count, last_recorded_at)
select ls.id, coalesce(ar.total_students, 0), coalesce(ar.present_count, 0), coalesce(sa.newest, '-infinity')
from public.live_sessions ls
left join (
    select session_id, count(*) as total_students, count(*) filter (where status) as present_count
    from public.attendance_records group by session_id
) ar on ar.session_id = ls.id
left join (
    select session_id, max(recorded_at) as newest from public.session_analytics group by session_id
) sa on sa.session_id = ls.id
where ar.session_id is not null or sa.session_id is not null;

with stale as (
    select t.session_id
    from private.session_attendance_totals t
    left join lateral (
        select sa.total_students, sa.present_count from public.session_analytics sa
        where sa.session_id = t.session_id
        order by sa.recorded_at desc, sa.id desc
        limit 1
    ) newest on true
    where (newest.total_students, newest.present_count) is distinct from (t.total_students, t.present_count)
),
stamped as (
    update private.session_attendance_totals t
    set last_recorded_at = private.snapshot_time(t.last_recorded_at)
    from stale s
    where s.session_id = t.session_id
    returning t.session_id, t.total_students, t.present_count, t.last_recorded_at
)
insert into public.session_analytics (
    session_id, total_students, present_count, connection_count, status_distribution, recorded_at
)
select s.session_id, s.total_students, s.present_count,
       coalesce((select sum(wc.active_connections) from public.websocket_channels wc
                 where wc.session_id = s.session_id), 0),
       jsonb_build_object('present', s.present_count, 'absent', s.total_students - s.present_count),
       s.last_recorded_at
from stamped s;

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
grant usage on schema private to service_role;
grant execute on function private.prune_session_analytics(interval) to service_role;
