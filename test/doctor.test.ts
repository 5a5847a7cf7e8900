import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import { SignJWT } from 'jose'
import { test } from 'tap'
import wsGuard from '../index.js'
import { connectTcp } from '../lib/doctor/tcp.js'
import { doctor, doctorText, expect, stage, wsServer } from './doctor-helpers.js'
import { startApp } from './helpers.js'

/*
 * The doctor against real servers on loopback: nothing listening, a name that cannot resolve,
 * fastify-ws-guard refusing, plain Fastify routes, ws servers with and without heartbeats, a
 * close while listening, a server that echoes the token.
 */

async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

const secret = 'doctor-test-secret-0123456789-abcdefghijklmnop'

async function mint (expiresAt: number): Promise<string> {
  return await new SignJWT({ sub: 'doctor-user' })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt(expiresAt - 3600)
    .setExpirationTime(expiresAt)
    .sign(new TextEncoder().encode(secret))
}

const now = (): number => Math.floor(Date.now() / 1000)

test('nothing listening: tcp fails, refused (exit 5)', async (t) => {
  const port = await freePort()
  const run = await doctor([`ws://127.0.0.1:${port}/ws`, '--timeout', '1000'])
  expect(t, run, 'tcp', 'fail', 5)
  t.equal(run.report.failedStage, 'tcp')
  t.match(stage(run, 'tcp').findings, [{ code: 'ECONNREFUSED', cause: `nothing is listening on 127.0.0.1:${port}`, fix: new RegExp(`ss -ltnp \\| grep :${port}`) }])
  t.same(run.report.stages.map((s) => s.verdict), ['ok', 'skip', 'fail', 'skip', 'skip', 'skip'])
  t.match(stage(run, 'dns').summary, '127.0.0.1 is an IP address')
  t.equal(stage(run, 'upgrade').summary, 'not reached')
})

test('a .invalid name: dns fails (exit 4)', async (t) => {
  const run = await doctor(['ws://doctor-test.invalid/ws', '--timeout', '3000'])
  expect(t, run, 'dns', 'fail', 4)
  t.match(stage(run, 'dns').summary, /^doctor-test\.invalid did not resolve \((ENOTFOUND|EAI_AGAIN)\)$/)
  t.match(stage(run, 'url').data, { port: 80, secure: false })
  t.equal(stage(run, 'tcp').verdict, 'skip')

  const secure = await doctor(['wss://doctor-test.invalid/ws', '--timeout', '3000'])
  expect(t, secure, 'dns', 'fail', 4)
  t.match(stage(secure, 'url').data, { port: 443, secure: true })
})

test('a port that drops connection attempts: tcp times out (exit 5)', async (t) => {
  // A listener whose process is stopped: the kernel queues `backlog` connections, then
  // drops SYNs, as a firewall that drops packets does.
  const child = spawn(process.execPath, ['-e', `
    const server = require('node:net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
      process.stdout.write(server.address().port + '\\n')
    })`], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const [chunk] = await once(child.stdout!, 'data') as [Buffer]
  const port = Number(chunk.toString().trim())
  process.kill(child.pid!, 'SIGSTOP')
  await sleep(50)
  const fillers: Socket[] = []
  t.teardown(() => { for (const socket of fillers) socket.destroy() })
  for (let i = 0; i < 4; i++) fillers.push(connect({ port, host: '127.0.0.1' }).on('error', () => {}))
  await sleep(100)
  const run = await doctor([`ws://127.0.0.1:${port}/`, '--timeout', '400'])
  expect(t, run, 'tcp', 'fail', 5)
  t.match(stage(run, 'tcp').findings, [{ code: 'ETIMEDOUT', cause: /no answer from 127\.0\.0\.1:\d+ in 400 ms: a firewall/ }])
})

test('IPv6: a bracketed literal, and addresses tried in turn', async (t) => {
  const port = await wsServer(t, {}, () => {}, '::1')
  const run = await doctor([`ws://[::1]:${port}/`, '--listen', '0'])
  expect(t, run, 'upgrade', 'ok', 0)
  t.equal(stage(run, 'tcp').summary, `connected to [::1]:${port}`)
  t.match(stage(run, 'upgrade').details, ['> GET / HTTP/1.1', `> Host: [::1]:${port}`])
  t.equal(stage(run, 'listen').verdict, 'skip')

  // A name resolving to ::1 then 127.0.0.1, served on 127.0.0.1 only.
  const v4 = await wsServer(t, {})
  const tcp = await connectTcp([{ address: '::1', family: 6 }, { address: '127.0.0.1', family: 4 }], v4, 1000)
  tcp.socket!.destroy()
  t.equal(tcp.result.verdict, 'ok')
  t.equal(tcp.result.summary, `connected to 127.0.0.1:${v4}`)
  t.same(tcp.result.details, [`[::1]:${v4}: ECONNREFUSED (tried first)`])

  const none = await connectTcp([{ address: '::1', family: 6 }, { address: '127.0.0.1', family: 4 }], await freePort(), 1000)
  t.equal(none.result.verdict, 'fail')
  t.match(none.result.details, [/^127\.0\.0\.1:\d+: ECONNREFUSED$/])
})

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

test('a path nothing serves: 404 (exit 7)', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', () => {})
  })
  const run = await doctor([url('/wrong?room=1')])
  expect(t, run, 'upgrade', 'fail', 7)
  t.equal(stage(run, 'upgrade').summary, 'HTTP/1.1 404 Not Found')
  t.match(stage(run, 'upgrade').findings, [{ cause: /^nothing at \/wrong on this server/, fix: /printRoutes/ }])
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

test('a server without heartbeats: a warning, still exit 0', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { heartbeat: false })
    app.wsRoute('/ws', () => {})
  })
  const run = await doctor([url('/ws'), '--listen', '300'])
  expect(t, run, 'listen', 'warn', 0)
  t.equal(run.report.warnings, 1)
  t.match(stage(run, 'listen').findings, [{ verdict: 'warn', cause: /no heartbeat from the server in 300 ms/, fix: /heartbeat\.pingInterval/ }])
  t.match(stage(run, 'listen').summary, /no server ping, ping round trip/)

  const text = await doctorText([url('/ws'), '--listen', '300'])
  t.match(text.text, /^ {2}warn {2}listen /m)
  t.match(text.text, /^ {8}warn : no heartbeat/m)
  t.match(text.text, /handshake ok, 1 warning\(s\) \(exit 0\)\n$/)
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
  const token = await mint(now() - 60)
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
  const token = await mint(now() + 3600)
  for (const place of ['header', 'protocol', 'query']) {
    const run = await doctor([url('/any'), '--token', token, '--token-in', place, '--listen', '0'])
    expect(t, run, 'upgrade', 'ok', 0)
    t.notOk(run.json.includes(token), `${place}: token not printed`)
    const text = await doctorText([url('/any'), '--token', token, '--token-in', place, '--listen', '0'])
    t.notOk(text.text.includes(token), `${place}: token not printed in text`)
  }
  const query = await doctor([url('/any'), '--token', token, '--token-in', 'query', '--listen', '0'])
  t.match(stage(query, 'url').summary, /\/any\?access_token=<redacted>$/)
  t.equal(stage(query, 'upgrade').details[0], '> GET /any?access_token=<redacted> HTTP/1.1')

  const marker = await doctor([url('/any'), '--token', token, '--token-in', 'protocol', '--listen', '0'])
  t.equal(stage(marker, 'upgrade').summary, 'HTTP/1.1 101 Switching Protocols, subprotocol bearer')

  const app = await doctor([url('/ws'), '--token', token, '--token-in', 'protocol', '--protocol', 'chat.v1', '--listen', '0'])
  expect(t, app, 'upgrade', 'ok', 0)
  t.equal(stage(app, 'upgrade').summary, 'HTTP/1.1 101 Switching Protocols, subprotocol chat.v1')
  t.ok(stage(app, 'upgrade').details.includes('> Sec-WebSocket-Protocol: chat.v1, bearer.<redacted>'))
})

test('url: http:// is converted with a warning; bad URLs fail (exit 3)', async (t) => {
  const port = await wsServer(t, {})
  const http = await doctor([`http://127.0.0.1:${port}/`, '--listen', '0'])
  expect(t, http, 'url', 'warn', 0)
  t.match(stage(http, 'url').findings, [{ verdict: 'warn', cause: /^http:\/\/ is an HTTP URL; a WebSocket URL starts with ws:\/\//, fix: `write ws://127.0.0.1:${port}/` }])
  t.equal(stage(http, 'upgrade').verdict, 'ok')

  const https = await doctor(['https://doctor-test.invalid/x', '--timeout', '3000'])
  t.match(stage(https, 'url').findings, [{ fix: 'write wss://doctor-test.invalid/x' }])

  for (const [url, summary] of [
    ['not a url', 'not a URL: not a url'],
    ['ftp://127.0.0.1/', 'ftp:// is not a WebSocket scheme'],
    ['ws://127.0.0.1:8080/ws#room', 'the URL has a fragment (#room)'],
    ['ws://127.0.0.1:0/', 'port 0 is no port to connect to']
  ]) {
    const run = await doctor([url!])
    expect(t, run, 'url', 'fail', 3)
    t.equal(stage(run, 'url').summary, summary)
    t.same(run.report.stages.slice(1).map((s) => s.verdict), ['skip', 'skip', 'skip', 'skip', 'skip'])
  }
})

test('a token pasted in the URL is redacted too', async (t) => {
  const run = await doctor(['ws://127.0.0.1:0/?access_token=pasted-secret'])
  t.equal(run.report.url, 'ws://127.0.0.1:0/?access_token=<redacted>')
  t.notOk(run.json.includes('pasted-secret'))
})
