-- Reads under RLS, continued. A student's sessions were found by probing the GIN index on
-- live_sessions.group_ids (`group_ids && my groups`), a fixed ~0.15 ms per statement that dominated small reads
-- such as a channel list. private.session_groups keeps the same facts as (group, session) pairs, synchronised by
-- a trigger on live_sessions, so the lookup is a btree probe; the helpers that used the GIN probe now read it.
-- The meaning of every policy is unchanged (`attendance-kit verify` checks it).

create table private.session_groups (
    group_id uuid not null,
    session_id uuid not null references public.live_sessions (id) on delete cascade,
    primary key (group_id, session_id)
);
create index session_groups_session_id_idx on private.session_groups (session_id);
alter table private.session_groups enable row level security;
revoke all on private.session_groups from public, anon, authenticated, service_role;

insert into private.session_groups (group_id, session_id)
select distinct g.group_id, ls.id from public.live_sessions ls cross join lateral unnest(ls.group_ids) g (group_id);

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

create or replace function private.attended_session_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select sg.session_id
    from private.session_groups sg
    join public.student_profiles sp on sp.group_id = sg.group_id
    where sp.id = (select auth.uid())
$$;

create or replace function private.attended_course_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select distinct ls.course_id
    from public.live_sessions ls
    where ls.id in (select private.attended_session_ids())
$$;
