import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, { MemoryStore, type SessionView, type WsGuardOptions } from '../../index.js'
import { startApp, type StartedApp } from '../helpers/app.js'
import { openClient, whenClosed } from '../helpers/clients.js'
import { bearer, mint, now, secret, secretBytes } from '../helpers/tokens.js'
import { waitFor } from '../helpers/wait.js'

// app.wsGuard.sessions() and count(): what an instance shows of its open connections, and
// how many a user holds across the instances that share a store.

function echo (socket: WebSocket): void {
  socket.on('message', (data) => socket.send(String(data)))
}

/** An instance on `store`: `/ws`, `/rooms/:room` (subprotocol chat.v1), `/noexp` (tokens without exp) and a public `/public`. */
async function instance (t: Test, store: MemoryStore, options: WsGuardOptions = {}): Promise<StartedApp> {
  return await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, store, ...options })
    app.wsRoute('/ws', echo)
    app.wsRoute('/rooms/:room', { config: { wsGuard: { protocols: ['chat.v1'] } } }, echo)
    app.wsRoute('/noexp', { config: { wsGuard: { auth: { allowMissingExp: true } } } }, echo)
    app.wsRoute('/public', { config: { wsGuard: { auth: false } } }, echo)
  })
}

async function token (claims: Record<string, unknown>, exp: number | false = now(3600)): Promise<string> {
  return await mint(secretBytes, claims, { exp })
}

test('a session view: who, where, since when, until when; frozen; never the token', async (t) => {
  const { app, url } = await instance(t, new MemoryStore())
  const exp = now(3600)
  const jwt = await token({ sub: 'alice', jti: 'token-a1' }, exp)
  const before = Date.now()
  const client = await openClient(t, url('/rooms/42'), ['chat.v1'], bearer(jwt))
  const after = Date.now()
  const views = app.wsGuard.sessions()
  t.equal(views.length, 1, 'one session')
  const view = views[0]!
  t.same(Object.keys(view).sort(), ['expiresAt', 'id', 'jti', 'openedAt', 'protocol', 'remoteAddress', 'route', 'sub'], 'exactly these fields')
  t.match(view, {
    sub: 'alice',
    jti: 'token-a1',
    route: '/rooms/:room',
    protocol: 'chat.v1',
    remoteAddress: '127.0.0.1',
    expiresAt: exp * 1000
  })
  t.match(view.id, /^[0-9a-f-]{36}:\d+$/, 'the instance\'s id and a counter')
  // openedAt comes from the monotonic clock: allow for its drift from Date.now().
  t.ok(view.openedAt >= before - 1000 && view.openedAt <= after + 1000, 'openedAt is epoch ms, at the upgrade')
  t.ok(Object.isFrozen(view), 'a frozen view')
  t.throws(() => { (view as { sub: string | undefined }).sub = 'mallory' }, TypeError, 'that cannot be changed')

  const text = JSON.stringify(app.wsGuard.sessions())
  const [header, payload, signature] = jwt.split('.') as [string, string, string]
  t.notOk(text.includes(jwt), 'no token in the views')
  t.notOk(text.includes(payload), 'nor its payload')
  t.notOk(text.includes(signature), 'nor its signature')
  t.notOk(text.includes(header), 'nor its header')

  const closed = whenClosed(client)
  client.close()
  await closed
  await waitFor(() => app.wsGuard.sessions().length === 0, 'the session to go')
  t.same(app.wsGuard.sessions(), [], 'a closed connection is no session')
})

test('views of sessions without claims, without exp, with claims of the wrong type', async (t) => {
  const { app, url } = await instance(t, new MemoryStore())
  await openClient(t, url('/public'))
  await openClient(t, url('/noexp'), [], bearer(await token({ sub: 'alice' }, false)))
  await openClient(t, url('/ws'), [], bearer(await token({ sub: 42, jti: 7 })))
  const [anonymous, noExp, odd] = [
    app.wsGuard.sessions({ route: '/public' })[0],
    app.wsGuard.sessions({ route: '/noexp' })[0],
    app.wsGuard.sessions({ route: '/ws' })[0]
  ]
  t.match(anonymous, { sub: undefined, jti: undefined, protocol: false, expiresAt: null }, 'a public route: no user, no expiry')
  t.match(noExp, { sub: 'alice', jti: undefined, expiresAt: null }, 'a token without exp: expiresAt null')
  t.match(odd, { sub: undefined, jti: undefined }, 'claims that are not strings are not shown')
  const ids = app.wsGuard.sessions().map((view) => view.id)
  t.equal(new Set(ids).size, 3, 'every session has its own id')
})

test('sessions() filters by sub, jti and route; every field given must match', async (t) => {
  const { app, url } = await instance(t, new MemoryStore())
  await openClient(t, url('/ws'), [], bearer(await token({ sub: 'alice', jti: 'a1' })))
  await openClient(t, url('/ws'), [], bearer(await token({ sub: 'alice', jti: 'a2' })))
  await openClient(t, url('/rooms/1'), ['chat.v1'], bearer(await token({ sub: 'alice', jti: 'a3' })))
  await openClient(t, url('/ws'), [], bearer(await token({ sub: 'bob', jti: 'b1' })))
  await openClient(t, url('/public'))
  const pick = (views: SessionView[]): string[] => views.map((view) => `${String(view.sub)} ${String(view.jti)} ${view.route}`).sort()
  t.equal(app.wsGuard.sessions().length, 5, 'no filter: every session')
  t.equal(app.wsGuard.sessions({}).length, 5, 'an empty filter: every session')
  t.same(pick(app.wsGuard.sessions({ sub: 'alice' })), ['alice a1 /ws', 'alice a2 /ws', 'alice a3 /rooms/:room'])
  t.same(pick(app.wsGuard.sessions({ sub: 'alice', route: '/ws' })), ['alice a1 /ws', 'alice a2 /ws'])
  t.same(pick(app.wsGuard.sessions({ jti: 'a2' })), ['alice a2 /ws'])
  t.same(pick(app.wsGuard.sessions({ route: '/rooms/:room' })), ['alice a3 /rooms/:room'], 'a route by its pattern')
  t.same(app.wsGuard.sessions({ route: '/rooms/1' }), [], 'not by its URL')
  t.same(pick(app.wsGuard.sessions({ route: '/public' })), ['undefined undefined /public'])
  t.same(app.wsGuard.sessions({ sub: 'alice', jti: 'b1' }), [], 'both must match')
  t.same(app.wsGuard.sessions({ sub: 'nobody' }), [])
  t.same(app.wsGuard.sessions({ sub: undefined, jti: 'b1' }).length, 1, 'an undefined field does not filter')
})

test('sessions() shows this instance\'s sessions only', async (t) => {
  const store = new MemoryStore()
  const a = await instance(t, store)
  const b = await instance(t, store)
  await openClient(t, a.url('/ws'), [], bearer(await token({ sub: 'alice' })))
  await openClient(t, b.url('/ws'), [], bearer(await token({ sub: 'alice' })))
  await openClient(t, b.url('/ws'), [], bearer(await token({ sub: 'bob' })))
  t.equal(a.app.wsGuard.sessions().length, 1)
  t.equal(b.app.wsGuard.sessions().length, 2)
  const idOf = (view: SessionView | undefined): string => view!.id.split(':')[0]!
  t.not(idOf(a.app.wsGuard.sessions()[0]), idOf(b.app.wsGuard.sessions()[0]), 'each instance names its sessions with its own id')
  t.equal(idOf(b.app.wsGuard.sessions()[0]), idOf(b.app.wsGuard.sessions()[1]), 'one id per instance')
})

test('sessions() refuses a filter that is not one', async (t) => {
  const { app } = await instance(t, new MemoryStore())
  const cases: Array<[unknown, RegExp]> = [
    ['alice', /sessions\(\) takes a filter \{ sub\?, jti\?, route\? \}, got the string "alice"/],
    [null, /sessions\(\) takes a filter \{ sub\?, jti\?, route\? \}, got null/],
    [{ sub: 42 }, /sessions\(\): filter\.sub must be a string, got number/],
    [{ jti: ['a'] }, /sessions\(\): filter\.jti must be a string, got an array/],
    [{ route: null }, /sessions\(\): filter\.route must be a string, got null/]
  ]
  for (const [filter, message] of cases) {
    t.throws(() => app.wsGuard.sessions(filter as never), { code: 'FST_WS_GUARD_INVALID_OPTION', message }, String(message))
  }
})

test('count({ sub }) counts a user\'s connections across the instances sharing the store', async (t) => {
  const store = new MemoryStore()
  const a = await instance(t, store)
  const b = await instance(t, store)
  const first = await openClient(t, a.url('/ws'), [], bearer(await token({ sub: 'alice' })))
  await openClient(t, b.url('/ws'), [], bearer(await token({ sub: 'alice' })))
  await openClient(t, b.url('/rooms/1'), ['chat.v1'], bearer(await token({ sub: 'alice' })))
  await openClient(t, a.url('/ws'), [], bearer(await token({ sub: 'bob' })))
  t.equal(await a.app.wsGuard.count({ sub: 'alice' }), 3, 'seen from a')
  t.equal(await b.app.wsGuard.count({ sub: 'alice' }), 3, 'seen from b')
  t.equal(await b.app.wsGuard.count({ sub: 'bob' }), 1, 'bob\'s, though he is on a')
  t.equal(await a.app.wsGuard.count({ sub: 'nobody' }), 0)
  first.close()
  await waitFor(() => store.count('user:alice') === 2, 'the lease to be released')
  t.equal(await b.app.wsGuard.count({ sub: 'alice' }), 2, 'a closed connection no longer counts')
})

test('count() needs { sub }', async (t) => {
  const { app } = await instance(t, new MemoryStore())
  const cases: Array<[unknown, RegExp]> = [
    [{}, /count\(\) needs \{ sub: 'user id' \}, got undefined/],
    [{ sub: '' }, /count\(\) needs \{ sub: 'user id' \}, got the string ""/],
    [{ sub: 7 }, /count\(\) needs \{ sub: 'user id' \}, got number/],
    [null, /count\(\) needs \{ sub: 'user id' \}, got undefined/],
    [undefined, /count\(\) needs \{ sub: 'user id' \}, got undefined/]
  ]
  for (const [filter, message] of cases) {
    await t.rejects(app.wsGuard.count(filter as never), { code: 'FST_WS_GUARD_INVALID_OPTION', message }, String(message))
  }
})
