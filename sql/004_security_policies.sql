-- Step 2 of the draft: who may do what with the four tables, in Supabase's recommended form: `TO authenticated`,
-- the user's id evaluated once per statement (`(select private.current_user_id())`, auth.uid()'s value; sql/002
-- says why not auth.uid() itself), each user's allowed set computed once through a security-definer helper in
-- schema `private` (not exposed by the API) and matched with `= any (array (...))`, so an index on the filtered
-- column serves it. Keeps the draft's policy names; changes are listed in the README. `attendance-kit bench rls`
-- measures each persona's read under these policies against the same read hand-filtered by the owner.

-- Two more helpers (the others are in sql/002), written the same way: plpgsql, security definer, empty search_path.
create function private.taught_attendance_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select ar.id from public.attendance_records ar
    where ar.session_id = any (array(select private.taught_session_ids()));
end;
$$;

-- The sessions whose channels the user may see: taught_session_ids() and attended_session_ids() together, run
-- here as one query, so the channel policy pays one helper call, not two nested ones (tests/test_plans.py holds
-- it equal to their union). `union all`: a session in both sets may appear twice, which `= any` does not mind.
create function private.visible_session_ids() returns setof uuid
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select ls.id
    from public.live_sessions ls
    join public.courses c on c.id = ls.course_id
    where c.teacher_id = (select private.current_user_id())
    union all
    select sg.session_id
    from private.session_groups sg
    join public.student_profiles sp on sp.group_id = sg.group_id
    where sp.id = (select private.current_user_id());
end;
$$;

revoke all on function private.taught_attendance_ids(), private.visible_session_ids() from public, anon;
grant execute on function private.taught_attendance_ids(), private.visible_session_ids() to authenticated;

-- plpgsql resolves names at a function's first call: call each once, so a wrong name fails this migration.
do $$
begin
    perform count(*) from private.taught_attendance_ids();
    perform count(*) from private.visible_session_ids();
end
$$;

-- Session status changes: an append-only audit. The course's teacher reads it and may add an entry signed
-- with their own id; nobody but service_role updates or deletes (no grant, no policy).
grant select, insert (session_id, old_status, new_status, change_reason, changed_by)
    on public.session_status_changes to authenticated;

create policy "Teachers can view session status history"
on public.session_status_changes for select to authenticated
using (session_id = any (array (select private.taught_session_ids())));

create policy "Teachers can manage session status"
on public.session_status_changes for insert to authenticated
with check (
    session_id = any (array (select private.taught_session_ids()))
    and changed_by = (select private.current_user_id())
);

-- WebSocket channels: the session's teacher and the students of its groups read them; the teacher creates,
-- reconfigures and removes them.
grant select, delete, insert (session_id, channel_name, config, active_connections, last_activity),
    update (channel_name, config, active_connections, last_activity)
    on public.websocket_channels to authenticated;

create policy "Users can view relevant channels"
on public.websocket_channels for select to authenticated
-- The teacher who owns the session, and the students of its groups.
using (session_id = any (array (select private.visible_session_ids())));

create policy "Teachers can create channels"
on public.websocket_channels for insert to authenticated
with check (session_id = any (array (select private.taught_session_ids())));

create policy "Teachers can update channels"
on public.websocket_channels for update to authenticated
using (session_id = any (array (select private.taught_session_ids())))
with check (session_id = any (array (select private.taught_session_ids())));

create policy "Teachers can delete channels"
on public.websocket_channels for delete to authenticated
using (session_id = any (array (select private.taught_session_ids())));

-- Attendance changes: written only by the trigger on attendance_records (sql/005); the teacher reads them.
grant select on public.attendance_status_changes to authenticated;

create policy "Teachers can view attendance changes"
on public.attendance_status_changes for select to authenticated
using (attendance_id = any (array (select private.taught_attendance_ids())));

-- Analytics: written only by the analytics trigger (sql/005); the teacher reads them.
grant select on public.session_analytics to authenticated;

create policy "Teachers can view session analytics"
on public.session_analytics for select to authenticated
using (session_id = any (array (select private.taught_session_ids())));
