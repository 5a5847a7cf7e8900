import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import { test } from 'tap'
import wsGuard from '../../index.js'
import { startApp } from '../helpers/app.js'
import { doctor, doctorText, expect, stage, wsServer } from '../helpers/doctor.js'
import { mint, now, secret, secretBytes } from '../helpers/tokens.js'

/*
 * The upgrade and listen stages against real servers on loopback: fastify-ws-guard refusing,
 * plain Fastify routes, ws servers with and without heartbeats, a close while listening, a
 * server that echoes the token.
 */

test('fastify-ws-guard refuses the Origin: upgrade fails with its code explained (exit 7)', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { origins: ['https://good.example'] })
    app.wsRoute('/ws', () => {})
  })
  const run = await doctor([url('/ws'), '--origin', 'https://evil.example'])
  expect(t, run, 'upgrade', 'fail', 7)
  const upgrade = stage(run, 'upgrade')
  t.equal(upgrade.summary, 'HTTP/1.1 403 Forbidden, FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.match(upgrade.findings, [{ code: 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', cause: /Origin is not on the route's allowlist/, fix: /`origins`/ }])
  t.match(upgrade.details, ['> GET /ws HTTP/1.1', /^> Host: 127\.0\.0\.1:\d+$/, '> Upgrade: websocket', '> Connection: Upgrade', /^> Sec-WebSocket-Key: [A-Za-z0-9+/]{22}==$/])
  t.ok(upgrade.details.includes('> Origin: https://evil.example'))
  t.ok(upgrade.details.some((line) => /^< body: \{"statusCode":403,"code":"FST_WS_GUARD_ORIGIN_NOT_ALLOWED"/.test(line)))
  t.equal(stage(run, 'listen').verdict, 'skip')

  const text = await doctorText([url('/ws'), '--origin', 'https://evil.example'])
  t.equal(text.code, 7)
  t.match(text.text, /^ {2}fail {2}upgrade +\d+\.\d ms {2}HTTP\/1\.1 403 Forbidden, FST_WS_GUARD_ORIGIN_NOT_ALLOWED$/m)
  t.match(text.text, /^ {8}cause: the Origin is not on the route's allowlist/m)
  t.match(text.text, /^ {8}fix {2}: add the page's exact scheme/m)
  t.match(text.text, /^ {2}skip {2}listen {12}- {2}not reached$/m)
  t.match(text.text, /\n\nfailed at upgrade \(exit 7\)\n$/)
})

test('with rejectWith: \'close\' the refusal arrives as a close frame after the upgrade (exit 8)', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { origins: ['https://good.example'], rejectWith: 'close' })
    app.wsRoute('/ws', () => {})
  })
  const run = await doctor([url('/ws'), '--origin', 'https://evil.example', '--listen', '500'])
  t.equal(stage(run, 'upgrade').verdict, 'ok')
  expect(t, run, 'listen', 'fail', 8)
  t.match(stage(run, 'listen').findings, [{ code: '4403', cause: /closed the connection: 4403 "origin not allowed": forbidden/ }])
  t.match(stage(run, 'listen').data, { close: { code: 4403, reason: 'origin not allowed' }, dropped: false })
})

test('a plain HTTP route at the path: a 200 instead of a 101 (exit 7)', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  app.get('/ws', async () => 'a plain page')
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  const run = await doctor([`ws://127.0.0.1:${port}/ws`])
  expect(t, run, 'upgrade', 'fail', 7)
  t.equal(stage(run, 'upgrade').summary, 'HTTP/1.1 200 OK')
  t.match(stage(run, 'upgrade').findings, [{ code: undefined, cause: /a plain HTTP handler answered \(200\)/, fix: /proxy_set_header Upgrade/ }])
  t.ok(stage(run, 'upgrade').details.includes('< body: a plain page'))
})

test('a plain route next to fastify-ws-guard: 400 FST_WS_GUARD_NOT_WEBSOCKET_ROUTE (exit 7)', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.get('/page', async () => 'page')
  })
  const run = await doctor([url('/page')])
  expect(t, run, 'upgrade', 'fail', 7)
  t.match(stage(run, 'upgrade').findings, [{ code: 'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE', cause: /plain HTTP route of the app/ }])
})

test('a path nothing serves: the guard\'s 404 FST_WS_GUARD_ROUTE_NOT_FOUND (exit 7)', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', () => {})
  })
  const run = await doctor([url('/wrong?room=1')])
  expect(t, run, 'upgrade', 'fail', 7)
  t.equal(stage(run, 'upgrade').summary, 'HTTP/1.1 404 Not Found, FST_WS_GUARD_ROUTE_NOT_FOUND')
  t.match(stage(run, 'upgrade').findings, [{ code: 'FST_WS_GUARD_ROUTE_NOT_FOUND', cause: /^no route of the app matches the path/, fix: /check the path/ }])
})

test('a server with heartbeats: pings seen, their interval, our ping answered (exit 0)', async (t) => {
  const { port } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: { pingInterval: 200, readDeadline: 1000 } })
    app.wsRoute('/ws', () => {})
  })
  const run = await doctor([`ws://localhost:${port}/ws`, '--listen', '800'])
  expect(t, run, 'listen', 'ok', 0)
  t.ok(run.report.ok)
  t.match(stage(run, 'dns').summary, /^localhost -> /)
  const listen = stage(run, 'listen')
  const pings = listen.data.serverPingsAtMs as number[]
  t.ok(pings.length >= 2, `${pings.length} pings`)
  t.match(listen.summary, /^open for \d+(\.\d)? ms: \d server ping\(s\), every ~\d+ ms, ping round trip \d+(\.\d)? ms, 0 data frame\(s\)$/)
  t.type(listen.data.pingRoundTripMs, 'number')
  t.same(listen.findings, [])
})

test('no ping within --listen: a note on how to see one, not a warning (exit 0)', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: false })
    app.wsRoute('/ws', () => {})
  })
  const run = await doctor([url('/ws'), '--listen', '300'])
  expect(t, run, 'listen', 'ok', 0)
  t.equal(run.report.warnings, 0)
  t.same(stage(run, 'listen').findings, [])
  t.equal(stage(run, 'listen').details.at(-1), 'note: no ping arrived within 300 ms, which says nothing of a longer interval: to see one, rerun with --listen longer than the server\'s ping interval (fastify-ws-guard pings every 30 s by default: --listen 35000)')
  t.match(stage(run, 'listen').summary, /no server ping, ping round trip/)

  const text = await doctorText([url('/ws'), '--listen', '300'])
  t.match(text.text, /^ {2}ok {4}listen /m)
  t.match(text.text, /^ {8}note: no ping arrived within 300 ms, .*--listen 35000\)$/m)
  t.notMatch(text.text, /^ +warn/m)
  t.match(text.text, /handshake ok, 0 warning\(s\) \(exit 0\)\n$/)
})

test('a default guard (a ping every 30 s) is no warning within a short --listen (exit 0)', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', () => {})
  })
  const run = await doctor([url('/ws'), '--listen', '200'])
  expect(t, run, 'listen', 'ok', 0)
  t.equal(run.report.warnings, 0)
  t.same(stage(run, 'listen').findings, [])
  // The guard's first ping falls anywhere in its first 30 s: rarely within the window.
  const pinged = (stage(run, 'listen').data.serverPingsAtMs as number[]).length > 0
  t.equal(stage(run, 'listen').details.some((line) => line.startsWith('note: no ping arrived within 200 ms')), !pinged)
})

test('a close frame while listening: 4401 token expired (exit 8)', async (t) => {
  const port = await wsServer(t, {}, (socket) => {
    setTimeout(() => socket.close(4401, 'token expired'), 50)
  })
  const run = await doctor([`ws://127.0.0.1:${port}/`, '--listen', '800'])
  t.equal(stage(run, 'upgrade').verdict, 'ok')
  expect(t, run, 'listen', 'fail', 8)
  t.match(stage(run, 'listen').findings, [{ code: '4401', cause: /closed the connection: 4401 "token expired": authentication failed or lapsed/, fix: /fresh token/ }])
  t.match(stage(run, 'listen').summary, /^closed by the server after \d+(\.\d)? ms with 4401 "token expired": /)
})

test('a server that echoes the token as subprotocol is flagged, and the token is never printed', async (t) => {
  const token = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsZWFrIn0.c2lnbmF0dXJlLWxlYWs'
  const port = await wsServer(t, {
    // The naive setup: select whatever the client offered last, here its token.
    handleProtocols: (protocols) => [...protocols].find((p) => p.startsWith('bearer.')) ?? false
  })
  const url = `ws://127.0.0.1:${port}/`
  const run = await doctor([url, '--token', token, '--token-in', 'protocol', '--listen', '200'])
  expect(t, run, 'upgrade', 'warn', 0)
  t.match(stage(run, 'upgrade').findings, [{ verdict: 'warn', code: 'TOKEN_ECHOED', cause: /echoes the bearer token in its response \(sec-websocket-protocol\)/ }])
  t.equal(stage(run, 'upgrade').summary, 'HTTP/1.1 101 Switching Protocols, subprotocol bearer.<redacted>')
  t.ok(stage(run, 'upgrade').details.includes('> Sec-WebSocket-Protocol: bearer, bearer.<redacted>'))
  t.ok(stage(run, 'upgrade').details.includes('< sec-websocket-protocol: bearer.<redacted>'))
  t.notOk(run.json.includes(token), 'not in the JSON report')
  t.notOk(run.json.includes('c2lnbmF0dXJlLWxlYWs'), 'not even the signature')

  const text = await doctorText([url, '--token-env', 'WS_TOKEN', '--token-in', 'protocol', '--listen', '200'], { WS_TOKEN: token })
  t.equal(text.code, 0)
  t.notOk(text.text.includes(token), 'not in the text report')
  t.match(text.text, /bearer\.<redacted>/)
})

test('an expired token against fastify-ws-guard: 401 with its error_description (exit 7)', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret } })
    app.wsRoute('/ws', () => {})
  })
  const token = await mint(secretBytes, { sub: 'doctor-user' }, { iat: now(-3660), exp: now(-60) })
  const run = await doctor([url('/ws'), '--token', token])
  expect(t, run, 'upgrade', 'fail', 7)
  const upgrade = stage(run, 'upgrade')
  t.equal(upgrade.summary, 'HTTP/1.1 401 Unauthorized, FST_WS_GUARD_TOKEN_EXPIRED')
  t.match(upgrade.findings, [{ code: 'FST_WS_GUARD_TOKEN_EXPIRED', cause: 'the token has expired', fix: /get a fresh token/ }])
  t.ok(upgrade.details.some((line) => /^< www-authenticate: Bearer realm="websocket", error="invalid_token", error_description="[^"]*expired[^"]*"$/i.test(line)), upgrade.details.join('\n'))
  t.ok(upgrade.details.includes('> Authorization: Bearer <redacted>'))
  t.notOk(run.json.includes(token))

  const missing = await doctor([url('/ws')])
  expect(t, missing, 'upgrade', 'fail', 7)
  t.match(stage(missing, 'upgrade').findings, [{ code: 'FST_WS_GUARD_TOKEN_MISSING', fix: /--token T or --token-env VAR/ }])
})

test('a valid token in each place fastify-ws-guard reads; never printed', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret, tokenSources: ['header', 'protocol', 'query'] }, heartbeat: false })
    app.wsRoute('/ws', { config: { wsGuard: { protocols: ['chat.v1'] } } }, () => {})
    app.wsRoute('/any', () => {})
  })
  const token = await mint(secretBytes, { sub: 'doctor-user' }, { exp: now(3600) })
  for (const place of ['header', 'protocol', 'query']) {
    const run = await doctor([url('/any'), '--token', token, '--token-in', place, '--listen', '0'])
    expect(t, run, 'upgrade', 'ok', 0)
    t.notOk(run.json.includes(token), `${place}: token not printed`)
    const text = await doctorText([url('/any'), '--token', token, '--token-in', place, '--listen', '0'])
    t.notOk(text.text.includes(token), `${place}: token not printed in text`)
  }
  const query = await doctor([url('/any'), '--token', token, '--token-in', 'query', '--listen', '0'])
  t.match(stage(query, 'url').summary, /\/any\?access_token=<redacted>$/)
  t.equal(stage(query, 'url').summary, `${url('/any')}?access_token=<redacted>: plain text, host 127.0.0.1, port ${new URL(url('/')).port}, path /any?access_token=<redacted>`, 'the colon after the redacted URL stays')
  t.equal(stage(query, 'upgrade').details[0], '> GET /any?access_token=<redacted> HTTP/1.1')
  const queryText = await doctorText([url('/any'), '--token', token, '--token-in', 'query', '--listen', '0'])
  t.match(queryText.text, /^ {2}ok {4}url +\d+\.\d ms {2}ws:\/\/127\.0\.0\.1:\d+\/any\?access_token=<redacted>: plain text, host /m)

  const marker = await doctor([url('/any'), '--token', token, '--token-in', 'protocol', '--listen', '0'])
  t.equal(stage(marker, 'upgrade').summary, 'HTTP/1.1 101 Switching Protocols, subprotocol bearer')

  const app = await doctor([url('/ws'), '--token', token, '--token-in', 'protocol', '--protocol', 'chat.v1', '--listen', '0'])
  expect(t, app, 'upgrade', 'ok', 0)
  t.equal(stage(app, 'upgrade').summary, 'HTTP/1.1 101 Switching Protocols, subprotocol chat.v1')
  t.ok(stage(app, 'upgrade').details.includes('> Sec-WebSocket-Protocol: chat.v1, bearer.<redacted>'))
})

test('a token sent where the route does not read it: the fix names where it went and where else to try (exit 7)', async (t) => {
  const token = await mint(secretBytes, { sub: 'doctor-user' }, { exp: now(3600) })
  // tokenSources by default: header and protocol.
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret } })
    app.wsRoute('/ws', () => {})
  })
  const query = await doctor([url('/ws'), '--token', token, '--token-in', 'query', '--listen', '0'])
  expect(t, query, 'upgrade', 'fail', 7)
  t.equal(stage(query, 'upgrade').summary, 'HTTP/1.1 401 Unauthorized, FST_WS_GUARD_TOKEN_MISSING')
  t.match(stage(query, 'upgrade').findings, [{
    code: 'FST_WS_GUARD_TOKEN_MISSING',
    cause: 'the route requires a token and found none where it looks, although one was sent',
    fix: 'the token was sent in the query; this route does not read access_token from the query (auth.tokenSources, auth.queryParam): try --token-in header or --token-in protocol'
  }])
  t.notMatch(stage(query, 'upgrade').findings[0]!.fix, /pass --token/)
  t.notOk(query.json.includes(token))

  const queryOnly = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret, tokenSources: ['query'] } })
    app.wsRoute('/ws', () => {})
  })
  const header = await doctor([queryOnly.url('/ws'), '--token', token, '--listen', '0'])
  expect(t, header, 'upgrade', 'fail', 7)
  t.match(stage(header, 'upgrade').findings, [{ code: 'FST_WS_GUARD_TOKEN_MISSING', fix: 'the token was sent in the Authorization header; this route does not read the Authorization header (auth.tokenSources): try --token-in protocol or --token-in query' }])
  const protocol = await doctor([queryOnly.url('/ws'), '--token', token, '--token-in', 'protocol', '--listen', '0'])
  t.match(stage(protocol, 'upgrade').findings, [{ code: 'FST_WS_GUARD_TOKEN_MISSING', fix: 'the token was sent in the subprotocol bearer.<token>; this route does not read subprotocols (auth.tokenSources): try --token-in header or --token-in query' }])
  // Sent where it reads it, the same token passes.
  expect(t, await doctor([queryOnly.url('/ws'), '--token', token, '--token-in', 'query', '--listen', '0']), 'upgrade', 'ok', 0)

  // Any server: a 401 without a token error, to a token that was sent.
  const port = await wsServer(t, { verifyClient: (_info, done) => done(false, 401) })
  const plain = await doctor([`ws://127.0.0.1:${port}/`, '--token', token, '--token-in', 'query'])
  expect(t, plain, 'upgrade', 'fail', 7)
  t.match(stage(plain, 'upgrade').findings, [{ code: undefined, cause: 'the server requires authentication (401)', fix: 'the token was sent in the query; the server may read it elsewhere: try --token-in header or --token-in protocol' }])
})
