// Supabase's JavaScript Realtime client (vsn 2.0.0, its default) subscribed through the kit's gateway: prints one
// JSON line per thing it reports (its channel's status, system messages, changes), for tests/test_gateway.py.
//   node subscribe.mjs URL TOKEN TOPIC TABLE SECONDS [SPEC]
// SPEC, optional JSON: {"filter": [[method, ...arguments], ...], "select": [columns], "wait": true, "until": n},
// the filter built with realtime-js's own postgresChangesFilter() (e.g. [["eq", "session_id", "5e00..."], ["not",
// "status", "is", false]]); `wait`: the channel's postgres_changes_options.wait (SUBSCRIBED only once the server
// subscribed); `until`: exit after that many changes. With a SPEC, a CHANNEL_ERROR ends it too.
import { RealtimeClient, postgresChangesFilter } from '@supabase/realtime-js'
import WebSocket from 'ws'

const [url, token, topic, table, seconds, spec] = process.argv.slice(2)
const say = (line) => console.log(JSON.stringify(line))
const binding = { event: '*', schema: 'public', table }
const options = { config: {} }
let until = Infinity
if (spec) {
  const { filter = [], select, wait, until: changes } = JSON.parse(spec)
  if (changes) until = changes
  binding.filter = filter.reduce((builder, [method, ...args]) => builder[method](...args), postgresChangesFilter())
  if (select) binding.select = select
  if (wait) options.config.postgres_changes_options = { wait: true }
}
const client = new RealtimeClient(url, { params: { apikey: token }, transport: WebSocket })
await client.setAuth(token)
const end = () => {
  client.disconnect()
  process.exit(0)
}
client
  .channel(topic, options)
  .on('postgres_changes', binding, (change) => {
    say({ change })
    if (--until === 0) end()
  })
  .on('system', {}, (system) => say({ system }))
  .subscribe((status, error) => {
    say({ status, error: error ? String(error) : null })
    if (spec && status === 'CHANNEL_ERROR') end()
  })
setTimeout(end, Number(seconds) * 1000)
