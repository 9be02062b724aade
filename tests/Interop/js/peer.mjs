// A long-running js-libp2p node driven by JSON lines, used by Potluck's C# interop tests
// (tests/Interop/JsPeer.cs) and by scripts/bench/js-perf.sh.
//
//   node peer.mjs [--listen <multiaddr>]... [--swarm-key <path>] [--seed <64 hex chars>]
//                 [--gossip] [--dht <protocol id>] [--dht-no-self-query]
//
//   --gossip  runs @libp2p/gossipsub (StrictSign, js's default; /meshsub/1.2.0, 1.1.0, 1.0.0)
//   --dht     runs @libp2p/kad-dht on that protocol id (e.g. /potluck/kad/1.0.0) in server mode, keeping
//             loopback/private addresses (passthroughMapper: the default filters would drop them all)
//   --dht-no-self-query  pushes kad-dht's self query (1 s at start, then every 5 min) an hour out, so the
//             routing table holds only peers that connected to us or that our own queries found
//   --relay-server  runs @libp2p/circuit-relay-v2's hop service (js's default limits: 15 reservations,
//             2 h TTL, 2 min or 128 KiB per relayed connection)
//   --relay-client  adds @libp2p/circuit-relay-v2's transport: dials /p2p-circuit addresses, and a
//             --listen <relay address>/p2p-circuit reserves on that relay and accepts relayed connections
//
// stdout carries only JSON lines: first {"event":"ready","peerId":..,"addrs":[..]}, then one
// reply per command. Commands arrive as JSON lines on stdin, each with an "id"; replies are
// {"id":..,"ok":true,...} or {"id":..,"ok":false,"error":".."}. Commands run concurrently.
// Diagnostics go to stderr. EOF on stdin stops the node and exits.
//
// Commands (every one may carry "timeoutMs", default 60000; "addr" takes a multiaddr or a peer id):
//   dial     {addr}                   -> {peer, remoteAddr}
//   ping     {addr|peer}              -> {rttMs}
//   identify {peer}                   -> {peer, protocols[], listenAddrs[], agentVersion, protocolVersion,
//                                         publicKeyPresent, observedAddr, signedPeerRecord}
//   echo     {addr|peer, bytes}       -> {sent, received, matched, durationMs}   (/potluck/echo/1.0.0)
//   perf     {addr|peer, upload, download}
//                                     -> {uploadBytes, downloadBytes, uploadMs, downloadMs, totalMs,
//                                         writeClosedMs}                         (/perf/1.0.0 client)
//   hangup   {addr|peer}              -> {}
//   addrs    {}                       -> {addrs: [our multiaddrs now, relayed ones included]}
//   peers    {}                       -> {peers: [{peer, remoteAddr, direction, status, streams}]}
//   exit     {}                       -> {} then the process stops
// With --gossip:
//   subscribe   {topic}               -> {}
//   unsubscribe {topic}               -> {}
//   publish     {topic, data(base64)} -> {recipients: [peer ids]}
//   gossipPeers {topic}               -> {subscribers: [peer ids], mesh: [peer ids], topics: [our topics]}
//   every message received on a subscribed topic is reported as an event line (signature already
//   checked by js under StrictSign): {"event":"message","topic","from","data"(base64),"seqno"(decimal),
//   "msgId","propagationSource"}; also {"event":"subscription","peer","topic","subscribe"} when a peer
//   (un)subscribes and {"event":"graft"|"prune","peer","topic"} when our mesh changes
// With --dht:
//   findPeer     {peer}               -> {peer, addrs[], from}  a FIND_NODE query over the network (the
//                                        local routing table/peer store shortcut is skipped); fails if not found
//   closestPeers {key(base64)|peer}   -> {peers: [peer ids]}    the closest peers js's query found (peer: its multihash is the key)
//   dhtBootstrap {}                   -> {size}                 refreshes the routing table
//   dhtTable     {}                   -> {size, peers: [peer ids], mode}
//   routing table changes are event lines {"event":"dhtPeerAdded"|"dhtPeerRemoved","peer"}
// Served: /potluck/echo/1.0.0, /perf/1.0.0, /ipfs/ping/1.0.0, /ipfs/id/1.0.0 (no identify push), plus
// /meshsub/* with --gossip and the --dht protocol id.
// Identify runs once per new connection (as js does by default); `identify` awaits that run.
import './polyfills.mjs' // must stay first: Node 20 lacks Promise.withResolvers
import { readFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { gossipsub } from '@libp2p/gossipsub'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { multiaddr } from '@multiformats/multiaddr'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { PerfProtocol, perfClient, perfServer } from './perf.mjs'
import { EchoProtocol, echoClient, echoServer } from './echo.mjs'

// ---- command line -------------------------------------------------------------------------

function parseArgs (argv) {
  const opts = { listen: [], swarmKey: null, seed: null, gossip: false, dht: null }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`)
      return argv[++i]
    }
    switch (flag) {
      case '--listen': opts.listen.push(value()); break
      case '--swarm-key': opts.swarmKey = value(); break
      case '--seed': opts.seed = value(); break
      case '--gossip': opts.gossip = true; break
      case '--dht': opts.dht = value(); break
      case '--dht-no-self-query': opts.dhtNoSelfQuery = true; break
      case '--relay-server': opts.relayServer = true; break
      case '--relay-client': opts.relayClient = true; break
      default: throw new Error(`unknown flag ${flag}`)
    }
  }
  if (opts.listen.length === 0) opts.listen.push('/ip4/127.0.0.1/tcp/0')
  return opts
}

function hexToBytes (hex) {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new Error('--seed must be 64 hex characters (32 bytes)')
  return Uint8Array.from(hex.match(/../g), h => parseInt(h, 16))
}

// ---- output -------------------------------------------------------------------------------

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function log (...args) {
  process.stderr.write(`[js-peer] ${args.join(' ')}\n`)
}

function errorText (err) {
  if (err == null) return 'unknown error'
  const name = err.name && err.name !== 'Error' ? `${err.name}: ` : ''
  const inner = err.errors?.length ? ` (${err.errors.map(e => e.message ?? String(e)).join('; ')})` : ''
  return `${name}${err.message ?? String(err)}${inner}`
}

// ---- node ---------------------------------------------------------------------------------

const opts = parseArgs(process.argv.slice(2))
const privateKey = opts.seed == null ? undefined : await generateKeyPairFromSeed('Ed25519', hexToBytes(opts.seed))
const psk = opts.swarmKey == null ? undefined : new Uint8Array(await readFile(opts.swarmKey))

const services = {
  // Run on connection open by us instead of by the service, so `identify` can await that run.
  identify: identify({ runOnConnectionOpen: false }),
  ping: ping({ maxInboundStreams: 1_000, maxOutboundStreams: 1_000 })
}
if (opts.gossip) {
  services.pubsub = gossipsub({
    globalSignaturePolicy: 'StrictSign', // js's default, spelled out: every message signed and checked
    emitSelf: false,
    allowPublishToZeroTopicPeers: true
  })
}
if (opts.dht != null) {
  services.dht = kadDHT({
    protocol: opts.dht,
    clientMode: false, // a LAN-only DHT: answer queries although no address is public
    peerInfoMapper: passthroughMapper, // keep 127.0.0.1 addresses (the default mappers drop private ones)
    allowQueryWithZeroPeers: true,
    ...(opts.dhtNoSelfQuery ? { querySelfInterval: 3_600_000, initialQuerySelfInterval: 3_600_000 } : {})
  })
}

if (opts.relayServer) {
  services.relay = circuitRelayServer()
}

const node = await createLibp2p({
  privateKey,
  addresses: { listen: opts.listen },
  transports: opts.relayClient ? [tcp(), circuitRelayTransport()] : [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionProtector: psk == null ? undefined : preSharedKey({ psk }),
  connectionManager: {
    // js defaults: 5 inbound connections per second per host, 10 pending inbound upgrades,
    // 300 connections. Tests and handshake benchmarks open far more than that.
    inboundConnectionThreshold: 100_000,
    maxIncomingPendingConnections: 10_000,
    maxConnections: 100_000,
    maxParallelDials: 1_000,
    maxDialQueueLength: 100_000
  },
  connectionMonitor: { enabled: false }, // no background pings mixed into measurements
  services
})

const streamLimits = { maxInboundStreams: 1_000, maxOutboundStreams: 1_000, runOnLimitedConnection: true }
await node.handle(EchoProtocol, (stream) => serve('echo', stream, echoServer), streamLimits)
await node.handle(PerfProtocol, (stream) => serve('perf', stream, perfServer), streamLimits)

// connection id -> promise of the identify result (or the Error it failed with)
const identifyRuns = new Map()

function identifyRun (conn) {
  let run = identifyRuns.get(conn.id)
  if (run == null) {
    run = node.services.identify.identify(conn).catch(err => err instanceof Error ? err : new Error(String(err)))
    identifyRuns.set(conn.id, run)
  }
  return run
}

node.addEventListener('connection:open', evt => { identifyRun(evt.detail) })
node.addEventListener('connection:close', evt => { identifyRuns.delete(evt.detail.id) })

function raceSignal (promise, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) { reject(signal.reason); return }
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}

function serve (name, stream, fn) {
  fn(stream).catch(err => {
    log(`${name} handler failed: ${errorText(err)}`)
    stream.abort(err instanceof Error ? err : new Error(String(err)))
  })
}

// ---- commands -----------------------------------------------------------------------------

/** A peer id string, or a multiaddr (anything containing '/'). */
function target (cmd) {
  const value = cmd.addr ?? cmd.peer
  if (typeof value !== 'string' || value.length === 0) throw new Error('needs "addr" or "peer"')
  return value.includes('/') ? multiaddr(value) : peerIdFromString(value)
}

function peerArg (cmd) {
  if (typeof cmd.peer !== 'string') throw new Error('needs "peer"')
  return peerIdFromString(cmd.peer)
}

function byteCount (cmd, field) {
  const v = cmd[field] ?? 0
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`"${field}" must be a non-negative integer`)
  return v
}

function decodeText (bytes) {
  return bytes == null ? null : new TextDecoder().decode(bytes)
}

if (opts.gossip) {
  const ps = node.services.pubsub
  ps.addEventListener('subscription-change', evt => {
    for (const sub of evt.detail.subscriptions) {
      emit({ event: 'subscription', peer: evt.detail.peerId.toString(), topic: sub.topic, subscribe: sub.subscribe })
    }
  })
  ps.addEventListener('gossipsub:graft', evt => {
    emit({ event: 'graft', peer: evt.detail.peerId.toString(), topic: evt.detail.topic })
  })
  ps.addEventListener('gossipsub:prune', evt => {
    emit({ event: 'prune', peer: evt.detail.peerId.toString(), topic: evt.detail.topic })
  })
  ps.addEventListener('gossipsub:message', evt => {
    const { propagationSource, msgId, msg } = evt.detail
    emit({
      event: 'message',
      topic: msg.topic,
      from: msg.type === 'signed' ? msg.from.toString() : null,
      data: Buffer.from(msg.data).toString('base64'),
      seqno: msg.type === 'signed' ? msg.sequenceNumber.toString() : null,
      msgId,
      propagationSource: propagationSource.toString()
    })
  })
}

if (opts.dht != null) {
  const table = node.services.dht.routingTable
  table.addEventListener('peer:add', evt => emit({ event: 'dhtPeerAdded', peer: evt.detail.toString() }))
  table.addEventListener('peer:remove', evt => emit({ event: 'dhtPeerRemoved', peer: evt.detail.toString() }))
}

function pubsub () {
  if (node.services.pubsub == null) throw new Error('gossipsub is off: start with --gossip')
  return node.services.pubsub
}

function dht () {
  if (node.services.dht == null) throw new Error('kad-dht is off: start with --dht <protocol id>')
  return node.services.dht
}

function topicArg (cmd) {
  if (typeof cmd.topic !== 'string' || cmd.topic.length === 0) throw new Error('needs "topic"')
  return cmd.topic
}

function keyArg (cmd) {
  if (typeof cmd.key === 'string') return new Uint8Array(Buffer.from(cmd.key, 'base64'))
  if (typeof cmd.peer === 'string') return peerIdFromString(cmd.peer).toMultihash().bytes
  throw new Error('needs "key" (base64) or "peer"')
}

async function connectionTo (peerId, signal) {
  const existing = node.getConnections(peerId).find(c => c.status === 'open')
  return existing ?? await node.dial(peerId, { signal })
}

const commands = {
  async dial (cmd, signal) {
    const conn = await node.dial(target(cmd), { signal })
    return { peer: conn.remotePeer.toString(), remoteAddr: conn.remoteAddr.toString() }
  },

  async ping (cmd, signal) {
    const rttMs = await node.services.ping.ping(target(cmd), { signal })
    return { rttMs }
  },

  async identify (cmd, signal) {
    const peerId = peerArg(cmd)
    const conn = await connectionTo(peerId, signal)
    // The run started when this connection opened (js allows one identify stream per
    // connection, so a second concurrent run would fail); the reply reports what the peer
    // store holds afterwards.
    const outcome = await raceSignal(identifyRun(conn), signal)
    if (outcome instanceof Error) throw outcome
    const stored = await node.peerStore.get(peerId, { signal })
    return {
      peer: peerId.toString(),
      protocols: [...stored.protocols].sort(),
      listenAddrs: stored.addresses.map(a => a.multiaddr.toString()),
      agentVersion: decodeText(stored.metadata.get('AgentVersion')),
      protocolVersion: decodeText(stored.metadata.get('ProtocolVersion')),
      publicKeyPresent: outcome.publicKey != null && outcome.publicKey.length > 0,
      observedAddr: outcome.observedAddr?.toString() ?? null,
      signedPeerRecord: outcome.signedPeerRecord != null
    }
  },

  async echo (cmd, signal) {
    const bytes = byteCount(cmd, 'bytes')
    // runOnLimitedConnection: a relayed connection with the relay's limits is "limited" in js
    const stream = await node.dialProtocol(target(cmd), EchoProtocol, { signal, runOnLimitedConnection: true })
    return await echoClient(stream, bytes, signal)
  },

  async perf (cmd, signal) {
    const upload = byteCount(cmd, 'upload')
    const download = byteCount(cmd, 'download')
    const stream = await node.dialProtocol(target(cmd), PerfProtocol, { signal })
    return await perfClient(stream, upload, download, signal)
  },

  async hangup (cmd, signal) {
    await node.hangUp(target(cmd), { signal })
    return {}
  },

  async subscribe (cmd) {
    pubsub().subscribe(topicArg(cmd))
    return {}
  },

  async unsubscribe (cmd) {
    pubsub().unsubscribe(topicArg(cmd))
    return {}
  },

  async publish (cmd) {
    if (typeof cmd.data !== 'string') throw new Error('needs "data" (base64)')
    const result = await pubsub().publish(topicArg(cmd), new Uint8Array(Buffer.from(cmd.data, 'base64')))
    return { recipients: result.recipients.map(p => p.toString()) }
  },

  async gossipPeers (cmd) {
    const ps = pubsub()
    const topic = topicArg(cmd)
    return {
      subscribers: ps.getSubscribers(topic).map(p => p.toString()),
      mesh: ps.getMeshPeers(topic).map(p => p.toString()),
      topics: ps.getTopics()
    }
  },

  async findPeer (cmd, signal) {
    const peerId = peerArg(cmd)
    // useCache:false skips findPeerLocal (routing table / peer store): the answer must come off the wire.
    for await (const event of dht().findPeer(peerId, { signal, useCache: false })) {
      if (event.name === 'FINAL_PEER' && event.peer.id.equals(peerId)) {
        return {
          peer: event.peer.id.toString(),
          addrs: event.peer.multiaddrs.map(a => a.toString()),
          from: event.from.toString()
        }
      }
    }
    throw new Error('not found')
  },

  async closestPeers (cmd, signal) {
    const peers = []
    for await (const event of dht().getClosestPeers(keyArg(cmd), { signal })) {
      if (event.name === 'FINAL_PEER') peers.push(event.peer.id.toString())
    }
    return { peers }
  },

  async dhtBootstrap (cmd, signal) {
    await dht().refreshRoutingTable({ signal })
    return { size: dht().routingTable.size }
  },

  async dhtTable () {
    const d = dht()
    const peers = d.routingTable.kb == null ? [] : [...d.routingTable.kb.toIterable()].map(c => c.peerId.toString())
    return { size: d.routingTable.size, peers, mode: d.getMode() }
  },

  async addrs () {
    return { addrs: node.getMultiaddrs().map(a => a.toString()) }
  },

  async peers () {
    return {
      peers: node.getConnections().map(c => ({
        peer: c.remotePeer.toString(),
        remoteAddr: c.remoteAddr.toString(),
        direction: c.direction,
        status: c.status,
        streams: c.streams.length
      }))
    }
  }
}

let exiting = false

async function shutdown (code) {
  if (exiting) return
  exiting = true
  try {
    await node.stop()
  } catch (err) {
    log(`stop failed: ${errorText(err)}`)
  }
  process.exit(code)
}

async function run (line) {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    emit({ id: null, ok: false, error: `bad JSON: ${errorText(err)}` })
    return
  }
  const id = cmd?.id ?? null
  if (cmd?.cmd === 'exit') {
    emit({ id, ok: true })
    await shutdown(0)
    return
  }
  const handler = commands[cmd?.cmd]
  if (handler == null) {
    emit({ id, ok: false, error: `unknown command ${JSON.stringify(cmd?.cmd)}` })
    return
  }
  const timeoutMs = cmd.timeoutMs ?? 60_000
  const signal = AbortSignal.timeout(timeoutMs)
  try {
    const result = await handler(cmd, signal)
    emit({ id, ok: true, ...result })
  } catch (err) {
    emit({ id, ok: false, error: errorText(err) })
  }
}

// Errors must never kill the peer: report and keep going.
process.on('unhandledRejection', err => log(`unhandled rejection: ${errorText(err)}`))
process.on('uncaughtException', err => log(`uncaught exception: ${errorText(err)}`))
process.on('SIGTERM', () => { shutdown(0) })

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', line => { if (line.trim().length > 0) run(line) })
rl.on('close', () => { shutdown(0) })

emit({
  event: 'ready',
  peerId: node.peerId.toString(),
  addrs: node.getMultiaddrs().map(a => a.toString())
})
