import { once } from 'node:events'
import { createServer, connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { boundClose, requireBinary, type Gate } from './system.js'

/** A stand-in test that records what requireBinary asked of it. */
function recordingGate (): Gate & { calls: Array<[string, unknown[]]> } {
  const calls: Array<[string, unknown[]]> = []
  const record = (name: string) => (...args: unknown[]) => { calls.push([name, args]) }
  return { calls, plan: record('plan'), fail: record('fail'), comment: record('comment') } as unknown as Gate & { calls: Array<[string, unknown[]]> }
}

test('a present binary lets the test run and touches nothing', async (t) => {
  const gate = recordingGate()
  t.equal(requireBinary(gate, process.execPath, 'nodejs', { env: { CI: 'true' } }), true)
  t.same(gate.calls, [])
})

test('a present binary whose probe exits 0 lets the test run', async (t) => {
  const gate = recordingGate()
  t.equal(requireBinary(gate, process.execPath, 'nodejs', { probe: ['-e', ''], env: {} }), true)
  t.same(gate.calls, [])
})

test('locally, a missing binary skips the test with a reason naming the package', async (t) => {
  const gate = recordingGate()
  t.equal(requireBinary(gate, '/nonexistent/e2e-binary', 'some-debian-package', { env: {} }), false)
  // plan(0, reason) is how a tap test skips itself: it reports "# SKIP reason".
  t.same(gate.calls.map(([name]) => name), ['comment', 'plan'])
  t.match(gate.calls[1]?.[1], [0, /\/nonexistent\/e2e-binary is missing.*apt-get install -y some-debian-package/])
})

test('under CI=true, a missing binary fails the test instead of skipping it', async (t) => {
  const gate = recordingGate()
  t.equal(requireBinary(gate, '/nonexistent/e2e-binary', 'some-debian-package', { env: { CI: 'true' } }), false)
  t.same(gate.calls.map(([name]) => name), ['fail'])
  t.match(gate.calls[0]?.[1][0], /^CI=true and \/nonexistent\/e2e-binary is missing or not executable: install the Debian package some-debian-package/)
})

test('CI is read from process.env by default', async (t) => {
  const saved = process.env.CI
  t.teardown(() => {
    if (saved === undefined) delete process.env.CI
    else process.env.CI = saved
  })
  process.env.CI = 'true'
  const gate = recordingGate()
  t.equal(requireBinary(gate, '/nonexistent/e2e-binary', 'pkg'), false)
  t.same(gate.calls.map(([name]) => name), ['fail'])
})

test('a failing probe counts as missing, with its exit status and last stderr line', async (t) => {
  const gate = recordingGate()
  const probe = ['-e', 'console.error("ModuleNotFoundError: websockets"); process.exit(3)']
  t.equal(requireBinary(gate, process.execPath, 'python3-websockets', { probe, env: {} }), false)
  t.same(gate.calls.map(([name]) => name), ['comment', 'plan'])
  t.match(gate.calls[1]?.[1], [0, /failed \(exit 3: ModuleNotFoundError: websockets\).*python3-websockets/])
})

test('a probe that cannot finish counts as missing, with the spawn error', async (t) => {
  const gate = recordingGate()
  // A directory is "executable" (searchable) but cannot be spawned.
  t.equal(requireBinary(gate, '/', 'pkg', { probe: ['--version'], env: {} }), false)
  t.match(gate.calls[1]?.[1], [0, /\/ --version failed \(spawnSync \/ E/])
})

test('boundClose destroys a leaked connection so that closing the server cannot hang', async (t) => {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  // The client never ends its side: without boundClose, server.close() would wait for it forever.
  const client = connect(port, '127.0.0.1')
  client.on('error', () => {})
  t.teardown(() => { client.destroy() })
  let closedAt = 0
  const started = Date.now()
  await t.test('a test that leaks a connection', async (t) => {
    t.teardown(() => new Promise<void>((resolve) => server.close(() => {
      closedAt = Date.now()
      resolve()
    })))
    boundClose(t, server, 100)
    await once(server, 'connection')
  })
  const elapsed = closedAt - started
  t.ok(closedAt > 0 && elapsed >= 100 && elapsed < 2000, `the server closed ${elapsed} ms after the grace of 100 ms started`)
  const cut = await Promise.race([once(client, 'close').then(() => true), sleep(1000).then(() => false)])
  t.equal(cut, true, 'the leaked connection was cut')
})
