import { test, type Test } from 'tap'
import { guardedApp, startApp } from '../helpers/app.js'
import { doctor as runDoctorJson, expect, stage, type Run } from '../helpers/doctor.js'
import { startNginx, websocketLocation } from '../e2e/nginx.js'

/*
 * The doctor through a real nginx (Debian's, started by test/e2e/nginx.ts): the classic config
 * that drops the upgrade headers, an upstream that is down, and the correct config.
 */

const doctor = async (args: readonly string[]): Promise<Run> => await runDoctorJson([...args, '--timeout', '1000'])

/** A guarded app that pings every 150 ms; returns its port. */
async function heartbeatApp (t: Test): Promise<number> {
  return (await guardedApp(t, { heartbeat: { pingInterval: 150, readDeadline: 1000 } })).port
}

test('nginx dropping the upgrade headers: the guard\'s 426 UPGRADE_HEADERS_STRIPPED explained (exit 7)', async (t) => {
  const app = await heartbeatApp(t)
  const nginx = await startNginx(t, { server: websocketLocation('/', app, { upgradeHeaders: false }) })
  if (nginx === undefined) return
  const run = await doctor([nginx.url('/ws')])
  expect(t, run, 'upgrade', 'fail', 7)
  const upgrade = stage(run, 'upgrade')
  t.equal(upgrade.summary, 'HTTP/1.1 426 Upgrade Required, FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED')
  t.match(upgrade.findings, [{
    code: 'FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED',
    cause: /a reverse proxy in between dropped them/,
    fix: /proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection "upgrade";/
  }])
  t.ok(upgrade.details.some((line) => /^< server: nginx/.test(line)), 'answered through nginx')
})

test('nginx in front of an app that is down: 502 (exit 7)', async (t) => {
  const app = await startApp(t, async () => {})
  const down = app.port
  await app.app.close()
  const nginx = await startNginx(t, { server: websocketLocation('/', down) })
  if (nginx === undefined) return
  const run = await doctor([nginx.url('/ws')])
  expect(t, run, 'upgrade', 'fail', 7)
  t.equal(stage(run, 'upgrade').summary, 'HTTP/1.1 502 Bad Gateway')
  t.match(stage(run, 'upgrade').findings, [{ cause: /the proxy in front could not reach the app/ }])
  t.match(await nginx.errorLog(), /connect\(\) failed \(111: Connection refused\)/)
})

test('nginx configured for WebSockets: the handshake and heartbeats pass through (exit 0)', async (t) => {
  const app = await heartbeatApp(t)
  const nginx = await startNginx(t, { server: websocketLocation('/', app) })
  if (nginx === undefined) return
  const run = await doctor([nginx.url('/ws'), '--listen', '500'])
  expect(t, run, 'listen', 'ok', 0)
  t.ok((stage(run, 'listen').data.serverPingsAtMs as number[]).length >= 2)
})
