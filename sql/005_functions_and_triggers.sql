-- Step 3 of the seed: the analytics trigger, plus the two audit triggers the seed's tables imply but never wrote.
-- All three functions are SECURITY DEFINER with an empty search_path and schema-qualified names: they write
-- tables the acting user may not write (RLS would deny a teacher's check-in otherwise), and nobody can steer
-- them through search_path. They are trigger functions only: the API roles cannot execute them.

-- Analytics: one snapshot per session a statement touched, not one per row. Statement-level triggers see the
-- changed rows in transition tables (which PostgreSQL allows for one event per trigger, hence three triggers).
-- A snapshot recounts the session from attendance_records; sessions deleted meanwhile get none.
create or replace function public.update_session_analytics()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    touched uuid[] := '{}';
begin
    if tg_op in ('INSERT', 'UPDATE') then
        touched := touched || array(select distinct session_id from new_rows);
    end if;
    if tg_op in ('UPDATE', 'DELETE') then
        touched := touched || array(select distinct session_id from old_rows);
    end if;

    insert into public.session_analytics (
        session_id,
        total_students,
        present_count,
        connection_count,
        status_distribution
    )
    select
        ls.id,
        count(ar.student_id),
        count(ar.student_id) filter (where ar.status),
        -- Every channel of the session counts; a session without channels has 0 connections.
        coalesce((select sum(wc.active_connections) from public.websocket_channels wc
                  where wc.session_id = ls.id), 0),
        jsonb_build_object(
            'present', count(ar.student_id) filter (where ar.status),
            'absent', count(ar.student_id) filter (where not ar.status)
        )
    from public.live_sessions ls
    left join public.attendance_records ar on ar.session_id = ls.id
    where ls.id = any (touched)
    group by ls.id;

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

-- Attendance audit: every change of attendance_records.status, by whom (auth.uid(); NULL for service_role
-- and maintenance) and why: the transaction's `attendance_kit.change_reason` setting, e.g.
--     select set_config('attendance_kit.change_reason', 'arrived late: bus strike', true);
create or replace function public.record_attendance_status_change()
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
create or replace function public.record_session_status_change()
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
