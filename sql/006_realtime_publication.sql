-- Step 4 of the seed: publish the tables for realtime. Idempotent, unlike the draft's bare ALTER PUBLICATION:
-- the publication is created if missing and a table is added only if it is not in it yet. The base tables the
-- realtime lesson is about (attendance_records, live_sessions) are published too. The same tables go into
-- supabase_realtime wherever it exists (on Supabase, and from the auth shim elsewhere), the publication Supabase
-- Realtime reads: without them there it refuses every postgres_changes subscription. Tables already in either
-- publication stay.
do $$
declare
    publication text;
    published text;
begin
    if not exists (select 1 from pg_publication where pubname = 'live_attendance_pub') then
        create publication live_attendance_pub;
    end if;
    for publication in
        select pubname from pg_publication where pubname in ('live_attendance_pub', 'supabase_realtime')
    loop
        foreach published in array array[
            'session_status_changes', 'websocket_channels', 'attendance_status_changes', 'session_analytics',
            'attendance_records', 'live_sessions'
        ] loop
            if not exists (
                select 1 from pg_publication_tables
                where pubname = publication and schemaname = 'public' and tablename = published
            ) then
                execute format('alter publication %I add table public.%I', publication, published);
            end if;
        end loop;
    end loop;
end
$$;

-- REPLICA IDENTITY FULL logs a row's old values with each UPDATE and DELETE, where subscribers need them: an
-- attendance correction shows old and new status, a deleted record or channel still names its session_id
-- (so a `session_id=eq.<uuid>` subscription and the RLS check can place it), and a session's status change
-- shows the status it left. The three audit/analytics tables are append-only, so their primary key suffices.
alter table public.attendance_records replica identity full;
alter table public.live_sessions replica identity full;
alter table public.websocket_channels replica identity full;
