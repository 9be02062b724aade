// Small helpers over js-libp2p 3.x message streams (send() + 'drain', async iteration).

/** Bytes per send() call. Large writes keep js from being measured on per-call overhead. */
export const WRITE_CHUNK = 1024 * 1024

/** Sends one buffer, waiting for 'drain' when the stream says its buffer is full. */
export async function send (stream, buf, signal) {
  if (!stream.send(buf)) {
    await stream.onDrain({ signal })
  }
}

/** The Uint8Arrays inside a chunk read from a stream (a Uint8Array or a Uint8ArrayList). */
export function * parts (chunk) {
  if (chunk instanceof Uint8Array) {
    yield chunk
  } else {
    yield * chunk
  }
}

/** Makes `signal` abort the stream, so a read loop blocked in for-await ends with an error. */
export function abortOnSignal (stream, signal) {
  if (signal == null) return () => {}
  const onAbort = () => stream.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
  if (signal.aborted) onAbort()
  signal.addEventListener('abort', onAbort, { once: true })
  return () => signal.removeEventListener('abort', onAbort)
}
