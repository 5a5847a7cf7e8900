import { generateKeyPairSync } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'tap'
import { decodeProtectedHeader, jwtVerify } from 'jose'
import { runCli } from '../../lib/doctor/index.js'
import { authApp } from '../helpers/app.js'
import { tryConnect } from '../helpers/clients.js'
import { capture } from '../helpers/doctor.js'
import { bearer } from '../helpers/tokens.js'

/* `fastify-ws-guard token`: a development token the app's own key verifies. */

const secret = 'token-cli-secret-0123456789-abcdefghijkl'

async function token (args: readonly string[], env: Record<string, string> = { WS_SECRET: secret }): Promise<{ code: number, out: string, err: string }> {
  const io = capture(env)
  const code = await runCli(['token', ...args], io)
  return { code, out: io.out(), err: io.err() }
}

test('an HS256 token from a secret in the environment, accepted by a guarded app with that secret', async (t) => {
  const run = await token(['--secret-env', 'WS_SECRET', '--sub', 'alice', '--aud', 'chat', '--iss', 'dev', '--exp', '15m', '--claim', 'role=admin', '--claim', 'n=3', '--claim', 'tags=["a","b"]', '--kid', 'k1'])
  t.equal(run.code, 0)
  t.equal(run.err, '')
  t.match(run.out, /^[\w-]+\.[\w-]+\.[\w-]+\n$/, 'the token alone, on one line')
  const jwt = run.out.trim()
  t.same(decodeProtectedHeader(jwt), { alg: 'HS256', kid: 'k1' })
  const { payload } = await jwtVerify(jwt, new TextEncoder().encode(secret), { audience: 'chat', issuer: 'dev' })
  t.match(payload, { sub: 'alice', role: 'admin', n: 3, tags: ['a', 'b'] })
  t.ok(payload.exp! - payload.iat! === 900, 'it lives 15 minutes')
  t.notOk(run.out.includes(secret) || run.err.includes(secret), 'the secret is never printed')

  const app = await authApp(t, { secret, audience: 'chat' })
  const outcome = await tryConnect(app.url('/ws'), [], bearer(jwt))
  t.equal(outcome.kind, 'open', 'the guard accepts it')
  if (outcome.kind === 'open') outcome.socket.terminate()
})

test('a token signed with a PEM private key, its algorithm chosen from the key', async (t) => {
  const dir = t.testdir()
  const cases: Array<[string, Parameters<typeof generateKeyPairSync>[1] & object, string]> = [
    ['ec256.pem', { namedCurve: 'P-256' }, 'ES256'],
    ['ec384.pem', { namedCurve: 'P-384' }, 'ES384'],
    ['ec521.pem', { namedCurve: 'P-521' }, 'ES512']
  ]
  for (const [file, options, alg] of cases) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', options as { namedCurve: string })
    writeFileSync(join(dir, file), privateKey.export({ type: 'pkcs8', format: 'pem' }))
    const run = await token(['--private-key', join(dir, file), '--sub', 'bob'])
    t.equal(run.code, 0)
    const { payload, protectedHeader } = await jwtVerify(run.out.trim(), publicKey)
    t.equal(protectedHeader.alg, alg)
    t.equal(payload.sub, 'bob')
    t.equal(payload.exp! - payload.iat!, 3600, 'an hour by default')
  }
  for (const [type, alg] of [['rsa', 'RS256'], ['ed25519', 'EdDSA']] as const) {
    const { privateKey, publicKey } = type === 'ed25519' ? generateKeyPairSync('ed25519') : generateKeyPairSync(type as 'rsa', { modulusLength: 2048 })
    writeFileSync(join(dir, `${type}.pem`), privateKey.export({ type: 'pkcs8', format: 'pem' }))
    const run = await token(['--private-key', join(dir, `${type}.pem`), '--sub', 'bob'])
    t.equal(run.code, 0, type)
    t.equal((await jwtVerify(run.out.trim(), publicKey)).protectedHeader.alg, alg)
  }
  const { privateKey } = generateKeyPairSync('x25519')
  writeFileSync(join(dir, 'x25519.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }))
  const x = await token(['--private-key', join(dir, 'x25519.pem'), '--sub', 'bob'])
  t.equal(x.code, 2)
  t.match(x.err, /a x25519 key signs no algorithm the guard accepts/)
  const pss = generateKeyPairSync('rsa-pss', { modulusLength: 2048 })
  writeFileSync(join(dir, 'pss.pem'), pss.privateKey.export({ type: 'pkcs8', format: 'pem' }))
  t.match((await token(['--private-key', join(dir, 'pss.pem'), '--sub', 'bob'])).err, /a rsa-pss key signs no algorithm/)
  const secp256k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' })
  writeFileSync(join(dir, 'k1.pem'), secp256k1.privateKey.export({ type: 'pkcs8', format: 'pem' }))
  t.match((await token(['--private-key', join(dir, 'k1.pem'), '--sub', 'bob'])).err, /a ec key signs no algorithm/)
})

test('usage errors: one clear line and the help, exit code 2', async (t) => {
  const dir = t.testdir({ 'not-a-key.pem': 'hello' })
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [['--sub', 'a'], {}, /give exactly one of --secret-env VAR and --private-key FILE/],
    [['--secret-env', 'WS_SECRET', '--private-key', 'x', '--sub', 'a'], {}, /give exactly one/],
    [['--secret-env', 'WS_SECRET', '--sub', 'a'], {}, /environment variable WS_SECRET is unset or empty/],
    [['--secret-env', 'WS_SECRET', '--sub', 'a'], { WS_SECRET: 'short' }, /is 5 bytes; HS256 needs at least 32/],
    [['--secret-env', 'WS_SECRET'], { WS_SECRET: secret }, /--sub is required/],
    [['--secret-env', 'WS_SECRET', '--sub', 'a', '--exp', '1 hour'], { WS_SECRET: secret }, /--exp must be a span such as 30s, 15m, 1h or 7d/],
    [['--secret-env', 'WS_SECRET', '--sub', 'a', '--claim', 'novalue'], { WS_SECRET: secret }, /--claim must be K=V/],
    [['--secret-env', 'WS_SECRET', '--sub', 'a', '--claim', 'exp=1'], { WS_SECRET: secret }, /--claim exp: set sub, aud, iss and exp with/],
    [['--private-key', join(dir, 'missing.pem'), '--sub', 'a'], {}, /cannot read --private-key .*: ENOENT/],
    [['--private-key', join(dir, 'not-a-key.pem'), '--sub', 'a'], {}, /holds no PEM private key/],
    [['--secret-env', 'WS_SECRET', '--sub', 'a', '--bogus'], { WS_SECRET: secret }, /^fastify-ws-guard token: unknown option --bogus\n/],
    [['--secret-evn', 'WS_SECRET', '--sub', 'a'], { WS_SECRET: secret }, /^fastify-ws-guard token: unknown option --secret-evn; did you mean --secret-env\?\n/],
    [['--secret-env', 'WS_SECRET', '--sub'], { WS_SECRET: secret }, /^fastify-ws-guard token: --sub needs a value\n/],
    [['--secret-env', 'WS_SECRET', '--sub', 'a', 'b'], { WS_SECRET: secret }, /^fastify-ws-guard token: unexpected argument "b"\n/],
    [['--secret-env', 'WS_SECRET', '--sub', 'a', '--', '--exp'], { WS_SECRET: secret }, /^fastify-ws-guard token: unexpected argument "--exp"\n/],
    [['--help=yes'], {}, /^fastify-ws-guard token: --help takes no value\n/]
  ]
  for (const [args, env, message] of cases) {
    const run = await token(args, env)
    t.equal(run.code, 2, args.join(' '))
    t.equal(run.out, '')
    t.match(run.err, message)
    t.match(run.err, /Usage: fastify-ws-guard token/)
  }
})

test('--help prints the usage; the CLI lists the command', async (t) => {
  const help = await token(['--help'])
  t.equal(help.code, 0)
  t.match(help.out, /^Usage: fastify-ws-guard token/)
  const io = capture()
  t.equal(await runCli(['--help'], io), 0)
  t.match(io.out(), /token \(--secret-env VAR \| --private-key FILE\) --sub S/)
})

test('several audiences; the environment defaults to the process\'s', async (t) => {
  process.env.FASTIFY_WS_GUARD_TOKEN_TEST = secret
  t.teardown(() => { delete process.env.FASTIFY_WS_GUARD_TOKEN_TEST })
  const out: string[] = []
  const code = await runCli(['token', '--secret-env', 'FASTIFY_WS_GUARD_TOKEN_TEST', '--sub', 'carol', '--aud', 'chat', '--aud', 'feed'], { stdout: { write: (text: string) => out.push(text) }, stderr: { write: () => {} } })
  t.equal(code, 0)
  const { payload } = await jwtVerify(out.join('').trim(), new TextEncoder().encode(secret), { audience: 'feed' })
  t.same(payload.aud, ['chat', 'feed'])
})
