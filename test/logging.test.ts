import { test } from 'tap'
import wsGuard from '../index.js'
import { countingEcho, startApp } from './helpers/app.js'
import { openClient, tryConnect } from './helpers/clients.js'
import { guardLines } from './helpers/logs.js'
import { handshake, rawExchange } from './helpers/raw.js'
import { assertRefusal } from './helpers/refusals.js'

const secret = 'SECRET-c2VjcmV0LXRva2Vu'

test('one info line per rejection, with the code, the status and the route pattern', async (t) => {
  const echo = countingEcho()
  const { port, url, logs } = await startApp(t, async (app) => {
    await app.register(wsGuard, { origins: ['https://app.example.com'] })
    app.wsRoute('/rooms/:room', { config: { wsGuard: { protocols: ['chat'] } } }, echo.handler)
    app.get('/plain/:id', async () => 'plain')
  })
  const expected: Array<[code: string, status: number]> = []
  const refuse = async (response: Parameters<typeof assertRefusal>[1], status: number, code: string) => {
    assertRefusal(t, response, status, code)
    expected.push([code, status])
  }
  await refuse(await rawExchange(port, 'GET /rooms/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'), 426, 'FST_WS_GUARD_UPGRADE_REQUIRED')
  await refuse(await rawExchange(port, 'GET /rooms/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\r\n'), 426, 'FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED')
  await refuse(await rawExchange(port, handshake('/rooms/1', { Upgrade: 'h2c' })), 426, 'FST_WS_GUARD_UNSUPPORTED_UPGRADE')
  await refuse(await rawExchange(port, handshake('/rooms/1', { 'Sec-WebSocket-Version': '8' })), 426, 'FST_WS_GUARD_UNSUPPORTED_VERSION')
  await refuse(await rawExchange(port, handshake('/rooms/1', { 'Sec-WebSocket-Key': 'x' })), 400, 'FST_WS_GUARD_INVALID_KEY')
  await refuse(await rawExchange(port, handshake('/rooms/1', { 'Sec-WebSocket-Protocol': 'a b' })), 400, 'FST_WS_GUARD_INVALID_PROTOCOL_HEADER')
  await refuse(await tryConnect(url('/rooms/1'), ['chat'], { origin: 'https://evil.example' }), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  await refuse(await tryConnect(url('/rooms/1'), ['xml'], { origin: 'https://app.example.com' }), 400, 'FST_WS_GUARD_UNSUPPORTED_PROTOCOL')
  await refuse(await tryConnect(url('/plain/1')), 400, 'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE')
  await openClient(t, url('/rooms/1'), ['chat'], { origin: 'https://app.example.com' })

  const lines = guardLines(logs)
  t.equal(lines.length, expected.length, 'exactly one guard line per rejection, none for the accepted handshake')
  lines.forEach((line, i) => {
    const [code, status] = expected[i]!
    t.equal(line.level, 30, `${code}: info level`)
    t.same(line.wsGuard, { code, statusCode: status, route: code === 'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE' ? '/plain/:id' : '/rooms/:room' })
    t.match(String(line.msg), /^websocket handshake rejected: \S/, `${code}: the message says why`)
    t.equal(typeof line.reqId, 'string', `${code}: tied to its request`)
  })
  t.equal(new Set(lines.map((line) => line.reqId)).size, lines.length, 'one line per request')
  t.equal(echo.calls, 1)
})

test('the query string never reaches a guard line, whatever the rejection', async (t) => {
  const echo = countingEcho()
  const { port, url, logs } = await startApp(t, async (app) => {
    await app.register(wsGuard, { origins: ['https://app.example.com'] })
    app.wsRoute('/ws', echo.handler)
    app.wsRoute('/close', { config: { wsGuard: { rejectWith: 'close' } } }, echo.handler)
    app.wsRoute('/report', { config: { wsGuard: { originReportOnly: true } } }, echo.handler)
    app.wsRoute('/throws', { config: { wsGuard: { origins: () => { throw new Error('lookup failed') } } } }, echo.handler)
    app.wsRoute('/slow', { config: { wsGuard: { handshakeTimeout: 50, origins: () => new Promise<boolean>(() => {}) } } }, echo.handler)
    app.wsRoute('/protocols', { config: { wsGuard: { protocols: ['chat'] } } }, echo.handler)
    app.get('/plain', async () => 'plain')
  })
  const query = `?access_token=${secret}&token=${secret}`
  const origin = { origin: 'https://evil.example' }
  assertRefusal(t, await rawExchange(port, `GET /ws${query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`), 426, 'FST_WS_GUARD_UPGRADE_REQUIRED')
  assertRefusal(t, await rawExchange(port, handshake(`/ws${query}`, { 'Sec-WebSocket-Key': 'bad' })), 400, 'FST_WS_GUARD_INVALID_KEY')
  assertRefusal(t, await tryConnect(url(`/ws${query}`), [], origin), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  assertRefusal(t, await tryConnect(url(`/plain${query}`)), 400, 'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE')
  assertRefusal(t, await tryConnect(url(`/throws${query}`), [], origin), 500, 'FST_WS_GUARD_INTERNAL')
  assertRefusal(t, await tryConnect(url(`/slow${query}`), [], origin), 503, 'FST_WS_GUARD_HANDSHAKE_TIMEOUT')
  assertRefusal(t, await tryConnect(url(`/protocols${query}`), ['xml'], { origin: 'https://app.example.com' }), 400, 'FST_WS_GUARD_UNSUPPORTED_PROTOCOL')
  t.match(await tryConnect(url(`/close${query}`), [], origin), { kind: 'closed', code: 4403 })
  const reported = await tryConnect(url(`/report${query}`), [], origin)
  if (reported.kind === 'open') reported.socket.terminate()
  t.equal(reported.kind, 'open')

  const lines = guardLines(logs)
  t.equal(lines.length, 10, 'eight rejections, one internal error line, one report-only line')
  for (const line of lines) {
    t.notOk(JSON.stringify(line).includes(secret), `no secret in: ${String(line.msg)}`)
    t.notOk(JSON.stringify(line).includes('access_token'), 'not even the parameter name')
  }
  // The secret did reach the server: Fastify's own request line prints the URL (a separate concern).
  t.ok(logs.lines.some((line) => line.wsGuard === undefined && JSON.stringify(line).includes(secret)), 'the test would see a leak')
  t.equal(echo.calls, 1, 'only the report-only route let the client in')
})

test('the guard writes nothing for accepted handshakes', async (t) => {
  const { url, logs } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', countingEcho().handler)
  })
  await openClient(t, url('/ws'))
  await openClient(t, url('/ws?x=1'))
  t.equal(guardLines(logs).length, 0)
})

test('an origin function failure: one error line with the type and code only, one rejection line', async (t) => {
  const { url, logs } = await startApp(t, async (app) => {
    await app.register(wsGuard, {
      origins: async () => { throw Object.assign(new Error(`cannot reach db with password ${secret}`), { code: 'ECONNREFUSED' }) }
    })
    app.wsRoute('/ws', countingEcho().handler)
  })
  assertRefusal(t, await tryConnect(url('/ws'), [], { origin: 'https://a.example.com' }), 500, 'FST_WS_GUARD_INTERNAL')
  const lines = guardLines(logs)
  t.same(lines.map((line) => [line.level, line.wsGuard]), [
    [50, { err: { name: 'Error', code: 'ECONNREFUSED' } }],
    [30, { code: 'FST_WS_GUARD_INTERNAL', statusCode: 500, route: '/ws' }]
  ])
  t.notOk(logs.text.includes(secret), 'the thrown message is in no line at all')
  t.notOk(logs.text.includes('cannot reach db'))
})
