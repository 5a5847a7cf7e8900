import { test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, { channels } from '../index.js'
import { startApp } from './helpers/app.js'
import { openClient, pauseReading, stream, tryConnect, whenClosed } from './helpers/clients.js'
import { assertNoLeak, recordChannels } from './helpers/logs.js'
import { handshake, rawExchange } from './helpers/raw.js'
import { bearer, mint, now, secret, secretBytes } from './helpers/tokens.js'
import { waitFor } from './helpers/wait.js'

/** Asserts that no message carries any of `tokens`, whole or by its signature. */
function assertNoToken (t: Parameters<typeof startApp>[0], messages: unknown[], tokens: string[]): void {
  const text = messages.map((message) => JSON.stringify(message)).join('\n')
  assertNoLeak(t, text, tokens.flatMap((token) => [token, token.split('.')[2]!]), 'the channel messages')
}

/** Every reason a connection can end with (README, "Stats"), none counted. */
const noCloses = Object.fromEntries([
  'normal', 'abnormal', 'heartbeatTimeout', 'writeDeadline', 'tokenExpired', 'forbidden', 'shutdown', 'limit',
  'protocolError', 'error', 'revoked', 'disconnected', 'messageTooBig', 'messageRate', 'maxAge'
].map((reason) => [reason, 0]))

test('the channel names are exported', async (t) => {
  t.same(channels, {
    accepted: 'fastify-ws-guard:accepted',
    rejected: 'fastify-ws-guard:rejected',
    closed: 'fastify-ws-guard:closed',
    dropped: 'fastify-ws-guard:dropped'
  }, 'documented names')
  t.ok(Object.isFrozen(channels), 'frozen')
})

test('accepted connections and normal closes: stats and channel messages', async (t) => {
  const record = recordChannels(t)
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret, tokenSources: ['header', 'query'] } })
    app.wsRoute('/chat/:room', () => {})
  })
  const aliceToken = await mint(secretBytes, { sub: 'alice' })
  const bobToken = await mint(secretBytes, { sub: 'bob' })
  const openedAt = Date.now()
  const alice = await openClient(t, url('/chat/1'), [], bearer(aliceToken))
  const bob = await openClient(t, url(`/chat/2?access_token=${bobToken}`))
  t.equal(record.accepted.length, 2, 'one accepted message per connection')
  for (const [message, sub] of [[record.accepted[0]!, 'alice'], [record.accepted[1]!, 'bob']] as const) {
    t.match(message, { requestId: String, route: '/chat/:room', protocol: false, sub, handshakeMs: Number }, `accepted: ${sub}`)
    t.ok((message.handshakeMs as number) >= 0, 'a handshake duration')
  }
  t.not(record.accepted[0]!.requestId, record.accepted[1]!.requestId, 'each with its request id')
  t.match(app.wsGuard.stats(), { open: 2, accepted: 2, rejected: {} }, 'counted open and accepted')

  const aliceClosed = whenClosed(alice)
  alice.close()
  await aliceClosed
  const bobClosed = whenClosed(bob)
  bob.close(1000, 'bye')
  await bobClosed
  await waitFor(() => record.closed.length === 2, 'two closed messages')
  const lived = Date.now() - openedAt
  t.match(record.closed[0], { requestId: record.accepted[0]!.requestId, route: '/chat/:room', reason: 'normal', code: 1005, sub: 'alice', durationMs: Number }, 'closed: alice, no code')
  t.match(record.closed[1], { requestId: record.accepted[1]!.requestId, route: '/chat/:room', reason: 'normal', code: 1000, sub: 'bob', durationMs: Number }, 'closed: bob, 1000')
  for (const message of record.closed) {
    t.ok((message.durationMs as number) > 0 && (message.durationMs as number) <= lived, `a duration within the test (${String(message.durationMs)} ms)`)
  }
  const stats = app.wsGuard.stats()
  t.equal(stats.open, 0, 'none open')
  t.same(stats.closed, { ...noCloses, normal: 2 }, 'two normal closes, every reason listed')
  t.equal(stats.dropped, 0, 'no message dropped')
  assertNoToken(t, [...record.accepted, ...record.closed], [aliceToken, bobToken])
})

test('refused handshakes: counted by code, one channel message each, never the token', async (t) => {
  const record = recordChannels(t)
  const { app, port, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret, tokenSources: ['header', 'query'] }, maxConnectionsPerUser: 1 })
    app.wsRoute('/chat', () => {})
    app.wsRoute('/outside', { config: { wsGuard: false } }, () => {})
    app.get('/plain', async () => 'plain')
  })
  const alice = await mint(secretBytes, { sub: 'alice' })
  const forged = await mint(new TextEncoder().encode('a-different-secret-of-forty-bytes-012345'), { sub: 'alice' })
  const expired = await mint(secretBytes, { sub: 'alice' }, { exp: now(-120) })
  await openClient(t, url('/chat'), [], bearer(alice))

  const refusals: Array<[string, Promise<unknown>]> = [
    ['FST_WS_GUARD_TOKEN_MISSING', tryConnect(url('/chat'))],
    ['FST_WS_GUARD_TOKEN_INVALID', tryConnect(url(`/chat?access_token=${forged}`))],
    ['FST_WS_GUARD_TOKEN_EXPIRED', tryConnect(url('/chat'), [], bearer(expired))],
    ['FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS', tryConnect(url(`/chat?access_token=${alice}`))],
    ['FST_WS_GUARD_ORIGIN_NOT_ALLOWED', tryConnect(url('/chat'), [], bearer(alice, { origin: 'https://elsewhere.example' }))],
    ['FST_WS_GUARD_INVALID_KEY', rawExchange(port, handshake(`/chat?access_token=${alice}`, { 'Sec-WebSocket-Key': 'short' }))],
    ['FST_WS_GUARD_NOT_WEBSOCKET_ROUTE', tryConnect(url('/plain'))]
  ]
  for (const [, refused] of refusals) await refused
  // A connection the guard does not handle is neither counted nor reported.
  await openClient(t, url('/outside'))

  const byCode = Object.fromEntries(refusals.map(([code]) => [code, 1]))
  t.same(app.wsGuard.stats().rejected, byCode, 'each refusal counted by its code')
  t.equal(app.wsGuard.stats().accepted, 1, 'only the guarded connection was accepted')
  t.equal(record.accepted.length, 1, 'and reported')
  t.equal(record.rejected.length, refusals.length, 'one rejected message per refusal')
  const find = (code: string): Record<string, unknown> => record.rejected.find((message) => message.code === code) ?? {}
  t.match(find('FST_WS_GUARD_TOKEN_MISSING'), { requestId: String, route: '/chat', statusCode: 401, sub: undefined, handshakeMs: Number }, 'missing token')
  t.match(find('FST_WS_GUARD_TOKEN_INVALID'), { route: '/chat', statusCode: 401, sub: undefined }, 'invalid token: the route, never the URL')
  t.match(find('FST_WS_GUARD_TOKEN_EXPIRED'), { route: '/chat', statusCode: 401 }, 'expired token')
  t.match(find('FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS'), { route: '/chat', statusCode: 429, sub: 'alice' }, 'user limit: the sub is known')
  t.match(find('FST_WS_GUARD_ORIGIN_NOT_ALLOWED'), { route: '/chat', statusCode: 403, sub: undefined }, 'origin')
  t.match(find('FST_WS_GUARD_INVALID_KEY'), { route: '/chat', statusCode: 400, handshakeMs: 0 }, 'a malformed handshake')
  t.match(find('FST_WS_GUARD_NOT_WEBSOCKET_ROUTE'), { route: '/plain', statusCode: 400 }, 'an upgrade to a plain route')
  for (const message of record.rejected) {
    t.ok(typeof message.handshakeMs === 'number' && message.handshakeMs >= 0, `${String(message.code)}: a duration`)
  }
  assertNoToken(t, [...record.accepted, ...record.rejected], [alice, forged, expired])
})

test('ended connections: counted and reported with the reason for each way they end', async (t) => {
  const record = recordChannels(t)
  const quiet = { pingInterval: 5000, readDeadline: 60_000 }
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { websocket: { maxPayload: 1024 }, heartbeat: quiet, shutdownGrace: 1000 })
    // 6.4 MB/s to the slow reader: stuck long before 8 MiB pile up; 50 MB/s to the flood.
    const streaming = (perRound: number) => (socket: WebSocket): void => {
      socket.once('message', () => { t.teardown(stream(socket, { perRound, every: 10, maxMs: 4000 }).stop) })
    }
    app.wsRoute('/heartbeat', { config: { wsGuard: { heartbeat: { pingInterval: 100, readDeadline: 250 } } } }, () => {})
    app.wsRoute('/slow-reader', { config: { wsGuard: { writeDeadline: 300 } } }, streaming(1))
    app.wsRoute('/flood', { config: { wsGuard: { maxBufferedBytes: 256 * 1024, writeDeadline: 60_000 } } }, streaming(8))
    app.wsRoute('/expiring', { config: { wsGuard: { auth: { secret, clockTolerance: 0 } } } }, () => {})
    app.wsRoute('/oversized', () => {})
    app.wsRoute('/too-big', { config: { wsGuard: { maxMessageBytes: 16 } } }, () => {})
    app.wsRoute('/too-fast', { config: { wsGuard: { messageRate: { messages: 1, interval: 60_000 } } } }, () => {})
    app.wsRoute('/aged', { config: { wsGuard: { maxConnectionAge: 1000 } } }, () => {})
    app.wsRoute('/revoked', { config: { wsGuard: { auth: { secret } } } }, () => {})
    app.wsRoute('/disconnected', { config: { wsGuard: { auth: { secret } } } }, () => {})
    // The idle client's second message is dropped; it stays open until the shutdown.
    app.wsRoute('/idle', { config: { wsGuard: { messageRate: { messages: 1, interval: 60_000, onExcess: 'drop' } } } }, () => {})
  })
  const token = await mint(secretBytes, { sub: 'alice' }, { exp: now(2) })
  const clients = {
    heartbeat: await openClient(t, url('/heartbeat'), [], { autoPong: false }),
    slow: await openClient(t, url('/slow-reader')),
    flood: await openClient(t, url('/flood')),
    expiring: await openClient(t, url('/expiring'), [], bearer(token)),
    oversized: await openClient(t, url('/oversized')),
    tooBig: await openClient(t, url('/too-big')),
    tooFast: await openClient(t, url('/too-fast')),
    aged: await openClient(t, url('/aged')),
    revoked: await openClient(t, url('/revoked'), [], bearer(await mint(secretBytes, { sub: 'bob', jti: 'bob-1' }))),
    disconnected: await openClient(t, url('/disconnected'), [], bearer(await mint(secretBytes, { sub: 'carol' }))),
    idle: await openClient(t, url('/idle'))
  }
  for (const client of [clients.slow, clients.flood]) {
    pauseReading(client)
    client.send('go')
  }
  clients.oversized.send(Buffer.alloc(2048))
  clients.tooBig.send(Buffer.alloc(17))
  clients.tooFast.send('one')
  clients.tooFast.send('two')
  clients.idle.send('one')
  clients.idle.send('two')
  t.equal(await app.wsGuard.revoke({ jti: 'bob-1' }), 1, 'revoke() closed one connection')
  t.equal(await app.wsGuard.disconnect({ sub: 'carol' }), 1, 'disconnect() closed one connection')
  await waitFor(() => record.closed.length === 10, 'ten connections to end', 4000)
  await waitFor(() => app.wsGuard.stats().dropped === 1, 'the idle client\'s second message to be dropped')
  await app.close()
  t.equal(record.closed.length, 11, 'and the last one on shutdown')

  const once = ['heartbeatTimeout', 'writeDeadline', 'tokenExpired', 'shutdown', 'limit', 'protocolError', 'revoked', 'disconnected', 'messageTooBig', 'messageRate', 'maxAge']
  t.same(app.wsGuard.stats().closed, { ...noCloses, ...Object.fromEntries(once.map((reason) => [reason, 1])) }, 'one of each reason these routes can end with (forbidden needs a refresh, error a failing handler)')
  t.equal(app.wsGuard.stats().dropped, 1, 'and the dropped message')
  const byRoute = Object.fromEntries(record.closed.map((message) => [message.route, message]))
  t.match(byRoute['/heartbeat'], { reason: 'heartbeatTimeout', code: 1006 }, 'heartbeat timeout, terminated')
  t.match(byRoute['/slow-reader'], { reason: 'writeDeadline', code: 1006 }, 'write deadline, terminated')
  t.match(byRoute['/flood'], { reason: 'limit', code: 1006 }, 'buffer limit, terminated')
  t.match(byRoute['/expiring'], { reason: 'tokenExpired', code: 4401, sub: 'alice' }, 'token expired, 4401, with the sub')
  t.match(byRoute['/oversized'], { reason: 'protocolError' }, 'a message over maxPayload: the client broke a limit')
  t.match(byRoute['/too-big'], { reason: 'messageTooBig', code: 1009 }, 'a message over maxMessageBytes, 1009')
  t.match(byRoute['/too-fast'], { reason: 'messageRate', code: 1008 }, 'a message over messageRate, 1008')
  t.match(byRoute['/aged'], { reason: 'maxAge', code: 1001 }, 'maxConnectionAge, 1001')
  t.match(byRoute['/revoked'], { reason: 'revoked', code: 4401, sub: 'bob' }, 'revoke(), 4401')
  t.match(byRoute['/disconnected'], { reason: 'disconnected', code: 4403, sub: 'carol' }, 'disconnect(), 4403')
  t.match(byRoute['/idle'], { reason: 'shutdown', code: 1001 }, 'shutdown, 1001')
  for (const message of record.closed) {
    t.match(message, { requestId: String, durationMs: Number }, `${String(message.route)}: request id and duration`)
  }
  assertNoToken(t, record.closed, [token])
})
