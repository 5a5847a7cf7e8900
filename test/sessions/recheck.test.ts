import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, { MemoryStore } from '../../index.js'
import { startApp, type StartedApp } from '../helpers/app.js'
import { ask, openClient, whenClosed, type Closed } from '../helpers/clients.js'
import { bearer, mint, secret, secretBytes } from '../helpers/tokens.js'
import { deferred, waitFor } from '../helpers/wait.js'

// auth.recheck: isRevoked, authorize and the revocations run again on every open connection
// once per interval, the first time at a random point of it.

const interval = 1000
/** One interval, the first check's spread, and slack for a busy machine. */
const bound = 3 * interval

/** What the app's checks say, per sub, and how often each was asked. */
class Checks {
  readonly revoked = new Set<string>()
  readonly banned = new Set<string>()
  readonly failing = new Set<string>()
  /** Subs whose next check waits on `pending`. */
  readonly waiting = new Set<string>()
  pending = deferred<boolean>()
  readonly calls = new Map<string, number>()

  isRevoked = async (user: { sub?: unknown }): Promise<boolean> => {
    const sub = String(user.sub)
    this.calls.set(sub, (this.calls.get(sub) ?? 0) + 1)
    if (this.waiting.delete(sub)) return await this.pending.promise
    if (this.failing.has(sub)) throw new Error('lookup failed: postgres://app:SENSITIVE-password@db.internal')
    return this.revoked.has(sub)
  }

  authorize = (user: { sub?: unknown }): boolean => !this.banned.has(String(user.sub))

  callsOf (sub: string): number {
    return this.calls.get(sub) ?? 0
  }
}

async function recheckApp (t: Test, checks: Checks): Promise<StartedApp> {
  const echo = (socket: WebSocket): void => { socket.on('message', (data) => socket.send(String(data))) }
  return await startApp(t, async (app) => {
    await app.register(wsGuard, {
      store: new MemoryStore(),
      heartbeat: false,
      auth: { secret, recheck: { interval }, isRevoked: checks.isRevoked, authorize: checks.authorize }
    })
    app.wsRoute('/ws', echo)
    // The same checks at the handshake, none after it.
    app.wsRoute('/once', { config: { wsGuard: { auth: { recheck: undefined } } } }, echo)
  })
}

async function connect (t: Test, started: StartedApp, sub: string, path = '/ws'): Promise<WebSocket> {
  return await openClient(t, started.url(path), [], bearer(await mint(secretBytes, { sub })))
}

/** The close the client sees within `bound` ms; code 0 when it stays open. */
async function closeWithin (socket: WebSocket): Promise<Pick<Closed, 'code' | 'reason'>> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<Pick<Closed, 'code' | 'reason'>>((resolve) => {
    timer = setTimeout(() => resolve({ code: 0, reason: 'still open' }), bound)
  })
  try {
    const { code, reason } = await Promise.race([whenClosed(socket), timeout])
    return { code, reason }
  } finally {
    clearTimeout(timer)
  }
}

test('a session whose isRevoked turns true is closed with 4401 "token revoked" within an interval', async (t) => {
  const checks = new Checks()
  const started = await recheckApp(t, checks)
  const alice = await connect(t, started, 'alice')
  const carol = await connect(t, started, 'carol')
  checks.revoked.add('alice')
  const closed = await closeWithin(alice)
  t.same(closed, { code: 4401, reason: 'token revoked' }, 'closed by the recheck')
  t.ok(checks.callsOf('alice') >= 2, 'isRevoked was asked again after the handshake')
  t.equal(await ask(carol, 'carol'), 'carol', 'another user stays')
  await waitFor(() => started.app.wsGuard.stats().open === 1, 'the close to be counted')
  t.equal(started.app.wsGuard.stats().closed.revoked, 1, 'counted as revoked')
})

test('a session whose authorize turns false is closed with 4403 "forbidden" within an interval', async (t) => {
  const checks = new Checks()
  const started = await recheckApp(t, checks)
  const bob = await connect(t, started, 'bob')
  const carol = await connect(t, started, 'carol')
  checks.banned.add('bob')
  t.same(await closeWithin(bob), { code: 4403, reason: 'forbidden' }, 'closed by the recheck')
  t.equal(await ask(carol, 'carol'), 'carol', 'another user stays')
  await waitFor(() => started.app.wsGuard.stats().open === 1, 'the close to be counted')
  t.equal(started.app.wsGuard.stats().closed.forbidden, 1, 'counted as forbidden')
})

test('a recheck that throws is logged, and the connection stays and is checked again', async (t) => {
  const checks = new Checks()
  const started = await recheckApp(t, checks)
  const dave = await connect(t, started, 'dave')
  checks.failing.add('dave')
  const failures = (): Array<Record<string, unknown>> => started.logs.lines.filter((line) => line.msg === 'websocket recheck failed')
  await waitFor(() => failures().length >= 2, 'two failed rechecks, an interval apart', 2 * bound)
  t.match(failures()[0], { level: 50, wsGuard: { err: { name: 'Error' }, route: '/ws' } }, 'an error line with the error\'s identity and the route')
  t.notOk(started.logs.text.includes('SENSITIVE'), 'never the error\'s message')
  t.equal(await ask(dave, 'dave'), 'dave', 'the connection stays open')
  checks.failing.delete('dave')
  checks.revoked.add('dave')
  t.same(await closeWithin(dave), { code: 4401, reason: 'token revoked' }, 'the rechecks go on after a failure')
})

test('a route without recheck is checked at the handshake only', async (t) => {
  const checks = new Checks()
  const started = await recheckApp(t, checks)
  const frank = await connect(t, started, 'frank', '/once')
  const control = await connect(t, started, 'control')
  // Every first recheck of connections opened before it lands before control's second.
  await waitFor(() => checks.callsOf('control') >= 3, 'control to be rechecked twice', 2 * bound)
  t.equal(checks.callsOf('frank'), 1, 'frank\'s isRevoked ran once, at the handshake')
  t.equal(await ask(frank, 'frank'), 'frank')
  t.equal(await ask(control, 'control'), 'control')
})

test('a connection that closes while its recheck is pending is left alone', async (t) => {
  const checks = new Checks()
  const started = await recheckApp(t, checks)
  const erin = await connect(t, started, 'erin')
  const fay = await connect(t, started, 'fay')
  checks.waiting.add('erin')
  await waitFor(() => !checks.waiting.has('erin'), 'erin\'s recheck to start', bound)
  const closed = whenClosed(erin)
  erin.close(1000)
  await closed
  await waitFor(() => started.app.wsGuard.stats().open === 1, 'the close to be counted')
  checks.pending.resolve(true)
  // fay's recheck fails after she has gone.
  checks.pending = deferred<boolean>()
  checks.waiting.add('fay')
  await waitFor(() => !checks.waiting.has('fay'), 'fay\'s recheck to start', bound)
  const fayClosed = whenClosed(fay)
  fay.close(1000)
  await fayClosed
  await waitFor(() => started.app.wsGuard.stats().open === 0, 'the close to be counted')
  checks.failing.add('fay')
  checks.pending.resolve(Promise.reject(new Error('late failure')) as unknown as boolean)
  await waitFor(() => started.logs.lines.some((line) => line.msg === 'websocket recheck failed'), 'the late failure to be logged')
  const { closed: ended } = started.app.wsGuard.stats()
  t.equal(ended.normal, 2, 'both closes are the clients\' own')
  t.equal(ended.revoked + ended.forbidden, 0, 'no recheck closed anything')
})
