-- Base schema: the tables the seed's extension builds on but never defines, with least-privilege RLS.
-- Column names follow the seed's SQL: live_sessions.course_id / group_ids / status, courses.teacher_id,
-- student_profiles.group_id (its id is the student's user id), attendance_records.session_id / student_id
-- / status (boolean: present or not).

create table public.profiles (
    id uuid primary key references auth.users (id) on delete cascade,
    full_name text not null,
    role text not null check (role in ('teacher', 'student')),
    created_at timestamptz not null default now()
);

create table public.courses (
    id uuid primary key default gen_random_uuid(),
    title text not null,
    teacher_id uuid not null references public.profiles (id),
    created_at timestamptz not null default now()
);
create index courses_teacher_id_idx on public.courses (teacher_id);

create table public.student_groups (
    id uuid primary key default gen_random_uuid(),
    name text not null unique,
    created_at timestamptz not null default now()
);

create table public.student_profiles (
    id uuid primary key references public.profiles (id) on delete cascade,
    group_id uuid not null references public.student_groups (id),
    student_number text not null unique
);
create index student_profiles_group_id_idx on public.student_profiles (group_id);

create table public.live_sessions (
    id uuid primary key default gen_random_uuid(),
    course_id uuid not null references public.courses (id),
    title text not null,
    -- The groups invited to the session; a GIN index serves the "my group is invited" test (&&).
    group_ids uuid[] not null default '{}',
    status text not null default 'scheduled' check (status in ('scheduled', 'live', 'ended', 'cancelled')),
    starts_at timestamptz not null,
    ends_at timestamptz,
    created_at timestamptz not null default now()
);
create index live_sessions_course_id_idx on public.live_sessions (course_id);
create index live_sessions_group_ids_idx on public.live_sessions using gin (group_ids);

create table public.attendance_records (
    id uuid primary key default gen_random_uuid(),
    session_id uuid not null references public.live_sessions (id) on delete cascade,
    student_id uuid not null references public.student_profiles (id) on delete cascade,
    status boolean not null default true,
    checked_in_at timestamptz not null default now(),
    -- One row per session and student; this index also serves lookups by session_id.
    unique (session_id, student_id)
);
create index attendance_records_student_id_idx on public.attendance_records (student_id);

-- Helpers for the policies. They run as their owner (security definer) so that a policy on one table
-- can consult another without recursing through that table's own policies; they live in schema
-- `private`, which Supabase's API does not expose, and each returns the set for the current user, which
-- a policy computes once per statement with `= any (array (select ...))`.
create schema if not exists private;
revoke all on schema private from public;
grant usage on schema private to authenticated;

create function private.taught_course_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select c.id from public.courses c where c.teacher_id = (select auth.uid())
$$;

create function private.taught_session_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select ls.id
    from public.live_sessions ls
    join public.courses c on c.id = ls.course_id
    where c.teacher_id = (select auth.uid())
$$;

create function private.taught_group_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select distinct g.group_id
    from public.live_sessions ls
    join public.courses c on c.id = ls.course_id
    cross join lateral unnest(ls.group_ids) as g (group_id)
    where c.teacher_id = (select auth.uid())
$$;

create function private.own_group_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select sp.group_id from public.student_profiles sp where sp.id = (select auth.uid())
$$;

create function private.attended_course_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select distinct ls.course_id
    from public.live_sessions ls
    where ls.group_ids && array(select private.own_group_ids())
$$;

create function private.live_attended_session_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select ls.id
    from public.live_sessions ls
    where ls.status = 'live' and ls.group_ids && array(select private.own_group_ids())
$$;

-- Whether the current user teaches `session_id` and `student_id` is in one of its invited groups: a teacher
-- records attendance only for those. It answers nothing about sessions the caller does not teach.
create function private.teaches_invited_student(session_id uuid, student_id uuid) returns boolean
language sql stable security definer set search_path = ''
as $$
    select exists (
        select 1
        from public.live_sessions ls
        join public.courses c on c.id = ls.course_id
        join public.student_profiles sp on sp.group_id = any (ls.group_ids)
        where ls.id = teaches_invited_student.session_id
          and sp.id = teaches_invited_student.student_id
          and c.teacher_id = (select auth.uid())
    )
$$;

revoke all on all functions in schema private from public, anon;
grant execute on all functions in schema private to authenticated;

-- Privileges: the API roles get exactly what the policies below can use. Supabase's default grants give
-- anon and authenticated everything on new tables; revoke that first so the grants below are the truth.
revoke all on public.profiles, public.courses, public.student_groups, public.student_profiles,
    public.live_sessions, public.attendance_records from anon, authenticated;
grant all on public.profiles, public.courses, public.student_groups, public.student_profiles,
    public.live_sessions, public.attendance_records to service_role;
grant select on public.profiles, public.courses, public.student_groups, public.student_profiles,
    public.live_sessions, public.attendance_records to authenticated;
-- Nobody changes their own role: only the name is updatable.
grant update (full_name) on public.profiles to authenticated;
-- A teacher changes a session's status, and corrects a record's status; nothing else.
grant update (status) on public.live_sessions to authenticated;
grant insert (session_id, student_id, status, checked_in_at) on public.attendance_records to authenticated;
grant update (status) on public.attendance_records to authenticated;

alter table public.profiles enable row level security;
alter table public.courses enable row level security;
alter table public.student_groups enable row level security;
alter table public.student_profiles enable row level security;
alter table public.live_sessions enable row level security;
alter table public.attendance_records enable row level security;

create policy "Users read their own profile and their students' profiles"
on public.profiles for select to authenticated
using (
    id = (select auth.uid())
    or id = any (array (
        select sp.id from public.student_profiles sp
        where sp.group_id = any (array (select private.taught_group_ids()))
    ))
);

create policy "Users update their own profile"
on public.profiles for update to authenticated
using (id = (select auth.uid()))
with check (id = (select auth.uid()));

create policy "Teachers and their students read the course"
on public.courses for select to authenticated
using (
    teacher_id = (select auth.uid())
    or id = any (array (select private.attended_course_ids()))
);

create policy "Members and teachers read a group"
on public.student_groups for select to authenticated
using (
    id = any (array (select private.own_group_ids()))
    or id = any (array (select private.taught_group_ids()))
);

create policy "Students read themselves, teachers their students"
on public.student_profiles for select to authenticated
using (
    id = (select auth.uid())
    or group_id = any (array (select private.taught_group_ids()))
);

create policy "Teachers and invited students read a session"
on public.live_sessions for select to authenticated
using (
    course_id = any (array (select private.taught_course_ids()))
    or group_ids && array (select private.own_group_ids())
);

create policy "Teachers change their sessions' status"
on public.live_sessions for update to authenticated
using (course_id = any (array (select private.taught_course_ids())))
with check (course_id = any (array (select private.taught_course_ids())));

create policy "Teachers read their sessions' attendance, students their own"
on public.attendance_records for select to authenticated
using (
    session_id = any (array (select private.taught_session_ids()))
    or student_id = (select auth.uid())
);

create policy "Teachers record attendance of invited students"
on public.attendance_records for insert to authenticated
with check (private.teaches_invited_student(session_id, student_id));

create policy "Students check themselves in while the session is live"
on public.attendance_records for insert to authenticated
with check (
    student_id = (select auth.uid())
    and status
    and session_id = any (array (select private.live_attended_session_ids()))
);

create policy "Teachers correct their sessions' attendance"
on public.attendance_records for update to authenticated
using (session_id = any (array (select private.taught_session_ids())))
with check (session_id = any (array (select private.taught_session_ids())));

-- The publication Supabase Realtime (and the kit's change feed) reads; the seed adds its tables to it.
do $$
begin
    if not exists (select 1 from pg_publication where pubname = 'live_attendance_pub') then
        create publication live_attendance_pub;
    end if;
end
$$;
