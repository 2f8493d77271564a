// Supabase's JavaScript Realtime client (vsn 2.0.0, its default) subscribed through the kit's gateway: prints one
// JSON line per thing it reports (its channel's status, system messages, changes), for tests/test_gateway.py.
//   node subscribe.mjs URL TOKEN TOPIC TABLE SECONDS
import { RealtimeClient } from '@supabase/realtime-js'
import WebSocket from 'ws'

const [url, token, topic, table, seconds] = process.argv.slice(2)
const say = (line) => console.log(JSON.stringify(line))
const client = new RealtimeClient(url, { params: { apikey: token }, transport: WebSocket })
await client.setAuth(token)
client
  .channel(topic)
  .on('postgres_changes', { event: '*', schema: 'public', table }, (change) => say({ change }))
  .on('system', {}, (system) => say({ system }))
  .subscribe((status, error) => say({ status, error: error ? String(error) : null }))
setTimeout(() => {
  client.disconnect()
  process.exit(0)
}, Number(seconds) * 1000)
