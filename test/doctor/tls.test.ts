import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import { createServer as createNetServer, type AddressInfo, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer as createTlsServer } from 'node:tls'
import { test, type Test } from 'tap'
import { WebSocketServer } from 'ws'
import wsGuard from '../../index.js'
import { startApp } from '../helpers/app.js'
import { doctor as runDoctorJson, expect, stage, type Run } from '../helpers/doctor.js'

/*
 * The TLS stage against real certificates, made here with the openssl CLI: a test CA and
 * leaves it signed (good, another hostname, expired, client-only), and a self-signed one.
 */

const dir = mkdtempSync(join(tmpdir(), 'doctor-tls-'))
process.on('exit', () => rmSync(dir, { recursive: true, force: true }))

function openssl (...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
}

const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
openssl('req', '-x509', ...ecKey, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=doctor test CA',
  '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
openssl('req', '-x509', ...ecKey, '-keyout', 'self.key', '-out', 'self.pem', '-days', '1', '-subj', '/CN=127.0.0.1')
writeFileSync(join(dir, 'ca.cnf'), `[ca]
default_ca = test
[test]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
`)
writeFileSync(join(dir, 'index.txt'), '')
writeFileSync(join(dir, 'serial'), '1000\n')

/** A leaf signed by the test CA; `dates` makes it valid in the past only. */
function leaf (name: string, commonName: string, extensions: string, dates?: [string, string]): void {
  openssl('req', '-new', ...ecKey, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${commonName}`)
  writeFileSync(join(dir, `${name}.ext`), extensions)
  const validity = dates === undefined ? ['-days', '1'] : ['-startdate', dates[0], '-enddate', dates[1]]
  openssl('ca', '-batch', '-config', 'ca.cnf', '-cert', 'ca.pem', '-keyfile', 'ca.key', '-in', `${name}.csr`, '-out', `${name}.pem`, '-extfile', `${name}.ext`, ...validity)
}

leaf('good', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
leaf('other', 'other.example', 'subjectAltName=DNS:other.example,DNS:*.other.example\n')
leaf('expired', '127.0.0.1', 'subjectAltName=IP:127.0.0.1\n', ['20200101000000Z', '20200102000000Z'])
leaf('client', '127.0.0.1', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=clientAuth\n')
const ca = join(dir, 'ca.pem')

function pair (name: string): { key: Buffer, cert: Buffer } {
  return { key: readFileSync(join(dir, `${name}.key`)), cert: readFileSync(join(dir, `${name}.pem`)) }
}

const doctor = async (args: readonly string[]): Promise<Run> => await runDoctorJson([...args, '--timeout', '1000', '--listen', '0'])

async function listening (t: Test, server: Server): Promise<number> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  return (server.address() as AddressInfo).port
}

/** An HTTPS server with a ws endpoint, on the certificate `name`. */
async function wssServer (t: Test, name: string): Promise<number> {
  const server = createHttpsServer(pair(name))
  const wss = new WebSocketServer({ server })
  t.teardown(() => { for (const client of wss.clients) client.terminate() })
  return await listening(t, server)
}

test('a self-signed certificate: tls fails and suggests --ca (exit 6)', async (t) => {
  const port = await wssServer(t, 'self')
  const run = await doctor([`wss://127.0.0.1:${port}/`])
  expect(t, run, 'tls', 'fail', 6)
  const tls = stage(run, 'tls')
  t.match(tls.findings, [
    { code: 'DEPTH_ZERO_SELF_SIGNED_CERT', cause: /self-signed \(CN=127\.0\.0\.1\)/, fix: /--ca FILE.*--insecure$/ },
    { code: 'ERR_TLS_CERT_ALTNAME_INVALID', cause: /not valid for 127\.0\.0\.1: it names \(none\)/, fix: /subjectAltName=IP:127\.0\.0\.1/ }
  ])
  t.match(tls.details, ['subject  CN=127.0.0.1', 'SANs     (none)', 'issuer   CN=127.0.0.1', /^valid {4}\d{4}-.* -> \d{4}-/])
  t.equal(stage(run, 'upgrade').verdict, 'skip')
})

test('a certificate from an unknown CA: tls fails and suggests --ca (exit 6)', async (t) => {
  const port = await wssServer(t, 'good')
  const run = await doctor([`wss://127.0.0.1:${port}/`])
  expect(t, run, 'tls', 'fail', 6)
  t.match(stage(run, 'tls').findings, [{ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', cause: /issuer \(CN=doctor test CA\) is not a trusted CA/, fix: /--ca FILE/ }])
  t.equal(stage(run, 'tls').findings.length, 1)
})

test('trusted with --ca: tls ok, the handshake succeeds (exit 0)', async (t) => {
  const port = await wssServer(t, 'good')
  const run = await doctor([`wss://localhost:${port}/`, '--ca', ca])
  expect(t, run, 'tls', 'ok', 0)
  t.match(stage(run, 'tls').summary, /^TLSv1\.[23], \S+; certificate for CN=localhost, issued by CN=doctor test CA$/)
  t.match(stage(run, 'tls').data, { certificate: { sans: 'DNS:localhost, IP Address:127.0.0.1' }, authorizationError: null })
  t.equal(stage(run, 'upgrade').verdict, 'ok')
})

test('a certificate for another hostname: tls fails naming its SANs (exit 6)', async (t) => {
  const port = await wssServer(t, 'other')
  const byAddress = await doctor([`wss://127.0.0.1:${port}/`, '--ca', ca])
  expect(t, byAddress, 'tls', 'fail', 6)
  t.match(stage(byAddress, 'tls').findings, [{
    code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    cause: 'the certificate is not valid for 127.0.0.1: it names DNS:other.example, DNS:*.other.example',
    fix: /reissue it with subjectAltName=IP:127\.0\.0\.1/
  }])
  t.equal(stage(byAddress, 'tls').findings.length, 1)

  const byName = await doctor([`wss://localhost:${port}/`, '--ca', ca])
  expect(t, byName, 'tls', 'fail', 6)
  t.match(stage(byName, 'tls').findings, [{ fix: /subjectAltName=DNS:localhost/ }])

  const untrusted = await doctor([`wss://localhost:${port}/`])
  t.match(stage(untrusted, 'tls').findings.map((f) => f.code), ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'ERR_TLS_CERT_ALTNAME_INVALID'])
})

test('an expired certificate: tls fails with its end date (exit 6)', async (t) => {
  const port = await wssServer(t, 'expired')
  const run = await doctor([`wss://127.0.0.1:${port}/`, '--ca', ca])
  expect(t, run, 'tls', 'fail', 6)
  t.match(stage(run, 'tls').findings, [{ code: 'CERT_HAS_EXPIRED', cause: 'the certificate expired on 2020-01-02T00:00:00.000Z', fix: /renew/ }])
})

test('a certificate refused for another reason is still named (exit 6)', async (t) => {
  const port = await wssServer(t, 'client')
  const run = await doctor([`wss://127.0.0.1:${port}/`, '--ca', ca])
  expect(t, run, 'tls', 'fail', 6)
  t.match(stage(run, 'tls').findings, [{ code: 'INVALID_PURPOSE', cause: 'the certificate failed verification', fix: /openssl s_client/ }])
})

test('--insecure goes on past certificate errors, as warnings (exit 0)', async (t) => {
  const port = await wssServer(t, 'self')
  const run = await doctor([`wss://127.0.0.1:${port}/`, '--insecure'])
  expect(t, run, 'tls', 'warn', 0)
  t.match(stage(run, 'tls').findings, [
    { verdict: 'warn', code: 'DEPTH_ZERO_SELF_SIGNED_CERT', cause: /\(--insecure: going on\)$/ },
    { verdict: 'warn', code: 'ERR_TLS_CERT_ALTNAME_INVALID' }
  ])
  t.equal(stage(run, 'upgrade').verdict, 'ok')
  t.equal(run.report.warnings, 2)
})

test('wss:// to a plain port: tls fails, the port speaks plain HTTP (exit 6)', async (t) => {
  const { port } = await startApp(t, async (app) => {
    await app.register(wsGuard)
    app.wsRoute('/ws', () => {})
  })
  const run = await doctor([`wss://127.0.0.1:${port}/ws`])
  expect(t, run, 'tls', 'fail', 6)
  t.match(stage(run, 'tls').findings, [{ code: 'ERR_SSL_WRONG_VERSION_NUMBER', cause: /answered in plain text, not TLS/, fix: /use ws:\/\// }])
})

test('ws:// to a TLS port: the upgrade gets no answer, and a probe finds TLS (exit 7)', async (t) => {
  const port = await wssServer(t, 'good')
  const run = await doctor([`ws://127.0.0.1:${port}/chat?room=1`])
  expect(t, run, 'upgrade', 'fail', 7)
  t.equal(stage(run, 'upgrade').summary, 'no HTTP response')
  t.match(stage(run, 'upgrade').findings, [{ code: 'TLS_PORT', cause: /the port speaks TLS/, fix: `use wss://127.0.0.1:${port}/chat?room=1` }])
})

test('TLS handshakes that break: reset, silence, an alert (exit 6)', async (t) => {
  const reset = await listening(t, createNetServer((socket) => socket.once('data', () => socket.destroy())))
  const resetRun = await doctor([`wss://127.0.0.1:${reset}/`])
  expect(t, resetRun, 'tls', 'fail', 6)
  t.match(stage(resetRun, 'tls').findings, [{ code: 'ECONNRESET', cause: /closed the connection during the TLS handshake/ }])

  const silent = await listening(t, createNetServer((socket) => socket.on('error', () => {})))
  const silentRun = await doctor([`wss://127.0.0.1:${silent}/`])
  expect(t, silentRun, 'tls', 'fail', 6)
  t.match(stage(silentRun, 'tls').findings, [{ code: 'ETIMEDOUT', cause: 'no TLS answer in 1000 ms: the server waits for something else (a protocol where the server speaks first?) or is overloaded' }])

  // A TLS alert record: fatal, internal_error (80).
  const alert = await listening(t, createNetServer((socket) => socket.once('data', () => socket.end(Buffer.from([0x15, 3, 3, 0, 2, 2, 80])))))
  const alertRun = await doctor([`wss://127.0.0.1:${alert}/`])
  expect(t, alertRun, 'tls', 'fail', 6)
  t.match(stage(alertRun, 'tls').findings, [{ code: 'ERR_SSL_TLSV1_ALERT_INTERNAL_ERROR', cause: 'the TLS handshake failed' }])
})

test('wss:// to a TLS server that hangs up after the handshake: no HTTP answer (exit 7)', async (t) => {
  const port = await listening(t, createTlsServer(pair('good'), (socket) => socket.once('data', () => socket.destroy())))
  const run = await doctor([`wss://127.0.0.1:${port}/`, '--ca', ca])
  t.equal(stage(run, 'tls').verdict, 'ok')
  expect(t, run, 'upgrade', 'fail', 7)
  t.match(stage(run, 'upgrade').findings, [{ cause: 'the server closed the connection without answering' }])
})
