import type { IncomingMessage } from 'node:http'
import websocket from '@fastify/websocket'
import { test, type Test } from 'tap'
import type { WebSocketServer } from 'ws'
import wsGuard, { type WsGuardOptions } from '../../index.js'
import { installProtocolSelection, parseOfferedProtocols, selectProtocol } from '../../lib/handshake/protocols.js'
import { kHandshake } from '../../lib/handshake/contract.js'
import { countingEcho, guardedApp, startAppBounded, type StartedApp } from '../helpers/app.js'
import { openClient, tryConnectWithin } from '../helpers/clients.js'
import { handshake, rawExchange, rawHead } from '../helpers/raw.js'
import { assertRefusal } from '../helpers/refusals.js'

/*
 * Connections here are bounded in time (tryConnectWithin, rawHead, closeWithin): a
 * subprotocol bug can leave a handshake unanswered, and that must fail one test, not stall the file.
 */

/** A guarded echo app at /ws speaking `routeProtocols` (none when undefined), its close bounded. */
async function protocolApp (t: Test, options: WsGuardOptions = {}, routeProtocols?: string[]) {
  return await guardedApp(t, options, { closeWithin: 500, route: routeProtocols === undefined ? {} : { config: { wsGuard: { protocols: routeProtocols } } } })
}

/** Connects offering `protocols`; asserts the upgrade and returns the selected subprotocol ('' for none). */
async function selected (t: Test, app: StartedApp, protocols: string[]): Promise<string | undefined> {
  const outcome = await tryConnectWithin(300, app.url('/ws'), protocols)
  if (outcome.kind !== 'open') {
    t.fail(`offering ${JSON.stringify(protocols)}: expected an open connection, got ${JSON.stringify(outcome)}`)
    return undefined
  }
  outcome.socket.terminate()
  t.equal(outcome.headers['sec-websocket-protocol'], outcome.protocol === '' ? undefined : outcome.protocol, 'the 101 names it')
  return outcome.protocol
}

test('route protocols: the first configured protocol the client offered is selected', async (t) => {
  const app = await protocolApp(t, undefined, ['chat.v2', 'chat.v1'])
  t.equal(await selected(t, app, ['chat.v1', 'chat.v2']), 'chat.v2', "the route's preference wins over the client's order")
  t.equal(await selected(t, app, ['chat.v1']), 'chat.v1')
  t.equal(await selected(t, app, ['x-other', 'chat.v1']), 'chat.v1')
  t.equal(await selected(t, app, ['bearer.abc', 'chat.v1']), 'chat.v1')
  t.equal(app.echo.calls, 4)
})

test('route protocols: a client offering none of them gets 400 FST_WS_GUARD_UNSUPPORTED_PROTOCOL', async (t) => {
  const app = await protocolApp(t, undefined, ['chat.v2', 'chat.v1'])
  for (const offered of [['chat.v3'], ['x', 'y'], ['CHAT.V1']]) {
    const { body } = assertRefusal(t, await tryConnectWithin(300, app.url('/ws'), offered), 400, 'FST_WS_GUARD_UNSUPPORTED_PROTOCOL')
    t.equal(body.message, 'None of the offered subprotocols is spoken by this route; offer one of: chat.v2, chat.v1')
  }
  t.equal(app.echo.calls, 0)
})

test('route protocols: a client offering no subprotocol at all is upgraded without one', async (t) => {
  const app = await protocolApp(t, undefined, ['chat.v1'])
  t.equal(await selected(t, app, []), '')
  t.equal(app.echo.calls, 1)
})

test('plugin-wide protocols apply to every route', async (t) => {
  const app = await protocolApp(t, { protocols: ['json', 'msgpack'] })
  t.equal(await selected(t, app, ['msgpack', 'json']), 'json')
  assertRefusal(t, await tryConnectWithin(300, app.url('/ws'), ['xml']), 400, 'FST_WS_GUARD_UNSUPPORTED_PROTOCOL')
})

test("without configured protocols ws's default picks the first offered", async (t) => {
  const app = await protocolApp(t)
  t.equal(await selected(t, app, ['chat', 'other']), 'chat')
  t.equal(await selected(t, app, ['other', 'chat']), 'other')
  t.equal(app.echo.calls, 2)
})

test('without configured protocols a bearer.<token> subprotocol is never selected', async (t) => {
  const app = await protocolApp(t)
  t.equal(await selected(t, app, ['bearer.abc', 'chat']), 'chat')
  t.equal(await selected(t, app, ['bearer.abc', 'bearer.def', 'chat', 'x']), 'chat')
  // Offering only a token: never echoed. A 101 naming no subprotocol would fail in browsers,
  // so a guarded route refuses with a 400 that says what to offer.
  const response = await rawExchange(app.port, handshake('/ws', { 'Sec-WebSocket-Protocol': 'bearer.abc' }))
  const { body } = assertRefusal(t, response, 400, 'FST_WS_GUARD_PROTOCOL_REQUIRED')
  t.notMatch(response.text, /bearer\.abc/, 'the token is not reflected, in the headers or the body')
  t.match(body.message, /also offer/)
  t.equal(app.echo.calls, 2)
})

test('a route opted out with wsGuard: false still never selects a bearer.<token>', async (t) => {
  const echo = countingEcho()
  const app = await startAppBounded(t, 500, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', { config: { wsGuard: false } }, echo.handler)
  })
  t.equal(await selected(t, app, ['bearer.abc', 'chat']), 'chat')
  // Offering only a token: outside the guard there is no 400 to explain, but the token is never echoed.
  const head = await rawHead(app.port, handshake('/ws', { 'Sec-WebSocket-Protocol': 'bearer.abc' }), 300)
  t.equal(head.status, 101)
  t.equal(head.headers['sec-websocket-protocol'], undefined, 'no subprotocol selected')
  t.notMatch(JSON.stringify(head.headers), /bearer\.abc/, 'the token is not reflected')
})

test("the app's own ws handleProtocols, passed in options.websocket, is used when the route names no protocols", async (t) => {
  const calls: Array<{ offered: string[], url: string | undefined }> = []
  const handleProtocols = (protocols: Set<string>, request: IncomingMessage): string | false => {
    calls.push({ offered: [...protocols], url: request.url })
    return protocols.has('b') ? 'b' : false
  }
  const echo = countingEcho()
  const app = await startAppBounded(t, 500, async (app) => {
    await app.register(wsGuard, { websocket: { handleProtocols } })
    app.wsRoute('/ws', echo.handler)
    app.wsRoute('/routed', { config: { wsGuard: { protocols: ['a'] } } }, echo.handler)
  })
  t.equal(await selected(t, app, ['a', 'b']), 'b', "the app's function chose")
  t.same(calls, [{ offered: ['a', 'b'], url: '/ws' }])
  const before = calls.length
  const routed = await tryConnectWithin(300, app.url('/routed'), ['a', 'b'])
  if (routed.kind === 'open') routed.socket.terminate()
  t.match(routed, { kind: 'open', protocol: 'a' }, "the route's protocols win over the app's function")
  t.equal(calls.length, before, "the app's function was not asked for a route with protocols")
})

test('the handleProtocols of an @fastify/websocket the app registered itself is used too', async (t) => {
  const echo = countingEcho()
  const app = await startAppBounded(t, 500, async (app) => {
    await app.register(websocket, { options: { handleProtocols: (protocols: Set<string>) => [...protocols].at(-1) ?? false } })
    await app.register(wsGuard)
    app.wsRoute('/ws', echo.handler)
  })
  t.equal(await selected(t, app, ['a', 'b', 'c']), 'c')
})

test('parseOfferedProtocols', async (t) => {
  t.same(parseOfferedProtocols(undefined), [])
  t.same(parseOfferedProtocols('chat'), ['chat'])
  t.same(parseOfferedProtocols('chat.v1, chat.v2'), ['chat.v1', 'chat.v2'])
  t.same(parseOfferedProtocols(' a ,b\t'), ['a', 'b'])
  for (const bad of ['', ' ', 'a,,b', 'a,', 'a, a', 'a b', 'a;b', 'a/b', 'é']) {
    t.match(parseOfferedProtocols(bad), { code: 'FST_WS_GUARD_INVALID_PROTOCOL_HEADER', statusCode: 400 }, JSON.stringify(bad))
  }
})

test('selectProtocol', async (t) => {
  t.equal(selectProtocol([], ['a']), false, 'nothing offered: no subprotocol')
  t.equal(selectProtocol([], []), false)
  t.equal(selectProtocol(['a', 'b'], []), 'a', 'nothing configured: the first offered')
  t.equal(selectProtocol(['bearer.x', 'bearer.y', 'a'], []), 'a', 'never a token')
  t.equal(selectProtocol(['b', 'a'], ['a', 'b']), 'a', "the route's preference")
  t.equal(selectProtocol(['bearer.x', 'b'], ['a', 'b']), 'b')
  t.match(selectProtocol(['c'], ['a', 'b']), { code: 'FST_WS_GUARD_UNSUPPORTED_PROTOCOL', statusCode: 400, message: /offer one of: a, b$/ })
  t.match(selectProtocol(['bearer.x'], []), { code: 'FST_WS_GUARD_PROTOCOL_REQUIRED', statusCode: 400 })
  t.match(selectProtocol(['bearer.x'], ['a']), { code: 'FST_WS_GUARD_PROTOCOL_REQUIRED', message: /"a"/ })
  t.notMatch(JSON.stringify(selectProtocol(['bearer.secret'], ['a'])), /secret/, 'the error never carries the token')
})

test('installProtocolSelection on a ws server without its own handleProtocols', async (t) => {
  // ws defaults options.handleProtocols to null.
  const wss = { options: { handleProtocols: null } } as unknown as WebSocketServer
  installProtocolSelection(wss)
  const select = wss.options.handleProtocols!
  const request = {} as IncomingMessage
  t.equal(select(new Set(['chat', 'x']), request), 'chat')
  t.equal(select(new Set(['bearer.abc', 'chat']), request), 'chat')
  t.equal(select(new Set(['bearer.abc']), request), false)
  const guarded = { [kHandshake]: { protocol: 'x', settings: { protocols: ['x'] } } } as unknown as IncomingMessage
  t.equal(select(new Set(['bearer.abc', 'chat', 'x']), guarded), 'x', "the guard's choice wins")
})

test('installProtocolSelection on a ws server with its own handleProtocols', async (t) => {
  const wss = { options: { handleProtocols: () => 'theirs' } } as unknown as WebSocketServer
  installProtocolSelection(wss)
  const select = wss.options.handleProtocols!
  t.equal(select(new Set(['a']), {} as IncomingMessage), 'theirs')
  t.equal(select(new Set(['a']), { [kHandshake]: { protocol: 'a', settings: { protocols: ['a'] } } } as unknown as IncomingMessage), 'a', "the route's choice wins")
})

test('openClient works for a route that selects a protocol', async (t) => {
  const app = await protocolApp(t, undefined, ['chat.v1'])
  const socket = await openClient(t, app.url('/ws'), ['chat.v1'])
  t.equal(socket.protocol, 'chat.v1')
})
