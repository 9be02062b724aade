// /potluck/echo/1.0.0: the server echoes everything until the remote closes its write side,
// then closes. The client's payload is deterministic: byte i is PATTERN[i % PATTERN.length],
// where PATTERN is 65521 bytes of xorshift32 output (seed 0x2545F491, each state written
// little-endian), so any implementation can produce or check it.
import { WRITE_CHUNK, abortOnSignal, parts, send } from './streams.mjs'

export const EchoProtocol = '/potluck/echo/1.0.0'

export const PATTERN = (() => {
  const period = 65521
  const out = new Uint8Array(period + 3)
  let x = 0x2545F491
  for (let i = 0; i < period; i += 4) {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    out[i] = x & 0xff; out[i + 1] = (x >>> 8) & 0xff; out[i + 2] = (x >>> 16) & 0xff; out[i + 3] = x >>> 24
  }
  return out.subarray(0, period)
})()

/** Pattern bytes [0, n): n is a multiple of the period, so every full chunk is identical. */
const CHUNK = (() => {
  const copies = Math.max(1, Math.floor(WRITE_CHUNK / PATTERN.length))
  const out = new Uint8Array(copies * PATTERN.length)
  for (let i = 0; i < copies; i++) out.set(PATTERN, i * PATTERN.length)
  return out
})()

export async function echoServer (stream) {
  for await (const chunk of stream) {
    await send(stream, chunk)
  }
  await stream.close()
}

/** Whether `data` equals the pattern bytes starting at stream offset `offset`. */
function matchesPattern (data, offset) {
  let j = 0
  while (j < data.length) {
    const p = (offset + j) % PATTERN.length
    const n = Math.min(data.length - j, PATTERN.length - p)
    if (Buffer.compare(data.subarray(j, j + n), PATTERN.subarray(p, p + n)) !== 0) return false
    j += n
  }
  return true
}

export async function echoClient (stream, bytes, signal) {
  const detach = abortOnSignal(stream, signal)
  const start = performance.now()
  try {
    const reader = (async () => {
      let received = 0
      let matched = true
      for await (const chunk of stream) {
        for (const part of parts(chunk)) {
          if (matched && (received + part.length > bytes || !matchesPattern(part, received))) matched = false
          received += part.length
        }
      }
      return { received, matched }
    })()
    // If writing fails, the reader still has to be awaited (or it rejects unobserved).
    const writer = (async () => {
      for (let sent = 0; sent < bytes;) {
        const n = Math.min(CHUNK.length, bytes - sent)
        await send(stream, n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n), signal)
        sent += n
      }
      await stream.close({ signal })
    })()
    const [, { received, matched }] = await Promise.all([writer, reader])
    return {
      sent: bytes,
      received,
      matched: matched && received === bytes,
      durationMs: performance.now() - start
    }
  } finally {
    detach()
  }
}
