#!/usr/bin/env node
// js-libp2p <-> js-libp2p /perf/1.0.0 throughput over loopback, for side-by-side comparison
// with Potluck. Starts two tests/Interop/js/peer.mjs processes on 127.0.0.1, has one run the
// perf client against the other `--runs` times, prints MB/s (10^6 bytes/s) per direction and
// exits. Every run is bounded by --timeout seconds.
//
//   node scripts/bench/js-perf.mjs [--size 256MiB] [--runs 5] [--timeout 120]
//   (needs: npm ci --prefix tests/Interop/js)
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const jsDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'tests', 'Interop', 'js')

function parseSize (text) {
  const m = /^(\d+)\s*(B|KiB|MiB|GiB)?$/i.exec(text)
  if (m == null) throw new Error(`bad size ${text} (use e.g. 256MiB)`)
  const unit = { b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 }[(m[2] ?? 'B').toLowerCase()]
  return Number(m[1]) * unit
}

const args = { size: '256MiB', runs: '5', timeout: '120' }
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '')
  if (!(key in args) || process.argv[i + 1] == null) {
    console.error('usage: js-perf.mjs [--size 256MiB] [--runs 5] [--timeout 120]')
    process.exit(2)
  }
  args[key] = process.argv[i + 1]
}
const size = parseSize(args.size)
const runs = Number(args.runs)
const timeoutMs = Number(args.timeout) * 1000

if (!existsSync(join(jsDir, 'node_modules'))) {
  console.error('node_modules missing: run `npm ci --prefix tests/Interop/js` first')
  process.exit(2)
}

function startPeer (name) {
  const child = spawn(process.execPath, ['peer.mjs', '--listen', '/ip4/127.0.0.1/tcp/0'], {
    cwd: jsDir, stdio: ['pipe', 'pipe', 'pipe']
  })
  child.stderr.on('data', d => process.stderr.write(`[${name}] ${d}`))
  const pending = new Map()
  let nextId = 1
  let onReady
  const ready = new Promise((resolve, reject) => {
    onReady = resolve
    child.once('exit', code => reject(new Error(`${name} exited with ${code} before ready`)))
  })
  createInterface({ input: child.stdout }).on('line', line => {
    const msg = JSON.parse(line)
    if (msg.event === 'ready') { onReady(msg); return }
    const waiter = pending.get(msg.id)
    if (waiter == null) return
    pending.delete(msg.id)
    if (msg.ok) waiter.resolve(msg); else waiter.reject(new Error(`${name}: ${msg.error}`))
  })
  return {
    ready,
    child,
    send (cmd, fields = {}) {
      const id = nextId++
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject })
        child.stdin.write(JSON.stringify({ id, cmd, timeoutMs, ...fields }) + '\n')
      })
    }
  }
}

const server = startPeer('server')
const client = startPeer('client')
const killAll = () => { server.child.kill('SIGKILL'); client.child.kill('SIGKILL') }
const watchdog = setTimeout(() => {
  console.error('js-perf: overall timeout, giving up')
  killAll()
  process.exit(1)
}, timeoutMs * (runs + 1))

const mb = (bytes, ms) => (bytes / 1e6) / (ms / 1000)
try {
  const [serverInfo] = await Promise.all([server.ready, client.ready])
  const addr = serverInfo.addrs[0]
  await client.send('dial', { addr })
  const version = JSON.parse(readFileSync(join(jsDir, 'node_modules', 'libp2p', 'package.json'), 'utf8')).version
  console.log(`js-libp2p ${version} perf over loopback: ${size} bytes up and down, ${runs} runs (${addr})`)
  const ups = []
  const downs = []
  for (let r = 1; r <= runs; r++) {
    const res = await client.send('perf', { addr, upload: size, download: size })
    ups.push(mb(res.uploadBytes, res.uploadMs))
    downs.push(mb(res.downloadBytes, res.downloadMs))
    console.log(`run ${r}: upload ${ups.at(-1).toFixed(1)} MB/s (${res.uploadMs.toFixed(0)} ms), download ${downs.at(-1).toFixed(1)} MB/s (${res.downloadMs.toFixed(0)} ms)`)
  }
  const median = xs => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  console.log(`median: upload ${median(ups).toFixed(1)} MB/s, download ${median(downs).toFixed(1)} MB/s`)
  console.log(`best:   upload ${Math.max(...ups).toFixed(1)} MB/s, download ${Math.max(...downs).toFixed(1)} MB/s`)
  await Promise.all([client.send('exit'), server.send('exit')])
} catch (err) {
  console.error(`js-perf failed: ${err.message}`)
  process.exitCode = 1
} finally {
  clearTimeout(watchdog)
  killAll()
}
