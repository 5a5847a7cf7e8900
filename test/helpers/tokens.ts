import { createHmac } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { generateKeyPair, exportJWK, SignJWT, base64url, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import type { ClientOptions } from 'ws'
import type { Test } from 'tap'

/** The HMAC secret of the tests (48 bytes), as a string and as bytes. */
export const secret = 'test-secret-0123456789-abcdefghijklmnopqrstuvwxyz'
export const secretBytes = new TextEncoder().encode(secret)

/** Claim values that must never appear in a response, a close reason or a log line. */
export const sensitive = {
  sub: 'user-SENSITIVE-sub-4f2a',
  iss: 'https://issuer.SENSITIVE.example',
  aud: 'aud-SENSITIVE-9c1e'
}

/** jose's own message texts (they may quote claim values): none may reach a client or a log. */
export const joseMessages = [
  'claim timestamp check failed',
  'unexpected "',
  'missing required "',
  'Header Parameter value not allowed',
  'JWS Protected Header is invalid',
  'Failed to base64url decode',
  'Expected 200 OK from the JSON Web Key Set',
  'Failed to parse the JSON Web Key Set',
  'no applicable key found in the JSON Web Key Set',
  'request timed out'
]

/** Epoch seconds, `offset` seconds from now. */
export function now (offset = 0): number {
  return Math.floor(Date.now() / 1000) + offset
}

/** ws client options with `Authorization: Bearer <token>`. */
export function bearer (token: string, options: ClientOptions = {}): ClientOptions {
  return { ...options, headers: { ...options.headers, authorization: `Bearer ${token}` } }
}

export interface KeyPair {
  publicKey: CryptoKey
  privateKey: CryptoKey
  alg: string
}

const pairs = new Map<string, Promise<KeyPair>>()

/** A key pair for `alg`, generated once per test file (RSA generation is slow). */
export function keyPair (alg: string, id = ''): Promise<KeyPair> {
  const name = `${alg}/${id}`
  let pair = pairs.get(name)
  if (pair === undefined) {
    pair = generateKeyPair(alg, { extractable: true }).then((keys) => ({ ...keys, alg }))
    pairs.set(name, pair)
  }
  return pair
}

export interface MintOptions {
  alg?: string
  kid?: string
  typ?: string
  /** `false` for no `exp`; a number is absolute epoch seconds; a string is relative (`'1h'`). */
  exp?: number | string | false
  nbf?: number | string
  /** `false` for no `iat`; a number is absolute epoch seconds. Default: now. */
  iat?: number | false
  iss?: string
  aud?: string | string[]
  sub?: string
  header?: Record<string, unknown>
}

/** Signs a JWT with `key` (HS256 for bytes); `exp` defaults to one hour ahead, `iat` to now. */
export async function mint (key: CryptoKey | Uint8Array, claims: JWTPayload = {}, options: MintOptions = {}): Promise<string> {
  const alg = options.alg ?? (key instanceof Uint8Array ? 'HS256' : (key.algorithm as { name: string }).name === 'Ed25519' ? 'EdDSA' : guessAlg(key))
  const jwt = new SignJWT(claims).setProtectedHeader({
    alg,
    ...(options.kid === undefined ? {} : { kid: options.kid }),
    ...(options.typ === undefined ? {} : { typ: options.typ }),
    ...options.header
  })
  if (options.exp !== false) jwt.setExpirationTime(options.exp ?? '1h')
  if (options.iat !== false) jwt.setIssuedAt(options.iat)
  if (options.nbf !== undefined) jwt.setNotBefore(options.nbf)
  if (options.iss !== undefined) jwt.setIssuer(options.iss)
  if (options.aud !== undefined) jwt.setAudience(options.aud)
  if (options.sub !== undefined) jwt.setSubject(options.sub)
  return await jwt.sign(key)
}

function guessAlg (key: CryptoKey): string {
  const algorithm = key.algorithm as { name: string, namedCurve?: string }
  if (algorithm.name === 'RSA-PSS') return 'PS256'
  if (algorithm.name === 'ECDSA') return { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' }[algorithm.namedCurve!]!
  return 'RS256'
}

/** Builds a compact JWS from parts, for tokens jose refuses to produce (alg none, forged). */
export function rawToken (header: Record<string, unknown>, payload: unknown, signature = ''): string {
  const encode = (value: unknown): string => base64url.encode(JSON.stringify(value))
  return `${encode(header)}.${encode(payload)}.${signature}`
}

/** A compact JWS signed with HMAC-SHA256 by hand, for headers jose refuses to sign. */
export function hmacToken (header: Record<string, unknown>, payload: unknown, key: Uint8Array = secretBytes): string {
  const input = rawToken(header, payload).slice(0, -1)
  return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`
}

export interface JwksServer {
  url: string
  /** JWK Set requests served so far. */
  requests: number
  /** What the server answers: the key set, a hang, a 500, or a body that is not JSON. */
  mode: 'ok' | 'hang' | 'error' | 'not-json'
  keys: JWK[]
}

/** A real JWK Set endpoint on 127.0.0.1, closed (hanging requests included) in teardown. */
export async function startJwksServer (t: Test, keys: JWK[]): Promise<JwksServer> {
  const state: JwksServer = { url: '', requests: 0, mode: 'ok', keys }
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    state.requests++
    if (state.mode === 'hang') return
    if (state.mode === 'error') {
      response.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"boom"}')
      return
    }
    if (state.mode === 'not-json') {
      response.writeHead(200, { 'content-type': 'text/html' }).end('<html>maintenance</html>')
      return
    }
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys }))
  })
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  state.url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}/.well-known/jwks.json`
  return state
}

/** The public JWK of `pair`, with `kid` and `alg`, as a JWK Set serves it. */
export async function publicJwk (pair: KeyPair, kid: string): Promise<JWK> {
  return { ...await exportJWK(pair.publicKey), kid, alg: pair.alg, use: 'sig' }
}
