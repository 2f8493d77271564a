-- Demo data: the documented personas (README, "Personas") with fixed UUIDs, their courses, groups and
-- sessions. Not a migration: `attendance-kit migrate --demo-data` loads it, and loading it twice changes
-- nothing. On Supabase, `supabase db reset` loads it as the project's `supabase/seed.sql`.

insert into auth.users (id, email) values
    ('a0000000-0000-4000-8000-000000000001', 'ada@attendance-kit.test'),
    ('a0000000-0000-4000-8000-000000000002', 'grace@attendance-kit.test'),
    ('b0000000-0000-4000-8000-000000000001', 'sam@attendance-kit.test'),
    ('b0000000-0000-4000-8000-000000000002', 'tess@attendance-kit.test'),
    ('b0000000-0000-4000-8000-000000000003', 'uma@attendance-kit.test'),
    ('b0000000-0000-4000-8000-000000000004', 'olive@attendance-kit.test'),
    ('b0000000-0000-4000-8000-000000000005', 'pat@attendance-kit.test')
on conflict (id) do nothing;

insert into public.profiles (id, full_name, role) values
    ('a0000000-0000-4000-8000-000000000001', 'Ada Lovelace', 'teacher'),
    ('a0000000-0000-4000-8000-000000000002', 'Grace Hopper', 'teacher'),
    ('b0000000-0000-4000-8000-000000000001', 'Sam Okafor', 'student'),
    ('b0000000-0000-4000-8000-000000000002', 'Tess Nguyen', 'student'),
    ('b0000000-0000-4000-8000-000000000003', 'Uma Patel', 'student'),
    ('b0000000-0000-4000-8000-000000000004', 'Olive Chen', 'student'),
    ('b0000000-0000-4000-8000-000000000005', 'Pat Kowalski', 'student')
on conflict (id) do nothing;

insert into public.student_groups (id, name) values
    ('60000000-0000-4000-8000-000000000001', 'Engines A'),
    ('60000000-0000-4000-8000-000000000002', 'Compilers B')
on conflict (id) do nothing;

insert into public.student_profiles (id, group_id, student_number) values
    ('b0000000-0000-4000-8000-000000000001', '60000000-0000-4000-8000-000000000001', 'S-1001'),
    ('b0000000-0000-4000-8000-000000000002', '60000000-0000-4000-8000-000000000001', 'S-1002'),
    ('b0000000-0000-4000-8000-000000000003', '60000000-0000-4000-8000-000000000001', 'S-1003'),
    ('b0000000-0000-4000-8000-000000000004', '60000000-0000-4000-8000-000000000002', 'S-2001'),
    ('b0000000-0000-4000-8000-000000000005', '60000000-0000-4000-8000-000000000002', 'S-2002')
on conflict (id) do nothing;

insert into public.courses (id, title, teacher_id) values
    ('c0000000-0000-4000-8000-000000000001', 'Analytical Engines', 'a0000000-0000-4000-8000-000000000001'),
    ('c0000000-0000-4000-8000-000000000002', 'Compilers', 'a0000000-0000-4000-8000-000000000002')
on conflict (id) do nothing;

insert into public.live_sessions (id, course_id, title, group_ids, status, starts_at, ends_at) values
    ('5e000000-0000-4000-8000-000000000001', 'c0000000-0000-4000-8000-000000000001',
     'Analytical Engines: lecture 1', '{60000000-0000-4000-8000-000000000001}', 'scheduled',
     '2026-01-12 09:00:00+00', '2026-01-12 10:30:00+00'),
    ('5e000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000002',
     'Compilers: lecture 1', '{60000000-0000-4000-8000-000000000002}', 'scheduled',
     '2026-01-12 11:00:00+00', '2026-01-12 12:30:00+00')
on conflict (id) do nothing;
