import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, { type WsGuardAuthOptions } from '../../index.js'
import { startApp } from '../helpers/app.js'
import { openClient, whenClosed, type Closed } from '../helpers/clients.js'
import { recordChannels } from '../helpers/logs.js'
import { bearer, mint, now, secret, secretBytes } from '../helpers/tokens.js'
import { deferred, waitFor } from '../helpers/wait.js'

type RefreshError = Error & { code?: string, statusCode?: number }

interface RefreshApp {
  app: FastifyInstance
  url: (path: string) => string
  /** The request of each accepted connection, in order. */
  requests: FastifyRequest[]
  /** What each `wsRefresh()` ended with, in the order they settled: 'ok' or the error's code. */
  outcomes: string[]
  errors: RefreshError[]
}

/**
 * An app whose `/ws` route hands every text frame to `request.wsRefresh()` and answers
 * `refreshed` or `refused <code>`; the test reads the request (and its `wsUser`) directly.
 */
async function refreshApp (t: Test, auth: Partial<WsGuardAuthOptions> | false = {}): Promise<RefreshApp> {
  const requests: FastifyRequest[] = []
  const outcomes: string[] = []
  const errors: RefreshError[] = []
  const handler = (socket: WebSocket, request: FastifyRequest): void => {
    requests.push(request)
    socket.on('message', (data) => {
      request.wsRefresh(String(data)).then(() => {
        outcomes.push('ok')
        socket.send('refreshed')
      }, (err: RefreshError) => {
        outcomes.push(err.code ?? 'unknown')
        errors.push(err)
        socket.send(`refused ${String(err.code)}`)
      })
    })
  }
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, auth === false ? {} : { auth: { secret, clockTolerance: 0, ...auth } })
    app.wsRoute('/ws', handler)
  })
  return { app: started.app, url: started.url, requests, outcomes, errors }
}

async function ask (socket: WebSocket, message: string): Promise<string> {
  const answer = new Promise<string>((resolve) => socket.once('message', (data) => resolve(String(data))))
  socket.send(message)
  return await answer
}

/** The close the client sees within `ms`; code 0 when it stays open (then the client is terminated). */
async function closeWithin (socket: WebSocket, ms = 3000): Promise<Pick<Closed, 'code' | 'reason'>> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<Pick<Closed, 'code' | 'reason'>>((resolve) => {
    timer = setTimeout(() => resolve({ code: 0, reason: 'still open' }), ms)
  })
  try {
    return await Promise.race([whenClosed(socket), timeout])
  } finally {
    clearTimeout(timer)
    socket.terminate()
  }
}

/** Calls `wsRefresh` directly and returns the error it rejected with (undefined when it resolved). */
async function refreshError (request: FastifyRequest, token: string): Promise<RefreshError | undefined> {
  try {
    await request.wsRefresh(token)
    return undefined
  } catch (err) {
    return err as RefreshError
  }
}

test('a fresh token authorize refuses closes the connection with 4403 "forbidden"', async (t) => {
  const app = await refreshApp(t, { authorize: (claims) => claims.banned !== true })
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice', n: 1 })))
  const closed = closeWithin(client)
  client.send(await mint(secretBytes, { sub: 'alice', n: 2, banned: true }))
  const { code, reason } = await closed
  t.equal(code, 4403, 'the client sees 4403')
  t.equal(reason, 'forbidden', 'with the reason "forbidden"')
  await waitFor(() => app.errors.length === 1, 'wsRefresh() to reject')
  t.equal(app.errors[0]?.code, 'FST_WS_GUARD_FORBIDDEN', 'the promise rejects with FST_WS_GUARD_FORBIDDEN')
  t.equal(app.errors[0]?.statusCode, 403, 'a 403 error')
  t.equal(app.requests[0]?.wsUser?.n, 1, 'request.wsUser keeps the claims of the handshake')
  t.equal(app.requests[0]?.wsUser?.banned, undefined, 'none of the refused claims')
  await waitFor(() => app.app.wsGuard.stats().open === 0, 'the close to be counted')
  const { closed: ended } = app.app.wsGuard.stats()
  t.equal(ended.forbidden, 1, 'counted as forbidden')
  t.equal(ended.tokenExpired, 0, 'not as a token close')
})

test('a revoked fresh token closes the connection with 4401 "token revoked"', async (t) => {
  const app = await refreshApp(t, { isRevoked: (claims) => claims.jti === 'revoked' })
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice', jti: 'fine' })))
  const closed = closeWithin(client)
  client.send(await mint(secretBytes, { sub: 'alice', jti: 'revoked' }))
  const { code, reason } = await closed
  t.equal(code, 4401, 'the client sees 4401')
  t.equal(reason, 'token revoked', 'with the reason "token revoked"')
  await waitFor(() => app.errors.length === 1, 'wsRefresh() to reject')
  t.equal(app.errors[0]?.code, 'FST_WS_GUARD_TOKEN_REVOKED', 'the promise rejects with FST_WS_GUARD_TOKEN_REVOKED')
  t.equal(app.requests[0]?.wsUser?.jti, 'fine', 'request.wsUser keeps the claims of the handshake')
})

const refusals: Array<{ name: string, handshake: Record<string, unknown>, fresh: () => Promise<string>, code: string, reason: string }> = [
  { name: 'a token for another sub', handshake: { sub: 'alice' }, fresh: () => mint(secretBytes, { sub: 'mallory' }), code: 'FST_WS_GUARD_TOKEN_INVALID', reason: 'invalid token' },
  { name: 'a token without sub on a connection with one', handshake: { sub: 'alice' }, fresh: () => mint(secretBytes, {}), code: 'FST_WS_GUARD_TOKEN_INVALID', reason: 'invalid token' },
  { name: 'a token without sub on a connection without one', handshake: {}, fresh: () => mint(secretBytes, {}), code: 'FST_WS_GUARD_TOKEN_INVALID', reason: 'invalid token' },
  { name: 'an expired token', handshake: { sub: 'alice' }, fresh: () => mint(secretBytes, { sub: 'alice' }, { exp: now(-60) }), code: 'FST_WS_GUARD_TOKEN_EXPIRED', reason: 'token expired' },
  { name: 'a malformed token', handshake: { sub: 'alice' }, fresh: async () => 'not.a-token', code: 'FST_WS_GUARD_TOKEN_INVALID', reason: 'invalid token' }
]
for (const refusal of refusals) {
  test(`a refresh with ${refusal.name} closes the connection with 4401 "${refusal.reason}"`, async (t) => {
    const app = await refreshApp(t)
    const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { ...refusal.handshake, n: 1 })))
    const closed = closeWithin(client)
    client.send(await refusal.fresh())
    const { code, reason } = await closed
    t.equal(code, 4401, 'the client sees 4401')
    t.equal(reason, refusal.reason, `with the reason "${refusal.reason}"`)
    await waitFor(() => app.errors.length === 1, 'wsRefresh() to reject')
    t.equal(app.errors[0]?.code, refusal.code, `the promise rejects with ${refusal.code}`)
    t.equal(app.requests[0]?.wsUser?.n, 1, 'request.wsUser keeps the claims of the handshake')
    await waitFor(() => app.app.wsGuard.stats().open === 0, 'the close to be counted')
    t.equal(app.app.wsGuard.stats().closed.tokenExpired, 1, 'counted with the token closes')
  })
}

test('after the connection closed, wsRefresh() rejects and schedules nothing', async (t) => {
  const app = await refreshApp(t)
  const channels = recordChannels(t)
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice', n: 1 })))
  const request = app.requests[0]!
  client.close(1000)
  await waitFor(() => app.app.wsGuard.stats().open === 0, 'the server side to close')
  const before = app.app.wsGuard.stats()
  t.equal(before.closed.normal, 1, 'a normal close')

  // A valid token that expires soon: a deadline set from it would fire within the wait below.
  const exp = now(1)
  const error = await refreshError(request, await mint(secretBytes, { sub: 'alice', n: 2 }, { exp }))
  t.equal(error?.code, 'FST_WS_GUARD_REFRESH_UNAVAILABLE', 'rejects with FST_WS_GUARD_REFRESH_UNAVAILABLE')
  t.equal(request.wsUser?.n, 1, 'request.wsUser is not replaced')
  await sleep(Math.max(0, exp * 1000 + 600 - Date.now()))
  t.same(app.app.wsGuard.stats(), before, 'stats unchanged past the fresh exp: nothing was scheduled or closed')
  t.equal(app.app.wsGuard.stats().open, 0, 'no connection open')
  t.equal(channels.closed.length, 1, 'one closed message only')
})

test('a refresh still verifying when the client closes rejects with FST_WS_GUARD_REFRESH_UNAVAILABLE', async (t) => {
  const gate = deferred<boolean>()
  let slowCalls = 0
  const app = await refreshApp(t, {
    isRevoked: async (claims) => {
      if (claims.jti !== 'slow') return false
      slowCalls++
      return await gate.promise
    }
  })
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice', jti: 'first' })))
  client.send(await mint(secretBytes, { sub: 'alice', jti: 'slow' }, { exp: now(1) }))
  await waitFor(() => slowCalls === 1, 'the refresh to reach isRevoked')
  client.close(1000)
  await waitFor(() => app.app.wsGuard.stats().open === 0, 'the server side to close')
  const before = app.app.wsGuard.stats()
  gate.resolve(false)
  await waitFor(() => app.outcomes.length === 1, 'wsRefresh() to settle')
  t.same(app.outcomes, ['FST_WS_GUARD_REFRESH_UNAVAILABLE'], 'rejects with FST_WS_GUARD_REFRESH_UNAVAILABLE')
  t.equal(app.requests[0]?.wsUser?.jti, 'first', 'request.wsUser keeps the claims of the handshake')
  await sleep(1500)
  t.same(app.app.wsGuard.stats(), before, 'stats unchanged: nothing was scheduled')
})

test('two concurrent refreshes apply in call order, whichever check finishes first', async (t) => {
  const first = deferred<boolean>()
  const second = deferred<boolean>()
  const calls: string[] = []
  let userAtSecondCheck: unknown
  const app = await refreshApp(t, {
    isRevoked: async (claims, request) => {
      calls.push(String(claims.jti))
      if (claims.jti === 'second') userAtSecondCheck = request.wsUser?.jti
      if (claims.jti === 'first') return await first.promise
      if (claims.jti === 'second') return await second.promise
      return false
    }
  })
  const client = await openClient(t, app.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice', jti: 'handshake' }, { exp: now(60) })))
  const firstExp = now(2)
  const secondExp = now(60)
  client.send(await mint(secretBytes, { sub: 'alice', jti: 'first' }, { exp: firstExp }))
  client.send(await mint(secretBytes, { sub: 'alice', jti: 'second' }, { exp: secondExp }))
  await waitFor(() => calls.includes('first'), 'the first refresh to reach isRevoked')
  // The second check answers first, the first one after it.
  second.resolve(false)
  await sleep(50)
  first.resolve(false)
  await waitFor(() => app.outcomes.length === 2, 'both refreshes to settle')
  t.same(app.outcomes, ['ok', 'ok'], 'both resolve')
  t.same(calls, ['handshake', 'first', 'second'], 'each token checked once, in call order')
  t.equal(userAtSecondCheck, 'first', 'the second is checked only once the first applied')
  const request = app.requests[0]!
  t.equal(request.wsUser?.jti, 'second', 'request.wsUser holds the claims of the second call')
  t.equal(request.wsUser?.exp, secondExp, 'and its exp')
  await sleep(Math.max(0, firstExp * 1000 + 700 - Date.now()))
  t.equal(client.readyState, client.OPEN, "open past the first token's exp: the deadline follows the second")
  t.equal(app.app.wsGuard.stats().closed.tokenExpired, 0, 'nothing expired')
})

test('wsRefresh() on a route without auth rejects with FST_WS_GUARD_REFRESH_UNAVAILABLE', async (t) => {
  const app = await refreshApp(t, false)
  const client = await openClient(t, app.url('/ws'))
  t.equal(await ask(client, await mint(secretBytes, { sub: 'alice' })), 'refused FST_WS_GUARD_REFRESH_UNAVAILABLE', 'rejects')
  t.equal(app.errors[0]?.statusCode, 500, 'an application error (500)')
  t.equal(client.readyState, client.OPEN, 'the connection stays open')
})
