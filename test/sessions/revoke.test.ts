import { test, type Test } from 'tap'
import type { FastifyRequest } from 'fastify'
import type WebSocket from 'ws'
import wsGuard, { MemoryStore, type ConnectionStore, type Revocation, type WsGuardAuthOptions, type WsGuardOptions } from '../../index.js'
import { startApp, type StartedApp } from '../helpers/app.js'
import { ask, openClient, tryConnect, whenClosed, type Closed } from '../helpers/clients.js'
import { expectRefused } from '../helpers/refusals.js'
import { bearer, mint, now, secret, secretBytes, type MintOptions } from '../helpers/tokens.js'
import { deferred, waitFor } from '../helpers/wait.js'

// app.wsGuard.revoke(): "log out everywhere". The matching sessions close on every instance
// that shares the store, and the matching tokens are refused at the handshake and on
// wsRefresh until the revocation's until. Two apps sharing one MemoryStore stand for a fleet.

interface Instance extends StartedApp {
  /** What each wsRefresh() ended with: 'ok' or the error's code. */
  refreshes: string[]
}

/**
 * An instance whose `/ws` route echoes, except `refresh <token>`, which it hands to
 * `request.wsRefresh()` (the outcome goes to `refreshes`; the client hears `refreshed`).
 */
async function instance (t: Test, store: ConnectionStore, options: WsGuardOptions = {}, auth: Partial<WsGuardAuthOptions> = {}): Promise<Instance> {
  const refreshes: string[] = []
  const handler = (socket: WebSocket, request: FastifyRequest): void => {
    socket.on('message', (data) => {
      const text = String(data)
      if (!text.startsWith('refresh ')) return socket.send(text)
      request.wsRefresh(text.slice('refresh '.length)).then(() => {
        refreshes.push('ok')
        socket.send('refreshed')
      }, (err: { code?: string }) => { refreshes.push(String(err.code)) })
    })
  }
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret, ...auth }, store, ...options })
    app.wsRoute('/ws', handler)
    app.wsRoute('/public', { config: { wsGuard: { auth: false } } }, handler)
  })
  return { ...started, refreshes }
}

async function fleet (t: Test, options: WsGuardOptions = {}): Promise<{ store: MemoryStore, a: Instance, b: Instance }> {
  const store = new MemoryStore()
  return { store, a: await instance(t, store, options), b: await instance(t, store, options) }
}

async function token (claims: Record<string, unknown>, options: MintOptions = {}): Promise<string> {
  return await mint(secretBytes, claims, options)
}

async function connect (t: Test, started: StartedApp, jwt: string): Promise<WebSocket> {
  return await openClient(t, started.url('/ws'), [], bearer(jwt))
}

async function refused (t: Test, started: StartedApp, jwt: string, what: string): Promise<void> {
  t.comment(what)
  await expectRefused(t, started.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_REVOKED', [], bearer(jwt))
}

async function accepted (t: Test, started: StartedApp, jwt: string, what: string): Promise<WebSocket | undefined> {
  const outcome = await tryConnect(started.url('/ws'), [], bearer(jwt))
  t.equal(outcome.kind, 'open', what)
  if (outcome.kind !== 'open') return undefined
  t.teardown(() => outcome.socket.terminate())
  return outcome.socket
}

function closeOf (closed: Closed): [number, string] {
  return [closed.code, closed.reason]
}

test('revoke({ sub }) closes the user\'s sessions everywhere with 4401 "token revoked", and nobody else\'s', async (t) => {
  const { a, b } = await fleet(t)
  const old = await token({ sub: 'alice' })
  const alice = [await connect(t, a, old), await connect(t, b, old), await connect(t, b, await token({ sub: 'alice', jti: 'x' }))]
  const bob = await connect(t, b, await token({ sub: 'bob' }))
  const anonymous = await openClient(t, a.url('/public'))
  const closes = alice.map(whenClosed)
  t.equal(await a.app.wsGuard.revoke({ sub: 'alice' }), 1, 'resolves with how many closed here')
  for (const closed of await Promise.all(closes)) t.same(closeOf(closed), [4401, 'token revoked'], 'each of alice\'s sessions, on both instances')
  t.equal(await ask(bob, 'bob'), 'bob', 'bob stays')
  t.equal(await ask(anonymous, 'anonymous'), 'anonymous', 'a session without a user stays')
  await waitFor(() => a.app.wsGuard.stats().open === 1 && b.app.wsGuard.stats().open === 1, 'the closes to be counted')
  t.equal(a.app.wsGuard.stats().closed.revoked, 1, 'counted as revoked on a')
  t.equal(b.app.wsGuard.stats().closed.revoked, 2, 'and on b')
  t.match(a.logs.lines.filter((line) => line.msg === 'websocket sessions revoked'), [{ level: 30, wsGuard: { closed: 1 } }], 'an info line on a')
  t.match(b.logs.lines.filter((line) => line.msg === 'websocket sessions revoked'), [{ level: 30, wsGuard: { closed: 2 } }], 'and on b')

  await refused(t, a, old, 'the token issued before is refused on a')
  await refused(t, b, old, 'and on b')
  await refused(t, b, await token({ sub: 'alice' }, { iat: now(-3600) }), 'so is any token issued before')
  await refused(t, a, await token({ sub: 'alice' }, { iat: false }), 'and one without iat: its age is unknown')
  const later = await token({ sub: 'alice' }, { iat: now(2) })
  await accepted(t, a, later, 'a token issued after the revocation connects on a')
  await accepted(t, b, later, 'and on b')
  await accepted(t, b, await token({ sub: 'bob' }), 'bob connects')
  t.same(a.app.wsGuard.stats().rejected, { FST_WS_GUARD_TOKEN_REVOKED: 2 }, 'the refusals are counted by code')
})

test('a token revoked on another instance is refused by wsRefresh, which closes the session', async (t) => {
  const { a, b } = await fleet(t)
  const old = await token({ sub: 'alice', n: 1 })
  t.equal(await a.app.wsGuard.revoke({ sub: 'alice' }), 0, 'nothing open to close')
  await refused(t, b, old, 'b knows of the revocation')
  const session = await connect(t, b, await token({ sub: 'alice', n: 2 }, { iat: now(2) }))
  t.equal(await ask(session, `refresh ${await token({ sub: 'alice', n: 3 }, { iat: now(2) })}`), 'refreshed', 'a fresh token issued after the revocation refreshes')
  const closed = whenClosed(session)
  session.send(`refresh ${old}`)
  t.same(closeOf(await closed), [4401, 'token revoked'], 'a token issued before closes the session')
  await waitFor(() => b.refreshes.length === 2, 'wsRefresh() to reject')
  t.same(b.refreshes, ['ok', 'FST_WS_GUARD_TOKEN_REVOKED'], 'the promise rejects with FST_WS_GUARD_TOKEN_REVOKED')
  await waitFor(() => b.app.wsGuard.stats().open === 0, 'the close to be counted')
  t.equal(b.app.wsGuard.stats().closed.revoked, 1, 'counted as revoked')
})

test('revoke({ jti }) revokes one token, everywhere', async (t) => {
  const { a, b } = await fleet(t)
  const one = await token({ sub: 'alice', jti: 'token-1' })
  const two = await token({ sub: 'alice', jti: 'token-2' })
  const sessions = [await connect(t, a, one), await connect(t, b, one)]
  const kept = [await connect(t, a, two), await connect(t, b, two)]
  const closes = sessions.map(whenClosed)
  t.equal(await b.app.wsGuard.revoke({ jti: 'token-1' }), 1)
  for (const closed of await Promise.all(closes)) t.same(closeOf(closed), [4401, 'token revoked'], 'token-1\'s sessions close on both')
  for (const client of kept) t.equal(await ask(client, 'two'), 'two', 'token-2\'s stay')
  await refused(t, a, one, 'token-1 is refused on a')
  await refused(t, b, one, 'and on b')
  await refused(t, a, await token({ sub: 'bob', jti: 'token-1' }), 'whoever holds it')
  await accepted(t, a, two, 'token-2 connects')
})

test('revoke({ sub, issuedBefore }) revokes the tokens issued up to that second only', async (t) => {
  const { a, b } = await fleet(t)
  const cutoff = now(-100)
  const older = await token({ sub: 'alice' }, { iat: cutoff - 50 })
  const atCutoff = await token({ sub: 'alice' }, { iat: cutoff })
  const newer = await token({ sub: 'alice' }, { iat: cutoff + 1 })
  const gone = [await connect(t, a, older), await connect(t, b, atCutoff)]
  const kept = await connect(t, b, newer)
  const closes = gone.map(whenClosed)
  t.equal(await a.app.wsGuard.revoke({ sub: 'alice', issuedBefore: cutoff }), 1)
  for (const closed of await Promise.all(closes)) t.equal(closed.code, 4401, 'a token issued up to the cutoff closes')
  t.equal(await ask(kept, 'kept'), 'kept', 'a token issued after stays')
  await refused(t, b, atCutoff, 'issued in the cutoff second: refused')
  await accepted(t, a, newer, 'issued the second after: accepted')
})

test('revoke() refuses what it cannot mean, before revoking anything', async (t) => {
  const { store, a, b } = await fleet(t)
  const session = await connect(t, b, await token({ sub: 'alice', jti: 'j' }))
  const futureMessage = /revoke\(\): until is epoch seconds in the future, as in Math\.floor\(Date\.now\(\) \/ 1000\) \+ 3600, got /
  const targetMessage = /revoke\(\) takes \{ jti \} for one token or \{ sub, issuedBefore\? \} for a user's tokens/
  const cases: Array<[target: unknown, options: unknown, message: RegExp]> = [
    [{ sub: 'alice' }, { until: now(-10) }, new RegExp(futureMessage.source + 'number \\d+$')],
    [{ sub: 'alice' }, { until: now() }, new RegExp(futureMessage.source + 'number \\d+$')],
    [{ sub: 'alice' }, { until: Number.NaN }, new RegExp(futureMessage.source + 'number NaN$')],
    [{ sub: 'alice' }, { until: Number.POSITIVE_INFINITY }, new RegExp(futureMessage.source + 'number Infinity$')],
    [{ sub: 'alice' }, { until: String(now(60)) }, new RegExp(futureMessage.source + 'the string "\\d+"$')],
    [{ sub: 'alice' }, { until: new Date(Date.now() + 60_000) }, new RegExp(futureMessage.source + 'object$')],
    [{}, undefined, targetMessage],
    [null, undefined, targetMessage],
    ['alice', undefined, targetMessage],
    [{ jti: '' }, undefined, targetMessage],
    [{ sub: '' }, undefined, targetMessage],
    [{ jti: 42 }, undefined, targetMessage],
    [{ jti: 'j', sub: 'alice' }, undefined, targetMessage],
    [{ sub: 'alice', issuedBefore: 'yesterday' }, undefined, /revoke\(\): issuedBefore is epoch seconds, got the string "yesterday"/],
    [{ sub: 'alice', issuedBefore: Number.NaN }, undefined, /revoke\(\): issuedBefore is epoch seconds, got number/]
  ]
  for (const [target, options, message] of cases) {
    await t.rejects(a.app.wsGuard.revoke(target as never, options as never), { code: 'FST_WS_GUARD_INVALID_OPTION', message }, String(message))
  }
  t.same(store.revocations(), [], 'nothing was stored')
  t.equal(await ask(session, 'still'), 'still', 'nothing was closed')
  await accepted(t, a, await token({ sub: 'alice', jti: 'j' }), 'nothing is refused')
})

test('a revocation lasts revocationTtl seconds, or until the until given', async (t) => {
  const { store, a } = await fleet(t, { revocationTtl: 120 })
  const before = now()
  await a.app.wsGuard.revoke({ jti: 'token-1' })
  const after = now()
  const [kept] = store.revocations() as Revocation[]
  t.ok(kept!.until >= before + 120 && kept!.until <= after + 120, 'revocationTtl from now')
  const until = now(3600)
  await a.app.wsGuard.revoke({ sub: 'alice', issuedBefore: 1000 }, { until })
  t.same(store.revocations()[1], { sub: 'alice', issuedBefore: 1000, until }, 'the until and issuedBefore given')
})

test('a revocation whose until has passed no longer refuses', async (t) => {
  const { store, a, b } = await fleet(t)
  const jwt = await token({ sub: 'alice', jti: 'token-1' })
  const until = now(2)
  await a.app.wsGuard.revoke({ jti: 'token-1' }, { until })
  await refused(t, a, jwt, 'refused while the revocation lasts')
  await refused(t, b, jwt, 'on both instances')
  await waitFor(() => Date.now() / 1000 >= until, 'the revocation\'s until to pass', 4000)
  await accepted(t, a, jwt, 'accepted on a once it has passed')
  await accepted(t, b, jwt, 'and on b')
  t.same(store.revocations(), [], 'the store dropped it too')
})

test('revocations in the store are loaded at start: a new instance refuses from its first handshake', async (t) => {
  const store = new MemoryStore()
  const issuedBefore = now()
  store.publish({ type: 'revoke', from: 'an-earlier-instance', revocation: { sub: 'alice', issuedBefore, until: now(600) } })
  store.publish({ type: 'revoke', from: 'an-earlier-instance', revocation: { jti: 'token-9', until: now(600) } })
  const late = await instance(t, store)
  await refused(t, late, await token({ sub: 'alice' }, { iat: issuedBefore }), 'alice\'s token issued before')
  await refused(t, late, await token({ sub: 'bob', jti: 'token-9' }), 'the revoked token')
  await accepted(t, late, await token({ sub: 'alice' }, { iat: issuedBefore + 1 }), 'alice\'s token issued after')
})

test('revocations a slow store holds are loaded before the first handshake', async (t) => {
  const inner = new MemoryStore()
  inner.publish({ type: 'revoke', from: 'an-earlier-instance', revocation: { sub: 'alice', issuedBefore: now(), until: now(600) } })
  // As over a network: the list arrives a little later.
  const store: ConnectionStore = {
    leaseTtl: Infinity,
    acquire: (lease, limit) => inner.acquire(lease, limit),
    renew: () => {},
    release: (lease) => inner.release(lease),
    count: (key) => inner.count(key),
    publish: (message) => inner.publish(message),
    revocations: async () => await new Promise((resolve) => setTimeout(() => resolve(inner.revocations()), 300)),
    listen: async (listener) => await inner.listen(listener)
  }
  const late = await instance(t, store)
  await refused(t, late, await token({ sub: 'alice' }, { iat: now(-10) }), 'alice\'s revoked token is refused from the first handshake')
})

test('a handshake waiting on authorize when its token is revoked does not open', async (t) => {
  const authorized = deferred<boolean>()
  let calls = 0
  const started = await instance(t, new MemoryStore(), {}, { authorize: async () => ++calls === 1 ? await authorized.promise : true })
  const outcome = tryConnect(started.url('/ws'), [], bearer(await token({ sub: 'alice' })))
  await waitFor(() => calls === 1, 'authorize to be asked')
  await started.app.wsGuard.revoke({ sub: 'alice' })
  authorized.resolve(true)
  const result = await outcome
  if (result.kind === 'open') result.socket.terminate()
  t.match(result, { kind: 'refused', status: 401 }, 'the handshake is refused before the upgrade')
  t.equal(started.app.wsGuard.stats().rejected.FST_WS_GUARD_TOKEN_REVOKED, 1, 'as FST_WS_GUARD_TOKEN_REVOKED')
  t.equal(started.app.wsGuard.stats().accepted, 0, 'no session ever opened')
})
