import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import type { FastifyRequest } from 'fastify'
import type WebSocket from 'ws'
import wsGuard, { type WsGuardAuthOptions } from '../../index.js'
import { startApp } from '../helpers/app.js'
import { ask, openClient, whenClosed } from '../helpers/clients.js'
import { bearer, mint, now, secret, secretBytes } from '../helpers/tokens.js'
import { waitFor } from '../helpers/wait.js'

// The wheel ticks every 250 ms at most; the slack covers a busy machine.
const slack = 250 + 250

interface RefreshApp {
  url: (path: string) => string
  stats: () => ReturnType<import('fastify').FastifyInstance['wsGuard']['stats']>
  /** What each wsRefresh() call ended with: 'ok' or the error's code. */
  outcomes: string[]
  errors: Array<Error & { code?: string, statusCode?: number }>
}

/**
 * An app whose `/ws` route treats every message as a fresh token for `request.wsRefresh()`
 * (the text `not-a-string` stands for a non-string argument) and answers `refreshed` or
 * `exp <n>` on `exp?`.
 */
async function refreshApp (t: Parameters<typeof startApp>[0], auth: Partial<WsGuardAuthOptions> = {}, withAuth = true): Promise<RefreshApp> {
  const outcomes: string[] = []
  const errors: RefreshApp['errors'] = []
  const handler = (socket: WebSocket, request: FastifyRequest): void => {
    socket.on('message', (data) => {
      const text = String(data)
      if (text === 'exp?') return socket.send(`exp ${String(request.wsUser?.exp)}`)
      const token = text === 'not-a-string' ? 42 as unknown as string : text
      request.wsRefresh(token).then(() => {
        outcomes.push('ok')
        socket.send('refreshed')
      }, (err: RefreshApp['errors'][number]) => {
        outcomes.push(err.code ?? 'unknown')
        errors.push(err)
        socket.send(`refused ${err.code}`)
      })
    })
  }
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, withAuth ? { auth: { secret, clockTolerance: 0, ...auth } } : {})
    app.wsRoute('/ws', handler)
    if (withAuth) {
      app.wsRoute('/public', { config: { wsGuard: { auth: false } } }, handler)
      app.wsRoute('/unguarded', { config: { wsGuard: false } }, handler)
    }
  })
  return { url, stats: () => app.wsGuard.stats(), outcomes, errors }
}

test('a connection closes with 4401 "token expired" when its token expires', async (t) => {
  const app = await refreshApp(t)
  const exp = now(2)
  const token = await mint(secretBytes, { sub: 'alice' }, { exp })
  const client = await openClient(t, app.url('/ws'), [], bearer(token))
  const closed = await whenClosed(client)
  t.equal(closed.code, 4401, 'the client sees 4401')
  t.equal(closed.reason, 'token expired', 'and the short fixed reason')
  t.ok(closed.at >= exp * 1000 - 20, `not before exp (${closed.at - exp * 1000} ms after it)`)
  t.ok(closed.at <= exp * 1000 + slack, `soon after exp (${closed.at - exp * 1000} ms after it)`)
  await waitFor(() => app.stats().open === 0, 'the close to be counted')
  t.equal(app.stats().closed.tokenExpired, 1, 'recorded as token expired')
})

test('the clock tolerance extends the expiry deadline', async (t) => {
  const app = await refreshApp(t, { clockTolerance: 1 })
  const exp = now(1)
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' }, { exp })))
  const closed = await whenClosed(client)
  t.equal(closed.code, 4401, 'closed with 4401')
  t.ok(closed.at >= (exp + 1) * 1000 - 20, `not before exp plus the tolerance (${closed.at - exp * 1000} ms after exp)`)
  t.ok(closed.at <= (exp + 1) * 1000 + slack, 'soon after it')
})

test('wsRefresh() before expiry keeps the connection open past the original exp and moves the deadline', async (t) => {
  const app = await refreshApp(t)
  const exp = now(2)
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' }, { exp })))
  const closed = whenClosed(client)
  const freshExp = exp + 1
  t.equal(await ask(client, await mint(secretBytes, { sub: 'alice' }, { exp: freshExp })), 'refreshed', 'wsRefresh() resolves')
  t.equal(await ask(client, 'exp?'), `exp ${freshExp}`, 'request.wsUser holds the fresh claims')
  await sleep(exp * 1000 + 500 - Date.now())
  t.equal(client.readyState, client.OPEN, 'open past the original exp')
  const { code, reason, at } = await closed
  t.equal(code, 4401, 'closed when the fresh token expires')
  t.equal(reason, 'token expired', 'with the fixed reason')
  t.ok(at >= freshExp * 1000 - 20 && at <= freshExp * 1000 + slack, `at the fresh exp (${at - freshExp * 1000} ms after it)`)
  t.same(app.outcomes, ['ok'], 'one successful refresh')
})

test('wsRefresh() with a long-lived token keeps the connection open', async (t) => {
  const app = await refreshApp(t, { isRevoked: (claims) => claims.jti === 'revoked' })
  const exp = now(2)
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' }, { exp })))
  t.equal(await ask(client, await mint(secretBytes, { sub: 'alice', jti: 'fine' }, { exp: now(3600) })), 'refreshed', 'refreshed (isRevoked said no)')
  await sleep(exp * 1000 + 500 - Date.now())
  t.equal(client.readyState, client.OPEN, 'open past the original exp')
  t.equal(app.stats().closed.tokenExpired, 0, 'nothing expired')
})

const otherSecret = new TextEncoder().encode('another-secret-of-forty-bytes-0123456789')
const refusals: Array<{ name: string, token: () => Promise<string>, code: string, reason: string, counted?: 'revoked' }> = [
  { name: 'a token for another sub', token: () => mint(secretBytes, { sub: 'mallory' }), code: 'FST_WS_GUARD_TOKEN_INVALID', reason: 'invalid token' },
  {
    name: 'a token with a bad signature',
    token: () => mint(otherSecret, { sub: 'alice' }),
    code: 'FST_WS_GUARD_TOKEN_INVALID',
    reason: 'invalid token'
  },
  { name: 'a malformed token', token: async () => 'not.a-token', code: 'FST_WS_GUARD_TOKEN_INVALID', reason: 'invalid token' },
  { name: 'something that is not a string', token: async () => 'not-a-string', code: 'FST_WS_GUARD_TOKEN_INVALID', reason: 'invalid token' },
  { name: 'an expired token', token: () => mint(secretBytes, { sub: 'alice' }, { exp: now(-60) }), code: 'FST_WS_GUARD_TOKEN_EXPIRED', reason: 'token expired' },
  // A 401 like the others, but counted apart: the token was good, the user was revoked.
  { name: 'a revoked token', token: () => mint(secretBytes, { sub: 'alice', jti: 'revoked' }), code: 'FST_WS_GUARD_TOKEN_REVOKED', reason: 'token revoked', counted: 'revoked' }
]
for (const refusal of refusals) {
  test(`wsRefresh() with ${refusal.name} rejects and closes the connection with 4401`, async (t) => {
    const app = await refreshApp(t, { isRevoked: (claims) => claims.jti === 'revoked' })
    const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' })))
    const closed = whenClosed(client)
    const fresh = await refusal.token()
    client.send(fresh)
    const { code, reason } = await closed
    t.equal(code, 4401, 'the client sees 4401')
    t.equal(reason, refusal.reason, 'a short fixed reason')
    t.notOk(reason.includes(fresh) || reason.includes('alice') || reason.includes('mallory'), 'no token or claim in the reason')
    await waitFor(() => app.errors.length === 1, 'wsRefresh() to reject')
    const error = app.errors[0]!
    t.equal(error.code, refusal.code, `rejects with ${refusal.code}`)
    t.equal(error.statusCode, 401, 'a 401 error')
    await waitFor(() => app.stats().open === 0, 'the close to be counted')
    const { tokenExpired, revoked } = app.stats().closed
    if (refusal.counted === 'revoked') t.same({ tokenExpired, revoked }, { tokenExpired: 0, revoked: 1 }, 'counted as revoked')
    else t.same({ tokenExpired, revoked }, { tokenExpired: 1, revoked: 0 }, 'counted with the token closes')
  })
}

for (const [name, withAuth, path] of [['a plugin without auth', false, '/ws'], ['a route with auth: false', true, '/public'], ['a route the guard does not handle', true, '/unguarded']] as const) {
  test(`wsRefresh() on ${name} rejects with FST_WS_GUARD_REFRESH_UNAVAILABLE`, async (t) => {
    const app = await refreshApp(t, {}, withAuth)
    const client = await openClient(t, app.url(path))
    t.equal(await ask(client, await mint(secretBytes, { sub: 'alice' })), 'refused FST_WS_GUARD_REFRESH_UNAVAILABLE', 'rejects')
    t.equal(app.errors[0]?.statusCode, 500, 'an application error (500)')
    t.equal(client.readyState, client.OPEN, 'the connection stays open')
  })
}

test('wsRefresh() on a plain HTTP request rejects with FST_WS_GUARD_REFRESH_UNAVAILABLE', async (t) => {
  const { port } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret } })
    app.get('/http', async (request) => {
      await request.wsRefresh('x.y.z')
      return 'refreshed'
    })
  })
  const response = await fetch(`http://127.0.0.1:${port}/http`)
  t.equal(response.status, 500, '500')
  t.equal(((await response.json()) as { code: string }).code, 'FST_WS_GUARD_REFRESH_UNAVAILABLE', 'with the code')
})

test('closeOnExpiry: false keeps the connection open past exp', async (t) => {
  const app = await refreshApp(t, { closeOnExpiry: false })
  const exp = now(2)
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' }, { exp })))
  t.equal(await ask(client, await mint(secretBytes, { sub: 'alice' }, { exp: now(2) })), 'refreshed', 'a refresh works too')
  await sleep(exp * 1000 + 600 - Date.now())
  t.equal(client.readyState, client.OPEN, 'open past exp')
  t.equal(app.stats().closed.tokenExpired, 0, 'nothing expired')
})

test('a token without exp (allowMissingExp) never expires the connection', async (t) => {
  const app = await refreshApp(t, { allowMissingExp: true })
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' }, { exp: false })))
  t.equal(await ask(client, await mint(secretBytes, { sub: 'alice' }, { exp: false })), 'refreshed', 'a refresh without exp works')
  await sleep(300)
  t.equal(client.readyState, client.OPEN, 'open')
  t.equal(app.stats().closed.tokenExpired, 0, 'nothing expired')
})
