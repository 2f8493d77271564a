// Supabase's JavaScript Realtime client (vsn 2.0.0) on a private channel (`private: true`) of the kit's gateway:
// prints one JSON line per thing it reports (its status, broadcasts, presence syncs, its track's answer), for
// tests/test_gateway_private.py.
//   node private.mjs URL TOKEN TOPIC SECONDS [TRACK_JSON]
import { RealtimeClient } from '@supabase/realtime-js'
import WebSocket from 'ws'

const [url, token, topic, seconds, track] = process.argv.slice(2)
const say = (line) => console.log(JSON.stringify(line))
const client = new RealtimeClient(url, { params: { apikey: token }, transport: WebSocket })
await client.setAuth(token)
let reported = false
const channel = client.channel(topic, { config: { private: true } })
channel
  .on('broadcast', { event: '*' }, (message) => say({ broadcast: message }))
  .on('presence', { event: 'sync' }, () => say({ presence: channel.presenceState() }))
  .subscribe(async (status, error) => {
    if (reported) return // a refused join is retried: its first answer is the one to report
    reported = true
    say({ status, error: error ? error.message : null })
    if (status === 'SUBSCRIBED' && track) say({ track: await channel.track(JSON.parse(track)) })
  })
setTimeout(() => {
  client.disconnect()
  process.exit(0)
}, Number(seconds) * 1000)
