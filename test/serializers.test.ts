import Fastify from 'fastify'
import { test } from 'tap'
import { requestSerializer } from '../index.js'
import { authApp } from './helpers/app.js'
import { expectOpen } from './helpers/clients.js'
import { assertNoLeak, guardLines, LogCapture } from './helpers/logs.js'
import { expectRefused } from './helpers/refusals.js'
import { mint, now, secret, secretBytes, sensitive } from './helpers/tokens.js'

test('query tokens never reach a log line with requestSerializer', async (t) => {
  const logs = new LogCapture()
  const app = await authApp(t, { secret, tokenSources: ['query'], issuer: 'https://issuer.example' }, {
    server: { logger: { level: 'trace', stream: logs, serializers: { req: requestSerializer } } }
  })
  const good = await mint(secretBytes, { sub: sensitive.sub }, { iss: 'https://issuer.example' })
  const expired = await mint(secretBytes, { sub: sensitive.sub }, { iss: 'https://issuer.example', exp: now(-60) })
  const wrongIssuer = await mint(secretBytes, { sub: sensitive.sub }, { iss: sensitive.iss })
  t.equal((await expectOpen(t, app.url(`/ws?access_token=${good}`))).user?.sub, sensitive.sub)
  await expectRefused(t, app.url(`/ws?access_token=${expired}`), 401, 'FST_WS_GUARD_TOKEN_EXPIRED')
  await expectRefused(t, app.url(`/ws?room=1&access_token=${wrongIssuer}`), 401, 'FST_WS_GUARD_TOKEN_INVALID')
  await expectRefused(t, app.url(`/ws?access_token=${good}&access_token=${good}`), 400, 'FST_WS_GUARD_INVALID_REQUEST')

  t.ok(logs.lines.length >= 7, 'the app did log (trace level)')
  t.equal(guardLines(logs).length, 3, 'a line per refusal')
  assertNoLeak(t, logs.text, [good, expired, wrongIssuer, 'access_token=', sensitive.sub, sensitive.iss], 'the logs')
  const incoming = logs.lines.filter((line) => line.msg === 'incoming request')
  t.equal(incoming.length, 4)
  t.same(new Set(incoming.map((line) => (line.req as { url: string }).url)), new Set(['/ws']), 'the URL without its query')
  t.match(incoming[0], { req: { method: 'GET', url: '/ws', host: `127.0.0.1:${app.port}`, remoteAddress: '127.0.0.1', remotePort: Number } })
})

test("the guard's own lines never carry the URL or the token, even with Fastify's default serializer", async (t) => {
  const app = await authApp(t, { secret, tokenSources: ['query'] })
  const expired = await mint(secretBytes, { sub: sensitive.sub }, { exp: now(-60) })
  const forged = await mint(new TextEncoder().encode('z'.repeat(40)), { sub: sensitive.sub })
  await expectRefused(t, app.url(`/ws?access_token=${expired}`), 401, 'FST_WS_GUARD_TOKEN_EXPIRED')
  await expectRefused(t, app.url(`/ws?access_token=${forged}&access_token=x`), 400, 'FST_WS_GUARD_INVALID_REQUEST')
  await expectRefused(t, app.url(`/ws?access_token=${forged}`), 401, 'FST_WS_GUARD_TOKEN_INVALID')
  const lines = guardLines(app.logs)
  t.equal(lines.length, 3)
  assertNoLeak(t, JSON.stringify(lines), [expired, forged, 'access_token=', '?', sensitive.sub], "the guard's lines")
  t.match(lines, [{ wsGuard: { route: '/ws' } }, { wsGuard: { route: '/ws' } }, { wsGuard: { route: '/ws' } }])
  // Why the serializer exists: Fastify's default request line prints the query.
  t.ok(app.logs.text.includes(expired), "Fastify's default serializer does log the query")
})

test('requestSerializer', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  app.get('/x', async (request) => ({ plain: requestSerializer(request) }))
  const withQuery = (await app.inject({ url: '/x?access_token=abc&b=2', headers: { host: 'example.com' } })).json().plain
  t.match(withQuery, { method: 'GET', url: '/x', host: 'example.com', remoteAddress: '127.0.0.1' })
  const without = (await app.inject('/x')).json().plain
  t.equal(without.url, '/x')
  const emptyQuery = (await app.inject('/x?')).json().plain
  t.equal(emptyQuery.url, '/x')
})
