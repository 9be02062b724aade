// /perf/1.0.0, written from https://github.com/libp2p/specs/blob/master/perf/perf.md:
// the client sends an 8-byte big-endian u64 (how many bytes it wants back), then its upload,
// then closes its write side and reads until EOF. The server reads the u64, reads and discards
// until EOF, then sends that many bytes and closes.
import { WRITE_CHUNK, abortOnSignal, parts, send } from './streams.mjs'

export const PerfProtocol = '/perf/1.0.0'

const ZEROS = new Uint8Array(WRITE_CHUNK)

async function sendZeros (stream, count, signal) {
  for (let sent = 0; sent < count;) {
    const n = Math.min(ZEROS.length, count - sent)
    await send(stream, n === ZEROS.length ? ZEROS : ZEROS.subarray(0, n), signal)
    sent += n
  }
}

export async function perfServer (stream) {
  const header = new Uint8Array(8)
  let headerLen = 0
  let discarded = 0
  for await (const chunk of stream) {
    for (const part of parts(chunk)) {
      const take = Math.min(8 - headerLen, part.length)
      if (take > 0) {
        header.set(part.subarray(0, take), headerLen)
        headerLen += take
      }
      discarded += part.length - take
    }
  }
  if (headerLen < 8) throw new Error(`perf: stream ended after ${headerLen} of 8 header bytes`)
  const wanted = new DataView(header.buffer).getBigUint64(0, false)
  if (wanted > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`perf: unreasonable download size ${wanted}`)
  await sendZeros(stream, Number(wanted))
  await stream.close()
  return discarded
}

/**
 * Client side. Upload time runs from the first write until the first downloaded byte (or EOF
 * when nothing is downloaded): the server only answers after it has read our whole upload, so
 * that instant proves the upload arrived. Download time runs from there to EOF.
 */
export async function perfClient (stream, upload, download, signal) {
  const detach = abortOnSignal(stream, signal)
  try {
    const header = new Uint8Array(8)
    new DataView(header.buffer).setBigUint64(0, BigInt(download), false)
    const start = performance.now()
    let firstByteAt = null
    const reader = (async () => {
      let received = 0
      for await (const chunk of stream) {
        if (firstByteAt == null && chunk.byteLength > 0) firstByteAt = performance.now()
        received += chunk.byteLength
      }
      return received
    })()
    const writer = (async () => {
      await send(stream, header, signal)
      await sendZeros(stream, upload, signal)
      await stream.close({ signal })
      return performance.now()
    })()
    const [writeClosedAt, received] = await Promise.all([writer, reader])
    const end = performance.now()
    const uploadEnd = firstByteAt ?? end
    if (received !== download) throw new Error(`perf: asked for ${download} bytes, received ${received}`)
    return {
      uploadBytes: upload,
      downloadBytes: received,
      uploadMs: uploadEnd - start,
      downloadMs: end - uploadEnd,
      totalMs: end - start,
      writeClosedMs: writeClosedAt - start
    }
  } finally {
    detach()
  }
}
