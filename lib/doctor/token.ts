import { createPrivateKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { SignJWT, type JWTPayload } from 'jose'
import { parseOptions } from './args.js'
import { exitCodes, type DoctorIo } from './types.js'

export const tokenHelp = `Usage: fastify-ws-guard token (--secret-env VAR | --private-key FILE) --sub S [options]

Prints a signed JWT for local testing of your own app. Never use it to mint
production tokens: those come from your identity provider or login.

Key (exactly one):
  --secret-env VAR    HS256 with the secret in environment variable VAR (>= 32
                      bytes; an environment variable keeps it out of shell history)
  --private-key FILE  a PEM private key (PKCS#8): ES256/384/512, RS256 or EdDSA,
                      chosen from the key

Claims:
  --sub S             subject (required)
  --aud A             audience (repeatable)
  --iss I             issuer
  --exp SPAN          lifetime, as 30s, 15m, 1h, 7d (default 1h)
  --claim K=V         any other claim (repeatable); V is read as JSON when it
                      parses (3, true, ["a","b"]), else as a string
  --kid K             key id in the header
  -h, --help          show this help
`

const spanShape = /^\d+(?:s|m|h|d)$/
// Set by their own options (iat: now), so that a claim cannot contradict them.
const reserved = new Set(['sub', 'aud', 'iss', 'exp', 'iat'])
const curves: Record<string, string> = { prime256v1: 'ES256', secp384r1: 'ES384', secp521r1: 'ES512' }

/** `fastify-ws-guard token …`: prints one signed token and returns the exit code. */
export async function runToken (argv: readonly string[], io: DoctorIo): Promise<number> {
  let minted: string | 'help'
  try {
    minted = await mint(argv, io.env ?? process.env)
  } catch (err) {
    io.stderr.write(`fastify-ws-guard token: ${(err as Error).message}\n\n${tokenHelp}`)
    return exitCodes.usage
  }
  io.stdout.write(minted === 'help' ? tokenHelp : minted + '\n')
  return exitCodes.ok
}

async function mint (argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Promise<string | 'help'> {
  const { values } = parseOptions({
    args: [...argv],
    strict: true,
    options: {
      'secret-env': { type: 'string' },
      'private-key': { type: 'string' },
      sub: { type: 'string' },
      aud: { type: 'string', multiple: true, default: [] },
      iss: { type: 'string' },
      exp: { type: 'string', default: '1h' },
      claim: { type: 'string', multiple: true, default: [] },
      kid: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) return 'help'
  const key = signingKey(values['secret-env'], values['private-key'], env)
  if (values.sub === undefined || values.sub === '') throw new Error('--sub is required')
  if (!spanShape.test(values.exp)) throw new Error(`--exp must be a span such as 30s, 15m, 1h or 7d, got ${JSON.stringify(values.exp)}`)
  const jwt = new SignJWT(claims(values.claim))
    .setProtectedHeader(values.kid === undefined ? { alg: key.alg } : { alg: key.alg, kid: values.kid })
    .setSubject(values.sub)
    .setIssuedAt()
    .setExpirationTime(values.exp)
  if (values.aud.length > 0) jwt.setAudience(values.aud.length === 1 ? values.aud[0]! : values.aud)
  if (values.iss !== undefined) jwt.setIssuer(values.iss)
  return await jwt.sign(key.key)
}

function signingKey (secretEnv: string | undefined, keyFile: string | undefined, env: Readonly<Record<string, string | undefined>>): { alg: string, key: Uint8Array | KeyObject } {
  if ((secretEnv === undefined) === (keyFile === undefined)) throw new Error('give exactly one of --secret-env VAR and --private-key FILE')
  if (secretEnv !== undefined) {
    const secret = env[secretEnv]
    if (secret === undefined || secret === '') throw new Error(`environment variable ${secretEnv} is unset or empty`)
    const bytes = new TextEncoder().encode(secret)
    if (bytes.length < 32) throw new Error(`the secret in ${secretEnv} is ${bytes.length} bytes; HS256 needs at least 32 (the guard refuses shorter ones)`)
    return { alg: 'HS256', key: bytes }
  }
  let key: KeyObject
  try {
    key = createPrivateKey(readFileSync(keyFile!, 'utf8'))
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new Error(code?.startsWith('E') === true && !code.startsWith('ERR_') ? `cannot read --private-key ${keyFile}: ${code}` : `--private-key ${keyFile} holds no PEM private key`)
  }
  return { alg: algorithmOf(key), key }
}

function algorithmOf (key: KeyObject): string {
  switch (key.asymmetricKeyType) {
    case 'ec': {
      // An EC key always names its curve.
      const alg = curves[key.asymmetricKeyDetails!.namedCurve!]
      if (alg !== undefined) return alg
      break
    }
    case 'rsa': return 'RS256'
    case 'ed25519': return 'EdDSA'
  }
  throw new Error(`--private-key: a ${key.asymmetricKeyType} key signs no algorithm the guard accepts; use a P-256, P-384, P-521, RSA (rsaEncryption) or Ed25519 key`)
}

function claims (pairs: readonly string[]): JWTPayload {
  const payload: JWTPayload = {}
  for (const pair of pairs) {
    const at = pair.indexOf('=')
    if (at <= 0) throw new Error(`--claim must be K=V, got ${JSON.stringify(pair)}`)
    const name = pair.slice(0, at)
    if (reserved.has(name)) throw new Error(`--claim ${name}: set sub, aud, iss and exp with --sub, --aud, --iss and --exp; iat is always now`)
    payload[name] = parseValue(pair.slice(at + 1))
  }
  return payload
}

function parseValue (text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}
