import { test } from 'tap'
import { bearerProtocols } from '../../client.js'
import { authApp, userEcho } from '../helpers/app.js'
import { askUser, expectOpen, tryConnect } from '../helpers/clients.js'
import { handshake, rawExchange } from '../helpers/raw.js'
import { checkChallenge, expectRefused } from '../helpers/refusals.js'
import { bearer, mint, secret, secretBytes } from '../helpers/tokens.js'

test('client.ts bearerProtocols', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  t.same(bearerProtocols(token, 'chat.v1'), ['chat.v1', `bearer.${token}`])
  t.same(bearerProtocols(token, 'chat.v2', 'chat.v1'), ['chat.v2', 'chat.v1', `bearer.${token}`], 'app protocols first, in order')
  t.same(bearerProtocols(token), ['bearer', `bearer.${token}`], 'the marker when there is no app protocol')
  for (const bad of ['', 'two words', 'a,b', 'tok"en', 'Bearer x', 'ünïcode']) {
    t.throws(() => bearerProtocols(bad), { name: 'TypeError', message: /bearerProtocols: the token must be a non-empty JWT string/ }, JSON.stringify(bad))
  }
  for (const bad of [undefined, null, 42, { token }]) {
    t.throws(() => bearerProtocols(bad as unknown as string), TypeError, `${typeof bad} is refused`)
  }
})

test('the 101 names the app protocol, never the token', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const app = await authApp(t, { secret }, { route: { config: { wsGuard: { protocols: ['chat.v2', 'chat.v1'] } } } })

  const opened = await expectOpen(t, app.url('/ws'), bearerProtocols(token, 'chat.v1'))
  t.equal(opened.protocol, 'chat.v1', 'socket.protocol on the server')
  t.equal(opened.headers['sec-websocket-protocol'], 'chat.v1', 'the upgrade response header')
  t.equal(opened.user?.sub, 'alice')
  t.notOk(JSON.stringify(opened.headers).includes(token), 'the token is nowhere in the 101')

  const preferred = await expectOpen(t, app.url('/ws'), bearerProtocols(token, 'chat.v1', 'chat.v2'))
  t.equal(preferred.protocol, 'chat.v2', "the route's order of preference wins")

  // On the wire, with the token offered first.
  const response = await rawExchange(app.port, handshake('/ws', {
    Host: `127.0.0.1:${app.port}`,
    'Sec-WebSocket-Protocol': `bearer.${token}, chat.v1`
  }).replace('\r\n\r\n', '\r\n\r\n\x88\x82abcd\x62\x8b'))
  t.equal(response.status, 101)
  t.equal(response.headers['sec-websocket-protocol'], 'chat.v1')
  t.notOk(response.text.includes(token), 'no byte of the response carries the token')
  t.equal(app.calls, 3)
})

test('without route protocols: the first app protocol offered, else the marker "bearer"', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const app = await authApp(t, { secret })
  const withApp = await expectOpen(t, app.url('/ws'), [`bearer.${token}`, 'graphql-ws', 'chat.v1'])
  t.equal(withApp.protocol, 'graphql-ws')
  t.equal(withApp.headers['sec-websocket-protocol'], 'graphql-ws')
  const marker = await expectOpen(t, app.url('/ws'), bearerProtocols(token))
  t.equal(marker.protocol, 'bearer', 'the marker is selected')
  t.equal(marker.headers['sec-websocket-protocol'], 'bearer')
  t.equal(marker.user?.sub, 'alice')
})

test('only the token offered: 400 FST_WS_GUARD_PROTOCOL_REQUIRED, explaining what to offer', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const app = await authApp(t, { secret })
  const refusal = await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_PROTOCOL_REQUIRED', [`bearer.${token}`])
  t.match(refusal.body.message, /also offer the marker "bearer"/)
  t.match(refusal.body.message, /bearerProtocols\(token, \.\.\.appProtocols\)/)
  t.notOk(refusal.raw.includes(token))
  t.equal(app.calls, 0)

  t.test('naming the route protocols', async (t) => {
    const app = await authApp(t, { secret }, { route: { config: { wsGuard: { protocols: ['chat.v1', 'chat.v2'] } } } })
    const refusal = await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_PROTOCOL_REQUIRED', [`bearer.${token}`])
    t.match(refusal.body.message, /also offer "chat\.v1" or "chat\.v2"/)
  })
})

test('malformed bearer subprotocols: 400 invalid_request', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const other = await mint(secretBytes, { sub: 'mallory' })
  const app = await authApp(t, { secret })
  const two = await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_INVALID_REQUEST', ['bearer', `bearer.${token}`, `bearer.${other}`])
  checkChallenge(t, two, 'invalid_request')
  t.match(two.body.message, /more than one bearer\.<token> subprotocol/)
  const empty = await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_INVALID_REQUEST', ['bearer', 'bearer.'])
  t.match(empty.body.message, /the bearer\.<token> subprotocol is empty/)
  t.equal(app.calls, 0)
})

test('the protocol source can be left out', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const app = await authApp(t, { secret, tokenSources: ['header'] })
  const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING', bearerProtocols(token))
  t.notOk(JSON.stringify(refusal.headers).includes(token))
  // The header still works, and an offered token is still never echoed.
  const opened = await expectOpen(t, app.url('/ws'), bearerProtocols(token), bearer(token))
  t.equal(opened.protocol, 'bearer')
})

test('a route outside the guard never echoes a bearer token either', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const app = await authApp(t, { secret }, {
    setup: (app) => { app.get('/open', { websocket: true, config: { wsGuard: false } }, userEcho()) }
  })
  // Bounded: a handshake the server never answers would otherwise hang the test.
  const outcome = await tryConnect(app.url('/open'), [`bearer.${token}`, 'chat.v1'], { handshakeTimeout: 2000 })
  t.equal(outcome.kind, 'open', 'the unguarded route opens')
  if (outcome.kind !== 'open') return
  t.teardown(() => outcome.socket.terminate())
  t.equal(outcome.protocol, 'chat.v1')
  t.equal(outcome.headers['sec-websocket-protocol'], 'chat.v1')
  t.equal((await askUser(outcome.socket)).user, null, 'no user on an unguarded route')
})
