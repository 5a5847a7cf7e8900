import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import wsGuard from '../../index.js'
import { openConnections, startApp, startAppBounded, type StartedApp } from '../helpers/app.js'
import { nextMessage, openClient } from '../helpers/clients.js'
import { handshake, rawConnect } from '../helpers/raw.js'

/*
 * Every upgrade socket that does not become a WebSocket is closed once its answer is written,
 * whoever wrote it, and `app.close()` always ends: over raw sockets, with the server's own
 * connection count as the witness.
 */

async function guarded (t: Test, options: Parameters<typeof wsGuard>[1] = {}): Promise<StartedApp> {
  return await startAppBounded(t, 5000, async (app) => {
    await app.register(wsGuard, { handshakeTimeout: 500, ...options })
    app.wsRoute('/ws/:id', (socket) => { socket.send('hi') })
    app.get('/plain', async () => 'plain')
  }, { routerOptions: { maxParamLength: 50 } })
}

/** Sends `request`, waits for the server to answer and close; returns the answer and how long the close took. */
async function answeredAndClosed (port: number, request: string): Promise<{ answer: string, closedAfterMs: number }> {
  const socket = connect({ port, host: '127.0.0.1' })
  socket.on('error', () => {})
  let answer = ''
  let answeredAt = 0
  socket.on('data', (chunk: Buffer) => {
    answeredAt ||= Date.now()
    answer += chunk.toString('latin1')
  })
  await once(socket, 'connect')
  socket.write(request)
  const closed = await Promise.race([once(socket, 'close').then(() => true), sleep(3000, false)])
  socket.destroy()
  return { answer, closedAfterMs: closed ? Date.now() - answeredAt : Infinity }
}

async function connectionsBackTo (app: FastifyInstance, baseline: number, ms = 1000): Promise<number> {
  const deadline = Date.now() + ms
  let open = await openConnections(app)
  while (open > baseline && Date.now() < deadline) {
    await sleep(20)
    open = await openConnections(app)
  }
  return open
}

const answeredByFastify: Array<[string, string, RegExp]> = [
  ['a malformed percent-escape', handshake('/%zz'), /^HTTP\/1\.1 400 /],
  ['a malformed percent-escape in a WebSocket route', handshake('/ws/%zz'), /^HTTP\/1\.1 400 /],
  ['a parameter longer than maxParamLength', handshake('/ws/' + 'x'.repeat(80)), /^HTTP\/1\.1 414 /],
  ['an absolute-form target with a fragment', handshake('http://h/ws/1#x'), /^HTTP\/1\.1 400 /],
  ['a path no route matches', handshake('/nope'), /^HTTP\/1\.1 404 /],
  ['a plain request pipelined before the upgrade', 'GET /plain HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' + handshake('/ws/1'), /^HTTP\/1\.1 200 /]
]

for (const [what, request, status] of answeredByFastify) {
  test(`${what}: answered, then the server closes the socket within a second`, async (t) => {
    const { app, port } = await guarded(t)
    const baseline = await openConnections(app)
    const { answer, closedAfterMs } = await answeredAndClosed(port, request)
    t.match(answer, status, 'the answer arrived')
    t.ok(closedAfterMs < 1000, `the server closed the socket ${closedAfterMs} ms after answering`)
    t.equal(await connectionsBackTo(app, baseline), baseline, 'server.getConnections() is back to its baseline')
  })
}

test('260 such requests against a server cannot exhaust it, and app.close() still ends', async (t) => {
  const { app, port } = await guarded(t)
  const baseline = await openConnections(app)
  await Promise.all(Array.from({ length: 260 }, async (_, i) => await answeredAndClosed(port, answeredByFastify[i % answeredByFastify.length]![1])))
  t.equal(await connectionsBackTo(app, baseline, 3000), baseline, 'every socket was closed')
})

test('an upgrade nobody answers is closed after the longest handshakeTimeout plus 2 s', async (t) => {
  const { app, port } = await startApp(t, async (app) => {
    await app.register(wsGuard, { handshakeTimeout: 300 })
    app.wsRoute('/ws', (socket) => { socket.send('hi') })
    // An app hook that never calls back: nothing answers this upgrade.
    app.wsRoute('/stuck', { onRequest: () => {} }, (socket) => { socket.send('hi') })
  })
  const baseline = await openConnections(app)
  const started = Date.now()
  const socket = await rawConnect(t, port, handshake('/stuck'))
  await once(socket, 'close')
  const took = Date.now() - started
  t.ok(took >= 2000 && took < 4000, `closed after ${took} ms (handshakeTimeout 300 + 2000)`)
  t.equal(await connectionsBackTo(app, baseline), baseline)
})

test('an accepted WebSocket outlives the deadline of unanswered upgrades, idle and without heartbeats', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { handshakeTimeout: 300, heartbeat: false })
    app.wsRoute('/ws', (socket) => { socket.on('message', (data) => socket.send(String(data))) })
  })
  const socket = await openClient(t, url('/ws'))
  await sleep(3000)
  socket.send('still here')
  t.equal(await nextMessage(socket), 'still here', 'open and answering after 3 s idle (the deadline is 2.3 s)')
  t.equal(app.wsGuard.stats().open, 1)
})

test('an upgrade no listener routes (as when @fastify/websocket lets go while closing) is closed at once', async (t) => {
  const { app, port } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', (socket) => { socket.send('hi') })
  })
  const fastifyWebsocket = app.server.listeners('upgrade').find((listener) => listener.name === 'onUpgrade') as (...args: unknown[]) => void
  app.server.removeListener('upgrade', fastifyWebsocket)
  t.teardown(() => { app.server.on('upgrade', fastifyWebsocket) })
  const baseline = await openConnections(app)
  const socket = await rawConnect(t, port, handshake('/ws'))
  const started = Date.now()
  await once(socket, 'close')
  t.ok(Date.now() - started < 500, 'closed without an answer, at once')
  t.equal(await connectionsBackTo(app, baseline), baseline)
})

test('a request head that arrives a byte at a time is cut within handshakeTimeout plus a second', async (t) => {
  const { app, port } = await startApp(t, async (app) => {
    await app.register(wsGuard, { handshakeTimeout: 1000 })
    app.wsRoute('/ws', (socket) => { socket.send('hi') })
  })
  t.equal(app.server.headersTimeout, 1000, 'the server\'s headersTimeout follows handshakeTimeout')
  const request = handshake('/ws')
  const socket = connect({ port, host: '127.0.0.1' })
  socket.on('error', () => {})
  let answer = ''
  socket.on('data', (chunk: Buffer) => { answer += chunk.toString('latin1') })
  await once(socket, 'connect')
  const started = Date.now()
  let at = 0
  const drip = setInterval(() => { if (!socket.destroyed) socket.write(request[at++ % request.length]!) }, 100)
  t.teardown(() => clearInterval(drip))
  await once(socket, 'close')
  clearInterval(drip)
  const took = Date.now() - started
  t.ok(took < 2500, `cut after ${took} ms`)
  t.match(answer, /^HTTP\/1\.1 408 /, 'with Node\'s 408')
})

test('a lower headersTimeout of the app is kept', async (t) => {
  const { app } = await startApp(t, async (app) => {
    app.server.headersTimeout = 500
    await app.register(wsGuard, { handshakeTimeout: 1000 })
  })
  t.equal(app.server.headersTimeout, 500)
})

test('a close-mode refusal holds a client that never answers the close for 2 s at most', async (t) => {
  const { app, port } = await startApp(t, async (app) => {
    await app.register(wsGuard, { origins: ['https://app.example.com'], rejectWith: 'close' })
    app.wsRoute('/ws', (socket) => { socket.send('hi') })
  })
  const baseline = await openConnections(app)
  const socket: Socket = await rawConnect(t, port, handshake('/ws', { Origin: 'https://evil.example' }))
  // The client reads the 101 and the close frame, and never answers.
  let received = Buffer.alloc(0)
  socket.on('data', (chunk: Buffer) => { received = Buffer.concat([received, chunk]) })
  const started = Date.now()
  await once(socket, 'close')
  const took = Date.now() - started
  t.match(received.toString('latin1'), /^HTTP\/1\.1 101 /)
  t.ok(took >= 1500 && took < 3000, `the server let go after ${took} ms`)
  t.equal(await connectionsBackTo(app, baseline), baseline)
})

test('app.close() ends within shutdownGrace whatever sockets exist', async (t) => {
  const { app, port } = await startAppBounded(t, 5000, async (app) => {
    await app.register(wsGuard, { shutdownGrace: 500, handshakeTimeout: 10_000 })
    app.wsRoute('/ws', (socket) => { socket.send('hi') })
    app.wsRoute('/stuck', { onRequest: () => {} }, (socket) => { socket.send('hi') })
  })
  // A peer that ignores the 1001: it never reads (paused) and never answers.
  const silent = await rawConnect(t, port, handshake('/ws'))
  silent.pause()
  // A half-open one: it sent its FIN after the upgrade.
  const halfOpen = await rawConnect(t, port, handshake('/ws'))
  halfOpen.end()
  // A handshake no one answers, and a head that never completes.
  await rawConnect(t, port, handshake('/stuck'))
  const partial = await rawConnect(t, port, 'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n')
  await sleep(200)
  t.ok(await openConnections(app) >= 3, 'the sockets are open when closing starts')
  const started = Date.now()
  await app.close()
  const took = Date.now() - started
  t.ok(took < 1500, `app.close() took ${took} ms with shutdownGrace 500`)
  t.ok(partial.destroyed || await Promise.race([once(partial, 'close').then(() => true), sleep(1000, false)]), 'even the partial head is gone')
})
