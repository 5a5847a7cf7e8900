import { once } from 'node:events'
import { channel } from 'node:diagnostics_channel'
import Fastify, { type FastifyInstance } from 'fastify'
import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, {
  channels, ForbiddenError, HandshakeTimeoutError, InvalidProtocolHeaderError, OriginNotAllowedError, RouteNotFoundError, TokenExpiredError,
  TokenInvalidError, TokenMissingError, UnsupportedProtocolError, type GuardErrorCode, type GuardErrorConstructor, type WsGuardOptions
} from '../index.js'
import { injectGuarded, type InjectGuardedResult } from '../testing.js'
import { deferred, waitFor } from './helpers/wait.js'
import { mint, secret, secretBytes } from './helpers/tokens.js'

/*
 * fastify-ws-guard/testing: every refusal in both rejectWith modes, acceptances, and no
 * server ever listening.
 */

/**
 * An app that never listens: the guard with `options`, and `/ws`, whose handler answers every
 * message with `{ echo, sub, header }`. Closed in teardown, which fails if it ever listened.
 */
async function injectableApp (t: Test, options: WsGuardOptions = {}, setup: (app: FastifyInstance) => void = () => {}): Promise<FastifyInstance> {
  const app = Fastify()
  t.teardown(async () => {
    if (app.server.listening) throw new Error('the app listened')
    await app.close()
  })
  await app.register(wsGuard, options)
  setup(app)
  app.wsRoute('/ws', (socket, request) => {
    socket.on('message', (data) => socket.send(JSON.stringify({ echo: String(data), sub: request.wsUser?.sub, header: request.headers['x-test'] })))
  })
  return app
}

/** The refusal, or a test failure (and a terminated socket) when the handshake was accepted. */
function refusalOf (t: Test, result: InjectGuardedResult) {
  if (!result.accepted) return result
  result.socket.terminate()
  t.fail('expected a refusal, the handshake was accepted')
  return { statusCode: 0, code: undefined, closeCode: undefined, closeReason: undefined }
}

/** The acceptance, its socket terminated in teardown; throws when the handshake was refused. */
function acceptanceOf (t: Test, result: InjectGuardedResult) {
  if (!result.accepted) throw new Error(`expected an acceptance, got ${JSON.stringify(result)}`)
  t.teardown(() => result.socket.terminate())
  return result
}

async function ask (socket: WebSocket, message: string): Promise<Record<string, unknown>> {
  const answer = once(socket, 'message')
  socket.send(message)
  const [data] = await answer
  return JSON.parse(String(data)) as Record<string, unknown>
}

/** Nothing of a refused or ended injection is left behind: no socket, listener or subscriber. */
async function assertNothingLeft (t: Test, app: FastifyInstance): Promise<void> {
  t.equal(app.server.listening, false, 'the app never listened')
  t.equal(app.server.listenerCount('upgrade'), upgradeListeners.get(app), 'no upgrade listener left')
  t.equal(app.websocketServer.listenerCount('connection'), connectionListeners.get(app), 'no connection listener left')
  t.equal(channel(channels.rejected).hasSubscribers, false, 'no channel subscriber left')
  // A refused upgrade's server side ends on the client's close (a close refusal) or at once (HTTP).
  await waitFor(() => app.websocketServer.clients.size === 0, 'the server side of every socket to close', 1000)
  t.equal(app.wsGuard.stats().open, 0, 'no guarded connection open')
}

const upgradeListeners = new WeakMap<FastifyInstance, number>()
const connectionListeners = new WeakMap<FastifyInstance, number>()
async function baseline (app: FastifyInstance): Promise<void> {
  await app.ready()
  upgradeListeners.set(app, app.server.listenerCount('upgrade'))
  connectionListeners.set(app, app.websocketServer.listenerCount('connection'))
}

interface RefusalCase {
  name: string
  options: WsGuardOptions
  inject: () => Promise<Parameters<typeof injectGuarded>[2]>
  path?: string
  statusCode: number
  /** The refusal's error: its code, and the close code and reason of rejectWith: 'close'. */
  error: GuardErrorConstructor<GuardErrorCode>
  /** Refused before the guard's chain: over HTTP whatever rejectWith says. */
  alwaysHttp?: true
}

const member = async () => await mint(secretBytes, { sub: 'alice', role: 'member' })
const refusals: RefusalCase[] = [
  { name: 'a missing token', options: { auth: { secret } }, inject: async () => ({}), statusCode: 401, error: TokenMissingError },
  { name: 'an invalid token', options: { auth: { secret } }, inject: async () => ({ token: await mint(new TextEncoder().encode('another-secret-0123456789-abcdefghijklmnopqrstuv'), { sub: 'alice' }) }), statusCode: 401, error: TokenInvalidError },
  { name: 'an expired token', options: { auth: { secret } }, inject: async () => ({ token: await mint(secretBytes, { sub: 'alice' }, { exp: Math.floor(Date.now() / 1000) - 60, iat: false }) }), statusCode: 401, error: TokenExpiredError },
  { name: 'authorize saying no', options: { auth: { secret, authorize: (user) => user.role === 'admin' } }, inject: async () => ({ token: await member() }), statusCode: 403, error: ForbiddenError },
  { name: 'an origin not allowed', options: { origins: ['https://app.example.com'] }, inject: async () => ({ origin: 'https://evil.example' }), statusCode: 403, error: OriginNotAllowedError },
  { name: 'an unsupported subprotocol', options: { protocols: ['chat.v1'] }, inject: async () => ({ protocols: ['chat.v9'] }), statusCode: 400, error: UnsupportedProtocolError },
  { name: 'a handshake timeout', options: { handshakeTimeout: 100, auth: { secret, authorize: () => new Promise<boolean>(() => {}) } }, inject: async () => ({ token: await member() }), statusCode: 503, error: HandshakeTimeoutError },
  { name: 'a malformed subprotocol offer', options: {}, inject: async () => ({ protocols: ['chat v1'] }), statusCode: 400, error: InvalidProtocolHeaderError, alwaysHttp: true },
  { name: 'no such route', options: {}, path: '/nowhere?access_token=secret', inject: async () => ({}), statusCode: 404, error: RouteNotFoundError, alwaysHttp: true }
]

for (const rejectWith of ['http', 'close'] as const) {
  for (const refusal of refusals) {
    const { error: RefusalError } = refusal
    const expected = new RefusalError()
    test(`rejectWith: '${rejectWith}': ${refusal.name} gives ${refusal.statusCode} ${expected.code}`, async (t) => {
      const app = await injectableApp(t, { ...refusal.options, rejectWith })
      await baseline(app)
      const result = refusalOf(t, await injectGuarded(app, refusal.path ?? '/ws', await refusal.inject()))
      t.equal(result.statusCode, refusal.statusCode, 'status')
      t.equal(result.code, expected.code, 'code')
      const closes = rejectWith === 'close' && refusal.alwaysHttp !== true
      t.equal(result.closeCode, closes ? expected.closeCode : undefined, 'close code')
      t.equal(result.closeReason, closes ? expected.closeReason : undefined, 'close reason')
      t.same(app.wsGuard.stats().rejected, { [expected.code]: 1 }, 'the guard counted this one refusal')
      await assertNothingLeft(t, app)
    })
  }

  test(`rejectWith: '${rejectWith}': too many connections for one user gives 429`, async (t) => {
    const app = await injectableApp(t, { auth: { secret }, maxConnectionsPerUser: 1, rejectWith })
    await baseline(app)
    const token = await member()
    const first = acceptanceOf(t, await injectGuarded(app, '/ws', { token }))
    const second = refusalOf(t, await injectGuarded(app, '/ws', { token }))
    t.equal(second.statusCode, 429)
    t.equal(second.code, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
    t.equal(second.closeCode, rejectWith === 'close' ? 4429 : undefined)
    t.same(await ask(first.socket, 'still here'), { echo: 'still here', sub: 'alice' }, 'the first connection still works')
    const closed = once(first.socket, 'close')
    first.socket.close()
    await closed
    await assertNothingLeft(t, app)
    t.ok((await injectGuarded(app, '/ws', { token })).accepted, 'a closed connection frees its place at once')
  })
}

test('an acceptance gives an open socket that echoes, and the selected subprotocol', async (t) => {
  const token = await member()
  const app = await injectableApp(t, { auth: { secret }, protocols: ['chat.v1', 'chat.v2'], origins: ['https://app.example.com'] })
  const result = acceptanceOf(t, await injectGuarded(app, '/ws', { token, origin: 'https://app.example.com', protocols: ['chat.v2'] }))
  t.equal(result.socket.readyState, result.socket.OPEN, 'the socket is open')
  t.equal(result.protocol, 'chat.v2', 'the protocol the server selected')
  t.same(await ask(result.socket, 'hello'), { echo: 'hello', sub: 'alice' }, 'the handler runs, with the verified user')
  t.equal(app.wsGuard.stats().open, 1)
})

test("an acceptance without a subprotocol has protocol ''", async (t) => {
  const app = await injectableApp(t)
  const result = acceptanceOf(t, await injectGuarded(app, '/ws', { protocols: [] }))
  t.equal(result.protocol, '')
  t.same(await ask(result.socket, 'x'), { echo: 'x' })
})

test('headers pass through, names in any case; token, origin and protocols win over them', async (t) => {
  const app = await injectableApp(t, { auth: { secret }, origins: ['https://app.example.com'] })
  const token = await member()
  const result = acceptanceOf(t, await injectGuarded(app, '/ws', {
    token,
    origin: 'https://app.example.com',
    headers: { 'X-Test': 'passed', Authorization: 'Bearer not-this-one', origin: 'https://evil.example' }
  }))
  t.same(await ask(result.socket, 'h'), { echo: 'h', sub: 'alice', header: 'passed' })
})

test('a token the route reads from a cookie goes in headers', async (t) => {
  const app = await injectableApp(t, { auth: { secret, tokenSources: ['cookie'] }, origins: ['https://app.example.com'] })
  const result = acceptanceOf(t, await injectGuarded(app, '/ws', { origin: 'https://app.example.com', headers: { cookie: `access_token=${await member()}` } }))
  t.same(await ask(result.socket, 'c'), { echo: 'c', sub: 'alice' })
})

test('close() on an accepted socket ends both sides at once, and app.close() does not wait', async (t) => {
  const serverClosed = deferred<number>()
  const app = await injectableApp(t, {}, (app) => {
    app.wsRoute('/watched', (socket) => { socket.on('close', (code) => serverClosed.resolve(code)) })
  })
  await baseline(app)
  const result = acceptanceOf(t, await injectGuarded(app, '/watched'))
  const closed = once(result.socket, 'close')
  result.socket.close(4000, 'bye')
  t.equal((await closed)[0], 4000, 'the client closed')
  t.equal(await serverClosed.promise, 4000, 'the handler saw the close')
  t.same(app.wsGuard.stats().closed.normal, 1, 'a normal close')
  await assertNothingLeft(t, app)
  const started = Date.now()
  await app.close()
  t.ok(Date.now() - started < 1000, 'app.close() has nothing to wait for')
})

test('a close the server starts reaches the client, and app.close() closes what is open with 1001', async (t) => {
  const app = await injectableApp(t, {}, (app) => {
    app.wsRoute('/bye', (socket) => { socket.close(4001, 'bye now') })
  })
  const bye = acceptanceOf(t, await injectGuarded(app, '/bye'))
  const [code, reason] = bye.socket.readyState === bye.socket.CLOSED ? [0, ''] : await once(bye.socket, 'close')
  t.equal(code, 4001)
  t.equal(String(reason), 'bye now')

  const open = acceptanceOf(t, await injectGuarded(app, '/ws'))
  const closed = once(open.socket, 'close')
  await app.close()
  t.equal((await closed)[0], 1001, 'the guard closes open connections with 1001')
})

test('concurrent injections on one app each get their own outcome', async (t) => {
  for (const rejectWith of ['http', 'close'] as const) {
    const app = await injectableApp(t, {
      rejectWith,
      handshakeTimeout: 100,
      auth: { secret, authorize: (user) => user.role === 'slow' ? new Promise<boolean>(() => {}) : user.role !== 'banned' }
    })
    const [slow, banned, fine, missing, nowhere] = await Promise.all([
      injectGuarded(app, '/ws', { token: await mint(secretBytes, { sub: 's', role: 'slow' }) }),
      injectGuarded(app, '/ws', { token: await mint(secretBytes, { sub: 'b', role: 'banned' }) }),
      injectGuarded(app, '/ws', { token: await member() }),
      injectGuarded(app, '/ws'),
      injectGuarded(app, '/nowhere')
    ])
    t.equal(refusalOf(t, slow).code, 'FST_WS_GUARD_HANDSHAKE_TIMEOUT', `${rejectWith}: the slow one times out`)
    t.equal(refusalOf(t, banned).code, 'FST_WS_GUARD_FORBIDDEN', `${rejectWith}: the banned one is forbidden`)
    t.same(await ask(acceptanceOf(t, fine).socket, 'ok'), { echo: 'ok', sub: 'alice' }, `${rejectWith}: the fine one is accepted`)
    t.equal(refusalOf(t, missing).code, 'FST_WS_GUARD_TOKEN_MISSING', `${rejectWith}: the one without a token is refused`)
    t.equal(refusalOf(t, nowhere).code, 'FST_WS_GUARD_ROUTE_NOT_FOUND', `${rejectWith}: the lost one gets a 404`)
  }
})

test('an answer that is not the guard\'s: its status, and no code', async (t) => {
  const app = await injectableApp(t, { rejectWith: 'close' }, (app) => {
    app.addHook('onRequest', async (request, reply) => {
      if (request.headers['x-teapot'] !== undefined) return await reply.code(418).send({ message: 'I am a teapot' })
    })
  })
  await baseline(app)
  t.same(await injectGuarded(app, '/ws', { headers: { 'x-teapot': '1' } }), { accepted: false, statusCode: 418, code: undefined })
  await assertNothingLeft(t, app)
  const started = Date.now()
  await app.close()
  t.ok(Date.now() - started < 1000, 'no upgrade socket holds app.close()')
})

test('an app without the guard, and an injectWS that fails, reject', async (t) => {
  const bare = Fastify()
  t.teardown(() => bare.close())
  await t.rejects(injectGuarded(bare, '/ws'), { name: 'TypeError', message: /register fastify-ws-guard/ })

  const app = await injectableApp(t)
  await baseline(app)
  const injectWS = app.injectWS
  const boom = new Error('boom')
  app.injectWS = async () => { throw boom }
  await t.rejects(injectGuarded(app, '/ws'), boom, 'the error as it came')
  app.injectWS = async () => { throw 'not even an Error' } // eslint-disable-line no-throw-literal
  await t.rejects(injectGuarded(app, '/ws'), 'not even an Error')
  app.injectWS = injectWS
  await assertNothingLeft(t, app)
})

test('a hook that never answers: the call rejects after `timeout`, and leaves nothing behind', async (t) => {
  const app = await injectableApp(t, {}, (app) => {
    app.addHook('onRequest', (request, _reply, done) => {
      if (request.headers['x-hang'] === undefined) done()
    })
  })
  await baseline(app)
  const started = Date.now()
  await t.rejects(injectGuarded(app, '/ws?access_token=secret-token', { headers: { 'x-hang': '1' }, timeout: 200 }), {
    message: 'injectGuarded: no answer to the handshake on /ws within 200 ms'
  }, 'no query, no token, in the message')
  t.ok(Date.now() - started >= 200, 'after the timeout')
  await assertNothingLeft(t, app)
  t.ok((await injectGuarded(app, '/ws')).accepted, 'the app still answers others')
  const closing = Date.now()
  await app.close()
  t.ok(Date.now() - closing < 1000, 'and closes at once')
})
