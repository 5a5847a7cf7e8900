import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import WebSocket from 'ws'
import type { WsGuardOptions } from '../../index.js'
import { waitFor } from '../helpers/wait.js'
import { mint, secret, secretBytes } from '../helpers/tokens.js'
import { numberedTokens, recordingApp, track, type RecordingApp, type TrackedClient } from './recorder.js'

/*
 * connect() against real guarded servers, one test per close-code rule of its contract. Refusals
 * arrive as close frames (rejectWith: 'close'); other codes come from route handlers that
 * close with them. Delays are checked against the bounds each close's report gives, and the
 * time a reconnect took against its reported delay, never against a tight clock.
 */

/** Generous: a reconnect may come this much later than its delay on a loaded machine. */
const lateBy = 2000
/** Timers may fire a millisecond early of the rounded delay. */
const earlyBy = 5

/** A guard with JWT auth and close-frame refusals, a `/ws` route that says hello to the user, and `more` routes. */
async function authApp (t: Test, auth: NonNullable<WsGuardOptions['auth']> = {}, more: (app: RecordingApp['app']) => void = () => {}, plugin: WsGuardOptions = {}): Promise<RecordingApp> {
  return await recordingApp(t, { auth: { secret, ...auth }, rejectWith: 'close', ...plugin }, (app) => {
    app.wsRoute('/ws', (socket, request) => socket.send(`hello ${String(request.wsUser?.n)}`))
    more(app)
  })
}

/** A guard without auth whose `/close` route closes every connection with `code` and `reason` (or terminates it). */
async function closingApp (t: Test, code: number | 'terminate', reason = '', plugin: WsGuardOptions = {}): Promise<RecordingApp> {
  return await recordingApp(t, { rejectWith: 'close', ...plugin }, (app) => {
    app.wsRoute('/close', (socket) => code === 'terminate' ? socket.terminate() : socket.close(code, reason))
  })
}

/** Waits for `count` closes; reports then show what the client decided. */
async function closesSeen (client: TrackedClient, count: number, timeout = 5000): Promise<void> {
  await waitFor(() => client.closes().length >= count, `${count} closes`, timeout)
}

/** Asserts that after `client` stopped, no handshake comes for `ms` (it would within minDelay). */
async function staysStopped (t: Test, app: RecordingApp, client: TrackedClient, ms = 300): Promise<void> {
  const handshakes = app.handshakes.length
  await sleep(ms)
  t.equal(app.handshakes.length, handshakes, `no reconnect in ${ms} ms`)
  t.equal(client.handle.state, 'closed', "state is 'closed'")
  t.equal(client.handle.socket, undefined, 'no socket left')
}

test("4401 'token expired' at the handshake: a fresh token, and a reconnect at once", async (t) => {
  const app = await authApp(t)
  const tokens = numberedTokens((n) => n === 1)
  // A backoff would wait up to 60 s: only the immediate reconnect makes this test pass quickly.
  const client = track(t, app.url('/ws'), { token: tokens.token, minDelay: 30_000, maxDelay: 60_000 })
  await waitFor(() => client.events.some((event) => event.type === 'message'), 'the second connection\'s hello')
  t.same(client.closes(), [{ code: 4401, reason: 'token expired', willRetry: true, delay: 0 }], 'one expired close, retried with no delay')
  t.same(client.events.filter((event) => event.type === 'message').map((event) => event.type === 'message' && event.data), ['hello 2'], 'admitted with the second token')
  t.equal(client.tokenCalls.length, 2, 'token() was called again before the reconnect')
  t.same(app.handshakes.map((handshake) => handshake.token), tokens.minted, 'each handshake offered the token just fetched')
  t.ok(client.tokenCalls[1]! >= client.times('close')[0]!, 'the second token was asked for after the close')
  t.equal(client.handle.state, 'open')
})

test("4401 'token expired' while open: reconnects at once with a fresh token", async (t) => {
  // clockTolerance 0: the guard closes the connection the moment its token's exp passes.
  const app = await authApp(t, { clockTolerance: 0 })
  const tokens = numberedTokens()
  let calls = 0
  const shortLived = async () => ++calls === 1 ? await mint(secretBytes, { sub: 'alice', n: 1 }, { exp: Math.floor(Date.now() / 1000) + 1 }) : await tokens.token()
  const client = track(t, app.url('/ws'), { token: shortLived, minDelay: 30_000, maxDelay: 60_000 })
  await waitFor(() => client.events.filter((event) => event.type === 'open').length === 2, 'the reconnect', 5000)
  t.same(client.closes(), [{ code: 4401, reason: 'token expired', willRetry: true, delay: 0 }], 'closed on expiry, retried with no delay')
  t.equal(client.tokenCalls.length, 2, 'a fresh token for the reconnect')
  t.equal(app.handshakes[1]?.token, tokens.minted[0], 'the reconnect offered the fresh token')
})

test("4401 'token expired' again right after the immediate reconnect: backoff, so a broken token source cannot spin", async (t) => {
  const app = await authApp(t)
  const tokens = numberedTokens(() => true)
  const client = track(t, app.url('/ws'), { token: tokens.token, minDelay: 50, maxDelay: 150, maxRetries: 4 })
  await closesSeen(client, 5)
  const closes = client.closes()
  t.same(closes.map(({ code, reason }) => [code, reason]), Array(5).fill([4401, 'token expired']), 'every connection refused as expired')
  t.same(closes[0], { code: 4401, reason: 'token expired', willRetry: true, delay: 0 }, 'the first expiry: at once')
  for (const [i, cap] of [[1, 100], [2, 150], [3, 150]] as const) {
    const report = closes[i]!
    t.ok(report.willRetry && report.delay >= 0 && report.delay <= cap, `expiry ${i + 1}: backoff within [0, ${cap}] ms (${report.willRetry && report.delay.toFixed(1)})`)
  }
  t.same(closes[4], { code: 4401, reason: 'token expired', willRetry: false }, 'maxRetries reached: stopped')
  t.equal(client.tokenCalls.length, 5, 'token() before every connection')
  await staysStopped(t, app, client)
})

test('4401 for any other reason stops: authentication required, invalid token, token revoked', async (t) => {
  const cases = [
    { reason: 'authentication required', auth: {}, token: undefined },
    { reason: 'invalid token', auth: {}, token: async () => await mint(new TextEncoder().encode('another secret, another issuer, 0123456789abcdef'), { sub: 'alice' }) },
    { reason: 'token revoked', auth: { isRevoked: () => true }, token: numberedTokens().token }
  ]
  for (const { reason, auth, token } of cases) {
    await t.test(reason, async (t) => {
      const app = await authApp(t, auth)
      const client = track(t, app.url('/ws'), { minDelay: 10, ...(token === undefined ? {} : { token }) })
      await closesSeen(client, 1)
      t.same(client.closes(), [{ code: 4401, reason, willRetry: false }], 'reported, not retried')
      await staysStopped(t, app, client)
      t.equal(app.handshakes.length, 1, 'one handshake in all')
    })
  }
})

test('4403 stops: forbidden, origin not allowed, disconnected', async (t) => {
  /** ws with an Origin header, as a page on another site would send. */
  class ForeignPage extends WebSocket {
    constructor (url: string, protocols: string[]) {
      super(url, protocols, { origin: 'https://evil.example' })
    }
  }
  const cases = [
    { reason: 'forbidden', auth: { authorize: () => false }, path: '/ws', WebSocket },
    { reason: 'origin not allowed', auth: {}, path: '/ws', WebSocket: ForeignPage },
    { reason: 'disconnected', auth: {}, path: '/kick', WebSocket }
  ]
  for (const { reason, auth, path, WebSocket } of cases) {
    await t.test(reason, async (t) => {
      const app = await authApp(t, auth, (app) => app.wsRoute('/kick', (socket) => socket.close(4403, 'disconnected')))
      const tokens = numberedTokens()
      const client = track(t, app.url(path), { token: tokens.token, minDelay: 10, WebSocket })
      await closesSeen(client, 1)
      t.same(client.closes(), [{ code: 4403, reason, willRetry: false }], 'reported, not retried')
      await staysStopped(t, app, client)
      t.equal(client.tokenCalls.length, 1, 'one token in all')
    })
  }
})

test('4400 and 4404 stop', async (t) => {
  await t.test("4400 'unsupported protocol'", async (t) => {
    const app = await closingApp(t, 1000, '', { protocols: ['chat.v1'], requireProtocol: true })
    const client = track(t, app.url('/close'), { protocols: ['chat.v0'], minDelay: 10 })
    await closesSeen(client, 1)
    t.same(client.closes(), [{ code: 4400, reason: 'unsupported protocol', willRetry: false }])
    await staysStopped(t, app, client)
  })
  await t.test("4404 'not found'", async (t) => {
    const app = await closingApp(t, 4404, 'not found')
    const client = track(t, app.url('/close'), { minDelay: 10 })
    await closesSeen(client, 1)
    t.same(client.closes(), [{ code: 4404, reason: 'not found', willRetry: false }])
    await staysStopped(t, app, client)
  })
})

test('1001, 1013 and 4429 with a retry-after hint: a delay in [hint, 1.5 × hint]', async (t) => {
  const cases = [
    { code: 1001, reason: 'server shutting down; retry-after=300', hint: 300 },
    { code: 1013, reason: 'server at capacity; retry-after=200', hint: 200 },
    { code: 4429, reason: 'too many connections; retry-after=250', hint: 250 }
  ]
  for (const { code, reason, hint } of cases) {
    await t.test(reason, async (t) => {
      const app = await closingApp(t, code, reason)
      const client = track(t, app.url('/close'), { minDelay: 10, maxDelay: 2000, maxRetries: 2 })
      await closesSeen(client, 3)
      const closes = client.closes()
      for (const [i, report] of closes.slice(0, 2).entries()) {
        if (!report.willRetry) {
          t.fail(`close ${i + 1} was not retried`)
          continue
        }
        t.equal(report.code, code)
        t.ok(report.delay >= hint && report.delay <= hint * 1.5, `close ${i + 1}: ${report.delay.toFixed(1)} ms is within [${hint}, ${hint * 1.5}]`)
        const waited = app.handshakes[i + 1]!.at - client.times('close')[i]!
        t.ok(waited >= report.delay - earlyBy && waited <= report.delay + lateBy, `the reconnect came after its delay (${waited} ms)`)
      }
      t.same(closes[2], { code, reason, willRetry: false }, 'maxRetries still applies')
    })
  }
})

test('a hint is clamped: never under minDelay, never so long that the wait passes maxDelay', async (t) => {
  await t.test('retry-after=5000 with maxDelay 600: within [400, 600]', async (t) => {
    const app = await closingApp(t, 1013, 'server at capacity; retry-after=5000')
    const client = track(t, app.url('/close'), { minDelay: 10, maxDelay: 600, maxRetries: 1 })
    await closesSeen(client, 2)
    const [first] = client.closes()
    t.ok(first?.willRetry && first.delay >= 400 && first.delay <= 600, `${first?.willRetry && first.delay.toFixed(1)} ms`)
  })
  await t.test('retry-after=0 with minDelay 100: within [100, 150]', async (t) => {
    const app = await closingApp(t, 1001, 'restarting; retry-after=0')
    const client = track(t, app.url('/close'), { minDelay: 100, maxDelay: 1000, maxRetries: 1 })
    await closesSeen(client, 2)
    const [first] = client.closes()
    t.ok(first?.willRetry && first.delay >= 100 && first.delay <= 150, `${first?.willRetry && first.delay.toFixed(1)} ms`)
  })
})

test("the guard's own 1013 and 4429 refusals are retried within maxDelay", async (t) => {
  await t.test('1013: maxConnections reached', async (t) => {
    const app = await authApp(t, {}, () => {}, { maxConnections: 1 })
    const first = track(t, app.url('/ws'), { token: numberedTokens().token })
    await waitFor(() => first.handle.state === 'open', 'the first connection')
    const second = track(t, app.url('/ws'), { token: numberedTokens().token, minDelay: 10, maxDelay: 300, maxRetries: 1 })
    await closesSeen(second, 2)
    const [refused] = second.closes()
    t.equal(refused?.code, 1013)
    t.match(refused?.reason, /^server at capacity/)
    t.ok(refused?.willRetry && refused.delay <= 300, 'retried within maxDelay')
  })
  await t.test('4429: maxConnectionsPerUser reached', async (t) => {
    const app = await authApp(t, {}, () => {}, { maxConnectionsPerUser: 1 })
    const first = track(t, app.url('/ws'), { token: numberedTokens().token })
    await waitFor(() => first.handle.state === 'open', 'the first connection')
    const second = track(t, app.url('/ws'), { token: numberedTokens().token, minDelay: 10, maxDelay: 300, maxRetries: 1 })
    await closesSeen(second, 2)
    const [refused] = second.closes()
    t.equal(refused?.code, 4429)
    t.match(refused?.reason, /^too many connections/)
    t.ok(refused?.willRetry && refused.delay <= 300, 'retried within maxDelay')
  })
})

test('without a hint, 1001, 1013 and 4429 back off', async (t) => {
  for (const code of [1001, 1013, 4429]) {
    const app = await closingApp(t, code, 'no hint here')
    const client = track(t, app.url('/close'), { minDelay: 40, maxDelay: 1000, maxRetries: 1 })
    await closesSeen(client, 2)
    const [first] = client.closes()
    t.ok(first?.willRetry && first.delay >= 0 && first.delay <= 40, `${code}: within [0, minDelay] (${first?.willRetry && first.delay.toFixed(1)} ms)`)
  }
})

test('1006, 1000, 1008, 1009 and 1011 back off, the cap doubling per attempt up to maxDelay', async (t) => {
  const cases = [
    { code: 'terminate', expected: 1006, reason: '' },
    { code: 1000, expected: 1000, reason: 'bye' },
    { code: 1008, expected: 1008, reason: 'policy' },
    { code: 1009, expected: 1009, reason: 'too big' },
    { code: 1011, expected: 1011, reason: 'internal error' }
  ] as const
  for (const { code, expected, reason } of cases) {
    await t.test(String(expected), async (t) => {
      const app = await closingApp(t, code, reason)
      const client = track(t, app.url('/close'), { minDelay: 20, maxDelay: 100, maxRetries: 5 })
      await closesSeen(client, 6)
      const closes = client.closes()
      const closedAt = client.times('close')
      for (const [i, report] of closes.slice(0, 5).entries()) {
        const cap = Math.min(100, 20 * 2 ** i)
        if (!report.willRetry) {
          t.fail(`close ${i + 1} was not retried`)
          continue
        }
        t.same([report.code, report.reason], [expected, reason])
        t.ok(report.delay >= 0 && report.delay <= cap, `attempt ${i + 1}: ${report.delay.toFixed(1)} ms within [0, ${cap}]`)
        const waited = app.handshakes[i + 1]!.at - closedAt[i]!
        t.ok(waited >= report.delay - earlyBy && waited <= report.delay + lateBy, `the reconnect came after its delay (${waited} ms)`)
      }
      t.same(closes[5], { code: expected, reason, willRetry: false }, 'stopped after maxRetries')
      t.equal(app.handshakes.length, 6, 'one connection and five reconnects')
    })
  }
})

test('1006 from a server that is gone: backs off', async (t) => {
  const app = await closingApp(t, 1000)
  const url = app.url('/close')
  await app.app.close()
  const client = track(t, url, { minDelay: 20, maxDelay: 100, maxRetries: 2 })
  await closesSeen(client, 3)
  t.same(client.closes().map((report) => [report.code, report.willRetry]), [[1006, true], [1006, true], [1006, false]])
})

test('app.close() sends 1001: the client reconnects, and backs off while the server is away', async (t) => {
  const app = await authApp(t)
  const client = track(t, app.url('/ws'), { token: numberedTokens().token, minDelay: 20, maxDelay: 100, maxRetries: 2 })
  await waitFor(() => client.handle.state === 'open', 'the connection')
  await app.app.close()
  await closesSeen(client, 3)
  const [shutdown, ...refused] = client.closes()
  t.equal(shutdown?.code, 1001)
  t.match(shutdown?.reason, /^server shutting down/)
  t.ok(shutdown?.willRetry && shutdown.delay <= 100, 'retried within maxDelay')
  // While the app closes, a reconnect meets the guard's 1013 or no listener at all (1006).
  t.ok(refused.every((report) => report.code === 1013 || report.code === 1006), `then refused (${refused.map((report) => report.code).join(', ')})`)
  t.same(refused.map((report) => report.willRetry), [true, false], 'backed off until maxRetries')
})

test('a connection that stayed open stableAfter ms starts the backoff and the retry count over', async (t) => {
  const app = await recordingApp(t, {}, (app) => {
    app.wsRoute('/late', (socket) => { setTimeout(() => socket.close(1011, 'internal error'), 150) })
  })
  // maxRetries 1: without the reset, the second close would stop.
  const client = track(t, app.url('/late'), { minDelay: 40, maxDelay: 10_000, stableAfter: 50, maxRetries: 1 })
  await closesSeen(client, 3)
  for (const [i, report] of client.closes().entries()) {
    t.ok(report.willRetry && report.delay <= 40, `close ${i + 1}: retried within [0, minDelay] (${report.willRetry && report.delay.toFixed(1)} ms)`)
  }
})
