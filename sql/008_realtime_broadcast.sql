-- Private channels and Broadcast from Database: who may join, receive, send and track on a session's topics, and
-- triggers that broadcast a lecture's changes to them. The way Supabase tells teams to ship realtime: Broadcast
-- "is the recommended method for scalability and security" (its Realtime guide), Postgres Changes does not scale.
--
-- Topics, named after the session (the gateway's channel convention `session:<session uuid>:<channel name>`):
--   session:<uuid>:lecture  the session's teacher: receive and send broadcasts, presence (read and track);
--                           the students of its invited groups: presence only, never its broadcasts, which carry
--                           classmates' check-ins;
--   session:<uuid>:status   the session going live and ending: the teacher receives and sends, its invited
--                           students receive.
-- Nobody else (another teacher, a student of another group, anon) may join either.

-- Supabase Realtime's own objects. On a Supabase project Realtime creates them with its tenant migrations when it
-- first connects, and those are not idempotent: an object the kit left there first would break them. So where the
-- schema `realtime` exists (Supabase's Postgres image creates it) the kit creates none of them and uses
-- Supabase's own; where it does not (plain PostgreSQL, the kit's cluster) the kit creates them with Supabase's
-- names, signatures and behaviour, and nothing else in `realtime`.
do $$
begin
    if to_regnamespace('realtime') is not null then
        if to_regclass('realtime.messages') is null then
            raise exception 'realtime.messages does not exist yet: this is a Supabase database whose Realtime has '
                'not created its tables; open the project''s Realtime (locally, after `supabase db reset`, restart '
                'the realtime container: `docker restart supabase_realtime_<project>`), then migrate again';
        end if;
        return;
    end if;

    create schema realtime;
    grant usage on schema realtime to anon, authenticated, service_role;

    -- The messages table as Supabase Realtime leaves it: partitioned by day of inserted_at (a timestamp without
    -- time zone, now() by default: the connection's TimeZone decides; Supabase and the kit's cluster run UTC).
    -- Note `private` defaults to false while realtime.send() defaults it to true.
    create table realtime.messages (
        topic text not null,
        extension text not null,
        payload jsonb,
        event text,
        private boolean default false,
        updated_at timestamp without time zone not null default now(),
        inserted_at timestamp without time zone not null default now(),
        id uuid not null default gen_random_uuid(),
        binary_payload bytea,
        constraint messages_payload_exclusive check (payload is null or binary_payload is null),
        constraint messages_pkey primary key (id, inserted_at)
    ) partition by range (inserted_at);
    -- Supabase Realtime keeps a partition per day (yesterday to three days ahead) and drops those older than three
    -- days; the kit runs no such process, so every row lands in one DEFAULT partition instead and a broadcast is
    -- never lost for want of a partition. (A daily partition created later must not cover rows already here.)
    create table realtime.messages_default partition of realtime.messages default;
    -- Replay's read: a topic's recent private broadcasts.
    create index messages_inserted_at_topic_index on realtime.messages (inserted_at desc, topic)
        where extension = 'broadcast' and private is true;
    alter table realtime.messages enable row level security;
    -- As Supabase: the API roles may select, insert and update through the policies; nobody deletes. The
    -- partitions get no grants, so the parent's policies are the only way in.
    grant select, insert, update on realtime.messages to anon, authenticated, service_role;

    -- The topic a Realtime check or realtime.send() is about: the transaction's `realtime.topic` setting.
    create function realtime.topic() returns text
    language sql stable
    as $fn$ select nullif(current_setting('realtime.topic', true), '')::text $fn$;

    -- Broadcast `payload` (with an `id` added unless it has one) as `event` to `topic`'s channels: a row of
    -- realtime.messages. It runs as the caller, so the INSERT policies decide; like Supabase's, it never fails
    -- its caller: any error (a policy refusing, no partition) becomes a WARNING and the message is lost.
    create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
    returns void
    language plpgsql
    as $fn$
    declare
        message_id uuid := gen_random_uuid();
    begin
        begin
            if not payload ? 'id' then
                payload := payload || jsonb_build_object('id', message_id);
            end if;
            -- The topic the INSERT policies see (until the caller's transaction ends).
            perform set_config('realtime.topic', topic, true);
            insert into realtime.messages (id, payload, event, topic, private, extension)
            values (message_id, payload, event, topic, private, 'broadcast');
        exception when others then
            raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
        end;
    end;
    $fn$;

    -- Broadcast a row trigger's change: payload {old_record, record, operation, table, schema}, the old record null
    -- on INSERT and the new one null on DELETE, sent privately. Its own errors reach the caller.
    create function realtime.broadcast_changes(topic_name text, event_name text, operation text, table_name text,
        table_schema text, new record, old record, level text default 'ROW')
    returns void
    language plpgsql
    as $fn$
    begin
        if level = 'STATEMENT' then
            raise exception 'function can only be triggered for each row, not for each statement';
        end if;
        if operation not in ('INSERT', 'UPDATE', 'DELETE') then
            raise exception 'Unexpected operation type: %', operation;
        end if;
        perform realtime.send(
            jsonb_build_object('old_record', old, 'record', new, 'operation', operation, 'table', table_name,
                               'schema', table_schema),
            event_name, topic_name);
    exception when others then
        raise exception 'Failed to process the row: %', sqlerrm;
    end;
    $fn$;

    -- What Supabase Realtime replicates to deliver Broadcast from Database (Realtime creates it itself on Supabase).
    -- Changes arrive under the parent's name, whichever partition holds the row.
    create publication supabase_realtime_messages_publication for table realtime.messages
        with (publish_via_partition_root = true);
end
$$;

-- The topics the current user may use, for the policies below; plpgsql security definer in `private`, as the kit's
-- other helpers (sql/002 says why).
-- Broadcasts received: the teacher's sessions' lecture and status topics, the invited students' status topics.
create function private.broadcast_read_topics() returns setof text
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select 'session:' || s.id || t.channel
    from private.taught_session_ids() s (id)
    cross join (values (':lecture'), (':status')) t (channel)
    union all
    select 'session:' || s.id || ':status' from private.attended_session_ids() s (id);
end;
$$;

-- Broadcasts sent: the teacher's sessions' lecture and status topics.
create function private.broadcast_write_topics() returns setof text
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query
    select 'session:' || s.id || t.channel
    from private.taught_session_ids() s (id)
    cross join (values (':lecture'), (':status')) t (channel);
end;
$$;

-- Presence (seen and tracked): the lecture topics of the teacher's sessions and of the invited students'.
create function private.presence_topics() returns setof text
language plpgsql stable security definer set search_path = ''
as $$
begin
    return query select 'session:' || s.id || ':lecture' from private.visible_session_ids() s (id);
end;
$$;

revoke all on function private.broadcast_read_topics(), private.broadcast_write_topics(), private.presence_topics()
    from public, anon;
grant execute on function private.broadcast_read_topics(), private.broadcast_write_topics(), private.presence_topics()
    to authenticated;

-- plpgsql resolves names at a function's first call: call each once, so a wrong name fails this migration.
do $$
begin
    perform count(*) from private.broadcast_read_topics();
    perform count(*) from private.broadcast_write_topics();
    perform count(*) from private.presence_topics();
end
$$;

-- Realtime checks a join by inserting probe rows (topic, extension; no payload) as itself, then selecting them
-- back as the user with `realtime.topic` set to the topic: SELECT policies decide who joins and receives (read),
-- INSERT policies who sends and tracks (write). A row's own topic must be the checked one, so setting
-- `realtime.topic` by hand opens no other topic's stored messages. One permissive policy per action, TO
-- authenticated: anon may do nothing.
create policy "Teachers and invited students read their sessions' topics"
on realtime.messages for select to authenticated
using (
    topic = (select realtime.topic())
    and (
        (extension = 'broadcast' and topic = any (array (select private.broadcast_read_topics())))
        or (extension = 'presence' and topic = any (array (select private.presence_topics())))
    )
);

create policy "Teachers send on their topics, invited students track"
on realtime.messages for insert to authenticated
with check (
    topic = (select realtime.topic())
    and (
        (extension = 'broadcast' and topic = any (array (select private.broadcast_write_topics())))
        or (extension = 'presence' and topic = any (array (select private.presence_topics())))
    )
);

-- Broadcast from Database. Security definer: a student's check-in must reach the teacher's topic, which the
-- student may not write; the owner (the migration's role; `postgres` on Supabase) may. As Supabase's own trigger,
-- the event is the operation.
-- Check-ins and corrections, to the teacher's lecture topic.
create function private.broadcast_attendance_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform realtime.broadcast_changes('session:' || coalesce(new.session_id, old.session_id) || ':lecture',
        tg_op, tg_op, tg_table_name, tg_table_schema, new, old, tg_level);
    return null;
end;
$$;

create trigger attendance_records_broadcast
after insert or update or delete on public.attendance_records
for each row
execute function private.broadcast_attendance_change();

-- The session going live, ending or cancelled: to its lecture topic (the teacher) and its status topic (the
-- teacher and invited students, who may read the session's row).
create function private.broadcast_session_status()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform realtime.broadcast_changes('session:' || new.id || ':lecture',
        tg_op, tg_op, tg_table_name, tg_table_schema, new, old, tg_level);
    perform realtime.broadcast_changes('session:' || new.id || ':status',
        tg_op, tg_op, tg_table_name, tg_table_schema, new, old, tg_level);
    return null;
end;
$$;

create trigger live_sessions_status_broadcast
after update of status on public.live_sessions
for each row
when (old.status is distinct from new.status)
execute function private.broadcast_session_status();

-- Each analytics snapshot, to the teacher's lecture topic.
create function private.broadcast_analytics_snapshot()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform realtime.broadcast_changes('session:' || new.session_id || ':lecture',
        tg_op, tg_op, tg_table_name, tg_table_schema, new, old, tg_level);
    return null;
end;
$$;

create trigger session_analytics_broadcast
after insert on public.session_analytics
for each row
execute function private.broadcast_analytics_snapshot();

-- Trigger functions are not API endpoints.
revoke all on function private.broadcast_attendance_change(), private.broadcast_session_status(),
    private.broadcast_analytics_snapshot() from public, anon, authenticated, service_role;
