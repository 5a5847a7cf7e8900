import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyServerOptions } from 'fastify'
import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, { type WsGuardOptions } from '../../index.js'
import { startApp } from '../helpers/app.js'
import { nextMessage, tryConnect, type Outcome } from '../helpers/clients.js'
import { nginxPath, startNginx, websocketLocation } from './nginx.js'
import { boundClose, requireBinary } from './system.js'

/** An echo app behind the guard; the handler also reports what Fastify made of the request. */
async function echoApp (t: Test, guard: WsGuardOptions, fastify: FastifyServerOptions = {}) {
  const counts = { calls: 0, pongs: 0 }
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, { shutdownGrace: 500, ...guard })
    app.wsRoute('/ws', (socket, request) => {
      counts.calls++
      socket.on('pong', () => { counts.pongs++ })
      socket.on('message', (data) => {
        socket.send(String(data) === 'whoami' ? JSON.stringify({ host: request.host, protocol: request.protocol }) : String(data))
      })
    })
  }, fastify)
  boundClose(t, started.app.server)
  return Object.assign(started, { counts })
}

function expectOpen (t: Test, outcome: Outcome, message: string): WebSocket {
  if (outcome.kind !== 'open') {
    t.fail(`${message}: expected the connection to open, got ${JSON.stringify(outcome)}`)
    throw new Error(message)
  }
  t.teardown(() => outcome.socket.terminate())
  return outcome.socket
}

function refusal (outcome: Outcome): { status: number, code?: string, message?: string } {
  if (outcome.kind !== 'refused') return { status: 0, message: JSON.stringify(outcome) }
  const body = JSON.parse(outcome.body) as { code?: string, message?: string }
  return { status: outcome.status, code: body.code, message: body.message }
}

/** Resolves with the close code and how long after `since` it came, or `null` after `ms`. */
async function closedWithin (socket: WebSocket, since: number, ms: number): Promise<{ code: number, after: number } | null> {
  return await Promise.race([
    new Promise<{ code: number, after: number }>((resolve) => socket.once('close', (code) => resolve({ code, after: Date.now() - since }))),
    sleep(ms).then(() => null)
  ])
}

test('behind nginx', async (t) => {
  if (!requireBinary(t, nginxPath, 'nginx')) return

  t.test('a correct WebSocket location (HTTP/1.1, Upgrade and Connection forwarded) proxies the upgrade', async (t) => {
    const app = await echoApp(t, {})
    const nginx = await startNginx(t, { server: websocketLocation('/', app.port) })
    if (nginx === undefined) return
    // The location passes the client's Host through, so a page served by nginx is same-origin.
    const socket = expectOpen(t, await tryConnect(nginx.url('/ws'), [], { origin: `http://127.0.0.1:${nginx.port}` }), 'through nginx')
    socket.send('through the proxy')
    t.equal(await nextMessage(socket), 'through the proxy')
    t.equal(app.counts.calls, 1, 'the handler ran once')
    const foreign = refusal(await tryConnect(nginx.url('/ws'), [], { origin: 'http://evil.example' }))
    t.same([foreign.status, foreign.code], [403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED'], 'the guard still refuses other origins through nginx')
  })

  t.test('proxy_read_timeout 2s: pings every 500 ms keep an idle connection through several timeouts; without heartbeats nginx cuts it', async (t) => {
    const beating = await echoApp(t, { heartbeat: { pingInterval: 500, readDeadline: 1500 } })
    const silent = await echoApp(t, { heartbeat: false })
    const beatingProxy = await startNginx(t, { server: websocketLocation('/', beating.port, { readTimeout: '2s' }) })
    const silentProxy = await startNginx(t, { server: websocketLocation('/', silent.port, { readTimeout: '2s' }) })
    if (beatingProxy === undefined || silentProxy === undefined) return
    const alive = expectOpen(t, await tryConnect(beatingProxy.url('/ws')), 'heartbeat route')
    const idle = expectOpen(t, await tryConnect(silentProxy.url('/ws')), 'route without heartbeats')
    const since = Date.now()
    const [aliveClosed, idleClosed] = await Promise.all([closedWithin(alive, since, 5000), closedWithin(idle, since, 5000)])

    t.equal(aliveClosed, null, 'the heartbeat connection is still open after 5 s, 2.5 proxy timeouts')
    alive.send('still here')
    t.equal(await nextMessage(alive), 'still here')
    t.ok(beating.counts.pongs >= 6, `the client answered the server's pings through nginx (${beating.counts.pongs} pongs)`)
    t.equal(beating.app.wsGuard.stats().closed.heartbeatTimeout, 0, 'no heartbeat timeout on the guard side')

    t.not(idleClosed, null, 'the connection without heartbeats was closed')
    t.equal(idleClosed?.code, 1006, 'cut without a close frame: nginx dropped the TCP connection')
    t.ok(idleClosed !== null && idleClosed.after >= 1800 && idleClosed.after <= 3500, `cut at the proxy timeout (${idleClosed?.after} ms after the upgrade)`)
    t.equal(silent.app.wsGuard.stats().closed.heartbeatTimeout, 0, 'not by the guard')
  })

  t.test('a location that drops the upgrade headers: the client gets the guard\'s 426 with the proxy hint', async (t) => {
    const app = await echoApp(t, {})
    const nginx = await startNginx(t, {
      server: `${websocketLocation('/ws', app.port, { upgradeHeaders: false })}
    # The most common mistake: a plain proxy_pass (HTTP/1.0, Connection: close).
    location /bare/ { proxy_pass http://127.0.0.1:${app.port}/; }`
    })
    if (nginx === undefined) return
    for (const path of ['/ws', '/bare/ws']) {
      const answer = refusal(await tryConnect(nginx.url(path)))
      t.equal(answer.status, 426, `${path}: 426`)
      t.equal(answer.code, 'FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED', `${path}: the guard saw a handshake without its upgrade headers`)
      t.match(answer.message, /a proxy in between is dropping the hop-by-hop upgrade headers.*proxy_http_version 1\.1; proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection "upgrade";/, `${path}: the fix is in the message`)
    }
    t.equal(app.counts.calls, 0, 'the handler never ran')
  })

  t.test('X-Forwarded-Host/Proto with trustProxy: the same-origin default and an allowlist judge the public origin', async (t) => {
    // nginx terminates https://public.example: it forwards the public host and scheme, and
    // talks to each app with its own Host (127.0.0.1:<port>), as proxy_pass does by default.
    const forwarded = (port: number) => `proxy_pass http://127.0.0.1:${port}/;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`
    const trusted = await echoApp(t, {}, { trustProxy: true })
    const untrusted = await echoApp(t, {})
    const allowlist = await echoApp(t, { origins: ['https://public.example'] }, { trustProxy: true })
    const nginx = await startNginx(t, {
      server: `location /trusted/ { ${forwarded(trusted.port)} }
    location /untrusted/ { ${forwarded(untrusted.port)} }
    location /allowlist/ { ${forwarded(allowlist.port)} }`
    })
    if (nginx === undefined) return
    const browser = (origin: string) => ({ origin, headers: { host: 'public.example' } })

    const same = expectOpen(t, await tryConnect(nginx.url('/trusted/ws'), [], browser('https://public.example')), 'same origin, trustProxy')
    same.send('whoami')
    t.same(JSON.parse(await nextMessage(same)), { host: 'public.example', protocol: 'https' }, 'Fastify took host and scheme from X-Forwarded-*')
    const other = refusal(await tryConnect(nginx.url('/trusted/ws'), [], browser('https://evil.example')))
    t.same([other.status, other.code], [403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED'], 'another origin is refused')
    const port = refusal(await tryConnect(nginx.url('/trusted/ws'), [], browser('https://public.example:8443')))
    t.equal(port.status, 403, 'the same host on another port is another origin')

    // Without trustProxy the app only sees nginx's Host, so the public origin looks foreign:
    // the refusal says what to do.
    const blind = refusal(await tryConnect(nginx.url('/untrusted/ws'), [], browser('https://public.example')))
    t.same([blind.status, blind.code], [403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED'], 'without trustProxy the public origin is refused')
    t.match(blind.message, new RegExp(`is not the same origin as Host "127\\.0\\.0\\.1:${untrusted.port}".*set trustProxy`), 'the refusal names the Host it compared with and the fix')

    const listed = expectOpen(t, await tryConnect(nginx.url('/allowlist/ws'), [], browser('https://public.example')), 'allowlisted origin')
    listed.send('hi')
    t.equal(await nextMessage(listed), 'hi')
    for (const origin of ['https://other.example', 'http://public.example']) {
      const refused = refusal(await tryConnect(nginx.url('/allowlist/ws'), [], browser(origin)))
      t.same([refused.status, refused.code], [403, 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED'], `${origin} is not in the allowlist`)
    }
    t.same([trusted.counts.calls, untrusted.counts.calls, allowlist.counts.calls], [1, 0, 1], 'handlers ran for the accepted upgrades only')
  })
})
