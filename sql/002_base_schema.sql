-- Base schema: the tables the draft's extension builds on but never defines, with least-privilege RLS.
-- Column names follow the draft's SQL: live_sessions.course_id / group_ids / status, courses.teacher_id,
-- student_profiles.group_id (its id is the student's user id), attendance_records.session_id / student_id
-- / status (boolean: present or not).

-- Schema `private` holds what the API must not reach: the policies' helpers and the kit's bookkeeping. Supabase's
-- API exposes `public` only.
create schema if not exists private;
revoke all on schema private from public;
grant usage on schema private to authenticated, service_role;

-- When a change happened, for imports and demo data. Every time the schema records by itself (a check-in, a
-- channel's creation and activity, an audit entry, an analytics snapshot) comes from `private.as_of()`: the
-- transaction's `attendance_kit.as_of` setting when a server-side writer sets it, e.g.
--     select set_config('attendance_kit.as_of', '2026-01-19 09:03:12+00', true);
-- and the current time otherwise. Supabase's API gives clients no way to set it (a direct SQL connection can
-- set request.jwt.claims as well, so it can already act as anyone).
create function private.as_of(fallback timestamp with time zone default now())
returns timestamp with time zone
language sql
stable
set search_path = ''
as $$
    select coalesce(nullif(current_setting('attendance_kit.as_of', true), '')::timestamp with time zone, fallback)
$$;

revoke all on function private.as_of(timestamp with time zone) from public, anon;
-- Column defaults run as the inserting role.
grant execute on function private.as_of(timestamp with time zone) to authenticated, service_role;

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
    -- Set by the database (API clients cannot insert it): a student cannot back-date their own check-in.
    checked_in_at timestamptz not null default private.as_of(),
    -- One row per session and student; this index also serves lookups by session_id.
    unique (session_id, student_id)
);
create index attendance_records_student_id_idx on public.attendance_records (student_id);

-- A student's sessions, as (group, session) pairs kept by a trigger on live_sessions: the policies find them with a
-- btree probe. Probing the GIN index on live_sessions.group_ids (`group_ids && my groups`) cost a fixed ~0.15 ms
-- per statement, which dominated small reads such as a student's channel list.
create table private.session_groups (
    group_id uuid not null,
    session_id uuid not null references public.live_sessions (id) on delete cascade,
    primary key (group_id, session_id)
);
create index session_groups_session_id_idx on private.session_groups (session_id);
alter table private.session_groups enable row level security;
revoke all on private.session_groups from public, anon, authenticated, service_role;

create function private.sync_session_groups()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    delete from private.session_groups where session_id = new.id;
    insert into private.session_groups (group_id, session_id)
    select distinct g.group_id, new.id from unnest(new.group_ids) g (group_id);
    return null;
end;
$$;

revoke all on function private.sync_session_groups() from public, anon, authenticated, service_role;

create trigger live_sessions_groups_sync
after insert or update of group_ids on public.live_sessions
for each row
execute function private.sync_session_groups();

-- Helpers for the policies. Each returns a set for the current user, which a policy computes once per statement
-- with `= any (array (select ...))`, so an index on the filtered column serves the read. They run as their owner
-- (security definer) so that a policy on one table can consult another without recursing through that table's
-- own policies. They are plpgsql: before PostgreSQL 18 an SQL-language function parses and plans its body again
-- in every statement that calls it (on PostgreSQL 15 a student's channel list took 2.5x the hand-filtered read
-- that way, 1.2x in plpgsql), while plpgsql keeps its plans for the connection.

-- The user the request runs as: auth.uid()'s value. Policies say `(select private.current_user_id())` rather than
-- `(select auth.uid())`: auth.uid() is an SQL function the planner inlines, so every statement would parse and
-- plan its body again (~0.02 ms of a student's 0.15 ms read); this one is called. The `(select ...)` wrap, as in
-- Supabase's guide, evaluates it once per statement, not once per row.
create function private.current_user_id() returns uuid
language plpgsql stable set search_path = ''
as $$
begin
    return auth.uid();
end;
$$;

create function private.taught_course_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query select c.id from public.courses c where c.teacher_id = (select auth.uid());
end;
$$;

create function private.taught_session_ids() returns setof uuid
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

create function private.taught_group_ids() returns setof uuid
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

create function private.own_group_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query select sp.group_id from public.student_profiles sp where sp.id = (select auth.uid());
end;
$$;

create function private.attended_session_ids() returns setof uuid
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

create function private.attended_course_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select distinct ls.course_id
    from public.live_sessions ls
    where ls.id in (select private.attended_session_ids());
end;
$$;

create function private.live_attended_session_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select ls.id
    from public.live_sessions ls
    where ls.status = 'live' and ls.group_ids && array(select private.own_group_ids());
end;
$$;

-- Whether the current user teaches `session_id` and `student_id` is in one of its invited groups: a teacher
-- records attendance only for those. It answers nothing about sessions the caller does not teach.
create function private.teaches_invited_student(session_id uuid, student_id uuid) returns boolean
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

revoke all on function private.current_user_id(), private.taught_course_ids(), private.taught_session_ids(),
    private.taught_group_ids(), private.own_group_ids(), private.attended_session_ids(),
    private.attended_course_ids(), private.live_attended_session_ids(), private.teaches_invited_student(uuid, uuid)
    from public, anon;
grant execute on function private.current_user_id(), private.taught_course_ids(), private.taught_session_ids(),
    private.taught_group_ids(), private.own_group_ids(), private.attended_session_ids(),
    private.attended_course_ids(), private.live_attended_session_ids(), private.teaches_invited_student(uuid, uuid)
    to authenticated;

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
    perform private.teaches_invited_student(null, null);
end
$$;

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
grant insert (session_id, student_id, status) on public.attendance_records to authenticated;
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
    id = (select private.current_user_id())
    or id = any (array (
        select sp.id from public.student_profiles sp
        where sp.group_id = any (array (select private.taught_group_ids()))
    ))
);

create policy "Users update their own profile"
on public.profiles for update to authenticated
using (id = (select private.current_user_id()))
with check (id = (select private.current_user_id()));

create policy "Teachers and their students read the course"
on public.courses for select to authenticated
using (
    teacher_id = (select private.current_user_id())
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
    id = (select private.current_user_id())
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
    or student_id = (select private.current_user_id())
);

-- One INSERT policy with both rules: two permissive policies for one role and action would each run for every
-- row (Supabase's advisor: multiple_permissive_policies).
create policy "Teachers record invited students, students check in while live"
on public.attendance_records for insert to authenticated
with check (
    -- the session's teacher, for a student of one of its invited groups
    private.teaches_invited_student(session_id, student_id)
    -- a student, for themself, present, while the session is live
    or (
        student_id = (select private.current_user_id())
        and status
        and session_id = any (array (select private.live_attended_session_ids()))
    )
);

create policy "Teachers correct their sessions' attendance"
on public.attendance_records for update to authenticated
using (session_id = any (array (select private.taught_session_ids())))
with check (session_id = any (array (select private.taught_session_ids())));

-- The draft's publication, which step 4 (sql/006) fills with the tables realtime subscribers follow.
do $$
begin
    if not exists (select 1 from pg_publication where pubname = 'live_attendance_pub') then
        create publication live_attendance_pub;
    end if;
end
$$;
