import { createHook } from 'node:async_hooks'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { setTimeout as sleep } from 'node:timers/promises'
import websocket from '@fastify/websocket'
import type { FastifyRequest } from 'fastify'
import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, { channels, type WsGuardOptions, type WsGuardRouteOptions } from '../../index.js'
import { registrationError, startApp, type StartedApp } from '../helpers/app.js'
import { ask, nextMessage, openClient, rawSocket, whenClosed } from '../helpers/clients.js'
import { recordChannels } from '../helpers/logs.js'
import { bearer, mint, secret, secretBytes } from '../helpers/tokens.js'
import { waitFor } from '../helpers/wait.js'

/*
 * The per-route message guards, over real sockets: `maxMessageBytes` (1009) and `messageRate`
 * (1008, or a message dropped before the app's listeners see it).
 */

/** A message as the app's own listener saw it. */
interface Received {
  route: string
  bytes: number
  binary: boolean
  sub: unknown
  /** `Date.now()` in the app's listener. */
  at: number
}

/** Bytes of a message, whatever the socket's `binaryType` made of it. */
function byteSize (data: unknown): number {
  if (Array.isArray(data)) return (data as Buffer[]).reduce((total, fragment) => total + fragment.length, 0)
  if (typeof Blob !== 'undefined' && data instanceof Blob) return data.size
  return (data as ArrayBuffer | Buffer).byteLength
}

/**
 * The app's handler: records every message its listener sees and answers `got <bytes>`.
 * `?type=` sets the socket's `binaryType`.
 */
function recorder (received: Received[]) {
  return (socket: WebSocket, request: FastifyRequest): void => {
    const type = (request.query as { type?: WebSocket['binaryType'] }).type
    if (type !== undefined) socket.binaryType = type
    socket.on('message', (data, isBinary) => {
      const bytes = byteSize(data)
      received.push({ route: request.routeOptions.url ?? '', bytes, binary: isBinary, sub: request.wsUser?.sub, at: Date.now() })
      socket.send(`got ${bytes}`)
    })
  }
}

interface MessageApp extends StartedApp {
  received: Received[]
}

/** The guard with `options`, one recording route per entry of `routes` (its `config.wsGuard`). */
async function messageApp (t: Test, options: WsGuardOptions, routes: Record<string, WsGuardRouteOptions | undefined> = { '/ws': undefined }): Promise<MessageApp> {
  const received: Received[] = []
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, options)
    for (const [path, config] of Object.entries(routes)) {
      app.wsRoute(path, config === undefined ? {} : { config: { wsGuard: config } }, recorder(received))
    }
  })
  return { ...started, received }
}

/** Sends `messages` in one write: the server reads them together. */
function sendTogether (client: WebSocket, messages: Array<string | Buffer>): void {
  const raw = rawSocket(client)
  raw.cork()
  for (const message of messages) client.send(message)
  raw.uncork()
}

/** Collects the answers of the app (`got <n>`) as they arrive. */
function answers (client: WebSocket): string[] {
  const seen: string[] = []
  client.on('message', (data) => seen.push(String(data)))
  return seen
}

/** Sends `data` and resolves with the app's answer. */
async function askWith (client: WebSocket, data: string | Buffer): Promise<string> {
  const answer = nextMessage(client)
  client.send(data)
  return await answer
}

async function closedOf (client: WebSocket): Promise<{ code: number, reason: string }> {
  const { code, reason } = await whenClosed(client)
  return { code, reason }
}

/** Records the messages of the `dropped` diagnostics channel until the test ends. */
function recordDropped (t: Test): Array<Record<string, unknown>> {
  const messages: Array<Record<string, unknown>> = []
  const listener = (message: unknown): void => { messages.push(message as Record<string, unknown>) }
  subscribe(channels.dropped, listener)
  t.teardown(() => { unsubscribe(channels.dropped, listener) })
  return messages
}

test('maxMessageBytes: exactly the limit is delivered, one byte more closes with 1009 and never reaches the app (text and binary)', async (t) => {
  const { app, url, received } = await messageApp(t, { maxMessageBytes: 64 })
  const text = await openClient(t, url('/ws'))
  t.equal(await ask(text, 'a'.repeat(64)), 'got 64', 'a 64-byte text message is delivered')
  t.equal(await ask(text, 'é'.repeat(32)), 'got 64', '32 two-byte characters: 64 bytes, delivered')
  const textClosed = closedOf(text)
  text.send('é'.repeat(32) + 'a')
  t.same(await textClosed, { code: 1009, reason: 'message too big' }, '65 bytes of text: 1009 message too big')

  const binary = await openClient(t, url('/ws'))
  t.equal(await askWith(binary, Buffer.alloc(64)), 'got 64', 'a 64-byte binary message is delivered')
  const binaryClosed = closedOf(binary)
  binary.send(Buffer.alloc(65))
  t.same(await binaryClosed, { code: 1009, reason: 'message too big' }, '65 bytes of binary: 1009')

  await waitFor(() => app.wsGuard.stats().open === 0, 'both closes to be counted')
  t.same(received.map(({ bytes, binary }) => [bytes, binary]), [[64, false], [64, false], [64, true]], 'the app\'s listener saw the messages at the limit, none over it')
  const { closed } = app.wsGuard.stats()
  t.same([closed.messageTooBig, closed.protocolError, closed.normal], [2, 0, 0], 'counted as messageTooBig, not as a ws protocol error')
})

test('maxMessageBytes counts the bytes of a fragmented message, whatever the socket\'s binaryType', async (t) => {
  const { url, received } = await messageApp(t, { maxMessageBytes: 64 })
  // 'fragments' hands the app an array of buffers, one per frame; 'arraybuffer' an ArrayBuffer.
  for (const type of ['nodebuffer', 'arraybuffer', 'fragments'] as const) {
    await t.test(type, async (t) => {
      const client = await openClient(t, url(`/ws?type=${type}`))
      const answer = nextMessage(client)
      client.send(Buffer.alloc(32), { binary: true, fin: false })
      client.send(Buffer.alloc(32), { binary: true, fin: true })
      t.equal(await answer, 'got 64', 'two frames of 32 bytes: 64, delivered')
      const closed = closedOf(client)
      client.send(Buffer.alloc(32), { binary: true, fin: false })
      client.send(Buffer.alloc(33), { binary: true, fin: true })
      t.same(await closed, { code: 1009, reason: 'message too big' }, '32 + 33 bytes: 1009')
      t.equal(received.filter(({ bytes }) => bytes > 64).length, 0, 'nothing over the limit reached the app')
    })
  }
})

test('maxMessageBytes with binaryType blob', async (t) => {
  const { url, received } = await messageApp(t, { maxMessageBytes: 64 })
  const client = await openClient(t, url('/ws?type=blob'))
  t.equal(await askWith(client, Buffer.alloc(64)), 'got 64', '64 bytes delivered')
  const closed = closedOf(client)
  client.send(Buffer.alloc(65))
  t.same(await Promise.race([closed, sleep(1000).then(() => 'still open')]), { code: 1009, reason: 'message too big' }, '65 bytes: 1009')
  t.same(received.map(({ bytes }) => bytes), [64], 'the app never saw the 65 bytes')
})

test('a route overrides the plugin\'s maxMessageBytes, up or down', async (t) => {
  const { app, url, received } = await messageApp(t, { maxMessageBytes: 64 }, {
    '/inherits': undefined,
    '/bigger': { maxMessageBytes: 128 },
    '/smaller': { maxMessageBytes: 16 }
  })
  for (const [path, limit] of [['/inherits', 64], ['/bigger', 128], ['/smaller', 16]] as const) {
    const client = await openClient(t, url(path))
    t.equal(await ask(client, 'x'.repeat(limit)), `got ${limit}`, `${path}: ${limit} bytes delivered`)
    const closed = closedOf(client)
    client.send('x'.repeat(limit + 1))
    t.same(await closed, { code: 1009, reason: 'message too big' }, `${path}: ${limit + 1} bytes close with 1009`)
  }
  await waitFor(() => app.wsGuard.stats().open === 0, 'the closes to be counted')
  t.same(received.map(({ route, bytes }) => [route, bytes]), [['/inherits', 64], ['/bigger', 128], ['/smaller', 16]], 'only the messages within each route\'s limit')
  t.equal(app.wsGuard.stats().closed.messageTooBig, 3)
})

test('a route may not raise maxMessageBytes above websocket.maxPayload', async (t) => {
  const err = await registrationError(t, { websocket: { maxPayload: 1024 } }, (app) => {
    app.wsRoute('/ws', { config: { wsGuard: { maxMessageBytes: 1025 } } }, () => {})
  })
  t.equal(err?.code, 'FST_WS_GUARD_INVALID_OPTION')
  t.equal(err?.message, 'fastify-ws-guard: maxMessageBytes (1025) of GET /ws is above the ws server\'s maxPayload (1024), the hard bound every route shares: lower maxMessageBytes, or raise websocket.maxPayload')
  t.equal(await registrationError(t, { websocket: { maxPayload: 1024 } }, (app) => {
    app.wsRoute('/ws', { config: { wsGuard: { maxMessageBytes: 1024 } } }, () => {})
  }), undefined, 'equal to maxPayload registers')
})

test('messageRate: a burst at the limit is delivered, one more closes with 1008 and never reaches the app', async (t) => {
  const { app, url, received } = await messageApp(t, {}, {
    '/ws': { messageRate: { messages: 5, interval: 60_000 } },
    '/burst': { messageRate: { messages: 2, interval: 60_000, burst: 4 } }
  })
  for (const [path, burst] of [['/ws', 5], ['/burst', 4]] as const) {
    const client = await openClient(t, url(path))
    const seen = answers(client)
    sendTogether(client, Array.from({ length: burst }, (_, i) => `m${i}`))
    await waitFor(() => seen.length === burst, `${burst} answers on ${path}`)
    t.equal(client.readyState, client.OPEN, `${path}: ${burst} messages at once are within the bucket`)
    const closed = closedOf(client)
    client.send('one too many')
    t.same(await closed, { code: 1008, reason: 'message rate exceeded' }, `${path}: message ${burst + 1} closes with 1008`)
    t.equal(received.filter(({ route }) => route === path).length, burst, `${path}: the app saw ${burst} messages, not the one over`)
  }
  await waitFor(() => app.wsGuard.stats().open === 0, 'the closes to be counted')
  t.equal(app.wsGuard.stats().closed.messageRate, 2, 'counted as messageRate')
  t.equal(app.wsGuard.stats().dropped, 0, 'a close is not a drop')
})

test('what arrives after the message that closes goes nowhere', async (t) => {
  const { app, url, received } = await messageApp(t, {}, {
    '/rate': { messageRate: { messages: 2, interval: 60_000 } },
    '/size': { maxMessageBytes: 8 }
  })
  const rate = await openClient(t, url('/rate'))
  const rateClosed = closedOf(rate)
  // One read: the third closes, the fourth and fifth come while the connection is closing.
  sendTogether(rate, ['a', 'b', 'c', 'd', 'e'])
  t.same(await rateClosed, { code: 1008, reason: 'message rate exceeded' })
  const size = await openClient(t, url('/size'))
  const sizeClosed = closedOf(size)
  sendTogether(size, ['far too big', 'ok', 'ok'])
  t.same(await sizeClosed, { code: 1009, reason: 'message too big' })
  await waitFor(() => app.wsGuard.stats().open === 0, 'the closes to be counted')
  t.same(received.map(({ route }) => route), ['/rate', '/rate'], 'only the two messages within the rate; nothing after a close')
  t.same([app.wsGuard.stats().closed.messageRate, app.wsGuard.stats().closed.messageTooBig, app.wsGuard.stats().dropped], [1, 1, 0], 'one close each, nothing counted as dropped')
})

test('messageRate refills: after interval / messages ms one more message is delivered', async (t) => {
  // 10 a second: a token every 100 ms.
  const rate = { messages: 10, interval: 1000 }
  const { app, url, received } = await messageApp(t, {}, {
    '/close': { messageRate: rate },
    '/drop': { messageRate: { ...rate, onExcess: 'drop' } }
  })

  await t.test("onExcess 'drop': retried until a token is back", async (t) => {
    const client = await openClient(t, url('/drop'))
    const seen = answers(client)
    sendTogether(client, Array.from({ length: 11 }, (_, i) => `m${i}`))
    await waitFor(() => seen.length === 10 && app.wsGuard.stats().dropped === 1, 'ten answers and one drop')
    const fromDrop = (): Received[] => received.filter(({ route }) => route === '/drop')
    const burstStart = fromDrop()[0]!.at
    // One more every 20 ms until the app answers one; at most 3 s.
    let attempts = 0
    for (const until = Date.now() + 3000; seen.length === 10 && Date.now() < until; attempts++) {
      client.send('again')
      await sleep(20)
    }
    t.ok(seen.length > 10, `delivered after ${attempts} attempts`)
    // Every attempt is accounted for: delivered or dropped, never both, never lost.
    await waitFor(() => fromDrop().length - 10 + app.wsGuard.stats().dropped - 1 === attempts, 'every attempt to be delivered or dropped')
    const refilled = fromDrop()[10]!.at
    t.ok(refilled - burstStart >= 100 - 5, `not before a token is back: ${refilled - burstStart} ms after the burst began`)
    t.equal(client.readyState, client.OPEN, 'the connection stays open')
  })

  await t.test("onExcess 'close': after waiting a token's time, one more passes, and the next closes", async (t) => {
    const client = await openClient(t, url('/close'))
    const seen = answers(client)
    sendTogether(client, Array.from({ length: 10 }, (_, i) => `m${i}`))
    await waitFor(() => seen.length === 10, 'the burst to be answered')
    // A token every 100 ms; 120 leaves room for a clock that ticks a millisecond off.
    await sleep(120)
    t.equal(await ask(client, 'one more'), 'got 8', 'delivered after the refill')
    const closed = closedOf(client)
    client.send('and another')
    t.same(await closed, { code: 1008, reason: 'message rate exceeded' }, 'the bucket is empty again')
  })
})

test("onExcess 'drop': the message never reaches the app, the connection stays open, dropped is counted and published", async (t) => {
  const dropped = recordDropped(t)
  const record = recordChannels(t)
  const { app, url, received } = await messageApp(t, { auth: { secret } }, {
    '/chat/:room': { messageRate: { messages: 2, interval: 60_000, onExcess: 'drop' } }
  })
  const client = await openClient(t, url('/chat/1'), [], bearer(await mint(secretBytes, { sub: 'alice' })))
  const seen = answers(client)
  sendTogether(client, ['one', 'two', 'three', 'four'])
  await waitFor(() => app.wsGuard.stats().dropped === 2, 'two drops')
  await waitFor(() => seen.length === 2, 'two answers')
  await sleep(50)
  t.same(seen, ['got 3', 'got 3'], 'the app answered the first two only')
  t.same(received.map(({ bytes }) => bytes), [3, 3], 'its listener never saw "three" and "four"')
  t.equal(client.readyState, client.OPEN, 'the connection stays open')
  t.equal(app.wsGuard.stats().open, 1)
  t.same(app.wsGuard.stats().closed.messageRate, 0, 'nothing closed')
  t.equal(dropped.length, 2, 'one channel message per drop')
  for (const message of dropped) {
    t.same(message, { requestId: record.accepted[0]!.requestId, route: '/chat/:room', sub: 'alice' }, 'the request id, the route pattern and the sub: nothing else')
  }
})

test('perUser: a user\'s connections share one bucket, other users do not, and it is forgotten with the last connection', async (t) => {
  const { app, url, received } = await messageApp(t, { auth: { secret } }, {
    '/ws': { messageRate: { messages: 3, interval: 60_000, perUser: true, onExcess: 'drop' } },
    '/public': { auth: false, messageRate: { messages: 1, interval: 60_000, perUser: true, onExcess: 'drop' } }
  })
  const as = async (sub: string | undefined, path = '/ws'): Promise<{ client: WebSocket, seen: string[] }> => {
    const token = await mint(secretBytes, sub === undefined ? {} : { sub })
    const client = await openClient(t, url(path), [], path === '/public' ? {} : bearer(token))
    return { client, seen: answers(client) }
  }
  const delivered = (sub: string | undefined): number => received.filter((message) => message.sub === sub && message.route === '/ws').length

  const alice1 = await as('alice')
  const alice2 = await as('alice')
  const bob = await as('bob')
  sendTogether(alice1.client, ['a', 'b'])
  await waitFor(() => alice1.seen.length === 2, 'alice\'s first connection: two answers')
  sendTogether(alice2.client, ['c', 'd'])
  await waitFor(() => app.wsGuard.stats().dropped === 1, 'one drop on alice\'s second connection')
  sendTogether(bob.client, ['e', 'f', 'g'])
  await waitFor(() => bob.seen.length === 3, 'bob: three answers')
  t.equal(delivered('alice'), 3, 'alice: three messages across her two connections, the fourth dropped')
  t.equal(app.wsGuard.stats().dropped, 1, 'bob has a bucket of his own: nothing of his dropped')

  // One of alice's connections ends: the other still holds the (empty) bucket.
  const gone = whenClosed(alice1.client)
  alice1.client.close()
  await gone
  await waitFor(() => app.wsGuard.stats().open === 2, 'the close to be counted')
  alice2.client.send('h')
  await waitFor(() => app.wsGuard.stats().dropped === 2, 'still empty for alice')
  t.equal(delivered('alice'), 3, 'the bucket outlived the connection that left')

  // The last one ends: a new connection starts with a full bucket.
  const last = whenClosed(alice2.client)
  alice2.client.close()
  await last
  await waitFor(() => app.wsGuard.stats().open === 1, 'the close to be counted')
  const alice3 = await as('alice')
  sendTogether(alice3.client, ['i', 'j', 'k'])
  await waitFor(() => alice3.seen.length === 3, 'alice\'s new connection: three answers')
  t.equal(app.wsGuard.stats().dropped, 2, 'a full bucket: the old one was forgotten')

  // Without a sub (no token, or a token without one) each connection has its own bucket.
  const anonymous1 = await as(undefined, '/public')
  const anonymous2 = await as(undefined, '/public')
  anonymous1.client.send('l')
  anonymous2.client.send('m')
  await waitFor(() => anonymous1.seen.length === 1 && anonymous2.seen.length === 1, 'one answer each')
  const noSub1 = await as(undefined)
  const noSub2 = await as(undefined)
  sendTogether(noSub1.client, ['n', 'o', 'p'])
  sendTogether(noSub2.client, ['q', 'r', 's'])
  await waitFor(() => noSub1.seen.length === 3 && noSub2.seen.length === 3, 'three answers each')
  t.equal(app.wsGuard.stats().dropped, 2, 'connections without a sub share nothing')
})

test('pings and pongs from the client are not counted', async (t) => {
  const { app, url, received } = await messageApp(t, {}, { '/ws': { messageRate: { messages: 2, interval: 60_000 } } })
  const client = await openClient(t, url('/ws'))
  let pongs = 0
  client.on('pong', () => { pongs++ })
  for (let i = 0; i < 20; i++) client.ping()
  for (let i = 0; i < 20; i++) client.pong()
  await waitFor(() => pongs === 20, 'the server to answer 20 pings')
  t.equal(client.readyState, client.OPEN, '40 control frames: still open')
  sendTogether(client, ['a', 'b'])
  await waitFor(() => received.length === 2, 'two messages delivered')
  t.equal(client.readyState, client.OPEN, 'the bucket was still full')
  const closed = closedOf(client)
  client.send('c')
  t.same(await closed, { code: 1008, reason: 'message rate exceeded' }, 'and the limit was on all along')
  await waitFor(() => app.wsGuard.stats().open === 0, 'the close to be counted')
  t.equal(app.wsGuard.stats().closed.messageRate, 1)
})

test('no timer per connection: 2,000 rate-limited connections add no timer', async (t) => {
  // 2,000 rather than 10,000: client and server share this process and two busy cores; a timer
  // per connection would show as 2,000 more timers just the same, and the lazy refill does
  // not change with the count. drainSpread 0 keeps the teardown's app.close() quick.
  const count = 2000
  // process.getActiveResourcesInfo() lists only timers that keep the process alive, and the
  // guard's wheel is unref'd: an async hook sees every timer, unref'd ones included.
  const live = new Set<number>()
  const hook = createHook({
    init: (id, type) => { if (type === 'Timeout') live.add(id) },
    destroy: (id) => { live.delete(id) }
  }).enable()
  t.teardown(() => { hook.disable() })
  const { app, url, received } = await messageApp(t, { drainSpread: 0 }, { '/ws': { messageRate: { messages: 5, interval: 1000 } } })
  const active = (): number => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length
  // One connection first: the guard's shared timer wheel is running before the baseline.
  const clients = [await openClient(t, url('/ws'))]
  clients[0]!.send('warm up')
  await waitFor(() => received.length === 1, 'the first message')
  const before = { live: live.size, active: active() }
  const probe = setTimeout(() => {}, 60_000).unref()
  t.equal(live.size, before.live + 1, 'the hook counts an unref\'d timer')
  clearTimeout(probe)
  while (clients.length < count) {
    const opened = await Promise.all(Array.from({ length: Math.min(200, count - clients.length) }, () => openClient(t, url('/ws'))))
    clients.push(...opened)
  }
  for (const client of clients.slice(1)) client.send('hello')
  await waitFor(() => received.length === count, `${count} messages delivered`, 20_000)
  const after = { live: live.size, active: active() }
  t.equal(app.wsGuard.stats().open, count, `${count} connections open`)
  t.comment(`timers with one connection: ${before.live} (${before.active} keeping the process alive); with ${count}: ${after.live} (${after.active})`)
  t.ok(after.live - before.live < 10, `no growth with the connections: ${before.live} timers before, ${after.live} after`)
  t.ok(after.active - before.active < 10, `nor of those keeping the process alive: ${before.active} before, ${after.active} after`)
})

test('with a socket of another class (the app registered @fastify/websocket first), a guard can close but not drop', async (t) => {
  const dropped = recordDropped(t)
  const received: Received[] = []
  const classes = new Set<string>()
  const handler = (socket: WebSocket, request: FastifyRequest): void => {
    classes.add(socket.constructor.name)
    recorder(received)(socket, request)
  }
  const { app, url } = await startApp(t, async (app) => {
    await app.register(websocket)
    await app.register(wsGuard)
    app.wsRoute('/size', { config: { wsGuard: { maxMessageBytes: 16, heartbeat: false } } }, handler)
    app.wsRoute('/rate', { config: { wsGuard: { messageRate: { messages: 2, interval: 60_000 } } } }, handler)
    app.wsRoute('/drop', { config: { wsGuard: { messageRate: { messages: 1, interval: 60_000, onExcess: 'drop' } } } }, handler)
  })

  const size = await openClient(t, url('/size'))
  t.equal(await ask(size, 'x'.repeat(16)), 'got 16', '16 bytes delivered')
  const sizeClosed = closedOf(size)
  size.send('x'.repeat(17))
  t.same(await sizeClosed, { code: 1009, reason: 'message too big' }, '17 bytes: closed with 1009 all the same')

  const rate = await openClient(t, url('/rate'))
  let pongs = 0
  rate.on('pong', () => { pongs++ })
  for (let i = 0; i < 5; i++) rate.ping()
  await waitFor(() => pongs === 5, 'five pongs')
  const rateClosed = closedOf(rate)
  // Two within the rate (the pings took nothing), the third over it.
  sendTogether(rate, ['a', 'b', 'c'])
  t.same(await rateClosed, { code: 1008, reason: 'message rate exceeded' }, 'over the rate: closed with 1008 all the same')

  const drop = await openClient(t, url('/drop'))
  const seen = answers(drop)
  sendTogether(drop, ['a', 'b'])
  await waitFor(() => seen.length === 2, 'both answered')
  t.equal(app.wsGuard.stats().dropped, 1, 'the second is counted as dropped')
  t.equal(dropped.length, 1, 'and published')
  t.equal(drop.readyState, drop.OPEN, 'the connection stays open')
  // As documented: a listener cannot hold a message back from the app's own listeners.
  t.equal(received.filter(({ route }) => route === '/drop').length, 2, 'yet the app\'s listener saw it: ws\'s socket class cannot hold it back')
  t.same(received.filter(({ route }) => route === '/rate').length, 3, 'the app\'s listener saw all three, the one that closed included')
  t.same([...classes], ['WebSocket'], 'every socket of ws\'s own class, not the guard\'s')
  await waitFor(() => app.wsGuard.stats().open === 1, 'the closes to be counted')
  t.same([app.wsGuard.stats().closed.messageTooBig, app.wsGuard.stats().closed.messageRate], [1, 1], 'both closes counted')
})

test('perUser: a user has one bucket per route, whether the route overrides other options or not', async (t) => {
  const { app, url } = await messageApp(t, { auth: { secret }, messageRate: { messages: 2, interval: 60_000, perUser: true, onExcess: 'drop' } }, {
    '/plain': undefined,
    '/also-plain': undefined,
    '/overridden': { allowMissingOrigin: true }
  })
  const token = await mint(secretBytes, { sub: 'alice' })
  for (const path of ['/plain', '/also-plain', '/overridden']) {
    const client = await openClient(t, url(path), [], bearer(token))
    const seen = answers(client)
    sendTogether(client, ['a', 'b'])
    await waitFor(() => seen.length === 2, `${path}: both answered`)
  }
  t.equal(app.wsGuard.stats().dropped, 0, 'two messages on each of three routes: each route\'s bucket had room for its own')
})
