-- When a change happened, for imports and demo data. Every time the schema records by itself (a check-in, a
-- channel's creation and activity, an audit entry, an analytics snapshot) comes from `private.as_of()`: the
-- transaction's `attendance_kit.as_of` setting when a server-side writer sets it, e.g.
--     select set_config('attendance_kit.as_of', '2026-01-19 09:03:12+00', true);
-- and the current time otherwise. Supabase's API gives clients no way to set it (a direct SQL connection can
-- set request.jwt.claims as well, so it can already act as anyone). API clients also stop choosing their own
-- check-in time: a check-in is stamped by the database.

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

-- Snapshots keep 007's guarantee (strictly later than the session's previous one), now at the as-of time.
create or replace function private.snapshot_time(previous timestamp with time zone)
returns timestamp with time zone
language sql
volatile
set search_path = ''
as $$
    select greatest(private.as_of(clock_timestamp()), previous + interval '1 microsecond')
$$;

alter table public.attendance_records alter column checked_in_at set default private.as_of();
alter table public.websocket_channels
    alter column created_at set default private.as_of(),
    alter column last_activity set default private.as_of();
alter table public.session_status_changes alter column changed_at set default private.as_of();
alter table public.attendance_status_changes alter column changed_at set default private.as_of();
alter table public.session_analytics alter column recorded_at set default private.as_of();

revoke insert (checked_in_at) on public.attendance_records from authenticated;
