import { randomBytes } from 'node:crypto'
import { test } from 'tap'
import { guardedApp } from '../helpers/app.js'
import { nextMessage, openClient } from '../helpers/clients.js'
import { handshake, plainRequest, rawExchange, rawHead } from '../helpers/raw.js'
import { assertRefusal } from '../helpers/refusals.js'

const nginxFix = 'proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";'

test('a valid handshake from the ws client is upgraded and reaches the handler once', async (t) => {
  const { url, echo } = await guardedApp(t)
  const socket = await openClient(t, url('/ws'))
  socket.send('ping')
  t.equal(await nextMessage(socket), 'ping')
  t.equal(echo.calls, 1)
})

test('a raw handshake with mixed-case header values is upgraded', async (t) => {
  const { port, echo } = await guardedApp(t)
  const head = await rawHead(port, handshake('/ws', { Upgrade: 'WebSocket', Connection: 'keep-alive, Upgrade' }))
  t.equal(head.status, 101)
  t.equal(head.headers.upgrade?.toLowerCase(), 'websocket')
  t.ok(head.headers['sec-websocket-accept'], 'the 101 carries Sec-WebSocket-Accept')
  t.equal(echo.calls, 1)
})

test('a plain GET to a WebSocket route gets 426 FST_WS_GUARD_UPGRADE_REQUIRED naming the missing headers', async (t) => {
  const { port, echo } = await guardedApp(t)
  const response = await rawExchange(port, plainRequest('/ws'))
  const { body } = assertRefusal(t, response, 426, 'FST_WS_GUARD_UPGRADE_REQUIRED')
  t.equal(response.headers.upgrade, 'websocket', 'a 426 names the protocol to upgrade to')
  t.equal(body.error, 'Upgrade Required')
  t.match(body.message, /Upgrade: websocket/)
  t.match(body.message, /Connection: Upgrade/)
  t.notMatch(body.message, /proxy/, 'a plain GET is not blamed on a proxy')
  t.equal(echo.calls, 0)
})

test('partial upgrade headers, as a proxy without proxy_set_header forwards them, get 426 FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED with the nginx fix', async (t) => {
  const { port, echo } = await guardedApp(t)
  const key = randomBytes(16).toString('base64')
  const cases: Array<{ name: string, lines: string[], names: RegExp }> = [
    { name: 'Upgrade without Connection', lines: ['Upgrade: websocket'], names: /Connection: Upgrade.*Upgrade arrived alone/ },
    { name: 'Upgrade with Connection: keep-alive', lines: ['Upgrade: websocket', 'Connection: keep-alive'], names: /Upgrade arrived alone/ },
    { name: 'Connection: upgrade without Upgrade', lines: ['Connection: upgrade'], names: /Upgrade: websocket.*Connection: Upgrade" arrived alone/ },
    {
      name: 'Sec-WebSocket-Key and Version without Upgrade and Connection (nginx default)',
      lines: ['Connection: close', `Sec-WebSocket-Key: ${key}`, 'Sec-WebSocket-Version: 13'],
      names: /Sec-WebSocket-Key\/Version arrived without them/
    },
    { name: 'Sec-WebSocket-Version alone', lines: ['Sec-WebSocket-Version: 13'], names: /arrived without them/ },
    { name: 'Sec-WebSocket-Key alone', lines: [`Sec-WebSocket-Key: ${key}`], names: /arrived without them/ }
  ]
  for (const { name, lines, names } of cases) {
    await t.test(name, async (t) => {
      const response = await rawExchange(port, plainRequest('/ws', lines))
      const { body } = assertRefusal(t, response, 426, 'FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED')
      t.equal(response.headers.upgrade, 'websocket')
      t.match(body.message, /a proxy in between is dropping the hop-by-hop upgrade headers/)
      t.ok(body.message.includes(nginxFix), 'the message shows the nginx configuration to add')
      t.match(body.message, names)
    })
  }
  t.equal(echo.calls, 0)
})

test('an Upgrade other than websocket gets 426 FST_WS_GUARD_UNSUPPORTED_UPGRADE', async (t) => {
  const { port, echo } = await guardedApp(t)
  const response = await rawExchange(port, handshake('/ws', { Upgrade: 'h2c', Connection: 'Upgrade, HTTP2-Settings' }))
  const { body } = assertRefusal(t, response, 426, 'FST_WS_GUARD_UNSUPPORTED_UPGRADE')
  t.equal(response.headers.upgrade, 'websocket')
  t.match(body.message, /must be "websocket"/)
  t.equal(echo.calls, 0)
})

test('a Sec-WebSocket-Version other than 13, or none, gets 426 with Sec-WebSocket-Version: 13', async (t) => {
  const { port, echo } = await guardedApp(t)
  for (const version of ['8', '12', '14', 'thirteen', null]) {
    await t.test(`version ${String(version)}`, async (t) => {
      const response = await rawExchange(port, handshake('/ws', { 'Sec-WebSocket-Version': version }))
      const { body } = assertRefusal(t, response, 426, 'FST_WS_GUARD_UNSUPPORTED_VERSION')
      t.equal(response.headers['sec-websocket-version'], '13')
      t.equal(response.headers.upgrade, 'websocket')
      t.match(body.message, /must be 13/)
    })
  }
  t.equal(echo.calls, 0)
})

test('a missing, short, non-base64, wrong-length or duplicated Sec-WebSocket-Key gets 400 FST_WS_GUARD_INVALID_KEY', async (t) => {
  const { port, echo } = await guardedApp(t)
  const cases: Array<{ name: string, request: string, says: RegExp }> = [
    { name: 'missing', request: handshake('/ws', { 'Sec-WebSocket-Key': null }), says: /is missing/ },
    { name: 'short', request: handshake('/ws', { 'Sec-WebSocket-Key': 'abc' }), says: /is malformed/ },
    { name: 'not base64', request: handshake('/ws', { 'Sec-WebSocket-Key': '!!!!!!!!!!!!!!!!!!!!!!==' }), says: /is malformed/ },
    { name: 'unpadded', request: handshake('/ws', { 'Sec-WebSocket-Key': randomBytes(16).toString('base64').slice(0, 22) }), says: /is malformed/ },
    { name: '15 bytes', request: handshake('/ws', { 'Sec-WebSocket-Key': randomBytes(15).toString('base64') }), says: /is malformed/ },
    { name: '17 bytes', request: handshake('/ws', { 'Sec-WebSocket-Key': randomBytes(17).toString('base64') }), says: /is malformed/ },
    {
      name: 'duplicated',
      request: handshake('/ws').replace('\r\n\r\n', `\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`),
      says: /is malformed/
    }
  ]
  for (const { name, request, says } of cases) {
    await t.test(name, async (t) => {
      const response = await rawExchange(port, request)
      const { body } = assertRefusal(t, response, 400, 'FST_WS_GUARD_INVALID_KEY')
      t.equal(body.error, 'Bad Request')
      t.match(body.message, says)
      t.match(body.message, /base64 encoding of 16 random bytes/)
    })
  }
  t.equal(echo.calls, 0)
})

test('a malformed Sec-WebSocket-Protocol gets 400 FST_WS_GUARD_INVALID_PROTOCOL_HEADER', async (t) => {
  const { port, echo } = await guardedApp(t)
  for (const header of ['chat, chat', 'chat,', ',chat', 'chat v1', 'chat;v1', '']) {
    await t.test(JSON.stringify(header), async (t) => {
      const response = await rawExchange(port, handshake('/ws', { 'Sec-WebSocket-Protocol': header }))
      const { body } = assertRefusal(t, response, 400, 'FST_WS_GUARD_INVALID_PROTOCOL_HEADER')
      t.match(body.message, /comma-separated list of distinct tokens/)
    })
  }
  t.equal(echo.calls, 0)
})

test('a rejection does not keep the connection alive for a next request', async (t) => {
  const { port, echo } = await guardedApp(t)
  // Two pipelined requests: the guard answers the first and closes, the second never runs.
  const response = await rawExchange(port, plainRequest('/ws') + plainRequest('/ws'))
  t.equal(response.text.match(/HTTP\/1\.1 426/g)?.length, 1)
  assertRefusal(t, response, 426, 'FST_WS_GUARD_UPGRADE_REQUIRED')
  t.equal(echo.calls, 0)
})

test('injectWS: an accepted connection reaches the handler, a refused one does not', async (t) => {
  const { app, echo } = await guardedApp(t)
  const socket = await app.injectWS('/ws')
  t.teardown(() => socket.terminate())
  socket.send('hi')
  t.equal(await nextMessage(socket as never), 'hi')
  await t.rejects(app.injectWS('/ws', { headers: { origin: 'https://evil.example' } }), /Unexpected server response: 403/)
  t.equal(echo.calls, 1)
})
