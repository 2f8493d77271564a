-- Reads under RLS as fast as hand-filtered reads. Every policy already computes the reader's allowed set once
-- per statement (`= any (array (select private....()))`) and reaches rows through an index; what is left on a
-- small table is the fixed cost of each initplan. The channel policy had two (taught sessions, then the
-- sessions of the reader's groups); one helper returning their union makes it one, with the same meaning.
-- (`attendance-kit bench rls` measures every persona read against the owner's hand-filtered equivalent.)

create function private.visible_session_ids() returns setof uuid
language sql stable security definer set search_path = ''
as $$
    select id from private.taught_session_ids() id
    union
    select id from private.attended_session_ids() id
$$;

revoke all on function private.visible_session_ids() from public, anon;
grant execute on function private.visible_session_ids() to authenticated;

alter policy "Users can view relevant channels" on public.websocket_channels
using (session_id = any (array (select private.visible_session_ids())));
