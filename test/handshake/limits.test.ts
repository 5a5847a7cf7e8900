import type { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type WebSocket from 'ws'
import wsGuard, { MemoryStore, type ConnectionStore, type Lease, type WsGuardOptions } from '../../index.js'
import { startApp } from '../helpers/app.js'
import { openClient, tryConnect, whenClosed, type Outcome } from '../helpers/clients.js'
import { handshake, rawConnect } from '../helpers/raw.js'
import { assertRefusal } from '../helpers/refusals.js'
import { bearer, mint, now, secret, secretBytes } from '../helpers/tokens.js'
import { waitFor } from '../helpers/wait.js'

/** Asserts a guard refusal with `status`, `code` and `Retry-After`. */
function assertLimitRefusal (t: Test, outcome: Outcome, status: number, code: string): void {
  const { headers } = assertRefusal(t, outcome, status, code)
  t.equal(headers['retry-after'], '5', 'with Retry-After')
}

async function user (sub: string, exp?: number): Promise<ReturnType<typeof bearer>> {
  return bearer(await mint(secretBytes, { sub }, exp === undefined ? {} : { exp }))
}

test('maxConnections refuses the upgrade past the limit with 503 and Retry-After', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { maxConnections: 2 })
    app.wsRoute('/a', () => {})
    app.wsRoute('/b', () => {})
  })
  const first = await openClient(t, url('/a'))
  await openClient(t, url('/b'))
  assertLimitRefusal(t, await tryConnect(url('/a')), 503, 'FST_WS_GUARD_TOO_MANY_CONNECTIONS')
  t.same(app.wsGuard.stats().rejected, { FST_WS_GUARD_TOO_MANY_CONNECTIONS: 1 }, 'counted by code')
  first.close()
  await waitFor(() => app.wsGuard.stats().open === 1, 'the close')
  await openClient(t, url('/a'))
  t.equal(app.wsGuard.stats().open, 2, 'a closed connection frees its place')
})

test('maxConnectionsPerUser refuses a user\'s connection past the limit with 429', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, maxConnectionsPerUser: 1 })
    app.wsRoute('/ws', () => {})
  })
  await openClient(t, url('/ws'), [], await user('alice'))
  assertLimitRefusal(t, await tryConnect(url('/ws'), [], await user('alice')), 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
  await openClient(t, url('/ws'), [], await user('bob'))
  // A token without sub cannot be counted per user: it is refused, not let through uncounted.
  const anonymous = bearer(await mint(secretBytes))
  assertRefusal(t, await tryConnect(url('/ws'), [], anonymous), 401, 'FST_WS_GUARD_TOKEN_INVALID')
  assertRefusal(t, await tryConnect(url('/ws'), [], anonymous), 401, 'FST_WS_GUARD_TOKEN_INVALID')
  const stats = app.wsGuard.stats()
  t.equal(stats.open, 2, 'alice once and bob')
  t.same(stats.rejected, { FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS: 1, FST_WS_GUARD_TOKEN_INVALID: 2 }, 'counted by code')
})

test('a route overrides maxConnectionsPerUser; the per-user count spans routes', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, maxConnectionsPerUser: 1 })
    app.wsRoute('/one', () => {})
    app.wsRoute('/many', { config: { wsGuard: { maxConnectionsPerUser: 3 } } }, () => {})
  })
  const alice = await user('alice')
  await openClient(t, url('/one'), [], alice)
  assertLimitRefusal(t, await tryConnect(url('/one'), [], alice), 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
  await openClient(t, url('/many'), [], alice)
  await openClient(t, url('/many'), [], alice)
  assertLimitRefusal(t, await tryConnect(url('/many'), [], alice), 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
})

/**
 * One connection of alice under `maxConnections: 1, maxConnectionsPerUser: 1`, with her lease
 * in a MemoryStore the test can read. Messages tell the handler to close or terminate.
 */
async function limitedApp (t: Test, extra: WsGuardOptions = {}): Promise<{ app: FastifyInstance, url: (path: string) => string, store: MemoryStore, held: () => number[] }> {
  const store = new MemoryStore()
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret, clockTolerance: 0 }, maxConnections: 1, maxConnectionsPerUser: 1, store, heartbeat: { pingInterval: 100, readDeadline: 250 }, ...extra })
    app.wsRoute('/ws', (socket) => {
      socket.on('message', (data) => {
        if (String(data) === 'close') socket.close(1000, 'bye')
        if (String(data) === 'terminate') socket.terminate()
      })
    })
    app.wsRoute('/throws', () => { throw new Error('handler failed') })
  })
  // The open connections, and alice's leases in the store.
  return { app, url, store, held: () => [app.wsGuard.stats().open, store.count('user:alice')] }
}

/**
 * Both limits are free again: alice's lease is gone from the store and she connects again
 * (the process's one place was free); then bob is refused (the place is taken again: the
 * count did not go below zero).
 */
async function assertReleased (t: Test, app: Awaited<ReturnType<typeof limitedApp>>): Promise<void> {
  await waitFor(() => app.held().every((count) => count === 0), 'the lease and the connection to be released')
  t.same(app.held(), [0, 0], 'no connection open, no lease held')
  const next = await openClient(t, app.url('/ws'), [], await user('alice'))
  t.equal(next.readyState, next.OPEN, 'alice can connect again')
  t.same(app.held(), [1, 1], 'and is counted again')
  assertLimitRefusal(t, await tryConnect(app.url('/ws'), [], await user('bob')), 503, 'FST_WS_GUARD_TOO_MANY_CONNECTIONS')
}

const endings: Array<[string, (client: WebSocket) => void | Promise<unknown>, string?]> = [
  ['the client closes', (client) => client.close()],
  ['the client vanishes', (client) => client.terminate()],
  ['the app handler closes', (client) => client.send('close')],
  ['the app handler terminates', (client) => client.send('terminate')],
  ['the heartbeat terminates it', () => {}],
  ['the token expires', () => {}, 'expiring']
]
for (const [name, end, token] of endings) {
  test(`limits are released when ${name}`, async (t) => {
    const app = await limitedApp(t)
    const options = await user('alice', token === undefined ? undefined : now(2))
    const client = await openClient(t, app.url('/ws'), [], name === 'the heartbeat terminates it' ? { ...options, autoPong: false } : options)
    t.same(app.held(), [1, 1], 'counted while open')
    assertLimitRefusal(t, await tryConnect(app.url('/ws'), [], await user('alice')), 503, 'FST_WS_GUARD_TOO_MANY_CONNECTIONS')
    const closed = whenClosed(client)
    await end(client)
    await closed
    await assertReleased(t, app)
  })
}

test('limits are released when the handler throws', async (t) => {
  const app = await limitedApp(t)
  const outcome = await tryConnect(app.url('/throws'), [], await user('alice'))
  if (outcome.kind === 'open') await whenClosed(outcome.socket)
  t.equal(app.app.wsGuard.stats().accepted, 1, 'the connection was accepted before the handler threw')
  await assertReleased(t, app)
})

test('limits are released on app.close()', async (t) => {
  const app = await limitedApp(t, { shutdownGrace: 500 })
  const client = await openClient(t, app.url('/ws'), [], await user('alice'))
  t.same(app.held(), [1, 1], 'counted while open')
  const closed = whenClosed(client)
  await app.app.close()
  t.equal((await closed).code, 1001, 'closed by the shutdown')
  t.same(app.held(), [0, 0], 'released by the time close() resolves')
})

test('the user limit lives in the store: two apps sharing it share each user\'s count; maxConnections stays per process', async (t) => {
  const store = new MemoryStore()
  const start = async (): Promise<Awaited<ReturnType<typeof startApp>>> => await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, maxConnections: 2, maxConnectionsPerUser: 2, store })
    app.wsRoute('/ws', () => {})
  })
  const a = await start()
  const b = await start()
  await openClient(t, a.url('/ws'), [], await user('alice'))
  const second = await openClient(t, b.url('/ws'), [], await user('alice'))
  t.equal(store.count('user:alice'), 2, 'one lease per connection, whichever app took it')
  assertLimitRefusal(t, await tryConnect(a.url('/ws'), [], await user('alice')), 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
  assertLimitRefusal(t, await tryConnect(b.url('/ws'), [], await user('alice')), 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
  await openClient(t, a.url('/ws'), [], await user('bob'))
  assertLimitRefusal(t, await tryConnect(a.url('/ws'), [], await user('carol')), 503, 'FST_WS_GUARD_TOO_MANY_CONNECTIONS')
  await openClient(t, b.url('/ws'), [], await user('carol'))
  t.equal(b.app.wsGuard.stats().open, 2, 'the other app has its own places')
  second.close()
  await waitFor(() => store.count('user:alice') === 1, 'alice\'s lease on b to be released')
  assertLimitRefusal(t, await tryConnect(a.url('/ws'), [], await user('dave')), 503, 'FST_WS_GUARD_TOO_MANY_CONNECTIONS')
  await openClient(t, b.url('/ws'), [], await user('alice'))
  t.equal(store.count('user:alice'), 2, 'her freed slot is taken again')
  t.equal(await a.app.wsGuard.count({ sub: 'alice' }), 2, 'count() reads the store')
})

test('a route without a per-user limit still takes a lease: count() sees every connection', async (t) => {
  const store = new MemoryStore()
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, store })
    app.wsRoute('/ws', () => {})
    app.wsRoute('/public', { config: { wsGuard: { auth: false } } }, () => {})
  })
  const client = await openClient(t, url('/ws'), [], await user('alice'))
  await openClient(t, url('/ws'), [], await user('alice'))
  await openClient(t, url('/ws'), [], bearer(await mint(secretBytes)))
  await openClient(t, url('/public'))
  t.equal(store.count('user:alice'), 2, 'two leases for alice, without a limit')
  t.equal(await app.wsGuard.count({ sub: 'alice' }), 2)
  t.equal(app.wsGuard.stats().open, 4, 'a token without sub and a public route connect without a lease')
  client.close()
  await waitFor(() => store.count('user:alice') === 1, 'the lease to be released on close')
})

/** A raw handshake with alice's token, and the TCP socket it went out on. */
async function rawHandshake (t: Test, port: number, path: string): Promise<Socket> {
  return await rawConnect(t, port, handshake(path, { Authorization: `Bearer ${await mint(secretBytes, { sub: 'alice' })}` }))
}

test('a client vanishing while an async authorize is pending leaves no count behind', async (t) => {
  const store = new MemoryStore()
  let calls = 0
  let release: (allowed: boolean) => void = () => {}
  const pending = new Promise<boolean>((resolve) => { release = resolve })
  let authorizeCalls = 0
  const { app, port, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, {
      auth: { secret, authorize: () => ++authorizeCalls === 1 ? pending : true },
      maxConnections: 1,
      maxConnectionsPerUser: 1,
      store
    })
    app.wsRoute('/ws', () => { calls++ })
  })
  const socket = await rawHandshake(t, port, '/ws')
  await waitFor(() => authorizeCalls === 1, 'authorize to be called')
  socket.destroy()
  await sleep(20)
  release(true)
  await sleep(50)
  t.equal(calls, 0, 'the handler never ran')
  t.equal(app.wsGuard.stats().accepted, 0, 'nothing was accepted')
  t.equal(store.count('user:alice'), 0, 'no lease is held')
  await openClient(t, url('/ws'), [], await user('alice'))
  t.equal(calls, 1, 'alice connects next time: the process place was given back')
  t.equal(store.count('user:alice'), 1, 'with one lease')
})

/**
 * A store of the ConnectionStore contract that answers asynchronously and logs its calls;
 * `hold` makes acquire wait for the test. The leases are kept in a MemoryStore.
 */
function asyncStore (): ConnectionStore & { log: string[], ids: string[], hold: boolean, proceed: () => void, inner: MemoryStore } {
  const inner = new MemoryStore()
  let waiting: Array<() => void> = []
  const store = {
    leaseTtl: Infinity,
    inner,
    log: [] as string[],
    ids: [] as string[],
    hold: false,
    proceed: () => {
      for (const resume of waiting) resume()
      waiting = []
    },
    async acquire (lease: Lease, limit: number): Promise<boolean> {
      store.log.push(`acquire ${lease.key} ${limit}`)
      store.ids.push(lease.id)
      if (store.hold) await new Promise<void>((resolve) => waiting.push(resolve))
      await sleep(5)
      return inner.acquire(lease, limit)
    },
    async release (lease: Lease): Promise<void> {
      store.log.push(`release ${lease.key}`)
      store.ids.push(lease.id)
      await sleep(5)
      inner.release(lease)
    },
    async renew (): Promise<void> {},
    async count (key: string): Promise<number> { return inner.count(key) },
    async publish (): Promise<void> {},
    async revocations (): Promise<[]> { return [] },
    listen: async (listener: Parameters<ConnectionStore['listen']>[0]) => await inner.listen(listener)
  }
  return store
}

test('a custom async store counts the users\' connections; the process limit is counted in the process', async (t) => {
  const store = asyncStore()
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, maxConnections: 2, maxConnectionsPerUser: 1, store })
    app.wsRoute('/ws', () => {})
  })
  const alice = await openClient(t, url('/ws'), [], await user('alice'))
  t.same(store.log, ['acquire user:alice 1'], 'only the user\'s lease goes to the store')
  const aliceLease = store.ids[0]
  store.log.length = 0
  assertLimitRefusal(t, await tryConnect(url('/ws'), [], await user('alice')), 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
  t.same(store.log, ['acquire user:alice 1'], 'a refused lease has nothing to give back')
  t.not(store.ids[1], aliceLease, 'each handshake asks with a lease id of its own')
  await openClient(t, url('/ws'), [], await user('bob'))
  store.log.length = 0
  assertLimitRefusal(t, await tryConnect(url('/ws'), [], await user('carol')), 503, 'FST_WS_GUARD_TOO_MANY_CONNECTIONS')
  t.same(store.log, [], 'over the process limit the store is not asked')
  store.ids.length = 0
  alice.close()
  await waitFor(() => store.log.length === 1, 'the release')
  t.same(store.log, ['release user:alice'], 'closing releases the lease')
  t.same(store.ids, [aliceLease], 'the one alice\'s connection took')
  await waitFor(() => store.inner.count('user:alice') === 0, 'the store to drop it')
  await waitFor(() => app.wsGuard.stats().open === 1, 'the close')
  await openClient(t, url('/ws'), [], await user('dave'))
  t.equal(app.wsGuard.stats().open, 2, 'a new user takes the freed place')
  t.equal(await app.wsGuard.count({ sub: 'dave' }), 1, 'count() asks the store')
})

test('a client vanishing while an async store acquires gets its lease released at once', async (t) => {
  const store = asyncStore()
  let calls = 0
  const { app, port, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, maxConnections: 1, maxConnectionsPerUser: 1, store })
    app.wsRoute('/ws', () => { calls++ })
  })
  store.hold = true
  const socket = await rawHandshake(t, port, '/ws')
  await waitFor(() => store.log.length === 1, 'acquire to be called')
  socket.destroy()
  await sleep(20)
  store.hold = false
  store.proceed()
  await waitFor(() => store.log.length === 2, 'the release')
  t.same(store.log, ['acquire user:alice 1', 'release user:alice'], 'the late lease is released')
  t.equal(store.ids[1], store.ids[0], 'the very lease that was taken')
  await waitFor(() => store.inner.count('user:alice') === 0, 'the store to drop it')
  t.equal(calls, 0, 'the handler never ran')
  t.equal(app.wsGuard.stats().accepted, 0, 'nothing was accepted')
  await openClient(t, url('/ws'), [], await user('alice'))
  t.equal(calls, 1, 'alice connects next time: neither limit kept a place for the vanished client')
})
