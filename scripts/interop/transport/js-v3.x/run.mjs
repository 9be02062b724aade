// Runs the js v3.x transport-interop app as its image's entry point (`aegir test -t node`) does, without aegir:
// .aegir.js's test.before() (the Redis client and its HTTP proxy), then mocha on the compiled test/*.spec.ts
// with the environment before() returned, then test.after(). Expects IS_DIALER, REDIS_ADDR, TEST_KEY,
// TRANSPORT, SECURE_CHANNEL, MUXER and LISTENER_IP as the transport-interop contract sets them.
import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const polyfills = path.resolve(here, '../../../../tests/Interop/js/polyfills.mjs')
const { default: config } = await import('./.aegir.js')
const context = await config.test.before()
const code = await new Promise(resolve => {
  const mocha = spawn(process.execPath, [
    path.join(here, 'node_modules/mocha/bin/mocha.js'), '--exit', '--timeout', '240000',
    path.join(here, 'dist/test/dialer.spec.js'), path.join(here, 'dist/test/listener.spec.js')
  ], {
    env: { ...context.env, NODE_OPTIONS: `--import=${polyfills}` },
    stdio: 'inherit'
  })
  const stop = () => mocha.kill('SIGTERM')
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  mocha.once('exit', (c, signal) => resolve(c ?? (signal != null ? 143 : 1)))
})
await config.test.after(undefined, context)
process.exit(code)
