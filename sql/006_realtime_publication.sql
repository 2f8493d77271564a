-- Step 4 of the draft: publish the tables for realtime. Idempotent, unlike the draft's bare ALTER PUBLICATION:
-- the publication is created if missing and a table is added only if it is not in it yet. The base tables the
-- realtime notebooks follow (attendance_records, live_sessions) are published too. The same tables go into
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

-- The default replica identity (the primary key) on every published table, stated because it is a security
-- choice: Supabase Realtime sends a DELETE without an RLS check, to every subscription whose filter matches the
-- logged old row. With REPLICA IDENTITY FULL that row holds session_id, so a student of another course subscribed
-- with session_id=eq.<any lecture> would learn of each deleted record there. With the key alone a filtered
-- subscription never matches a delete, and an unfiltered one learns only the deleted row's id. Old values a
-- reader needs are in the audit tables (attendance_status_changes, session_status_changes), under their policies.
alter table public.attendance_records replica identity default;
alter table public.live_sessions replica identity default;
alter table public.websocket_channels replica identity default;
alter table public.session_status_changes replica identity default;
alter table public.attendance_status_changes replica identity default;
alter table public.session_analytics replica identity default;
