import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyRequest } from 'fastify'
import { test, type Test } from 'tap'
import type { WebSocket } from 'ws'
import wsGuard from '../../index.js'
import { startApp } from '../helpers/app.js'
import { mint, secret, secretBytes } from '../helpers/tokens.js'
import { chromiumPath, launchBrowser, newContext, openPage, serveTestPage, testPage, wsSession } from './browser-harness.js'
import { boundClose, requireBinary } from './system.js'

/** What reached the app, seen by an app-level hook that runs before the guard. */
interface Seen { url: string, origin: string | undefined, cookie: string | undefined, protocols: string | undefined }

/**
 * The test app: the page, and one WebSocket route per scenario. Every handler counts its calls
 * so the tests can tell that a refused handshake never reached it.
 */
async function startGuardedApp (t: Test) {
  const calls = { echo: 0, protocol: 0, cookie: 0, close: 0, public: 0 }
  const pongs = { echo: 0 }
  const seen: Seen[] = []
  const started = await startApp(t, async (app) => {
    app.addHook('onRequest', (request, _reply, done) => {
      // request.ws is set by @fastify/websocket's own hook, which runs after this one.
      if (request.headers.upgrade !== undefined) {
        const { origin, cookie } = request.headers
        seen.push({ url: request.url, origin, cookie, protocols: request.headers['sec-websocket-protocol'] })
      }
      done()
    })
    await app.register(wsGuard, { heartbeat: { pingInterval: 200, readDeadline: 500 }, shutdownGrace: 1000 })
    serveTestPage(app)
    // A login that sets the token as a cookie, the way an app would: HttpOnly, SameSite=Lax.
    app.get('/login', async (_request, reply) => {
      reply.header('set-cookie', `access_token=${await mint(secretBytes, { sub: 'carol' }, { exp: '10m' })}; Path=/; HttpOnly; SameSite=Lax`)
      return reply.type('text/html; charset=utf-8').send(testPage)
    })
    app.wsRoute('/echo', (socket) => {
      calls.echo++
      socket.on('pong', () => { pongs.echo++ })
      socket.on('message', (data) => socket.send(String(data)))
    })
    const userEcho = (route: 'protocol' | 'cookie' | 'close') => (socket: WebSocket, request: FastifyRequest) => {
      calls[route]++
      socket.on('message', (data) => socket.send(`${request.wsUser?.sub}:${String(data)}`))
    }
    app.wsRoute('/protocol', { config: { wsGuard: { auth: { secret, tokenSources: ['protocol'] }, protocols: ['chat.v1'] } } }, userEcho('protocol'))
    app.wsRoute('/cookie', { config: { wsGuard: { auth: { secret, tokenSources: ['cookie'] } } } }, userEcho('cookie'))
    app.wsRoute('/close', { config: { wsGuard: { auth: { secret }, rejectWith: 'close' } } }, userEcho('close'))
    // Outside the guard: ws answers the 101 without a subprotocol when only a token was offered.
    app.wsRoute('/public', { config: { wsGuard: false } }, () => { calls.public++ })
  })
  boundClose(t, started.app.server)
  return { ...started, calls, pongs, seen, origin: `http://127.0.0.1:${started.port}`, ws: (path: string) => `ws://127.0.0.1:${started.port}${path}` }
}

function lastSeen (seen: Seen[], url: string): Seen | undefined {
  return seen.filter((entry) => entry.url === url).at(-1)
}

test('Chromium against the guard', async (t) => {
  if (!requireBinary(t, chromiumPath, 'chromium')) return
  const browser = await launchBrowser(t)
  const a = await startGuardedApp(t)
  // A second origin: another port on the same host (cookies are not port-isolated, origins are).
  const b = await startApp(t, (app) => serveTestPage(app))
  boundClose(t, b.app.server)
  const otherOrigin = `http://127.0.0.1:${b.port}`

  t.test('a page from the allowed origin connects, exchanges messages, and heartbeats keep it open past several read deadlines', async (t) => {
    const page = await openPage(await newContext(t, browser), `${a.origin}/page`)
    const result = await wsSession(page, {
      url: a.ws('/echo'),
      // Idle for 1.5 s: three read deadlines (500 ms) without a data frame from the page.
      steps: [{ send: 'hello' }, { wait: 1500 }, { send: 'still here' }]
    })
    t.equal(result.timedOut, null, 'every step finished in time')
    t.equal(result.opened, true, 'the connection opened')
    t.same(result.received, ['hello', 'still here'], 'messages went both ways, before and after the idle time')
    t.equal(result.readyStateAfterSteps, 1, 'still OPEN after the idle time')
    t.same(result.close, { code: 1000, reason: 'done', wasClean: true }, 'closed by the page, not by the server')
    t.ok(a.pongs.echo >= 4, `Chrome answered the server's pings (${a.pongs.echo} pongs in 1.5 s at a 200 ms interval)`)
    t.equal(a.calls.echo, 1, 'the handler ran once')
    t.equal(lastSeen(a.seen, '/echo')?.origin, a.origin, 'the browser sent its own Origin')
    t.equal(a.app.wsGuard.stats().closed.heartbeatTimeout, 0, 'no connection ended on a heartbeat timeout')
  })

  t.test('the same page from another origin is refused by the origin check and the handler never runs', async (t) => {
    const before = { calls: a.calls.echo, rejected: a.app.wsGuard.stats().rejected.FST_WS_GUARD_ORIGIN_NOT_ALLOWED ?? 0 }
    const page = await openPage(await newContext(t, browser), `${otherOrigin}/page`)
    const result = await wsSession(page, { url: a.ws('/echo'), steps: [{ send: 'hello' }] })
    t.equal(result.opened, false, 'the connection never opened')
    t.equal(result.close?.code, 1006, 'a refused handshake is all a page can see')
    t.equal(lastSeen(a.seen, '/echo')?.origin, otherOrigin, 'the handshake reached the server with the other Origin')
    t.equal(a.app.wsGuard.stats().rejected.FST_WS_GUARD_ORIGIN_NOT_ALLOWED, before.rejected + 1, 'refused by the origin check')
    t.ok(a.logs.lines.some((line) => (line.wsGuard as { code?: string, statusCode?: number } | undefined)?.statusCode === 403 &&
      String(line.msg).includes(`${otherOrigin} is not the same origin`)), 'logged as a 403 naming the origin')
    t.equal(a.calls.echo, before.calls, 'the handler never ran')
  })

  t.test('a subprotocol token from bearerProtocols: Chrome accepts the handshake and sees the app protocol, never the token', async (t) => {
    const token = await mint(secretBytes, { sub: 'alice' }, { exp: '10m' })
    const page = await openPage(await newContext(t, browser), `${a.origin}/page`)
    const result = await wsSession(page, { url: a.ws('/protocol'), bearer: { token, appProtocols: ['chat.v1'] }, steps: [{ send: 'hi' }] })
    t.equal(result.timedOut, null, 'every step finished in time')
    t.equal(result.opened, true, 'Chrome accepted the 101')
    t.equal(result.protocol, 'chat.v1', 'socket.protocol is the app protocol')
    t.notMatch(result.protocol, token, 'never the token')
    t.same(result.received, ['alice:hi'], 'the handler saw the verified user')
    t.equal(lastSeen(a.seen, '/protocol')?.protocols, `chat.v1, bearer.${token}`, 'the page offered the list bearerProtocols built')
    t.equal(a.calls.protocol, 1, 'the handler ran once')
  })

  t.test('the control: when the server selects no subprotocol, Chrome fails the connection', async (t) => {
    // A route outside the guard, offered only the token: ws answers the 101 without a
    // Sec-WebSocket-Protocol, and Chrome fails the connection although the server upgraded it.
    // This is why the guard selects the app protocol (or "bearer") and refuses a lone token.
    const page = await openPage(await newContext(t, browser), `${a.origin}/page`)
    const control = await wsSession(page, { url: a.ws('/public'), protocols: [`bearer.${await mint(secretBytes, { sub: 'alice' }, { exp: '10m' })}`], timeout: 3000 })
    t.equal(control.timedOut, null, 'the server answered the handshake')
    t.equal(control.opened, false, 'Chrome refused a 101 that selects none of the offered subprotocols')
    t.equal(control.close?.code, 1006, 'the page sees 1006')
    for (let i = 0; i < 100 && a.calls.public === 0; i++) await sleep(20)
    t.equal(a.calls.public, 1, 'the server did upgrade: the refusal was Chrome\'s')
  })

  t.test('cookie auth: a same-origin page with the cookie connects; the same cookie from another origin is refused (CSWSH)', async (t) => {
    const context = await newContext(t, browser)
    const own = await openPage(context, `${a.origin}/login`)
    const result = await wsSession(own, { url: a.ws('/cookie'), steps: [{ send: 'hi' }] })
    t.equal(result.opened, true, 'the same-origin page connected')
    t.same(result.received, ['carol:hi'], 'authenticated by the cookie')
    t.match(lastSeen(a.seen, '/cookie')?.cookie, /access_token=ey/, 'the browser sent the HttpOnly cookie')

    const rejectedBefore = a.app.wsGuard.stats().rejected.FST_WS_GUARD_ORIGIN_NOT_ALLOWED ?? 0
    const foreign = await openPage(context, `${otherOrigin}/page`)
    const hijack = await wsSession(foreign, { url: a.ws('/cookie'), steps: [{ send: 'hi' }] })
    t.equal(hijack.opened, false, 'the cross-origin page never got a socket')
    t.equal(hijack.close?.code, 1006, 'it sees 1006')
    const attempt = lastSeen(a.seen, '/cookie')
    t.equal(attempt?.origin, otherOrigin, 'the handshake came from the other origin')
    t.match(attempt?.cookie, /access_token=ey/, 'the browser did send the cookie cross-origin: only the origin check stopped it')
    t.equal(a.app.wsGuard.stats().rejected.FST_WS_GUARD_ORIGIN_NOT_ALLOWED, rejectedBefore + 1, '403 origin not allowed')
    t.equal(a.calls.cookie, 1, 'the handler ran for the same-origin page only')
  })

  t.test("rejectWith: 'close' lets page JavaScript read 4401/4403 and the reason; the default 'http' shows it 1006", async (t) => {
    const context = await newContext(t, browser)
    const own = await openPage(context, `${a.origin}/page`)
    const missing = await wsSession(own, { url: a.ws('/close') })
    t.same(missing.close, { code: 4401, reason: 'authentication required', wasClean: true }, 'no token: 4401 and its reason')

    const foreign = await openPage(context, `${otherOrigin}/page`)
    const origin = await wsSession(foreign, { url: a.ws('/close') })
    t.same(origin.close, { code: 4403, reason: 'origin not allowed', wasClean: true }, 'another origin: 4403 and its reason')
    t.equal(a.calls.close, 0, 'the handler never ran')

    const missingBefore = a.app.wsGuard.stats().rejected.FST_WS_GUARD_TOKEN_MISSING ?? 0
    const http = await wsSession(own, { url: a.ws('/protocol') })
    t.equal(http.opened, false, 'the connection never opened')
    t.same(http.close, { code: 1006, reason: '', wasClean: false }, 'the 401 is invisible to the page')
    t.equal(a.app.wsGuard.stats().rejected.FST_WS_GUARD_TOKEN_MISSING, missingBefore + 1, 'the server did answer 401')
  })
})
