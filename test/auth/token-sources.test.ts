import { parseCookie } from 'cookie'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyRequest } from 'fastify'
import { test } from 'tap'
import wsGuard from '../../index.js'
import { authApp, userEcho } from '../helpers/app.js'
import { expectOpen, tryConnect } from '../helpers/clients.js'
import { assertNoLeak, guardLines } from '../helpers/logs.js'
import { handshake, rawExchange } from '../helpers/raw.js'
import { checkChallenge, expectRefused } from '../helpers/refusals.js'
import { bearer, mint, secret, secretBytes } from '../helpers/tokens.js'

const sameOrigin = (port: number): string => `http://127.0.0.1:${port}`

test('header: the default source', async (t) => {
  const app = await authApp(t, { secret })
  const token = await mint(secretBytes, { sub: 'alice' })
  const { user } = await expectOpen(t, app.url('/ws'), [], bearer(token))
  t.equal(user?.sub, 'alice')
  t.test('not looked at when the route does not list it', async (t) => {
    const app = await authApp(t, { secret, tokenSources: ['query'] })
    const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING', [], bearer(token))
    checkChallenge(t, refusal, undefined)
  })
})

test('no token: 401 FST_WS_GUARD_TOKEN_MISSING, a challenge without error attribute, no handler', async (t) => {
  const app = await authApp(t, { secret, realm: 'chat-api' })
  const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING')
  checkChallenge(t, refusal, undefined, 'chat-api')
  t.equal(refusal.headers['www-authenticate'], 'Bearer realm="chat-api"', 'exactly the RFC 6750 §3 challenge')
  t.equal(refusal.body.error, 'Unauthorized')

  // Over raw TCP: the answer ends with the server closing the connection.
  const raw = await rawExchange(app.port, handshake('/ws', { Host: `127.0.0.1:${app.port}` }))
  t.equal(raw.status, 401)
  t.match(raw.headers['www-authenticate'], /^Bearer realm="chat-api"$/)
  t.notMatch(raw.text, /101 Switching Protocols/)

  t.test('another scheme is no bearer token: 401 missing too', async (t) => {
    const basic = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING', [], { headers: { authorization: 'Basic dXNlcjpwYXNz' } })
    checkChallenge(t, basic, undefined, 'chat-api')
  })
  t.equal(app.calls, 0, 'the handler never ran')
})

test('a malformed Authorization header: 400 invalid_request', async (t) => {
  const app = await authApp(t, { secret })
  const token = await mint(secretBytes, { sub: 'alice' })
  for (const [label, value] of [
    ['"Bearer" without a token', 'Bearer'],
    ['two tokens', `Bearer ${token} ${token}`],
    ['a token with a space inside', 'Bearer abc def'],
    ['characters outside b64token', 'Bearer abc$def.ghi.jkl']
  ] as const) {
    const refusal = await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_INVALID_REQUEST', [], { headers: { authorization: value } })
    checkChallenge(t, refusal, 'invalid_request')
    t.match(refusal.body.message, /"Bearer <token>"/, label)
  }
  t.test('the scheme is case-insensitive', async (t) => {
    t.equal((await expectOpen(t, app.url('/ws'), [], { headers: { authorization: `bEaReR ${token}` } })).user?.sub, 'alice')
  })
  t.equal(app.calls, 0)
})

test('duplicate Authorization headers (raw TCP): 400, even when both are valid', async (t) => {
  const app = await authApp(t, { secret })
  const token = await mint(secretBytes, { sub: 'alice' })
  const other = await mint(secretBytes, { sub: 'mallory' })
  const request = handshake('/ws', { Host: `127.0.0.1:${app.port}`, Authorization: `Bearer ${token}` })
    .replace('\r\n\r\n', `\r\nauthorization: Bearer ${other}\r\n\r\n`)
  const response = await rawExchange(app.port, request)
  t.equal(response.status, 400)
  const body = JSON.parse(response.body)
  t.equal(body.code, 'FST_WS_GUARD_INVALID_REQUEST')
  t.match(body.message, /more than one Authorization header/)
  t.match(response.headers['www-authenticate'], /^Bearer realm="websocket", error="invalid_request", error_description="[^"]+"$/)
  assertNoLeak(t, response.text, [token, other, 'alice', 'mallory'], 'the response')
  t.equal(app.calls, 0)
})

test('a token in two sources: 400 (RFC 6750 §2)', async (t) => {
  const app = await authApp(t, { secret })
  const token = await mint(secretBytes, { sub: 'alice' })
  const refusal = await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_INVALID_REQUEST', ['bearer', `bearer.${token}`], bearer(token))
  checkChallenge(t, refusal, 'invalid_request')
  t.match(refusal.body.message, /more than one place \(header and protocol\)/)
  t.equal(app.calls, 0)
})

test('cookie', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })

  t.test('a same-origin cookie authenticates', async (t) => {
    const app = await authApp(t, { secret, tokenSources: ['cookie'] })
    const { user } = await expectOpen(t, app.url('/ws'), [], {
      origin: sameOrigin(app.port),
      headers: { cookie: `theme=dark; access_token=${token}; lang=en` }
    })
    t.equal(user?.sub, 'alice')
    t.equal(app.calls, 1)
  })

  t.test('a missing Origin is refused on cookie routes, even though allowMissingOrigin defaults to true', async (t) => {
    const app = await authApp(t, { secret, tokenSources: ['header', 'cookie'] })
    const refusal = await expectRefused(t, app.url('/ws'), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', [], { headers: { cookie: `access_token=${token}` } })
    t.match(refusal.body.message, /no Origin header/)
    t.notMatch(JSON.stringify(refusal.headers) + refusal.raw, token)
    t.equal(app.calls, 0)
  })

  t.test('a cross-origin cookie is refused (cross-site WebSocket hijacking)', async (t) => {
    const app = await authApp(t, { secret, tokenSources: ['cookie'] })
    await expectRefused(t, app.url('/ws'), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', [], {
      origin: 'https://evil.example',
      headers: { cookie: `access_token=${token}` }
    })
    t.equal(app.calls, 0)
  })

  t.test('originReportOnly cannot switch off the origin check cookie auth relies on', async (t) => {
    // Either refused at registration, or enforced anyway: never a cross-site socket on a cookie.
    const app = Fastify()
    t.teardown(() => app.close())
    let registered = true
    try {
      await app.register(wsGuard, { originReportOnly: true, auth: { secret, tokenSources: ['cookie'] } })
      app.wsRoute('/ws', userEcho())
      await app.listen({ port: 0, host: '127.0.0.1' })
    } catch (err) {
      registered = false
      t.equal((err as { code?: string }).code, 'FST_WS_GUARD_INVALID_OPTION', 'refused at registration')
    }
    if (!registered) return
    const url = `ws://127.0.0.1:${(app.server.address() as AddressInfo).port}/ws`
    const cookie = { cookie: `access_token=${token}` }
    for (const [label, options] of [['no Origin', { headers: cookie }], ['a cross-site Origin', { origin: 'https://evil.example', headers: cookie }]] as const) {
      const outcome = await tryConnect(url, [], options)
      if (outcome.kind === 'open') outcome.socket.terminate()
      t.equal(outcome.kind === 'refused' ? outcome.status : outcome.kind, 403, `${label}: refused`)
    }
  })

  t.test('an allowlisted origin and a custom cookieName', async (t) => {
    const app = await authApp(t, { secret, tokenSources: ['cookie'], cookieName: 'session' }, { plugin: { origins: ['https://app.example.com'] } })
    const options = { origin: 'https://app.example.com' }
    t.equal((await expectOpen(t, app.url('/ws'), [], { ...options, headers: { cookie: `session=${token}` } })).user?.sub, 'alice')
    await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING', [], { ...options, headers: { cookie: `access_token=${token}` } })
    await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING', [], { ...options, headers: { cookie: 'session=' } })
    await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING', [], options)
  })

  t.test('a cookie and a header together: 400', async (t) => {
    const app = await authApp(t, { secret, tokenSources: ['header', 'cookie'] })
    const refusal = await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_INVALID_REQUEST', [], bearer(token, {
      origin: sameOrigin(app.port),
      headers: { cookie: `access_token=${token}` }
    }))
    t.match(refusal.body.message, /more than one place \(header and cookie\)/)
  })

  t.test('cookies already parsed by @fastify/cookie are used', async (t) => {
    const app = await authApp(t, { secret, tokenSources: ['cookie'] }, {
      setup: (app) => {
        // What @fastify/cookie does: decorate, then parse in a global onRequest hook (which runs
        // before the route's hooks). Here the parsed value comes from another header, to prove it is read.
        app.decorateRequest('cookies', null)
        app.addHook('onRequest', async (request: FastifyRequest & { cookies?: unknown }) => {
          request.cookies = parseCookie(String(request.headers['x-test-cookies'] ?? ''))
        })
      }
    })
    t.equal((await expectOpen(t, app.url('/ws'), [], { origin: sameOrigin(app.port), headers: { 'x-test-cookies': `access_token=${token}` } })).user?.sub, 'alice')
    await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING', [], { origin: sameOrigin(app.port), headers: { 'x-test-cookies': 'theme=dark', cookie: `access_token=${token}` } })
  })

  t.test('@fastify/cookie registered with a later hook (request.cookies still null) does not break cookie auth', async (t) => {
    // @fastify/cookie's `hook: 'preParsing'` or `hook: false` leave request.cookies null during onRequest.
    const app = await authApp(t, { secret, tokenSources: ['cookie'] }, {
      setup: (app) => { app.decorateRequest('cookies', null) }
    })
    t.equal((await expectOpen(t, app.url('/ws'), [], { origin: sameOrigin(app.port), headers: { cookie: `access_token=${token}` } })).user?.sub, 'alice')
  })
})

test('query: off by default', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const app = await authApp(t, { secret })
  await expectRefused(t, app.url(`/ws?access_token=${token}`), 401, 'FST_WS_GUARD_TOKEN_MISSING')
  t.equal(app.calls, 0)

  t.test('on when listed', async (t) => {
    const app = await authApp(t, { secret, tokenSources: ['header', 'query'] })
    t.equal((await expectOpen(t, app.url(`/ws?x=1&access_token=${token}`))).user?.sub, 'alice')
    await expectRefused(t, app.url('/ws?access_token='), 401, 'FST_WS_GUARD_TOKEN_MISSING')
    const twice = await expectRefused(t, app.url(`/ws?access_token=${token}&access_token=${token}`), 400, 'FST_WS_GUARD_INVALID_REQUEST')
    checkChallenge(t, twice, 'invalid_request')
    t.match(twice.body.message, /more than one access_token query parameter/)
    const both = await expectRefused(t, app.url(`/ws?access_token=${token}`), 400, 'FST_WS_GUARD_INVALID_REQUEST', [], bearer(token))
    t.match(both.body.message, /more than one place \(header and query\)/)
  })

  t.test('a custom queryParam', async (t) => {
    const app = await authApp(t, { secret, tokenSources: ['query'], queryParam: 'jwt' })
    t.equal((await expectOpen(t, app.url(`/ws?jwt=${token}`))).user?.sub, 'alice')
    await expectRefused(t, app.url(`/ws?access_token=${token}`), 401, 'FST_WS_GUARD_TOKEN_MISSING')
  })
})

test('getToken: a custom extractor, looked at after tokenSources', async (t) => {
  const token = await mint(secretBytes, { sub: 'alice' })
  const seen: string[] = []
  const app = await authApp(t, {
    secret,
    getToken: (request) => {
      const value = request.headers['x-token']
      seen.push(request.url)
      if (value === 'number') return 42 as unknown as string
      if (value === 'throw') throw new Error('extractor exploded: SENSITIVE')
      return value as string | undefined
    }
  })
  t.equal((await expectOpen(t, app.url('/ws'), [], { headers: { 'x-token': token } })).user?.sub, 'alice')
  t.same(seen, ['/ws'], 'called with the request')
  await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING')
  await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING', [], { headers: { 'x-token': '' } })
  const wrongType = await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_INVALID_REQUEST', [], { headers: { 'x-token': 'number' } })
  t.match(wrongType.body.message, /getToken must return a string or undefined/)
  const both = await expectRefused(t, app.url('/ws'), 400, 'FST_WS_GUARD_INVALID_REQUEST', [], bearer(token, { headers: { 'x-token': token } }))
  t.match(both.body.message, /more than one place \(header and custom\)/)
  const thrown = await expectRefused(t, app.url('/ws'), 500, 'FST_WS_GUARD_INTERNAL', [], { headers: { 'x-token': 'throw' } })
  t.notMatch(thrown.raw, /SENSITIVE|exploded/)
  t.notMatch(app.logs.text, /SENSITIVE|exploded/, 'the thrown message is not logged')
  t.match(app.logs.lines.filter((line) => line.level === 50), [{ wsGuard: { err: { name: 'Error' } } }])
  t.match(guardLines(app.logs).at(-1), { wsGuard: { code: 'FST_WS_GUARD_INTERNAL', statusCode: 500 } })
  t.equal(app.calls, 1)

  t.test('as the only source', async (t) => {
    const app = await authApp(t, { secret, tokenSources: [], getToken: (request) => request.headers['x-token'] as string | undefined })
    t.equal((await expectOpen(t, app.url('/ws'), [], { headers: { 'x-token': token } })).user?.sub, 'alice')
    await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_MISSING', [], bearer(token))
  })
})

test('header: under @fastify/websocket\'s injectWS, whose request has no rawHeaders', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(wsGuard, { auth: { secret } })
  app.wsRoute('/ws', (socket, request) => { socket.send(String(request.wsUser?.sub)) })
  await app.ready()
  const token = await mint(secretBytes, { sub: 'alice' })
  // The handler's first message can arrive before injectWS resolves: listen from the start.
  let received: Promise<unknown[]> | undefined
  const socket = await app.injectWS('/ws', { headers: { authorization: `Bearer ${token}` } }, { onInit: (ws) => { received = once(ws, 'message') } })
  const [data] = await received! as [Buffer]
  t.equal(String(data), 'alice', 'the header token is read and verified')
  socket.terminate()
})
