import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import websocket from '@fastify/websocket'
import type { FastifyInstance } from 'fastify'
import type WebSocket from 'ws'
import wsGuard, { type WsGuardOptions } from '../../index.js'
import { startApp, startAppBounded } from '../helpers/app.js'
import { openClient, pauseReading, tryConnect, whenClosed, type Outcome } from '../helpers/clients.js'
import { settlesWithin } from '../helpers/wait.js'

const shutdownGrace = 300

/** Guard and route on `app`; `serverClosed` counts server-side close events. */
function guarded (options: WsGuardOptions, events: string[]) {
  return async (app: FastifyInstance): Promise<void> => {
    await app.register(wsGuard, options)
    app.wsRoute('/ws', (socket: WebSocket) => {
      socket.on('close', () => events.push('server socket closed'))
    })
  }
}

test('app.close() closes every guarded connection with 1001 and resolves once they are gone', async (t) => {
  const events: string[] = []
  const { app, url } = await startApp(t, guarded({ shutdownGrace: 5000 }, events))
  const clients = [await openClient(t, url('/ws')), await openClient(t, url('/ws'))]
  const closed = clients.map(whenClosed)
  await app.close()
  events.push('close() resolved')
  t.same(events, ['server socket closed', 'server socket closed', 'close() resolved'], 'close() waits for every connection')
  for (const { code, reason } of await Promise.all(closed)) {
    t.equal(code, 1001, 'the client sees 1001 (going away)')
    const hint = /^server shutting down; retry-after=(\d+)$/.exec(reason)
    t.ok(hint !== null, `with the reason and a retry hint (${reason})`)
    // Two connections: a spread of 2 ms, so hints in [0, 1000).
    t.ok(Number(hint?.[1]) >= 0 && Number(hint?.[1]) < 1000, `a hint under a second (${String(hint?.[1])} ms)`)
  }
  const stats = app.wsGuard.stats()
  t.equal(stats.open, 0, 'nothing open')
  t.equal(stats.closed.shutdown, 2, 'recorded as shutdown')
})

test('a client that never answers the close is terminated after shutdownGrace', async (t) => {
  const events: string[] = []
  // Pings every 100 ms: the wheel keeps visiting the closing connections during the grace.
  const { app, url } = await startApp(t, guarded({ shutdownGrace, heartbeat: { pingInterval: 100, readDeadline: 5000 } }, events))
  const answering = await openClient(t, url('/ws'))
  const silent = await openClient(t, url('/ws'))
  pauseReading(silent)
  const answered = whenClosed(answering)
  const start = Date.now()
  await app.close()
  const took = Date.now() - start
  t.ok(took >= shutdownGrace - 10, `close() waited for the grace (${took} ms)`)
  t.ok(took <= shutdownGrace + 200, `and resolved soon after it (${took} ms)`)
  const { code, at } = await answered
  t.equal(code, 1001, 'the answering client closed with 1001')
  t.ok(at - start < shutdownGrace, 'without waiting for the grace')
  t.equal(events.length, 2, 'both server sockets closed before close() resolved')
  t.equal(app.wsGuard.stats().closed.shutdown, 2, 'both recorded as shutdown')
})

/** Starts `app.close()` with one client that never answers, then tries to connect during the grace. */
async function upgradeDuringGrace (t: Parameters<typeof startApp>[0], app: FastifyInstance, url: string): Promise<{ during: Outcome, closing: Promise<void> }> {
  const silent = await openClient(t, url)
  pauseReading(silent)
  const closing = app.close()
  await sleep(50)
  const during = await tryConnect(url)
  if (during.kind === 'open') during.socket.terminate()
  return { during, closing }
}

test('an upgrade during the grace gets 503 and app.close() still resolves', async (t) => {
  const { app, url } = await startAppBounded(t, 3000, guarded({ shutdownGrace, heartbeat: false }, []))
  const { during, closing } = await upgradeDuringGrace(t, app, url('/ws'))
  t.equal(during.kind === 'refused' ? during.status : during.kind, 503, 'Fastify answers 503 while closing')
  // Fastify answers before any hook runs, so nothing destroys the upgrade socket unless the
  // guard does; server.close() would wait on it forever.
  t.ok(await settlesWithin(closing, shutdownGrace + 1000), 'app.close() resolves')
  t.same(app.wsGuard.stats().rejected, { FST_WS_GUARD_SHUTTING_DOWN: 1 }, 'Fastify\'s own 503 is counted as the guard\'s refusal')
})

test('with return503OnClosing: false the guard refuses upgrades during the grace with FST_WS_GUARD_SHUTTING_DOWN', async (t) => {
  const { app, url } = await startAppBounded(t, 3000, guarded({ shutdownGrace, heartbeat: false }, []), { return503OnClosing: false })
  const { during, closing } = await upgradeDuringGrace(t, app, url('/ws'))
  if (during.kind !== 'refused') {
    t.fail(`expected a refusal, got ${during.kind}`)
  } else {
    t.equal(during.status, 503, '503')
    t.equal(JSON.parse(during.body).code, 'FST_WS_GUARD_SHUTTING_DOWN', 'the guard\'s code')
    t.equal(during.headers['retry-after'], '5', 'with Retry-After')
  }
  t.ok(await settlesWithin(closing, shutdownGrace + 1000), 'app.close() resolves')
  t.same(app.wsGuard.stats().rejected, { FST_WS_GUARD_SHUTTING_DOWN: 1 }, 'counted by code')
  t.equal(app.wsGuard.stats().closed.shutdown, 1, 'the silent client was ended by the shutdown')
})

test('app.close() without guarded connections does not wait for the grace', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { shutdownGrace: 10_000 })
    app.wsRoute('/ws', () => {})
    app.wsRoute('/outside', { config: { wsGuard: false } }, () => {})
  })
  const outside = await openClient(t, url('/outside'))
  const closed = whenClosed(outside)
  t.ok(await settlesWithin(app.close(), 2000), 'close() resolves without waiting 10 s')
  t.equal((await closed).code, 1005, 'the connection the guard does not handle is closed by @fastify/websocket (no code)')
  t.equal(app.wsGuard.stats().closed.shutdown, 0, 'and not counted by the guard')
})

test('when the app registered @fastify/websocket itself, its preClose closes first (1005, as documented) and close() still waits', async (t) => {
  const { app, url } = await startApp(t, async (app) => {
    await app.register(websocket)
    await app.register(wsGuard, { shutdownGrace })
    app.wsRoute('/ws', () => {})
  })
  const client = await openClient(t, url('/ws'))
  const closed = whenClosed(client)
  await app.close()
  t.equal(app.wsGuard.stats().open, 0, 'close() resolved only once the guarded connection was gone')
  const { code } = await closed
  t.equal(code, 1005, '@fastify/websocket\'s own preClose ran first, with no code')
})
