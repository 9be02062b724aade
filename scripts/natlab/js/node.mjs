// A js-libp2p node for scripts/natlab/js-dcutr.sh: TCP, Noise, Yamux, identify, ping, circuit relay v2 (client) and
// @libp2p/dcutr, as a js application behind a NAT would run it.
//
//   node node.mjs --reserve <relay multiaddr>   listens on the relay (a reservation) and prints "reserved <circuit addr>";
//                                               stays up; relayed peers that reach it are upgraded by js's DCUtR (js is B)
//   node node.mjs --relay <relay multiaddr> --dial <circuit multiaddr of the target> [--timeout s]
//                                               connects to the relay, dials the target through it (js is A) and waits
//                                               for a direct connection; prints one JSON line, exits 0 on direct
//
// Listens on /ip4/0.0.0.0/tcp/0. Bounded: every wait has a timeout; the process exits by itself.
import '../../../tests/Interop/js/polyfills.mjs' // must stay first: Node 20 lacks Promise.withResolvers
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { dcutr } from '@libp2p/dcutr'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const args = process.argv.slice(2)
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined }
const reserve = opt('--reserve')
const relay = opt('--relay')
const dial = opt('--dial')
const timeoutMs = Number(opt('--timeout') ?? '30') * 1000
if ((reserve == null) === (dial == null) || (dial != null && relay == null)) {
  console.error('usage: node node.mjs --reserve <relay> | --relay <relay> --dial <relay>/p2p-circuit/p2p/<target> [--timeout s]')
  process.exit(2)
}

const node = await createLibp2p({
  addresses: { listen: ['/ip4/0.0.0.0/tcp/0', ...(reserve != null ? [`${reserve}/p2p-circuit`] : [])] },
  transports: [tcp(), circuitRelayTransport()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionGater: { denyDialMultiaddr: () => false }, // the lab's "public" net is a namespace
  services: { identify: identify(), ping: ping(), dcutr: dcutr() }
})
const isRelayed = (c) => c.remoteAddr.toString().includes('/p2p-circuit')
const hardStop = setTimeout(() => { console.log(JSON.stringify({ error: 'overall timeout' })); process.exit(1) }, timeoutMs + 30000)
hardStop.unref()

if (reserve != null) {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    const circuit = node.getMultiaddrs().find(a => a.toString().includes('/p2p-circuit'))
    if (circuit != null) {
      console.log(`reserved ${circuit.toString()}`)
      break
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  node.addEventListener('connection:open', (e) => {
    const c = e.detail
    console.log(`connection ${isRelayed(c) ? 'relayed' : 'direct'} ${c.direction} ${c.remotePeer} ${c.remoteAddr}`)
  })
  // Runs until the script that started it stops it (SIGTERM), or the overall bound.
  await new Promise(resolve => { process.on('SIGTERM', resolve) })
  await node.stop()
  process.exit(0)
}

const started = Date.now()
const result = { relayed: false, direct: false }
try {
  await node.dial(multiaddr(relay), { signal: AbortSignal.timeout(timeoutMs) })
  const direct = new Promise(resolve => {
    node.addEventListener('connection:open', (e) => {
      if (!isRelayed(e.detail) && e.detail.remotePeer.toString() === dial.split('/p2p/').pop()) resolve(e.detail)
    })
  })
  const relayedConnection = await node.dial(multiaddr(dial), { signal: AbortSignal.timeout(timeoutMs) })
  result.relayed = isRelayed(relayedConnection)
  const connection = await Promise.race([direct, new Promise(resolve => setTimeout(() => resolve(null), timeoutMs))])
  if (connection != null) {
    result.direct = true
    result.msToDirect = Date.now() - started
    result.remote = connection.remoteAddr.toString()
    result.pingMs = await node.services.ping.ping(connection.remotePeer, { signal: AbortSignal.timeout(5000) })
  }
} catch (err) {
  result.error = String(err?.message ?? err)
}
console.log(JSON.stringify(result))
await node.stop()
process.exit(result.direct ? 0 : 1)
