-- Step 2 of the seed: who may do what with the four tables, in Supabase's recommended form: `TO authenticated`,
-- `(select auth.uid())` evaluated once per statement, each user's allowed set computed once through a
-- security-definer helper in schema `private` (not exposed by the API) and matched with `= any (array (...))`,
-- so an index on the filtered column serves it. Keeps the seed's policy names; changes are listed in the README.

create function private.attended_session_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select ls.id from public.live_sessions ls where ls.group_ids && array(select private.own_group_ids())
$$;

create function private.taught_attendance_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select ar.id from public.attendance_records ar
    where ar.session_id = any (array(select private.taught_session_ids()))
$$;

revoke all on function private.attended_session_ids(), private.taught_attendance_ids() from public, anon;
grant execute on function private.attended_session_ids(), private.taught_attendance_ids() to authenticated;

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
    and changed_by = (select auth.uid())
);

-- WebSocket channels: the session's teacher and the students of its groups read them; the teacher creates,
-- reconfigures and removes them.
grant select, delete, insert (session_id, channel_name, config, active_connections, last_activity),
    update (channel_name, config, active_connections, last_activity)
    on public.websocket_channels to authenticated;

create policy "Users can view relevant channels"
on public.websocket_channels for select to authenticated
using (
    -- Teachers who own the session
    session_id = any (array (select private.taught_session_ids()))
    -- Students in the session's groups
    or session_id = any (array (select private.attended_session_ids()))
);

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
