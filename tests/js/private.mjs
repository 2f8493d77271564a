// Supabase's JavaScript Realtime client (vsn 2.0.0) on a private channel (`private: true`) of the kit's gateway:
// prints one JSON line per thing it reports (its status, broadcasts, presence syncs, its track's and its broadcast's
// answers), for tests/test_gateway_private.py. Once joined it tracks TRACK_JSON and broadcasts SEND_JSON
// ({event, payload}; to itself too, with `self`), if given; it ends SECONDS after the join's answer.
//   node private.mjs URL TOKEN TOPIC SECONDS [TRACK_JSON] [SEND_JSON]
import { writeSync } from 'node:fs'
import { RealtimeClient } from '@supabase/realtime-js'
import WebSocket from 'ws'

const [url, token, topic, seconds, track, send] = process.argv.slice(2)
// Written at once: console.log to a pipe is asynchronous, and process.exit would drop what it has not written yet.
const say = (line) => writeSync(1, JSON.stringify(line) + '\n')
const client = new RealtimeClient(url, { params: { apikey: token }, transport: WebSocket })
await client.setAuth(token)
let reported = false
const channel = client.channel(topic, { config: { private: true, broadcast: { self: true } } })
channel
  .on('broadcast', { event: '*' }, (message) => say({ broadcast: message }))
  .on('presence', { event: 'sync' }, () => say({ presence: channel.presenceState() }))
  .subscribe(async (status, error) => {
    if (reported) return // a refused join is retried: its first answer is the one to report
    reported = true
    setTimeout(() => {
      client.disconnect()
      process.exit(0)
    }, Number(seconds) * 1000)
    say({ status, error: error ? error.message : null })
    if (status === 'SUBSCRIBED' && track) say({ track: await channel.track(JSON.parse(track)) })
    if (status === 'SUBSCRIBED' && send) say({ send: await channel.send({ type: 'broadcast', ...JSON.parse(send) }) })
  })
