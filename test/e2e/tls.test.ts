import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import { test, type Test } from 'tap'
import type { ClientOptions } from 'ws'
import wsGuard from '../../index.js'
import { nextMessage, tryConnect, type Outcome } from '../helpers/clients.js'
import { boundClose, requireBinary } from './system.js'
import { issueCertificate, makeAuthority, opensslPath, tempDir } from './tls-harness.js'

/** A guarded echo app over HTTPS with `key` and `cert`, on 127.0.0.1; closed in teardown. */
async function httpsApp (t: Test, key: string, cert: string) {
  const counts = { calls: 0 }
  const app = Fastify({ https: { key, cert } })
  t.teardown(() => app.close())
  await app.register(wsGuard, { shutdownGrace: 500 })
  app.wsRoute('/ws', (socket, request) => {
    counts.calls++
    socket.on('message', (data) => socket.send(`${request.protocol}:${String(data)}`))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  boundClose(t, app.server)
  const { port } = app.server.address() as AddressInfo
  return { app, port, counts, wss: (host: string, path: string) => `wss://${host}:${port}${path}` }
}

/** Connects, bounded: a TLS failure must come as an error, fast, never as a hang. */
async function connectWithin (url: string, options: ClientOptions, ms = 3000): Promise<{ outcome: Outcome | 'timeout', elapsed: number }> {
  const started = Date.now()
  const outcome = await Promise.race([tryConnect(url, [], { handshakeTimeout: ms, ...options }), sleep(ms).then(() => 'timeout' as const)])
  if (typeof outcome === 'object' && outcome.kind === 'open') outcome.socket.terminate()
  return { outcome, elapsed: Date.now() - started }
}

function errorCode (outcome: Outcome | 'timeout'): string | undefined {
  if (outcome === 'timeout') return 'timeout'
  return outcome.kind === 'error' ? (outcome.error as Error & { code?: string }).code : `no error: ${outcome.kind}`
}

test('wss:// with Fastify over HTTPS and certificates made by openssl', async (t) => {
  if (!requireBinary(t, opensslPath, 'openssl')) return
  const dir = await tempDir(t)
  const trusted = await makeAuthority(dir, 'trusted')
  const stranger = await makeAuthority(dir, 'stranger')
  const server = await issueCertificate(dir, trusted, 'server', ['DNS:localhost', 'IP:127.0.0.1'])
  const misnamed = await issueCertificate(dir, trusted, 'misnamed', ['DNS:wrong.example'])

  const app = await httpsApp(t, server.key, server.cert)
  const chained = await httpsApp(t, server.key, server.fullchain)
  const wrongName = await httpsApp(t, misnamed.key, misnamed.cert)

  t.test('a client that trusts the CA connects by IP and by name, and the guard works over TLS', async (t) => {
    for (const host of ['127.0.0.1', 'localhost']) {
      const outcome = await tryConnect(app.wss(host, '/ws'), [], { ca: trusted.cert, origin: `https://${host}:${app.port}` })
      if (outcome.kind !== 'open') {
        t.fail(`wss://${host}: expected open, got ${JSON.stringify(outcome)}`)
        continue
      }
      t.teardown(() => outcome.socket.terminate())
      outcome.socket.send('hello')
      t.equal(await nextMessage(outcome.socket), 'https:hello', `wss://${host}: echoed over TLS`)
    }
    const foreign = await tryConnect(app.wss('localhost', '/ws'), [], { ca: trusted.cert, origin: 'https://evil.example' })
    t.equal(foreign.kind === 'refused' && foreign.status, 403, 'the origin check answers over TLS too')
    t.equal(app.counts.calls, 2, 'the handler ran for the two accepted connections')
  })

  t.test('an untrusted CA fails on the client with the TLS error, fast', async (t) => {
    const cases: Array<[string, string, ClientOptions, string]> = [
      ['trusting another CA', app.wss('127.0.0.1', '/ws'), { ca: stranger.cert }, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'],
      ['with the default trust store', app.wss('127.0.0.1', '/ws'), {}, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'],
      ['when the server sends its CA along (fullchain)', chained.wss('127.0.0.1', '/ws'), {}, 'SELF_SIGNED_CERT_IN_CHAIN']
    ]
    for (const [label, url, options, code] of cases) {
      const { outcome, elapsed } = await connectWithin(url, options)
      t.equal(errorCode(outcome), code, `${label}: ${code}`)
      t.ok(elapsed < 2000, `${label}: failed in ${elapsed} ms`)
    }
    const control = await connectWithin(chained.wss('localhost', '/ws'), { ca: trusted.cert })
    t.equal(typeof control.outcome === 'object' && control.outcome.kind, 'open', 'the fullchain server is fine for a client that trusts the CA')
    t.equal(app.counts.calls + chained.counts.calls, 3, 'no handler ran for a failed TLS handshake')
  })

  t.test('a certificate for another hostname fails with ERR_TLS_CERT_ALTNAME_INVALID, fast', async (t) => {
    for (const host of ['127.0.0.1', 'localhost']) {
      const { outcome, elapsed } = await connectWithin(wrongName.wss(host, '/ws'), { ca: trusted.cert })
      t.equal(errorCode(outcome), 'ERR_TLS_CERT_ALTNAME_INVALID', `wss://${host}`)
      t.ok(elapsed < 2000, `wss://${host}: failed in ${elapsed} ms`)
    }
    t.equal(wrongName.counts.calls, 0, 'the handler never ran')
  })
})
