import { parseCookie } from 'cookie'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyRequest } from 'fastify'
import { test } from 'tap'
import wsGuard from '../index.js'
import { tryConnect } from './helpers.js'
import { authApp, bearer, checkChallenge, expectOpen, expectRefused, guardLines, mint, secret, secretBytes, userEcho } from './auth-helpers.js'

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
