import { test } from 'tap'
import wsGuard, { type ConnectionStore, type WsGuardOptions } from '../../index.js'
import { startApp, startAppBounded, type StartedApp } from '../helpers/app.js'
import { openClient, tryConnect, whenClosed } from '../helpers/clients.js'
import { settlesWithin, waitFor } from '../helpers/wait.js'

// Kept apart from the limit tests (handshake/limits.test.ts): a store error that escapes
// crashes the process (tap reports it as an uncaught exception), and would take the other
// limit tests down with it.

class StoreError extends Error {
  code = 'ESTORE_DOWN'
  constructor () {
    super('store down: redis://user:SENSITIVE-password@cache.internal')
  }
}

const line = 'websocket connection store failed to release a connection'

async function closeOneConnection (t: Parameters<typeof startApp>[0], started: StartedApp): Promise<void> {
  const client = await openClient(t, started.url('/ws'))
  const closed = whenClosed(client)
  client.close()
  await closed
}

function assertLogged (t: Parameters<typeof startApp>[0], started: StartedApp): void {
  const errors = started.logs.lines.filter((entry) => entry.msg === line)
  t.equal(errors.length, 1, 'one error line')
  t.equal(errors[0]?.level, 50, 'at level error')
  t.same((errors[0]?.wsGuard as { err?: unknown } | undefined)?.err, { name: 'Error', code: 'ESTORE_DOWN' }, 'with the error\'s name and code')
  t.notOk(started.logs.text.includes('SENSITIVE'), 'never its message')
}

test('a store whose release rejects is logged, and the app goes on', async (t) => {
  const store: ConnectionStore = {
    acquire: async () => true,
    release: async () => { throw new StoreError() }
  }
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, { maxConnections: 10, store })
    app.wsRoute('/ws', () => {})
  })
  await closeOneConnection(t, started)
  await waitFor(() => started.logs.lines.some((entry) => entry.msg === line), 'the error to be logged')
  assertLogged(t, started)
  t.equal(started.app.wsGuard.stats().closed.normal, 1, 'the close is counted')
  const next = await openClient(t, started.url('/ws'))
  t.equal(next.readyState, next.OPEN, 'new connections are accepted')
})

test('a store whose release throws synchronously is logged, and the app goes on', async (t) => {
  const store: ConnectionStore = {
    acquire: () => true,
    release: () => { throw new StoreError() }
  }
  const started = await startAppBounded(t, 2000, async (app) => {
    // A short ws close timeout (ws 8.23; not in @types/ws yet): should the close go wrong,
    // nothing waits 30 s on it.
    await app.register(wsGuard, { maxConnections: 10, store, shutdownGrace: 200, websocket: { closeTimeout: 300 } as WsGuardOptions['websocket'] })
    app.wsRoute('/ws', () => {})
  })
  await closeOneConnection(t, started)
  await waitFor(() => started.logs.lines.some((entry) => entry.msg === line), 'the error to be logged', 500).catch((err: Error) => t.fail(err.message))
  assertLogged(t, started)
  await waitFor(() => started.app.wsGuard.stats().open === 0, 'the close to be counted', 500).catch((err: Error) => t.fail(err.message))
  t.equal(started.app.wsGuard.stats().closed.normal, 1, 'the close is counted')
  const next = await tryConnect(started.url('/ws'))
  t.equal(next.kind, 'open', 'new connections are accepted')
  if (next.kind === 'open') next.socket.terminate()
  t.ok(await settlesWithin(started.app.close(), 1500), 'app.close() resolves')
})
