import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyRequest } from 'fastify'
import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, { type WsGuardAuthOptions, type WsGuardRouteOptions } from '../../index.js'
import { startApp, type StartedApp } from '../helpers/app.js'
import { openClient, whenClosed } from '../helpers/clients.js'
import { guardLines } from '../helpers/logs.js'
import { bearer, mint, now, secret, secretBytes, sensitive } from '../helpers/tokens.js'
import { waitFor } from '../helpers/wait.js'

/*
 * auth.expiryNotice: the app hears `before` ms ahead of `exp`, once per token, and may refresh.
 * The wheel ticks every 250 ms with the default heartbeat; the slack covers a busy machine.
 */
const tick = 250
const slack = 250

/** One call of `notify`, with what it was given and when. */
interface Notice {
  socket: WebSocket
  request: FastifyRequest
  expiresAt: number
  at: number
}

/** What the route's handler was given: to compare with what `notify` gets. */
interface Handled {
  socket: WebSocket
  request: FastifyRequest
}

interface NoticeApp extends StartedApp {
  notices: Notice[]
  handled: Handled[]
}

type Notify = NonNullable<WsGuardAuthOptions['expiryNotice']>['notify']

/**
 * `/ws` with `auth.expiryNotice: { before, notify }`, `notify` recorded then `then` called; the
 * handler treats a message as a fresh token for `wsRefresh()` and answers `refreshed`.
 */
async function noticeApp (t: Test, before: number, then: Notify = () => {}, auth: Partial<WsGuardAuthOptions> = {}, routes: Record<string, WsGuardRouteOptions> = {}): Promise<NoticeApp> {
  const notices: Notice[] = []
  const handled: Handled[] = []
  const notify: Notify = (socket, request, expiresAt) => {
    notices.push({ socket, request, expiresAt, at: Date.now() })
    return then(socket, request, expiresAt)
  }
  const handler = (socket: WebSocket, request: FastifyRequest): void => {
    handled.push({ socket, request })
    socket.on('message', (data) => {
      request.wsRefresh(String(data)).then(() => socket.send('refreshed'), () => {})
    })
  }
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret, clockTolerance: 0, expiryNotice: { before, notify }, ...auth } })
    app.wsRoute('/ws', handler)
    for (const [path, config] of Object.entries(routes)) app.wsRoute(path, { config: { wsGuard: config } }, handler)
  })
  return { ...started, notices, handled }
}

/** Asserts a notice came `before` ms ahead of `expiresAt`: not earlier, at most a tick (and slack) later, and before exp. */
function assertOnTime (t: Test, notice: Notice | undefined, expiresAt: number, before: number): void {
  t.equal(notice?.expiresAt, expiresAt, `expiresAt is exp in epoch ms (${expiresAt})`)
  const ahead = expiresAt - (notice?.at ?? 0)
  t.ok(ahead > 0, `called before exp (${ahead} ms ahead)`)
  t.ok(ahead <= before + 20, `not earlier than ${before} ms ahead (${ahead} ms)`)
  t.ok(ahead >= before - tick - slack, `and within a tick of it (${ahead} ms ahead)`)
}

test('notify is called once, `before` ms ahead of exp, with the socket, the request and expiresAt', async (t) => {
  const before = 1000
  const app = await noticeApp(t, before)
  const exp = now(3)
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' }, { exp })))
  await waitFor(() => app.notices.length === 1, 'the notice', 4000)
  t.equal(client.readyState, client.OPEN, 'the connection is open when the app hears')
  const [notice] = app.notices
  assertOnTime(t, notice, exp * 1000, before)
  t.equal(notice?.socket, app.handled[0]?.socket, 'the socket the handler got')
  t.equal(notice?.request, app.handled[0]?.request, 'and its request')
  t.equal(notice?.request.wsUser?.sub, 'alice', 'whose wsUser is the token\'s')
  const closed = await whenClosed(client)
  t.same([closed.code, closed.reason], [4401, 'token expired'], 'not refreshed: closed at exp')
  t.ok(closed.at >= exp * 1000 - 20, 'not before exp')
  t.equal(app.notices.length, 1, 'once per token')
})

test('after wsRefresh() the notice is re-armed for the fresh token', async (t) => {
  const before = 1000
  // An async notify, as an app that awaits its own send would write.
  const app = await noticeApp(t, before, async (socket) => { socket.send('expiring') })
  const firstExp = now(2)
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' }, { exp: firstExp })))
  let freshExp = 0
  const expiring: number[] = []
  const refreshed = new Promise<void>((resolve) => {
    client.on('message', (data) => {
      const text = String(data)
      if (text === 'refreshed') return resolve()
      expiring.push(Date.now())
      // The first notice only: the client answers with a fresh token, then lets it expire.
      if (expiring.length > 1) return
      freshExp = now(3)
      mint(secretBytes, { sub: 'alice' }, { exp: freshExp }).then((token) => client.send(token), () => {})
    })
  })
  const closed = whenClosed(client)
  await refreshed
  t.equal(app.notices.length, 1, 'one notice before the refresh')
  const { code, at } = await closed
  t.equal(code, 4401, 'the fresh token expired in the end')
  t.ok(at >= freshExp * 1000 - 20, `at the fresh exp, not the first (${at - firstExp * 1000} ms after the first)`)
  t.equal(app.notices.length, 2, 'a second notice, for the fresh token')
  t.equal(expiring.length, 2, 'the client heard both')
  assertOnTime(t, app.notices[0], firstExp * 1000, before)
  assertOnTime(t, app.notices[1], freshExp * 1000, before)
  t.equal(app.notices[1]?.request.wsUser?.exp, freshExp, 'the request holds the fresh claims')
})

test('a token with less than `before` left at the handshake: notified on the first tick', async (t) => {
  const app = await noticeApp(t, 60_000)
  const exp = now(30)
  const openedAt = Date.now()
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' }, { exp })))
  await waitFor(() => app.notices.length === 1, 'the notice', 2000)
  t.ok(app.notices[0]!.at - openedAt <= tick + slack, `at once (${app.notices[0]!.at - openedAt} ms after the handshake began)`)
  t.equal(app.notices[0]!.expiresAt, exp * 1000, 'for the token\'s exp')
  t.equal(client.readyState, client.OPEN, 'the connection stays open')
  await sleep(tick * 2)
  t.equal(app.notices.length, 1, 'once')
})

test('a token without exp (allowMissingExp): no notice, nothing to expire', async (t) => {
  const app = await noticeApp(t, 60_000, () => {}, { allowMissingExp: true })
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' }, { exp: false })))
  t.same(app.app.wsGuard.sessions().map(({ expiresAt }) => expiresAt), [null], 'the session has no expiry')
  // A token with exp within `before` is notified on the first tick: this one would be by now.
  await sleep(tick * 3)
  t.equal(app.notices.length, 0, 'no notice')
  t.equal(client.readyState, client.OPEN, 'open')
})

test('a notify that throws or rejects is logged by its name and code only, and the connection stays open until exp', async (t) => {
  const detail = `notify failed for ${sensitive.sub}`
  const notifies: Record<string, Notify> = {
    '/throws': () => { throw Object.assign(new Error(detail), { code: 'E_APP_NOTIFY' }) },
    '/rejects': async () => { throw new TypeError(detail) },
    '/rejects-string': () => Promise.reject(detail)
  }
  const routes = Object.fromEntries(Object.entries(notifies).map(([path, notify]) => [path, { auth: { expiryNotice: { before: 1000, notify } } }]))
  const app = await noticeApp(t, 1000, () => {}, {}, routes)
  const exp = now(2)
  const token = await mint(secretBytes, { sub: sensitive.sub }, { exp })
  const clients = await Promise.all(Object.keys(notifies).map(async (path) => await openClient(t, app.url(path), [], bearer(token))))
  const closes = clients.map(whenClosed)
  const failures = (): Array<Record<string, unknown>> => guardLines(app.logs).filter((line) => line.msg === 'websocket expiryNotice failed').map((line) => line.wsGuard)
  await waitFor(() => failures().length === 3, 'three failures logged', 4000)
  t.ok(Date.now() < exp * 1000, 'logged before exp')
  for (const client of clients) t.equal(client.readyState, client.OPEN, 'each connection is still open after its notify failed')
  const byRoute = Object.fromEntries(failures().map((line) => [line.route, line.err]))
  t.same(byRoute, {
    '/throws': { name: 'Error', code: 'E_APP_NOTIFY' },
    '/rejects': { name: 'TypeError' },
    '/rejects-string': { name: 'string' }
  }, 'the route and the error\'s name and code: nothing else')
  t.equal(guardLines(app.logs).find((line) => line.msg === 'websocket expiryNotice failed')?.level, 50, 'at error level')
  t.notOk(app.logs.text.includes(detail), 'the error\'s message is not logged')
  t.notOk(app.logs.text.includes(sensitive.sub), 'nor the sub it quoted')
  for (const closed of await Promise.all(closes)) {
    t.same([closed.code, closed.reason], [4401, 'token expired'], 'closed at exp, as any connection')
    t.ok(closed.at >= exp * 1000 - 20, 'not before')
  }
  t.equal(app.notices.length, 0, 'the plugin\'s notify was replaced by each route\'s')
})
