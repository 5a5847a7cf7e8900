import { channel } from 'node:diagnostics_channel'
import { EventEmitter, once } from 'node:events'
import { createServer } from 'node:net'
import t, { test, type Test } from 'tap'
import WebSocket from 'ws'
import { closeOnSignals, startDemo, type StartedDemo } from '../../example/demo-app.js'
import { scenarios } from '../../example/lab.js'
import { channels } from '../../index.js'
import { LogCapture } from '../helpers/logs.js'
import { chromiumPath, launchBrowser, newContext } from './browser-harness.js'
import { boundClose, requireBinary } from './system.js'

// Chromium, nine scenarios one after the other, a refresh that waits out an expiry: more than
// the default 30 s on a busy machine.
t.setTimeout(120_000)

/** What every scenario must show: the close the client sees, the http twin's answer, a log line's code. */
const expected: Record<string, { close: [number, string], status: number, code: string | null, log: string }> = {
  valid: { close: [1000, 'done'], status: 101, code: null, log: 'accepted' },
  expired: { close: [4401, 'token expired'], status: 401, code: 'FST_WS_GUARD_TOKEN_EXPIRED', log: 'FST_WS_GUARD_TOKEN_EXPIRED' },
  'bad-signature': { close: [4401, 'invalid token'], status: 401, code: 'FST_WS_GUARD_TOKEN_INVALID', log: 'FST_WS_GUARD_TOKEN_INVALID' },
  'wrong-audience': { close: [4401, 'invalid token'], status: 401, code: 'FST_WS_GUARD_TOKEN_INVALID', log: 'FST_WS_GUARD_TOKEN_INVALID' },
  'no-token': { close: [4401, 'authentication required'], status: 401, code: 'FST_WS_GUARD_TOKEN_MISSING', log: 'FST_WS_GUARD_TOKEN_MISSING' },
  'foreign-origin': { close: [4403, 'origin not allowed'], status: 403, code: 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', log: 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED' },
  // No safe subprotocol for a 101: answered over HTTP even on a close route.
  'bearer-only': { close: [1006, ''], status: 400, code: 'FST_WS_GUARD_PROTOCOL_REQUIRED', log: 'FST_WS_GUARD_PROTOCOL_REQUIRED' },
  silent: { close: [1006, ''], status: 101, code: null, log: 'closed · heartbeatTimeout 1006' },
  refresh: { close: [1000, 'done'], status: 101, code: null, log: 'refreshed' }
}

type LogLine = Record<string, unknown> & { reqId?: string, msg: string, wsGuard?: Record<string, unknown>, wsDemo?: Record<string, unknown> }

/** The demo on free ports, its log lines captured; closed (with both servers) in teardown. */
async function start (t: Test): Promise<StartedDemo & { output: LogCapture }> {
  const output = new LogCapture()
  const demo = await startDemo({ host: '127.0.0.1', port: 0, foreignPort: 0, logLevel: 'info', logOutput: output })
  t.teardown(() => demo.app.close())
  boundClose(t, demo.app.server)
  return { ...demo, output }
}

/** No log line carries anything shaped like a JWT. */
function assertNoToken (t: Test, output: LogCapture): void {
  t.notMatch(output.text, /eyJ[\w-]+\.eyJ/, `none of ${output.lines.length} log lines holds a token`)
}

interface Seen { opened: boolean, protocol: string, messages: Array<Record<string, unknown>>, code: number, reason: string }

/** A Node client doing what the lab page does: open, keep the messages, report the close. */
function connect (url: string, protocols: string[], origin?: string) {
  const socket = new WebSocket(url, protocols, origin === undefined ? {} : { origin })
  const seen: Seen = { opened: false, protocol: '', messages: [], code: 0, reason: '' }
  const waiters: Array<() => void> = []
  socket.on('message', (data) => {
    seen.messages.push(JSON.parse(String(data)))
    for (const wake of waiters.splice(0)) wake()
  })
  socket.on('error', () => {})
  const opened = new Promise<void>((resolve) => {
    socket.once('open', () => {
      seen.opened = true
      seen.protocol = socket.protocol
      resolve()
    })
    socket.once('close', () => resolve())
  })
  const closed = new Promise<Seen>((resolve) => socket.once('close', (code, reason) => resolve({ ...seen, code, reason: String(reason) })))
  /** The first message of `type`, already received or to come. */
  const message = async (type: string): Promise<Record<string, unknown>> => {
    for (;;) {
      const found = seen.messages.find((candidate) => candidate.type === type)
      if (found !== undefined) return found
      await new Promise<void>((resolve) => waiters.push(resolve))
    }
  }
  return { socket, opened, closed, message }
}

async function api<T = Record<string, unknown>> (base: string, method: string, path: string, body?: unknown): Promise<{ status: number, body: T }> {
  const response = await fetch(new URL(path, base), body === undefined ? { method } : { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: response.status, body: await response.json() as T }
}

function offered (offer: string, token: string | null): string[] {
  if (offer === 'appOnly') return ['lab.v1']
  if (offer === 'tokenOnly') return [`bearer.${token}`]
  return ['lab.v1', `bearer.${token}`]
}

test('the lab from Node: each scenario as the page plays it, the twin, the log lines, the stats, the shutdown', async (t) => {
  const demo = await start(t)
  const wsBase = demo.url.replace(/^http/, 'ws')
  const foreignOrigin = demo.foreignUrl.slice(0, -1)

  t.test('the pages and their helpers', async (t) => {
    const page = await (await fetch(demo.url)).text()
    t.match(page, '<meta name="viewport" content="width=device-width, initial-scale=1">', 'readable on a phone')
    for (const scenario of scenarios) t.match(page, `data-scenario="${scenario.id}"`, `a card for ${scenario.id}`)
    t.notMatch(page, /(src|href)="https?:/, 'no external asset')
    t.match(page, 'Only bearer.&lt;token&gt;', 'titles are escaped')
    const redirect = await fetch(new URL('/lab/foreign?run=0123abcd', demo.url), { redirect: 'manual' })
    t.equal(redirect.headers.get('location'), `${demo.foreignUrl}?run=0123abcd`, 'the lab sends the frame to the second port')
    const foreign = await (await fetch(demo.foreignUrl)).text()
    t.match(foreign, `"target":"${wsBase}lab/close/handshake"`, 'the foreign page targets the lab route')
    t.match(foreign, `"mainOrigin":"${demo.url.slice(0, -1)}"`, 'and answers to the lab page only')
    t.match(await (await fetch(new URL('/client.js', demo.foreignUrl))).text(), /^export function bearerProtocols/)
    t.equal((await fetch(new URL('/favicon.ico', demo.foreignUrl))).status, 204)
    t.equal((await api(demo.foreignUrl, 'GET', '/token')).body.token?.toString().split('.').length, 3, 'a token for the foreign page')
    const { body: { token } } = await api<{ token: string }>(demo.url, 'GET', `/dev-token?name=${encodeURIComponent('<b>')}`)
    t.equal(JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).sub, 'guest', 'the chat\'s development tokens take safe names only')
  })

  t.test('refusals and acceptances: the client sees the close, the twin answers over HTTP, both are logged', async (t) => {
    for (const scenario of scenarios.filter((candidate) => candidate.variant === 'handshake')) {
      const want = expected[scenario.id]!
      const { body: run } = await api<{ id: string, token: string | null }>(demo.url, 'POST', '/lab/runs', { scenario: scenario.id })
      const url = `${wsBase}lab/close/handshake?run=${run.id}&as=${scenario.client === 'foreign' ? 'foreign' : 'page'}`
      const client = connect(url, offered(scenario.offer, run.token), scenario.client === 'foreign' ? foreignOrigin : undefined)
      await client.opened
      const replay = await api<Record<string, unknown>>(demo.url, 'POST', `/lab/runs/${run.id}/replay`)
      if (scenario.id === 'valid') {
        t.match(await client.message('welcome'), { sub: 'lab-user' }, 'valid: the route ran and knows its user')
        client.socket.close(1000, 'done')
      }
      const seen = await client.closed
      t.same([seen.code, seen.reason], want.close, `${scenario.id}: the client sees ${want.close.join(' ')}`)
      t.match(replay, { status: 200, body: { status: want.status, code: want.code } }, `${scenario.id}: the twin answers ${want.status} ${want.code}`)
      const { body: { lines } } = await api<{ lines: LogLine[] }>(demo.url, 'GET', `/lab/runs/${run.id}/logs`)
      const codes = lines.map((line) => line.wsGuard?.code ?? line.wsDemo?.event)
      t.same(codes.filter((code) => code === want.log).length, 2, `${scenario.id}: two lines ${want.log}, the client's request and the twin's`)
    }
  })

  t.test('the silent client is cut by the read deadline, without a close frame', async (t) => {
    const { body: run } = await api<{ id: string }>(demo.url, 'POST', '/lab/runs', { scenario: 'silent' })
    const { body: outcome } = await api<Record<string, unknown> & { pings: number, silentMs: number }>(demo.url, 'POST', `/lab/runs/${run.id}/silent`)
    t.match(outcome, { answer: { status: 101, protocol: 'lab.v1' }, dataFrames: 1, closeFrames: 0 }, 'a 101, the welcome, then no close frame')
    t.ok(outcome.pings >= 2, `pinged and never answered (${outcome.pings} pings)`)
    t.ok(outcome.silentMs >= 1000 && outcome.silentMs < 2500, `cut after the 1 s read deadline (${outcome.silentMs} ms)`)
    const { body: { lines } } = await api<{ lines: LogLine[] }>(demo.url, 'GET', `/lab/runs/${run.id}/logs`)
    t.match(lines.at(-1), { reqId: `${run.id}.silent`, wsDemo: { event: 'closed', route: '/lab/close/silent', reason: 'heartbeatTimeout', code: 1006 } }, 'logged as a heartbeat timeout')
  })

  t.test('a token refreshed over lab.v1 outlives the one it replaced; a refused one closes with 4401', async (t) => {
    const { body: run } = await api<{ id: string, token: string }>(demo.url, 'POST', '/lab/runs', { scenario: 'refresh' })
    const url = `${wsBase}lab/close/refresh?run=${run.id}&as=page`
    const main = connect(url, offered('bearerProtocols', run.token))
    const control = connect(url.replace('as=page', 'as=control'), offered('bearerProtocols', run.token))
    await main.opened
    const { body: fresh } = await api<{ token: string }>(demo.url, 'POST', `/lab/runs/${run.id}/token`)
    main.socket.send(fresh.token)
    t.match(await main.message('refreshed'), { exp: Number }, 'the route refreshed the token')
    const expiry = await control.closed
    t.same([expiry.code, expiry.reason], [4401, 'token expired'], 'the same token without a refresh expires')
    t.equal(main.socket.readyState, WebSocket.OPEN, 'the refreshed connection is still open')
    main.socket.send('not a token')
    const refused = await main.closed
    t.same([refused.code, refused.reason], [4401, 'invalid token'], 'a refused refresh closes with 4401')
    const { body: { lines } } = await api<{ lines: LogLine[] }>(demo.url, 'GET', `/lab/runs/${run.id}/logs`)
    t.ok(lines.some((line) => line.reqId === `${run.id}.page` && line.wsDemo?.event === 'refreshed'), 'the refresh is logged')
  })

  t.test('runs that do not exist, replays with nothing to replay, lab requests without a run', async (t) => {
    t.equal((await api(demo.url, 'GET', '/lab/runs/ffffffff/logs')).status, 404)
    t.equal((await api(demo.url, 'POST', '/lab/runs', { scenario: 'nope' })).status, 400)
    const { body: run } = await api<{ id: string }>(demo.url, 'POST', '/lab/runs', { scenario: 'valid' })
    t.match(await api(demo.url, 'POST', `/lab/runs/${run.id}/replay`), { status: 409 }, 'no handshake of this run yet')
    const stray = connect(`${wsBase}lab/close/handshake`, ['lab.v1'])
    t.equal((await stray.closed).code, 4401, 'a lab route without a run is guarded all the same')
  })

  t.test('stats, log lines and a graceful shutdown on SIGINT', async (t) => {
    const { body: stats } = await api<{ accepted: number, rejected: Record<string, number> }>(demo.url, 'GET', '/lab/stats')
    // valid: the client and the twin; silent; refresh: two clients.
    t.equal(stats.accepted, 5, 'accepted connections counted')
    t.equal(stats.rejected.FST_WS_GUARD_TOKEN_EXPIRED, 2, 'an expired token: the client\'s handshake and the twin\'s')
    const { body: { token } } = await api<{ token: string }>(demo.url, 'GET', '/dev-token?name=zoe')
    const chat = connect(`${wsBase}chat`, ['chat.v1', `bearer.${token}`])
    await chat.opened
    chat.socket.send('hello')
    for (;;) {
      const [data] = await once(chat.socket, 'message') as [Buffer]
      if (JSON.parse(String(data)).from !== 'zoe') continue
      t.same(JSON.parse(String(data)), { from: 'zoe', text: 'hello' }, 'the chat room echoes to everyone, sender included')
      break
    }
    const signals = new EventEmitter()
    const closing = closeOnSignals(signals, async () => await demo.app.close())
    signals.emit('SIGINT', 'SIGINT')
    const seen = await chat.closed
    t.equal(seen.code, 1001, 'an open chat gets 1001')
    // One connection: a spread of 1 ms, and a hint in [0, 1000).
    const hint = /^server shutting down; retry-after=(\d+)$/.exec(seen.reason)
    t.ok(hint !== null && Number(hint[1]) < 1000, `with the reason and a retry hint under a second (${seen.reason})`)
    t.equal(await closing, 'SIGINT')
    t.equal(signals.listenerCount('SIGINT') + signals.listenerCount('SIGTERM'), 0, 'a second signal is not ours')
    t.equal(demo.foreign.server.listening, false, 'the foreign page closed with the app')
    const lines = demo.output.lines as LogLine[]
    t.ok(lines.some((line) => line.msg === 'closing: every open WebSocket gets 1001 server shutting down'), 'the shutdown is logged')
    t.ok(lines.some((line) => line.wsDemo?.event === 'closed' && line.wsDemo.reason === 'shutdown' && line.wsDemo.route === '/chat'), 'and the chat connection it closed')
    assertNoToken(t, demo.output)
  })
})

test('a port in use, or one that cannot be had: one sentence naming it, and what was opened is closed', async (t) => {
  const blocker = createServer()
  blocker.listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.teardown(() => blocker.close())
  const busy = (blocker.address() as { port: number }).port

  await t.rejects(startDemo({ host: '127.0.0.1', port: busy, foreignPort: 0, logLevel: 'silent' }),
    { message: `cannot listen on 127.0.0.1:${busy}: the port is in use; set PORT to another one (the demo uses PORT and PORT+1)` })
  await t.rejects(startDemo({ host: '127.0.0.1', port: 0, foreignPort: busy, logLevel: 'silent' }), { message: new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${busy}: the port is in use`) })
  // TEST-NET-1: an address no interface holds.
  await t.rejects(startDemo({ host: '192.0.2.1', port: 0, foreignPort: 0, logLevel: 'silent' }), { message: /^cannot listen on 192\.0\.2\.1:0: listen EADDRNOTAVAIL/ })
  t.equal(channel(channels.accepted).hasSubscribers, false, 'each failed start closed its app (and unsubscribed)')
})

test('the lab page in Chromium: every scenario, the live stats, 1001 on shutdown', async (t) => {
  if (!requireBinary(t, chromiumPath, 'chromium')) return
  const browser = await launchBrowser(t)
  const demo = await start(t)
  const page = await (await newContext(t, browser)).newPage()
  const errors: string[] = []
  page.on('pageerror', (error) => errors.push(error.message))
  await page.goto(demo.url)
  await page.waitForSelector('#chat-status[data-state=open]')
  t.match(await page.textContent('#chat-status'), /^connected as guest-[a-z0-9]+ · protocol chat\.v1$/, 'the chat connected')
  await page.waitForFunction(() => document.getElementById('stat-accepted')?.textContent === '1')
  t.equal(await page.textContent('#stats-state'), 'live', 'the stats panel is live and counts the chat')
  await page.fill('#chat-text', 'hello')
  await page.click('#chat-form button')
  await page.waitForSelector('#chat-log p:nth-child(2)')
  t.match(await page.textContent('#chat-log p:nth-child(2)'), /^guest-[a-z0-9]+: hello$/, 'the chat works')

  for (const scenario of scenarios) {
    const want = expected[scenario.id]!
    const selector = `[data-scenario="${scenario.id}"]`
    await page.click(`${selector} .run`)
    await page.waitForSelector(`${selector}:is([data-state=done], [data-state=failed])`, { timeout: 20_000 })
    const shown = await page.$eval(selector, (card) => {
      const text = (query: string): string | null => card.querySelector(query)?.textContent ?? null
      return {
        state: (card as HTMLElement).dataset.state,
        close: [Number(text('.seen .code')), card.querySelector('.seen .reason.empty') === null ? text('.seen .reason') : ''],
        status: Number(text('.http .code')),
        code: text('.http .error-code'),
        logs: Array.from(card.querySelectorAll('.log .line-code'), (line) => line.textContent)
      }
    })
    t.equal(shown.state, 'done', `${scenario.id}: ran`)
    t.same(shown.close, want.close, `${scenario.id}: the page shows ${want.close.join(' ') || 'no reason'}`)
    t.equal(shown.status, want.status, `${scenario.id}: the twin's status ${want.status}`)
    t.equal(shown.code, want.code, `${scenario.id}: the twin's code ${want.code}`)
    t.ok(shown.logs.includes(want.log), `${scenario.id}: a log line ${want.log} (${shown.logs.join(', ')})`)
  }

  // The chat; valid: page and twin; silent; refresh: page, control and twin.
  await page.waitForFunction(() => document.getElementById('stat-accepted')?.textContent === '7')
  t.equal(await page.textContent('#stat-accepted'), '7', 'the stats panel counts the accepted connections')
  t.equal(await page.textContent('[data-key=FST_WS_GUARD_TOKEN_INVALID] .count'), '4', 'the refusals by code: two scenarios, the page and the twin each')
  t.equal(await page.textContent('[data-key=heartbeatTimeout] .count'), '1', 'and the silent client, by reason')

  const signals = new EventEmitter()
  const closing = closeOnSignals(signals, async () => await demo.app.close())
  signals.emit('SIGTERM', 'SIGTERM')
  await page.waitForSelector('#chat-status[data-state=closed]')
  t.match(await page.textContent('#chat-status'), /^closed: 1001 server shutting down; retry-after=\d+$/, 'the chat shows the shutdown and its retry hint')
  t.equal(await closing, 'SIGTERM')
  await page.waitForSelector('#stats-state[data-state=stopped]')
  t.equal(await page.getAttribute('#stats-state', 'data-state'), 'stopped', 'the stats panel says the server stopped')
  t.same(errors, [], 'no page error')
  assertNoToken(t, demo.output)
})
