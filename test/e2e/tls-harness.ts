import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Test } from 'tap'

const run = promisify(execFile)

/** Debian's openssl CLI; `OPENSSL_BIN` points elsewhere. */
export const opensslPath = process.env.OPENSSL_BIN ?? '/usr/bin/openssl'

export interface Authority {
  name: string
  certPath: string
  keyPath: string
  /** PEM: what a client passes as `ca` to trust it. */
  cert: string
}

export interface Issued {
  /** PEM private key and leaf certificate, for `https: { key, cert }`. */
  key: string
  cert: string
  /** The leaf followed by its CA, as servers configured with a "fullchain" send it. */
  fullchain: string
}

/** A temporary directory, removed in teardown. */
export async function tempDir (t: Pick<Test, 'teardown'>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ws-guard-tls-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

async function openssl (dir: string, args: string[]): Promise<void> {
  // Bounded: a prompt or a hang of the CLI fails the test instead of holding it.
  await run(opensslPath, args, { cwd: dir, timeout: 10_000 })
}

const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']

/** A self-signed certificate authority (P-256, valid two days), made with the openssl CLI. */
export async function makeAuthority (dir: string, name: string): Promise<Authority> {
  const certPath = join(dir, `${name}-ca.crt`)
  const keyPath = join(dir, `${name}-ca.key`)
  await openssl(dir, [
    'req', '-x509', ...ecKey, '-keyout', keyPath, '-out', certPath, '-days', '2',
    '-subj', `/CN=fastify-ws-guard e2e ${name} CA`,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign'
  ])
  return { name, certPath, keyPath, cert: await readFile(certPath, 'utf8') }
}

/**
 * A server certificate signed by `authority` for the subject alternative names `san`
 * (`['DNS:localhost', 'IP:127.0.0.1']`).
 */
export async function issueCertificate (dir: string, authority: Authority, name: string, san: readonly string[]): Promise<Issued> {
  const keyPath = join(dir, `${name}.key`)
  const csrPath = join(dir, `${name}.csr`)
  const certPath = join(dir, `${name}.crt`)
  const extPath = join(dir, `${name}.ext`)
  await writeFile(extPath, [
    `subjectAltName=${san.join(',')}`,
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth'
  ].join('\n') + '\n')
  await openssl(dir, ['req', '-new', ...ecKey, '-keyout', keyPath, '-out', csrPath, '-subj', `/CN=${name}`])
  await openssl(dir, [
    'x509', '-req', '-in', csrPath, '-CA', authority.certPath, '-CAkey', authority.keyPath,
    '-set_serial', '0x' + randomBytes(8).toString('hex'), '-days', '2', '-extfile', extPath, '-out', certPath
  ])
  const cert = await readFile(certPath, 'utf8')
  return { key: await readFile(keyPath, 'utf8'), cert, fullchain: cert + authority.cert }
}
