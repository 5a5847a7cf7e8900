import { channel } from 'node:diagnostics_channel'
import { test } from 'tap'
import { Registry } from 'prom-client'
import wsGuard, { channels } from '../index.js'
import { countWsGuardEvents } from '../example/prom-client.js'
import { startApp } from './helpers/app.js'
import { openClient, tryConnect, whenClosed } from './helpers/clients.js'
import { bearer, mint, secret, secretBytes } from './helpers/tokens.js'
import { waitFor } from './helpers/wait.js'

test('the prom-client example counts real connections', async (t) => {
  const registry = new Registry()
  const stop = countWsGuardEvents(registry)
  t.teardown(stop)
  const { app, port, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret } })
    app.wsRoute('/chat/:room', () => {})
    app.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()))
  })
  const alice = await openClient(t, url('/chat/1'), [], bearer(await mint(secretBytes, { sub: 'alice' })))
  await openClient(t, url('/chat/2'), [], bearer(await mint(secretBytes, { sub: 'bob' })))
  const refused = await tryConnect(url('/chat/1'))
  t.equal(refused.kind === 'refused' && refused.status, 401, 'one handshake refused')
  const closed = whenClosed(alice)
  alice.close()
  await closed
  await waitFor(() => app.wsGuard.stats().open === 1, 'the close')

  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.match(metrics, /^ws_guard_accepted_total\{route="\/chat\/:room"\} 2$/m, 'two accepted, by route pattern')
  t.match(metrics, /^ws_guard_rejected_total\{route="\/chat\/:room",code="FST_WS_GUARD_TOKEN_MISSING"\} 1$/m, 'one refused, by code')
  t.match(metrics, /^ws_guard_closed_total\{route="\/chat\/:room",reason="normal"\} 1$/m, 'one closed, by reason')
  t.match(metrics, /^ws_guard_open\{route="\/chat\/:room"\} 1$/m, 'one open')
  t.match(metrics, /^ws_guard_connection_seconds_count\{route="\/chat\/:room"\} 1$/m, 'one lifetime observed')
  t.notMatch(metrics, /alice|bob/, 'no user in any label')

  await app.close()
  const open = await registry.getSingleMetric('ws_guard_open')!.get()
  t.same(open.values.map(({ value }) => value), [0], 'the shutdown brings the gauge back to zero')
  const byReason = (await registry.getSingleMetric('ws_guard_closed_total')!.get()).values
  t.same(byReason.map(({ labels, value }) => [labels.reason, value]).sort(), [['normal', 1], ['shutdown', 1]], 'closes by reason')

  stop()
  channel(channels.accepted).publish({ route: '/chat/:room' })
  t.equal((await registry.getSingleMetric('ws_guard_accepted_total')!.get()).values[0]!.value, 2, 'stop() stops counting')
})
