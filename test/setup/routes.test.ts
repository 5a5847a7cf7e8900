import Fastify, { type FastifyInstance, type onRequestHookHandler } from 'fastify'
import { test, type Test } from 'tap'
import wsGuard, { InvalidOptionError } from '../../index.js'
import { countingEcho, registrationError, startApp } from '../helpers/app.js'
import { nextMessage, openClient, tryConnect } from '../helpers/clients.js'
import { guardLines } from '../helpers/logs.js'
import { handshake, plainRequest, rawExchange } from '../helpers/raw.js'
import { assertRefusal } from '../helpers/refusals.js'

/** Asks the server to close after answering a plain request. */
const close = 'Connection: close'

const crossOrigin = { origin: 'https://evil.example' }

/** Asserts the three faces of a guarded route: accepted, cross-origin refused, plain GET refused. */
async function assertGuarded (t: Test, port: number, url: string, path: string, echo: { calls: number }): Promise<void> {
  const before = echo.calls
  const socket = await openClient(t, url)
  socket.send('x')
  t.equal(await nextMessage(socket), 'x', 'an accepted handshake reaches the handler')
  assertRefusal(t, await tryConnect(url, [], crossOrigin), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  assertRefusal(t, await rawExchange(port, plainRequest(path, [close])), 426, 'FST_WS_GUARD_UPGRADE_REQUIRED')
  assertRefusal(t, await rawExchange(port, handshake(path, { 'Sec-WebSocket-Key': 'nope' })), 400, 'FST_WS_GUARD_INVALID_KEY')
  t.equal(echo.calls, before + 1, 'the handler ran for the accepted handshake only')
}

test('both route styles are guarded: app.wsRoute and app.get/app.route with websocket: true', async (t) => {
  const viaWsRoute = countingEcho()
  const viaGet = countingEcho()
  const viaRoute = countingEcho()
  let returned: unknown
  const { port, url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    returned = app.wsRoute('/a', viaWsRoute.handler)
    app.get('/b', { websocket: true }, viaGet.handler as never)
    app.route({ method: 'GET', url: '/c', websocket: true, handler: viaRoute.handler as never })
  })
  t.ok(returned !== undefined && typeof (returned as FastifyInstance).wsRoute === 'function', 'wsRoute returns the instance')
  await assertGuarded(t, port, url('/a'), '/a', viaWsRoute)
  await assertGuarded(t, port, url('/b'), '/b', viaGet)
  await assertGuarded(t, port, url('/c'), '/c', viaRoute)
})

test('the handler gets (socket, request) as with @fastify/websocket', async (t) => {
  let seen: { url: string, params: unknown, hasSend: boolean } | undefined
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/rooms/:room', (socket, request) => {
      seen = { url: request.url, params: request.params, hasSend: typeof socket.send === 'function' }
      socket.on('message', () => socket.send('hello'))
    })
  })
  const socket = await openClient(t, url('/rooms/42?x=1'))
  socket.send('hi')
  t.equal(await nextMessage(socket), 'hello')
  t.same(seen, { url: '/rooms/42?x=1', params: { room: '42' }, hasSend: true })
})

test('wsRoute with route options and config.wsGuard overrides of the plugin options', async (t) => {
  const plain = countingEcho()
  const overridden = countingEcho()
  const routeHook: string[] = []
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { origins: ['https://a.example.com'] })
    app.wsRoute('/plugin', plain.handler)
    app.wsRoute('/route', {
      config: { wsGuard: { origins: ['https://b.example.com'], protocols: ['chat.v1'] } },
      onRequest: (request, _reply, done) => { routeHook.push(request.url); done() }
    }, overridden.handler)
  })
  const a = await openClient(t, url('/plugin'), [], { origin: 'https://a.example.com' })
  t.equal(a.protocol, '')
  assertRefusal(t, await tryConnect(url('/plugin'), [], { origin: 'https://b.example.com' }), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  const b = await openClient(t, url('/route'), ['chat.v1'], { origin: 'https://b.example.com' })
  t.equal(b.protocol, 'chat.v1', 'the route protocols apply')
  assertRefusal(t, await tryConnect(url('/route'), [], { origin: 'https://a.example.com' }), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  assertRefusal(t, await tryConnect(url('/route'), ['chat.v9'], { origin: 'https://b.example.com' }), 400, 'FST_WS_GUARD_UNSUPPORTED_PROTOCOL')
  t.equal(plain.calls, 1)
  t.equal(overridden.calls, 1)
  t.same(routeHook, ['/route'], "the route's own onRequest hook ran for the accepted handshake only")
})

test('overrides keep what they do not override from the plugin options', async (t) => {
  const echo = countingEcho()
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { origins: ['https://a.example.com'], allowMissingOrigin: false })
    app.wsRoute('/ws', { config: { wsGuard: { protocols: ['chat'] } } }, echo.handler)
  })
  assertRefusal(t, await tryConnect(url('/ws'), ['chat']), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  assertRefusal(t, await tryConnect(url('/ws'), ['chat'], { origin: 'https://b.example.com' }), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  await openClient(t, url('/ws'), ['chat'], { origin: 'https://a.example.com' })
  t.equal(echo.calls, 1)
})

test("the route's own onRequest hooks, function or array, run after the guard and never for a refused handshake", async (t) => {
  const calls: string[] = []
  const hook = (name: string): onRequestHookHandler => (_request, _reply, done) => { calls.push(name); done() }
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/fn', { onRequest: hook('fn') }, countingEcho().handler)
    app.get('/arr', { websocket: true, onRequest: [hook('arr1'), hook('arr2')] }, countingEcho().handler as never)
  })
  for (const path of ['/fn', '/arr']) {
    assertRefusal(t, await tryConnect(url(path), [], crossOrigin), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  }
  t.same(calls, [])
  await openClient(t, url('/fn'))
  await openClient(t, url('/arr'))
  t.same(calls, ['fn', 'arr1', 'arr2'])
})

test('config: { wsGuard: false } opts a route out entirely', async (t) => {
  const open = countingEcho()
  const guarded = countingEcho()
  const { port, url, logs } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/public', { config: { wsGuard: false } }, open.handler)
    app.get('/public2', { websocket: true, config: { wsGuard: false } }, open.handler as never)
    app.wsRoute('/guarded', guarded.handler)
  })
  for (const path of ['/public', '/public2']) {
    const socket = await openClient(t, url(path), [], crossOrigin)
    socket.send('y')
    t.equal(await nextMessage(socket), 'y', `a cross-origin client reaches ${path}`)
    const plain = await rawExchange(port, plainRequest(path, [close]))
    t.equal(plain.status, 404, "a plain GET gets @fastify/websocket's own answer, not the guard's")
  }
  t.equal(open.calls, 2)
  t.equal(guardLines(logs).length, 0, 'the guard wrote nothing')
  assertRefusal(t, await tryConnect(url('/guarded'), [], crossOrigin), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  t.equal(guarded.calls, 0)
})

test('config.wsGuard on a route that is not a WebSocket route throws at registration', async (t) => {
  for (const config of [{}, { origins: '*' as const }]) {
    await t.test(JSON.stringify(config), async (t) => {
      const err = await registrationError(t, undefined, (app) => {
        app.get('/plain', { config: { wsGuard: config } }, async () => 'ok')
      })
      t.ok(err instanceof InvalidOptionError)
      t.equal((err as { code?: string }).code, 'FST_WS_GUARD_INVALID_OPTION')
      t.equal((err as Error).message, 'fastify-ws-guard: config.wsGuard is set on GET /plain, which is not a WebSocket route; add websocket: true or declare it with app.wsRoute()')
    })
  }
})

test('an upgrade to a plain route gets 400 FST_WS_GUARD_NOT_WEBSOCKET_ROUTE; plain requests still work', async (t) => {
  let handled = 0
  let hooked = 0
  const echo = countingEcho()
  const { port, url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', echo.handler)
    app.get('/plain', { onRequest: (_request, _reply, done) => { hooked++; done() } }, async () => { handled++; return { ok: true } })
    app.get('/items/:id', async () => { handled++; return 'item' })
    app.post('/submit', async () => { handled++; return 'posted' })
  })
  const refused = assertRefusal(t, await tryConnect(url('/plain')), 400, 'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE').body
  t.equal(refused.message, 'Route GET /plain exists but is not a WebSocket route')
  const raw = await rawExchange(port, handshake('/plain'))
  assertRefusal(t, raw, 400, 'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE')
  t.notMatch(raw.text, /101 Switching Protocols/, 'never upgraded')
  const param = assertRefusal(t, await tryConnect(url('/items/7?secret=1')), 400, 'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE').body
  t.equal(param.message, 'Route GET /items/:id exists but is not a WebSocket route', 'the route pattern, not the URL')
  const post = assertRefusal(t, await rawExchange(port, handshake('/submit').replace(/^GET/, 'POST')), 400, 'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE').body
  t.equal(post.message, 'Route POST /submit exists but is not a WebSocket route')
  t.equal(handled, 0, 'no plain handler ran for an upgrade')
  t.equal(hooked, 0, "the route's own hook did not run for an upgrade")

  const plain = await rawExchange(port, plainRequest('/plain', [close]))
  t.equal(plain.status, 200)
  t.same(JSON.parse(plain.body), { ok: true })
  const head = await rawExchange(port, plainRequest('/plain', [close], 'HEAD'))
  t.equal(head.status, 200)
  const posted = await rawExchange(port, plainRequest('/submit', [close, 'Content-Length: 0'], 'POST'))
  t.equal(posted.body, 'posted')
  t.equal(handled, 3)
  t.equal(hooked, 2)
  t.equal(echo.calls, 0)
})

test('a plain route opted out with wsGuard: false is left alone', async (t) => {
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.get('/plain', { config: { wsGuard: false } }, async () => 'ok')
  })
  // No guard: @fastify/websocket upgrades and closes at once, as it does without the guard.
  const outcome = await tryConnect(url('/plain'))
  t.equal(outcome.kind, 'closed')
})

test('a route with wsHandler serves HTTP through its handler and guarded WebSocket through wsHandler', async (t) => {
  let httpCalls = 0
  const ws = countingEcho()
  const { port, url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.route({
      method: 'GET',
      url: '/both',
      handler: async () => { httpCalls++; return { http: true } },
      wsHandler: ws.handler as never
    })
  })
  const plain = await rawExchange(port, plainRequest('/both', [close]))
  t.equal(plain.status, 200)
  t.same(JSON.parse(plain.body), { http: true })
  const partial = await rawExchange(port, plainRequest('/both', [close, 'Upgrade: websocket']))
  t.equal(partial.status, 200, 'without an upgrade the HTTP handler answers')
  t.equal(httpCalls, 2)

  const socket = await openClient(t, url('/both'))
  socket.send('z')
  t.equal(await nextMessage(socket), 'z')
  assertRefusal(t, await tryConnect(url('/both'), [], crossOrigin), 403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED')
  assertRefusal(t, await rawExchange(port, handshake('/both', { 'Sec-WebSocket-Version': '8' })), 426, 'FST_WS_GUARD_UNSUPPORTED_VERSION')
  t.equal(ws.calls, 1)
  t.equal(httpCalls, 2, 'the HTTP handler never saw an upgrade')
})

test('routes declared in a child plugin scope are guarded', async (t) => {
  const inner = countingEcho()
  const deeper = countingEcho()
  let plainCalls = 0
  const { port, url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    await app.register(async (child) => {
      child.wsRoute('/inner', inner.handler)
      child.get('/plain', async () => { plainCalls++; return 'plain' })
      await child.register(async (grandchild) => {
        grandchild.get('/deeper', { websocket: true }, deeper.handler as never)
      }, { prefix: '/g' })
    }, { prefix: '/child' })
  })
  await assertGuarded(t, port, url('/child/inner'), '/child/inner', inner)
  await assertGuarded(t, port, url('/child/g/deeper'), '/child/g/deeper', deeper)
  const refused = assertRefusal(t, await tryConnect(url('/child/plain')), 400, 'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE').body
  t.equal(refused.message, 'Route GET /child/plain exists but is not a WebSocket route')
  t.equal(plainCalls, 0)
})

test('wsRoute without a handler throws an InvalidOptionError', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(wsGuard)
  for (const args of [[{}], [{ config: {} }, undefined], [{ config: {} }, 'handler']] as const) {
    t.throws(() => (app.wsRoute as (...a: unknown[]) => unknown)('/x', ...args), {
      code: 'FST_WS_GUARD_INVALID_OPTION',
      message: "fastify-ws-guard: wsRoute('/x') needs a handler (socket, request) => {}"
    })
  }
  t.throws(() => (app.wsRoute as (...a: unknown[]) => unknown)('/y'), InvalidOptionError)
})

test('wsRoute always declares a GET WebSocket route, whatever the options say', async (t) => {
  const echo = countingEcho()
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', { method: 'POST', url: '/elsewhere', websocket: false } as never, echo.handler)
  })
  await openClient(t, url('/ws'))
  t.equal(echo.calls, 1)
})
