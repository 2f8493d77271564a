-- Reads under RLS, continued. Every policy computes its set once per statement and reaches rows through an index;
-- what a small read still pays is fixed per statement: planning the policy's helpers and its user id. Three parts
-- of it go here (`attendance-kit bench rls` measures them; the meaning of every policy and helper is unchanged,
-- which `attendance-kit verify` checks).
--
-- 1. The helpers become plpgsql with the same bodies. Before PostgreSQL 18 an SQL-language function parses and
--    plans its body again in every statement that calls it; plpgsql keeps the plans for the session. On
--    PostgreSQL 15 this migration took a student's channel list from 2.5× the hand-filtered read to 1.2×.
-- 2. auth.uid() is an SQL function, which the planner inlines: each statement whose policy says
--    (select auth.uid()) parses and plans its body again, ~0.02 ms of a student's 0.15 ms read of their own
--    attendance. private.current_user_id() returns the same value and is called rather than inlined; policies
--    wrap it in (select ...) just as Supabase's guide wraps auth.uid(), so it is evaluated once per statement.
-- 3. The channel policy's helper called two helpers, each nested security-definer call adding its own cost, so
--    private.visible_session_ids() now runs the two lookups itself (those of taught_session_ids and
--    attended_session_ids). `union all`: a session in both sets may appear twice in the array, which `= any`
--    does not mind.

create function private.current_user_id() returns uuid
language plpgsql stable set search_path = ''
as $$
begin
    return auth.uid();
end;
$$;

create or replace function private.taught_course_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query select c.id from public.courses c where c.teacher_id = (select auth.uid());
end;
$$;

create or replace function private.taught_session_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select ls.id
    from public.live_sessions ls
    join public.courses c on c.id = ls.course_id
    where c.teacher_id = (select auth.uid());
end;
$$;

create or replace function private.taught_group_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select distinct g.group_id
    from public.live_sessions ls
    join public.courses c on c.id = ls.course_id
    cross join lateral unnest(ls.group_ids) as g (group_id)
    where c.teacher_id = (select auth.uid());
end;
$$;

create or replace function private.own_group_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query select sp.group_id from public.student_profiles sp where sp.id = (select auth.uid());
end;
$$;

create or replace function private.attended_session_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select sg.session_id
    from private.session_groups sg
    join public.student_profiles sp on sp.group_id = sg.group_id
    where sp.id = (select auth.uid());
end;
$$;

create or replace function private.attended_course_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select distinct ls.course_id
    from public.live_sessions ls
    where ls.id in (select private.attended_session_ids());
end;
$$;

create or replace function private.live_attended_session_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select ls.id
    from public.live_sessions ls
    where ls.status = 'live' and ls.group_ids && array(select private.own_group_ids());
end;
$$;

create or replace function private.taught_attendance_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select ar.id from public.attendance_records ar
    where ar.session_id = any (array(select private.taught_session_ids()));
end;
$$;

-- The union of taught_session_ids() and attended_session_ids() (tests/test_plans.py holds them equal).
create or replace function private.visible_session_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select ls.id
    from public.live_sessions ls
    join public.courses c on c.id = ls.course_id
    where c.teacher_id = (select auth.uid())
    union all
    select sg.session_id
    from private.session_groups sg
    join public.student_profiles sp on sp.group_id = sg.group_id
    where sp.id = (select auth.uid());
end;
$$;

create or replace function private.teaches_invited_student(session_id uuid, student_id uuid) returns boolean
language plpgsql stable security definer set search_path = ''
as $$
begin
    return exists (
        select 1
        from public.live_sessions ls
        join public.courses c on c.id = ls.course_id
        join public.student_profiles sp on sp.group_id = any (ls.group_ids)
        where ls.id = teaches_invited_student.session_id
          and sp.id = teaches_invited_student.student_id
          and c.teacher_id = (select auth.uid())
    );
end;
$$;

revoke all on function private.current_user_id() from public, anon;
grant execute on function private.current_user_id() to authenticated;

-- plpgsql resolves table and column names at a function's first call, not when it is created: call each helper
-- once (with no user, so each returns nothing) so that a wrong name fails this migration, not a later read.
do $$
begin
    perform private.current_user_id();
    perform count(*) from private.taught_course_ids();
    perform count(*) from private.taught_session_ids();
    perform count(*) from private.taught_group_ids();
    perform count(*) from private.own_group_ids();
    perform count(*) from private.attended_session_ids();
    perform count(*) from private.attended_course_ids();
    perform count(*) from private.live_attended_session_ids();
    perform count(*) from private.taught_attendance_ids();
    perform count(*) from private.visible_session_ids();
    perform private.teaches_invited_student(null, null);
end
$$;

alter policy "Users read their own profile and their students' profiles" on public.profiles
using (
    id = (select private.current_user_id())
    or id = any (array (
        select sp.id from public.student_profiles sp
        where sp.group_id = any (array (select private.taught_group_ids()))
    ))
);

alter policy "Users update their own profile" on public.profiles
using (id = (select private.current_user_id()))
with check (id = (select private.current_user_id()));

alter policy "Teachers and their students read the course" on public.courses
using (
    teacher_id = (select private.current_user_id())
    or id = any (array (select private.attended_course_ids()))
);

alter policy "Students read themselves, teachers their students" on public.student_profiles
using (
    id = (select private.current_user_id())
    or group_id = any (array (select private.taught_group_ids()))
);

alter policy "Teachers read their sessions' attendance, students their own" on public.attendance_records
using (
    session_id = any (array (select private.taught_session_ids()))
    or student_id = (select private.current_user_id())
);

alter policy "Students check themselves in while the session is live" on public.attendance_records
with check (
    student_id = (select private.current_user_id())
    and status
    and session_id = any (array (select private.live_attended_session_ids()))
);

alter policy "Teachers can manage session status" on public.session_status_changes
with check (
    session_id = any (array (select private.taught_session_ids()))
    and changed_by = (select private.current_user_id())
);
