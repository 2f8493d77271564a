-- Step 1 of the draft: its four tables and their indexes, with its names and meaning. Changes from the draft
-- (README, "Deviations from the draft"): session_id / attendance_id are NOT NULL and cascade with their parent
-- (a row about no session protects and means nothing); changed_by defaults to the acting user; every foreign
-- key has an index behind it; the times the schema records come from private.as_of() (sql/002): now, unless a
-- server-side writer such as an import sets the transaction's `attendance_kit.as_of`.

-- An append-only audit of live_sessions.status; a trigger (sql/005) writes it on every status change.
create table public.session_status_changes (
    id uuid primary key default gen_random_uuid(),
    session_id uuid not null references public.live_sessions (id) on delete cascade,
    old_status text not null,
    new_status text not null,
    change_reason text,
    changed_by uuid references public.profiles (id) default auth.uid(),
    changed_at timestamp with time zone not null default private.as_of()
);

-- Index for efficient status change queries (and the policies' session_id filter).
create index idx_session_status_changes on public.session_status_changes (session_id, changed_at);
create index idx_session_status_changes_changed_by on public.session_status_changes (changed_by);

-- The realtime channels of a session, as the websocket layer configures them.
create table public.websocket_channels (
    id uuid primary key default gen_random_uuid(),
    session_id uuid not null references public.live_sessions (id) on delete cascade,
    channel_name text not null,
    config jsonb not null default '{}',
    active_connections int not null default 0 check (active_connections >= 0),
    last_activity timestamp with time zone not null default private.as_of(),
    created_at timestamp with time zone not null default private.as_of(),
    unique (session_id, channel_name)
);

-- Indexes for channel management.
create index idx_websocket_channels_session on public.websocket_channels (session_id);
create index idx_websocket_channels_activity on public.websocket_channels (last_activity);

-- An append-only audit of attendance_records.status; a trigger (sql/005) writes it on every change.
create table public.attendance_status_changes (
    id uuid primary key default gen_random_uuid(),
    attendance_id uuid not null references public.attendance_records (id) on delete cascade,
    old_status boolean not null,
    new_status boolean not null,
    change_reason text,
    changed_by uuid references public.profiles (id) default auth.uid(),
    changed_at timestamp with time zone not null default private.as_of()
);

-- Index for tracking changes (and the policy's attendance_id filter).
create index idx_attendance_status_changes on public.attendance_status_changes (attendance_id, changed_at);
create index idx_attendance_status_changes_changed_by on public.attendance_status_changes (changed_by);

-- The time series of a session's attendance: its newest row is the session's current state.
create table public.session_analytics (
    id uuid primary key default gen_random_uuid(),
    session_id uuid not null references public.live_sessions (id) on delete cascade,
    total_students int not null,
    present_count int not null,
    connection_count int not null,
    status_distribution jsonb not null default '{}',
    recorded_at timestamp with time zone not null default private.as_of()
);

-- Index for analytics queries (and the policy's session_id filter).
create index idx_session_analytics on public.session_analytics (session_id, recorded_at);

-- Closed from the moment they exist: RLS on, and none of the privileges Supabase grants the API roles on new
-- tables by default. The next migration (step 2) opens exactly what its policies allow.
alter table public.session_status_changes enable row level security;
alter table public.websocket_channels enable row level security;
alter table public.attendance_status_changes enable row level security;
alter table public.session_analytics enable row level security;
revoke all on public.session_status_changes, public.websocket_channels, public.attendance_status_changes,
    public.session_analytics from anon, authenticated;
grant all on public.session_status_changes, public.websocket_channels, public.attendance_status_changes,
    public.session_analytics to service_role;
