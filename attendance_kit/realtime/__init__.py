"""Realtime: Supabase Realtime's `postgres_changes`, run locally against real RLS; and, at the gateway, its private
channels, Broadcast from Database and Presence.

A change travels through stages, each in modules of this package. `Realtime` (client.py), the realtime client,
ties the first five together (`listen` and `render_event` there are what the command line calls); the gateway
carries what they deliver to Supabase's own clients.

- **The slot** (feed.py: `ChangeFeed`, the change feed). One connection owns a *temporary* logical replication
  slot with PostgreSQL's built-in `pgoutput` plugin. A temporary slot belongs to the connection that created it and
  PostgreSQL drops it when that connection ends for any reason (a normal close, an exception, the client killed
  with -9), so no slot outlives its consumer to pin WAL. Each poll reads the publication with
  `pg_logical_slot_get_binary_changes`, which returns whole transactions in commit order and consumes them:
  nothing is read twice. `Realtime.next_poll_in` states the cadence once: at once again after a poll that found
  changes, else after `poll_interval`.
- **Decoding** (decoding.py: `PgOutputDecoder`, pure, no database). pgoutput protocol 1: Begin, Relation,
  Insert, Update, Delete, Truncate, Commit (Type, Origin and logical messages are read and ignored). Values
  arrive as text and become Python values through psycopg's own loaders, as if they had been selected (in the
  change feed, which has the connection).
- **Subscriptions** (subscriptions.py, through `Realtime.subscribe`). Like Supabase's: a table (or every
  published one), an event (`INSERT`, `UPDATE`, `DELETE` or `*`), optional column filters in Supabase's syntax
  (`session_id=eq.<uuid>,status=not.in.(absent,late)`: every operator Supabase takes), checked as Supabase checks
  them and evaluated by PostgreSQL as Supabase evaluates them (filters.py), and an optional `select` of columns.
  The `Event` a subscriber receives is defined there too; wire.py writes its JSON.
- **Authorisation** (authorisation.py, from what catalog.py reads), Supabase's rule: a subscriber receives an
  INSERT or UPDATE of a table with RLS only if, when it is delivered, it can SELECT that row. Per poll the kit
  runs ONE query per subscriber, covering every row of the batch it subscribed to, as that subscriber (its
  claims in `request.jwt.claims`, its role set locally, exactly as `as_user` and Supabase's API do). All
  subscribers' queries run in one server-side loop (a function in the connection's `pg_temp` schema, generated
  from the catalog), so a poll costs one round trip, not one per subscriber. How the query stays exactly
  equivalent to RLS: see authorisation.py.
- **Delivery** (delivery.py). Per poll: which rows each subscriber's subscriptions cover, the function run for
  them (with many subscribers split across a few lanes, connections that run in parallel), and the events, in
  commit order, built as Supabase Realtime builds them (events.py: its limits and errors).
- **The gateway**, Supabase Realtime's WebSocket protocol in front of one `Realtime`, so Supabase's own clients
  subscribe as to a Supabase project. Each of its jobs in a module of its own:
  - gateway.py: `Gateway`, the asyncio server that wires the others together;
  - admission.py: the connect check (path, connect token) and a join's payload read as a typed request;
  - tokens.py: JWTs signed and checked as Supabase signs and checks them (`check_token`);
  - protocol.py: the frames, in both of Supabase's serializers;
  - channel_state.py: the channels as a state machine without I/O: messages, the database worker's answers and
    expiries in; messages, database commands and timers out (its data in channel_model.py, who is present in
    presence.py, which channels a topic's messages reach in topics.py);
  - topic_policies.py: private channels (Realtime Authorization): what the RLS policies on `realtime.messages`
    let a user read and write on a topic, asked with probe rows as Supabase asks them;
  - broadcasts.py: Broadcast from Database: the rows committed to `realtime.messages`, read on the change feed's
    slot beside the tables' changes (`Realtime.poll_routed`);
  - transport.py: each socket's receiving, rate, silence timer and queue of outgoing frames;
  - worker.py: the database worker, the thread that owns the gateway's one `Realtime`: every database call
    runs there as a command, between polls;
  - fanout.py: each poll's deliveries as one frame per channel per change, and its broadcasts as Supabase's
    broadcast frames;
  - channels.py: websocket_channels kept equal to the connected clients.

What reaches whom follows Supabase Realtime's delivery SQL (`realtime.apply_rls`), and a side-by-side run of the
two on the same changes gives the same deliveries: a DELETE is not checked against RLS and reaches every
subscription whose filter matches the logged old row (with the default replica identity, only the primary key:
a filter on another column never matches a delete); under RLS its `old_record` is the primary key alone. An
UPDATE's `old_record` is what the replica identity logged. TRUNCATE is never delivered. A role that may not
select the primary key receives `Error 401: Unauthorized` events without values; a change over 1 MB carries
`Error 413: Payload Too Large` and only its short values.
"""

from .authorisation import TABLES_PER_CALL
from .client import RECONNECTING, Realtime, listen, render_event
from .decoding import UNCHANGED_TOAST, Change, Column, PgOutputDecoder, RawValue, Relation
from .delivery import SUBSCRIBERS_PER_LANE
from .feed import MAX_MESSAGES_PER_POLL, POLL_INTERVAL, PUBLICATION, ChangeFeed, FeedLost
from .filters import Term
from .subscriptions import EVENT_TYPES, Event, Subscriber, Subscription

__all__ = [
    "EVENT_TYPES", "MAX_MESSAGES_PER_POLL", "POLL_INTERVAL", "PUBLICATION", "RECONNECTING", "SUBSCRIBERS_PER_LANE",
    "TABLES_PER_CALL", "UNCHANGED_TOAST", "Change", "ChangeFeed", "Column", "Event", "FeedLost", "PgOutputDecoder",
    "RawValue", "Realtime", "Relation", "Subscriber", "Subscription", "Term", "listen", "render_event",
]
