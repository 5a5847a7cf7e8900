import websocket from '@fastify/websocket'
import type { FastifyInstance } from 'fastify'
import { test } from 'tap'
import type { WebSocket } from 'ws'
import wsGuard from '../../index.js'
import { countingEcho, startApp } from '../helpers/app.js'
import { nextMessage, openClient, tryConnect, whenClosed, type Closed } from '../helpers/clients.js'
import { assertRefusal } from '../helpers/refusals.js'

const crossOrigin = { origin: 'https://evil.example' }

/** Sends a message of `bytes` bytes and waits for the close it causes. */
async function sendAndClose (socket: WebSocket, bytes: number): Promise<Closed> {
  const closed = whenClosed(socket)
  socket.send(Buffer.alloc(bytes))
  return await closed
}

test("the guard's safer ws defaults: maxPayload 1 MiB (a 2 MiB message closes with 1009), no permessage-deflate", async (t) => {
  let server: FastifyInstance['websocketServer'] | undefined
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', countingEcho().handler)
    server = app.websocketServer
  })
  t.equal(server?.options.maxPayload, 1024 * 1024)
  t.equal(server?.options.perMessageDeflate, false)
  t.equal((server?.options as Record<string, unknown>).maxFragments, 1024)
  t.equal((server?.options as Record<string, unknown>).maxBufferedChunks, 16 * 1024)

  const socket = await openClient(t, url('/ws'), [], { perMessageDeflate: true })
  t.equal(socket.extensions, '', 'permessage-deflate was not negotiated')
  socket.send(Buffer.alloc(1024 * 1024))
  t.equal((await nextMessage(socket)).length, 1024 * 1024, 'exactly 1 MiB passes')
  const { code } = await sendAndClose(socket, 2 * 1024 * 1024)
  t.equal(code, 1009)
})

test('options.websocket overrides the defaults it names and keeps the others', async (t) => {
  let server: FastifyInstance['websocketServer'] | undefined
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { websocket: { maxPayload: 64 } })
    app.wsRoute('/ws', countingEcho().handler)
    server = app.websocketServer
  })
  t.equal(server?.options.maxPayload, 64)
  t.equal(server?.options.perMessageDeflate, false)
  const socket = await openClient(t, url('/ws'))
  socket.send(Buffer.alloc(64))
  t.equal((await nextMessage(socket)).length, 64)
  t.equal((await sendAndClose(socket, 65)).code, 1009)
})

test('an @fastify/websocket the app registered first is reused: not registered twice, its ws options stay', async (t) => {
  let server: FastifyInstance['websocketServer'] | undefined
  let upgradeListeners = 0
  const echo = countingEcho()
  const { url } = await startApp(t, async (app) => {
    await app.register(websocket, { options: { maxPayload: 100 } })
    const existing = app.websocketServer
    await app.register(wsGuard)
    t.equal(app.websocketServer, existing, 'the same ws server')
    app.wsRoute('/ws', echo.handler)
    app.wsRoute('/chat', { config: { wsGuard: { protocols: ['chat.v1'] } } }, echo.handler)
    server = app.websocketServer
    // @fastify/websocket's own listener is its onUpgrade function (the guard adds its own, to close unanswered upgrades).
    upgradeListeners = app.server.listeners('upgrade').filter((listener) => listener.name === 'onUpgrade').length
  })
  t.equal(upgradeListeners, 1, 'one upgrade listener: @fastify/websocket was not registered again')
  t.equal(server?.options.maxPayload, 100, "the app's maxPayload stays")
  assertRefusal(t, await tryConnect(url('/ws'), [], crossOrigin), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  const chat = await openClient(t, url('/chat'), ['chat.v0', 'chat.v1'])
  t.equal(chat.protocol, 'chat.v1', 'the guard took over subprotocol selection on the existing server')
  const socket = await openClient(t, url('/ws'))
  socket.send(Buffer.alloc(100))
  t.equal((await nextMessage(socket)).length, 100)
  t.equal((await sendAndClose(socket, 200)).code, 1009, 'not the 1 MiB the guard would have set')
  t.equal(echo.calls, 2)
})
