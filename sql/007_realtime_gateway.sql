-- The kit's Realtime gateway (`attendance-kit realtime serve`) keeps websocket_channels true: a client joining
-- the topic `realtime:session:<session uuid>:<channel name>` counts in that channel's active_connections (the row
-- is created if missing), and leaving, timing out or dropping takes the count back; last_activity follows. What
-- each gateway added is recorded here, so a gateway that restarts after a crash takes back exactly its own
-- counts, never another writer's. Bookkeeping only: the API cannot reach it. No foreign key, so the channels
-- table can still be truncated; a row whose channel is gone is dropped at the gateway's next start.
create table if not exists private.gateway_connections (
    channel_id uuid not null,
    gateway text not null,
    connections int not null check (connections >= 0),
    primary key (channel_id, gateway)
);
alter table private.gateway_connections enable row level security;
revoke all on private.gateway_connections from public, anon, authenticated, service_role;
