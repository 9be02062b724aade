// Runs libp2p's own interop suite (@libp2p/interop, the one js-libp2p runs against the Go daemon) with
// `potluck p2pd` in the "go" slot, against js-libp2p in the "js" slot, both ways round. The js side is built
// exactly as js-libp2p's packages/integration-tests/test/interop.ts builds it (tcp, noise, yamux, identify, ping,
// floodsub or gossipsub, kad-dht on /ipfs/kad/1.0.0 with the passthrough mapper); the potluck side is started with
// the flags that file gives go-libp2p-daemon. js-js pairs are left out (they test js against itself).
//
// Environment:
//   POTLUCK_BIN     the potluck executable (default: src/Node/bin/Release/net10.0/potluck)
//   INTEROP_GROUPS  comma-separated groups to run: connect,streams,dht,pubsub,relay (default: all five)
//   INTEROP_KEYS    comma-separated key types for streams: ed25519,rsa,secp256k1 (default: all three)
//   INTEROP_GREP    a further mocha --grep on full test titles
//   INTEROP_VERBOSE 1: the daemons' stderr goes to ours
//
// Prints one line per test, then each group's passed/failed/skipped counts; exits 1 if any test failed.
// Configurations a side cannot serve (TLS, plaintext, mplex, transports other than TCP) throw the suite's
// UnsupportedError: the connect group skips them itself; the streams group has no catch for it, so its hook
// fails, and those tests are counted here as "unsupported", not as passed.

import '../../../tests/Interop/js/polyfills.mjs'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { createClient } from '@libp2p/daemon-client'
import { createServer } from '@libp2p/daemon-server'
import { floodsub } from '@libp2p/floodsub'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import Mocha from 'mocha'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '../../..')
const potluck = process.env.POTLUCK_BIN ?? path.join(root, 'src/Node/bin/Release/net10.0/potluck')
const groups = (process.env.INTEROP_GROUPS ?? 'connect,streams,dht,pubsub,relay').split(',').map(s => s.trim()).filter(Boolean)
const keyTypes = (process.env.INTEROP_KEYS ?? 'ed25519,rsa,secp256k1').split(',').map(s => s.trim()).filter(Boolean)
const verbose = process.env.INTEROP_VERBOSE === '1'

if (!fs.existsSync(potluck)) {
  console.error(`no potluck executable at ${potluck}: build it (dotnet build src/Node -c Release) or set POTLUCK_BIN`)
  process.exit(2)
}

// mocha's bdd globals (describe, it, before, after) before the suite's modules register their tests
const mocha = new Mocha({ timeout: 60_000, reporter: function () {} })
mocha.suite.emit(Mocha.Suite.constants.EVENT_FILE_PRE_REQUIRE, globalThis, 'interop', mocha)
const { UnsupportedError, connectInteropTests, streamInteropTests, dhtInteropTests, pubsubInteropTests, relayInteropTests } = await import('@libp2p/interop')

class Unsupported extends UnsupportedError {}

async function createPotluckPeer (options) {
  const args = ['p2pd', '-listen=/ip4/127.0.0.1/tcp/0']
  if (options.noListen === true) {
    args.push('-noListenAddrs')
  } else if (options.transport == null || options.transport === 'tcp') {
    args.push('-hostAddrs=/ip4/127.0.0.1/tcp/0')
  } else {
    throw new Unsupported(`potluck: transport ${options.transport}`)
  }
  if (options.encryption != null && options.encryption !== 'noise') {
    throw new Unsupported(`potluck: ${options.encryption} security`)
  }
  if (options.muxer === 'mplex') {
    throw new Unsupported('potluck: mplex')
  }
  if (options.relay === true) {
    args.push('-relay', '-relayHop')
  }
  if (options.encryption != null) {
    args.push(`-${options.encryption}=true`)
  }
  if (options.dht === true) {
    args.push('-dhtServer')
  }
  if (options.pubsub === true) {
    args.push('-pubsub')
  }
  if (options.pubsubRouter != null) {
    args.push(`-pubsubRouter=${options.pubsubRouter}`)
  }
  if (options.key != null) {
    args.push(`-id=${options.key}`)
  }
  args.push('-muxer=yamux')

  const proc = spawn(potluck, args, { stdio: ['ignore', 'pipe', verbose ? 'inherit' : 'pipe'] })
  let stderr = ''
  proc.stderr?.on('data', buf => { stderr = (stderr + buf.toString()).slice(-4000) })
  const exited = new Promise(resolve => proc.once('exit', (code, signal) => resolve({ code, signal })))
  const control = await new Promise((resolve, reject) => {
    let out = ''
    proc.stdout.on('data', buf => {
      out += buf.toString()
      const match = out.match(/Control socket:\s*(\S+)/)
      if (match != null) {
        resolve(multiaddr(match[1]))
      }
    })
    exited.then(({ code, signal }) => reject(new Error(`potluck p2pd exited before startup (code ${code}, signal ${signal}): ${stderr.trim()}`)))
  })
  return {
    client: createClient(control),
    stop: async () => {
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }
  }
}

async function createJsPeer (options) {
  let privateKey
  if (options.key != null) {
    privateKey = privateKeyFromProtobuf(fs.readFileSync(options.key))
  }
  if (options.transport != null && options.transport !== 'tcp') {
    throw new Unsupported(`js: transport ${options.transport} (not installed here)`)
  }
  if ((options.encryption != null && options.encryption !== 'noise') || options.muxer === 'mplex') {
    throw new Unsupported('js: only noise/yamux are installed here')
  }
  const services = { identify: identify(), ping: ping() }
  if (options.relay === true) {
    services.relay = circuitRelayServer()
  }
  if (options.pubsub === true) {
    services.pubsub = options.pubsubRouter === 'floodsub' ? floodsub() : gossipsub()
  }
  if (options.dht === true) {
    services.dht = kadDHT({ protocol: '/ipfs/kad/1.0.0', peerInfoMapper: passthroughMapper, clientMode: false })
  }
  const node = await createLibp2p({
    privateKey,
    addresses: { listen: options.noListen === true ? [] : ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp(), circuitRelayTransport()],
    streamMuxers: [yamux()],
    connectionEncrypters: [noise()],
    services
  })
  const server = createServer(multiaddr('/ip4/127.0.0.1/tcp/0'), node)
  await server.start()
  return {
    client: createClient(server.getMultiaddr()),
    stop: async () => {
      await server.stop()
      await node.stop()
    }
  }
}

const factory = {
  async spawn (options) {
    return options.type === 'go' ? createPotluckPeer(options) : createJsPeer(options)
  }
}

if (groups.includes('connect')) connectInteropTests(factory)
if (groups.includes('dht')) await dhtInteropTests(factory)
if (groups.includes('pubsub')) await pubsubInteropTests(factory)
if (groups.includes('streams')) await streamInteropTests(factory)
if (groups.includes('relay')) relayInteropTests(factory)

// js-js pairs test js against itself; key types not asked for are left out
const keyAlternatives = ['ed25519', 'rsa', 'secp256k1'].filter(k => !keyTypes.includes(k))
const excluded = ['js (?:sender|peer) to js (?:listener|peer)', 'js to js over relay js', ...keyAlternatives.map(k => `^${k}/`)]
mocha.grep(new RegExp(excluded.join('|')))
mocha.invert()
const extra = process.env.INTEROP_GREP != null ? new RegExp(process.env.INTEROP_GREP) : null

function groupOf (test) {
  let suite = test.parent
  while (suite?.parent != null && suite.parent.title !== '') suite = suite.parent
  const title = suite?.title ?? ''
  if (title.startsWith('connection.')) return 'connect'
  if (title.endsWith(' echo')) return 'streams'
  if (title.startsWith('dht.')) return 'dht'
  if (title.startsWith('pubsub.')) return 'pubsub'
  if (title.includes(' over relay ')) return 'relay'
  return 'other'
}

const counts = {}
const count = (group, what) => {
  counts[group] ??= { passed: 0, failed: 0, skipped: 0, unsupported: 0 }
  counts[group][what]++
}
const selected = test => !(new RegExp(excluded.join('|')).test(test.fullTitle())) && (extra == null || extra.test(test.fullTitle()))

if (extra != null) {
  // mocha has one grep; apply the extra one by removing tests that do not match
  const prune = suite => {
    suite.tests = suite.tests.filter(selected)
    suite.suites.forEach(prune)
  }
  prune(mocha.suite)
}

const runner = mocha.run(failures => {
  console.log('')
  console.log('group     passed  failed  skipped  unsupported')
  for (const group of ['connect', 'streams', 'dht', 'pubsub', 'relay', 'other']) {
    const c = counts[group]
    if (c == null) continue
    console.log(`${group.padEnd(8)}  ${String(c.passed).padStart(6)}  ${String(c.failed).padStart(6)}  ${String(c.skipped).padStart(7)}  ${String(c.unsupported).padStart(11)}`)
  }
  const total = what => Object.values(counts).reduce((n, c) => n + c[what], 0)
  const failed = total('failed')
  console.log(`daemon-interop: ${total('passed')} passed, ${failed} failed (${total('skipped')} skipped upstream, ${total('unsupported')} unsupported)`)
  process.exit(failed === 0 && total('passed') > 0 ? 0 : 1)
})

runner.on('pass', test => {
  count(groupOf(test), 'passed')
  console.log(`  pass  ${test.fullTitle()} (${test.duration} ms)`)
})
runner.on('pending', test => {
  count(groupOf(test), 'skipped')
  console.log(`  skip  ${test.fullTitle()}`)
})
runner.on('fail', (runnable, err) => {
  if (runnable.type === 'hook') {
    // a failed before-all hook stops its suite's tests: count them here
    const tests = (runnable.parent?.tests ?? []).filter(selected)
    const unsupported = err?.name === 'UnsupportedError'
    for (const test of tests) {
      if (test.state != null) continue
      count(groupOf(test), unsupported ? 'unsupported' : 'failed')
      console.log(`  ${unsupported ? 'n/a ' : 'FAIL'}  ${test.fullTitle()}${unsupported ? ` (${err.message})` : ` (hook: ${err?.message})`}`)
    }
    if (tests.length === 0 || !runnable.title.includes('before')) {
      if (!unsupported) {
        count(groupOf(runnable), 'failed')
        console.log(`  FAIL  ${runnable.fullTitle()}: ${err?.message}`)
      }
    }
    return
  }
  count(groupOf(runnable), 'failed')
  console.log(`  FAIL  ${runnable.fullTitle()}: ${err?.message}`)
})
