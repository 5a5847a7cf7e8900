import Fastify from 'fastify'
import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, {
  MemoryStore,
  type ConnectionStore,
  type ControlMessage,
  type Lease,
  type Revocation,
  type StoreListener,
  type WsGuardOptions
} from '../../index.js'
import { startApp, type StartedApp } from '../helpers/app.js'
import { ask, openClient, tryConnect, whenClosed } from '../helpers/clients.js'
import { assertRefusal } from '../helpers/refusals.js'
import { bearer, mint, now, secret, secretBytes } from '../helpers/tokens.js'
import { waitFor } from '../helpers/wait.js'

// A store that fails on demand, and what the guard makes of it. Kept apart from the limit
// tests (handshake/limits.test.ts): a store error that escaped would crash the process (tap
// reports it as an uncaught exception) and take the other tests down with it.

class StoreError extends Error {
  code = 'ESTORE_DOWN'
  constructor () {
    super('store down: redis://user:SENSITIVE-password@cache.internal')
  }
}

/** How a method answers: at once, through a resolved promise, by throwing, by rejecting, or never (until `settleHung()`). */
type Mode = 'ok' | 'async' | 'throw' | 'reject' | 'hang'
type Method = 'acquire' | 'renew' | 'release' | 'count' | 'publish' | 'revocations' | 'listen'

/**
 * A ConnectionStore whose leases and revocations live in a MemoryStore (`inner`), and whose
 * every method answers as `modes` says. It keeps the guard's listener, so a test can tell the
 * guard the store went away or came back; what it publishes is stored, not delivered.
 */
class FlakyStore implements ConnectionStore {
  readonly inner = new MemoryStore()
  readonly modes: Record<Method, Mode> = { acquire: 'ok', renew: 'ok', release: 'ok', count: 'ok', publish: 'ok', revocations: 'ok', listen: 'ok' }
  readonly calls: Record<Method, number> = { acquire: 0, renew: 0, release: 0, count: 0, publish: 0, revocations: 0, listen: 0 }
  readonly released: Lease[] = []
  readonly renewed: Lease[][] = []
  listener: StoreListener | undefined
  readonly #hung: Array<() => void> = []

  constructor (readonly leaseTtl = Infinity) {}

  #answer<T> (method: Method, work: () => T): T | Promise<T> {
    this.calls[method]++
    switch (this.modes[method]) {
      case 'ok': return work()
      case 'async': return Promise.resolve().then(work)
      case 'throw': throw new StoreError()
      case 'reject': return Promise.reject(new StoreError())
      case 'hang': return new Promise<T>((resolve) => this.#hung.push(() => resolve(work())))
    }
  }

  /** Lets every hung call answer now, with what `inner` says. */
  settleHung (): void {
    for (const settle of this.#hung.splice(0)) settle()
  }

  acquire (lease: Lease, limit: number): boolean | Promise<boolean> {
    return this.#answer('acquire', () => this.inner.acquire({ key: lease.key, id: lease.id }, limit))
  }

  renew (leases: readonly Lease[]): void | Promise<void> {
    return this.#answer('renew', () => {
      this.renewed.push([...leases])
      // A store that lost leases gets them back.
      for (const lease of leases) this.inner.acquire({ key: lease.key, id: lease.id }, Infinity)
    })
  }

  release (lease: Lease): void | Promise<void> {
    return this.#answer('release', () => {
      this.released.push(lease)
      this.inner.release({ key: lease.key, id: lease.id })
    })
  }

  count (key: string): number | Promise<number> {
    return this.#answer('count', () => this.inner.count(key))
  }

  publish (message: ControlMessage): void | Promise<void> {
    return this.#answer('publish', () => { this.inner.publish(message) })
  }

  revocations (): readonly Revocation[] | Promise<readonly Revocation[]> {
    return this.#answer('revocations', () => this.inner.revocations())
  }

  async listen (listener: StoreListener): Promise<() => Promise<void>> {
    await this.#answer('listen', () => undefined)
    this.listener = listener
    listener.available()
    return async () => { this.listener = undefined }
  }

  /** Every method, `listen` excepted, answers as `mode`. */
  setAll (mode: Mode): void {
    for (const method of Object.keys(this.modes) as Method[]) if (method !== 'listen') this.modes[method] = mode
  }
}

const lostLine = 'websocket connection store unavailable'
const backLine = 'websocket connection store available again'

/** How many store-health lines the app wrote so far: losses and returns. */
function health (started: StartedApp): { lost: number, back: number } {
  return {
    lost: started.logs.lines.filter((line) => line.msg === lostLine).length,
    back: started.logs.lines.filter((line) => line.msg === backLine).length
  }
}

/** Asserts the store-health lines: how many, their levels, the error's name and code, never its message. */
function assertHealth (t: Test, started: StartedApp, expected: { lost: number, back: number }, what: string): void {
  t.same(health(started), expected, what)
  const lost = started.logs.lines.filter((line) => line.msg === lostLine)
  const back = started.logs.lines.filter((line) => line.msg === backLine)
  t.ok(lost.every((line) => line.level === 40), 'each loss is a warning')
  t.ok(lost.every((line) => JSON.stringify((line.wsGuard as { err?: unknown }).err) === JSON.stringify({ name: 'Error', code: 'ESTORE_DOWN' })), 'with the error\'s name and code only')
  t.ok(back.every((line) => line.level === 30), 'each return is an info line')
  t.notOk(started.logs.text.includes('SENSITIVE'), 'the log never holds the error\'s message')
}

async function user (sub: string): Promise<ReturnType<typeof bearer>> {
  return bearer(await mint(secretBytes, { sub }))
}

/**
 * An app on `store` with two echo routes: `/limited` counts alice's connections
 * (`maxConnectionsPerUser: 2`), `/counted` has no per-user limit.
 */
async function storeApp (t: Test, store: FlakyStore, options: WsGuardOptions = {}): Promise<StartedApp> {
  return await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, store, ...options })
    const echo = (socket: WebSocket): void => { socket.on('message', (data) => socket.send(String(data))) }
    app.wsRoute('/limited', { config: { wsGuard: { maxConnectionsPerUser: 2 } } }, echo)
    app.wsRoute('/counted', echo)
  })
}

for (const mode of ['throw', 'reject'] as const) {
  test(`onStoreError 'reject', acquire that ${mode}s: a per-user limit refuses with 503, a route without one accepts`, async (t) => {
    const store = new FlakyStore()
    const started = await storeApp(t, store)
    store.modes.acquire = mode
    for (let i = 0; i < 3; i++) {
      const { headers } = assertRefusal(t, await tryConnect(started.url('/limited'), [], await user('alice')), 503, 'FST_WS_GUARD_STORE_UNAVAILABLE')
      t.equal(headers['retry-after'], '5', 'with Retry-After')
    }
    const counted = await openClient(t, started.url('/counted'), [], await user('alice'))
    t.equal(await ask(counted, 'hi'), 'hi', 'a route without a per-user limit accepts: its lease only counts')
    t.equal(store.inner.count('user:alice'), 0, 'and holds no lease')
    t.same(started.app.wsGuard.stats().rejected, { FST_WS_GUARD_STORE_UNAVAILABLE: 3 }, 'the refusals are counted by code')
    assertHealth(t, started, { lost: 1, back: 0 }, 'one warning for the outage, however many failures')

    store.modes.acquire = 'ok'
    await openClient(t, started.url('/limited'), [], await user('alice'))
    t.equal(store.inner.count('user:alice'), 1, 'the store holds the lease again')
    await openClient(t, started.url('/limited'), [], await user('alice'))
    assertHealth(t, started, { lost: 1, back: 1 }, 'one info line when a call succeeds again')
    t.equal(counted.readyState, counted.OPEN, 'the connection opened during the outage is still open')
  })
}

test('onStoreError \'reject\' with rejectWith \'close\': 1013 "try again later; retry-after=5000"', async (t) => {
  const store = new FlakyStore()
  const started = await storeApp(t, store, { rejectWith: 'close' })
  store.modes.acquire = 'reject'
  const outcome = await tryConnect(started.url('/limited'), [], await user('alice'))
  t.same(outcome, { kind: 'closed', code: 1013, reason: 'try again later; retry-after=5000' }, 'closed with 1013 after the upgrade')
  const counted = await tryConnect(started.url('/counted'), [], await user('alice'))
  t.equal(counted.kind, 'open', 'a route without a per-user limit accepts')
  if (counted.kind === 'open') counted.socket.terminate()
  assertHealth(t, started, { lost: 1, back: 0 }, 'the store-health lines')

  // The store says it is back (its listener), before any call succeeds.
  store.modes.acquire = 'ok'
  store.listener!.available()
  assertHealth(t, started, { lost: 1, back: 1 }, 'one info line when the store says it is back')
  const client = await openClient(t, started.url('/limited'), [], await user('alice'))
  t.equal(client.readyState, client.OPEN, 'the per-user route accepts again')
  assertHealth(t, started, { lost: 1, back: 1 }, 'and no more lines')
})

for (const mode of ['throw', 'reject'] as const) {
  test(`onStoreError 'local', acquire that ${mode}s: the per-user limit is counted in the process`, async (t) => {
    const store = new FlakyStore()
    const started = await storeApp(t, store, { onStoreError: 'local' })
    store.modes.acquire = mode
    const first = await openClient(t, started.url('/limited'), [], await user('alice'))
    await openClient(t, started.url('/limited'), [], await user('alice'))
    const { headers } = assertRefusal(t, await tryConnect(started.url('/limited'), [], await user('alice')), 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
    t.equal(headers['retry-after'], '5', 'the third is refused as over the limit')
    await openClient(t, started.url('/limited'), [], await user('bob'))
    t.equal(store.inner.count('user:alice'), 0, 'nothing reached the store')

    first.close()
    await waitFor(() => started.app.wsGuard.stats().open === 2, 'the close')
    await waitFor(() => store.released.length === 1, 'the store to be told too')
    await openClient(t, started.url('/limited'), [], await user('alice'))
    assertRefusal(t, await tryConnect(started.url('/limited'), [], await user('alice')), 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
    assertHealth(t, started, { lost: 1, back: 0 }, 'one warning')

    // Back: the store gets every lease taken meanwhile, and counts from there.
    store.modes.acquire = 'ok'
    store.listener!.available()
    assertHealth(t, started, { lost: 1, back: 1 }, 'one info line')
    t.equal(store.renewed.length, 1, 'one renewal, of every held lease')
    t.same(store.renewed[0]!.map((lease) => lease.key).sort(), ['user:alice', 'user:alice', 'user:bob'], 'alice\'s two and bob\'s')
    t.equal(store.inner.count('user:alice'), 2, 'the store counts them now')
    const asked = store.calls.acquire
    assertRefusal(t, await tryConnect(started.url('/limited'), [], await user('alice')), 429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
    t.equal(store.calls.acquire, asked + 1, 'the store itself refused that one')
  })
}

for (const mode of ['throw', 'reject'] as const) {
  test(`release that ${mode}s: logged once, the closes counted, the app goes on`, async (t) => {
    const store = new FlakyStore()
    const started = await storeApp(t, store)
    const clients = [
      await openClient(t, started.url('/limited'), [], await user('alice')),
      await openClient(t, started.url('/limited'), [], await user('alice'))
    ]
    store.modes.release = mode
    for (const client of clients) {
      const closed = whenClosed(client)
      client.close()
      await closed
    }
    await waitFor(() => store.calls.release === 2, 'both releases')
    await waitFor(() => started.app.wsGuard.stats().open === 0, 'the closes to be counted')
    t.equal(started.app.wsGuard.stats().closed.normal, 2, 'both closes are counted')
    await waitFor(() => health(started).lost === 1, 'the warning')
    assertHealth(t, started, { lost: 1, back: 0 }, 'one warning for two failed releases')
    // The store still holds the leases it failed to release (a real one lets them lapse).
    t.equal(store.inner.count('user:alice'), 2)
    const client = await openClient(t, started.url('/counted'), [], await user('alice'))
    t.equal(await ask(client, 'still here'), 'still here', 'new connections are accepted')
    assertHealth(t, started, { lost: 1, back: 1 }, 'the acquire that succeeded brought the store back')
  })
}

test('a failed release after the outage is over brings the store back with the next call', async (t) => {
  const store = new FlakyStore()
  const started = await storeApp(t, store)
  store.modes.release = 'reject'
  const client = await openClient(t, started.url('/counted'), [], await user('alice'))
  client.close()
  await waitFor(() => health(started).lost === 1, 'the warning')
  store.modes.release = 'async'
  const next = await openClient(t, started.url('/counted'), [], await user('alice'))
  assertHealth(t, started, { lost: 1, back: 1 }, 'the acquire succeeded: back')
  store.modes.acquire = 'throw'
  await openClient(t, started.url('/counted'), [], await user('bob'))
  assertHealth(t, started, { lost: 2, back: 1 }, 'a second outage: a second warning')
  next.close()
  await waitFor(() => store.released.length === 1, 'the asynchronous release')
  await waitFor(() => health(started).back === 2, 'the successful release to bring it back')
  assertHealth(t, started, { lost: 2, back: 2 }, 'the store-health lines')
})

for (const mode of ['throw', 'reject'] as const) {
  test(`renew that ${mode}s: logged once, and the open connections stay`, async (t) => {
    // Leases of 300 ms: renewed every 100 ms.
    const store = new FlakyStore(300)
    const started = await storeApp(t, store)
    const alice = await openClient(t, started.url('/limited'), [], await user('alice'))
    const bob = await openClient(t, started.url('/counted'), [], await user('bob'))
    await waitFor(() => store.renewed.length >= 1, 'a renewal')
    t.same(store.renewed[0]!.map((lease) => lease.key).sort(), ['user:alice', 'user:bob'], 'one call renews every held lease')
    assertHealth(t, started, { lost: 0, back: 0 }, 'a synchronous renewal says nothing')

    store.modes.renew = mode
    const failedFrom = store.calls.renew
    await waitFor(() => store.calls.renew >= failedFrom + 3, 'several failed renewals')
    await waitFor(() => health(started).lost === 1, 'the warning')
    t.equal(await ask(alice, 'a'), 'a', 'alice\'s connection stays open')
    t.equal(await ask(bob, 'b'), 'b', 'and bob\'s')
    assertHealth(t, started, { lost: 1, back: 0 }, 'one warning, however many renewals fail')

    store.modes.renew = 'async'
    await waitFor(() => health(started).back === 1, 'a successful renewal to bring the store back')
    const { open, closed } = started.app.wsGuard.stats()
    t.equal(open, 2, 'both connections open')
    t.equal(Object.values(closed).reduce((sum, n) => sum + n, 0), 0, 'nothing closed')
  })
}

test('without connections there is nothing to renew', async (t) => {
  const store = new FlakyStore(30)
  const started = await storeApp(t, store)
  const client = await openClient(t, started.url('/counted'), [], await user('alice'))
  await waitFor(() => store.calls.renew >= 1, 'a renewal')
  client.close()
  await waitFor(() => store.inner.count('user:alice') === 0, 'the release')
  const renewals = store.calls.renew
  // The store coming back renews what is held at once: here, nothing.
  store.listener!.available()
  t.equal(store.calls.renew, renewals, 'the store is not asked to renew an empty batch')
  t.equal(started.app.wsGuard.stats().open, 0)
})

for (const mode of ['throw', 'reject'] as const) {
  test(`count that ${mode}s: count() rejects with the store's error, nothing else changes`, async (t) => {
    const store = new FlakyStore()
    const started = await storeApp(t, store)
    const client = await openClient(t, started.url('/limited'), [], await user('alice'))
    t.equal(await started.app.wsGuard.count({ sub: 'alice' }), 1, 'counts while the store answers')
    store.modes.count = mode
    await t.rejects(started.app.wsGuard.count({ sub: 'alice' }), { code: 'ESTORE_DOWN' }, 'the caller hears of the failure')
    t.equal(await ask(client, 'x'), 'x', 'the connection stays')
    store.modes.count = 'async'
    t.equal(await started.app.wsGuard.count({ sub: 'alice' }), 1, 'and counts again once the store answers')
  })
}

for (const mode of ['throw', 'reject'] as const) {
  test(`revocations that ${mode}s at start: the registration fails with the store's error`, async (t) => {
    const store = new FlakyStore()
    store.modes.revocations = mode
    const app = Fastify()
    t.teardown(async () => { await app.close().catch(() => {}) })
    app.register(wsGuard, { store })
    await t.rejects(async () => { await app.ready() }, { code: 'ESTORE_DOWN' }, 'ready() rejects: the first handshake needs the revocations')
  })
}

for (const mode of ['throw', 'reject'] as const) {
  test(`revocations that ${mode}s when the store comes back: logged once; loaded when it answers`, async (t) => {
    const store = new FlakyStore()
    const started = await storeApp(t, store)
    const aliceToken = await user('alice')
    const alice = await openClient(t, started.url('/counted'), [], aliceToken)
    const bob = await openClient(t, started.url('/counted'), [], await user('bob'))
    // A revocation another instance made while this one could not hear it.
    store.inner.publish({ type: 'revoke', from: 'elsewhere', revocation: { sub: 'alice', issuedBefore: now(), until: now(60) } })
    store.modes.revocations = mode
    store.listener!.available()
    await waitFor(() => health(started).lost === 1, 'the warning')
    t.equal(await ask(alice, 'x'), 'x', 'not known here yet')

    store.modes.revocations = 'async'
    const closed = whenClosed(alice)
    store.listener!.available()
    const { code, reason } = await closed
    t.same([code, reason], [4401, 'token revoked'], 'loaded: alice\'s session closes with 4401')
    t.equal(await ask(bob, 'y'), 'y', 'bob\'s stays')
    assertRefusal(t, await tryConnect(started.url('/counted'), [], aliceToken), 401, 'FST_WS_GUARD_TOKEN_REVOKED')
    assertHealth(t, started, { lost: 1, back: 1 }, 'one warning, one info line')
  })
}

for (const mode of ['throw', 'reject'] as const) {
  test(`publish that ${mode}s: disconnect() and revoke() act here, then reject with the store's error`, async (t) => {
    const store = new FlakyStore()
    const started = await storeApp(t, store)
    const bobToken = await user('bob')
    const alice = await openClient(t, started.url('/counted'), [], await user('alice'))
    const bob = await openClient(t, started.url('/counted'), [], bobToken)
    store.modes.publish = mode
    const aliceClosed = whenClosed(alice)
    await t.rejects(started.app.wsGuard.disconnect({ sub: 'alice' }), { code: 'ESTORE_DOWN' }, 'disconnect() rejects')
    t.equal((await aliceClosed).code, 4403, 'alice was disconnected here all the same')
    const bobClosed = whenClosed(bob)
    await t.rejects(started.app.wsGuard.revoke({ sub: 'bob' }), { code: 'ESTORE_DOWN' }, 'revoke() rejects')
    t.equal((await bobClosed).code, 4401, 'bob\'s session was revoked here')
    assertRefusal(t, await tryConnect(started.url('/counted'), [], bobToken), 401, 'FST_WS_GUARD_TOKEN_REVOKED')
    t.same(store.inner.revocations(), [], 'the store holds nothing')
    const carol = await openClient(t, started.url('/counted'), [], await user('carol'))
    t.equal(await ask(carol, 'z'), 'z', 'the app goes on')

    // The store back: it is given the revocation it never got.
    store.modes.publish = 'async'
    store.listener!.available()
    await waitFor(() => store.inner.revocations().length === 1, 'the revocation to be given back')
    t.match(store.inner.revocations(), [{ sub: 'bob' }], 'bob\'s revocation reaches the store')
  })
}

test('a store that fails at everything never closes an open connection', async (t) => {
  const store = new FlakyStore(300)
  const started = await storeApp(t, store, { heartbeat: false })
  const alice = await openClient(t, started.url('/limited'), [], await user('alice'))
  const bob = await openClient(t, started.url('/counted'), [], await user('bob'))
  store.setAll('reject')
  store.listener!.unavailable(new StoreError())
  store.listener!.unavailable(new StoreError())
  await waitFor(() => store.calls.renew >= 3, 'failed renewals')
  assertRefusal(t, await tryConnect(started.url('/limited'), [], await user('alice')), 503, 'FST_WS_GUARD_STORE_UNAVAILABLE')
  await t.rejects(started.app.wsGuard.count({ sub: 'alice' }), { code: 'ESTORE_DOWN' })
  t.equal(await ask(alice, 'a'), 'a', 'alice\'s connection is open')
  t.equal(await ask(bob, 'b'), 'b', 'bob\'s too')
  t.equal(started.app.wsGuard.stats().open, 2)
  assertHealth(t, started, { lost: 1, back: 0 }, 'one warning for the whole outage')
  store.setAll('ok')
  store.listener!.available()
  store.listener!.available()
  assertHealth(t, started, { lost: 1, back: 1 }, 'one info line')
  const closed = whenClosed(alice)
  alice.close()
  await closed
  await waitFor(() => store.released.length === 1, 'alice\'s lease to be released')
  t.equal(store.inner.count('user:alice'), 0, 'the lease taken before the outage is given back')
})

test('a store whose acquire hangs: refused at handshakeTimeout, and a late true is released', async (t) => {
  const store = new FlakyStore()
  const started = await storeApp(t, store, { handshakeTimeout: 200, maxConnections: 1 })
  store.modes.acquire = 'hang'
  const { headers } = assertRefusal(t, await tryConnect(started.url('/limited'), [], await user('alice')), 503, 'FST_WS_GUARD_HANDSHAKE_TIMEOUT')
  t.equal(headers['retry-after'], '5', 'with Retry-After')
  t.equal(store.calls.acquire, 1, 'the store was asked')
  store.settleHung()
  await waitFor(() => store.released.length === 1, 'the late lease to be released')
  t.equal(store.inner.count('user:alice'), 0, 'no lease is left held')
  t.equal(started.app.wsGuard.stats().accepted, 0, 'nothing was accepted')

  store.modes.acquire = 'ok'
  const client = await openClient(t, started.url('/limited'), [], await user('alice'))
  t.equal(await ask(client, 'x'), 'x', 'alice connects next time: the process place was given back too')
  t.equal(store.inner.count('user:alice'), 1)
  assertHealth(t, started, { lost: 0, back: 0 }, 'a slow store is not an unavailable one')
})

test('a store whose listen rejects fails the registration', async (t) => {
  const store = new FlakyStore()
  store.modes.listen = 'reject'
  const app = Fastify()
  t.teardown(async () => { await app.close().catch(() => {}) })
  app.register(wsGuard, { store })
  await t.rejects(async () => { await app.ready() }, { code: 'ESTORE_DOWN' }, 'ready() rejects with the store\'s error')
})
