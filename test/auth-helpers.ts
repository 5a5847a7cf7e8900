import { createHmac } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect } from 'node:net'
import { generateKeyPair, exportJWK, SignJWT, base64url, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import type { FastifyInstance, FastifyRequest, FastifyServerOptions } from 'fastify'
import type WebSocket from 'ws'
import type { ClientOptions } from 'ws'
import type { Test } from 'tap'
import wsGuard, { type WsGuardAuthOptions, type WsGuardOptions, type WsRouteOptions } from '../index.js'
import { startApp, tryConnect, type Outcome, type StartedApp } from './helpers.js'

/** A 48-byte HMAC secret, as a string. */
export const secret = 'test-secret-0123456789-abcdefghijklmnopqrstuvwxyz'
export const secretBytes = new TextEncoder().encode(secret)

/** Claim values that must never appear in a response, a close reason or a log line. */
export const sensitive = {
  sub: 'user-SENSITIVE-sub-4f2a',
  iss: 'https://issuer.SENSITIVE.example',
  aud: 'aud-SENSITIVE-9c1e'
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

/** Signs a JWT with `key`; `exp` defaults to one hour ahead, `iat` to now. */
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

/** Epoch seconds, `offset` seconds from now. */
export function now (offset = 0): number {
  return Math.floor(Date.now() / 1000) + offset
}

/** ws client options with `Authorization: Bearer <token>`. */
export function bearer (token: string, options: ClientOptions = {}): ClientOptions {
  return { ...options, headers: { ...options.headers, authorization: `Bearer ${token}` } }
}

export interface AuthApp extends StartedApp {
  /** How many times the route handler ran. */
  calls: number
}

export interface AuthAppOptions {
  /** Other plugin options (`auth` comes from the first argument). */
  plugin?: Omit<WsGuardOptions, 'auth'>
  /** Options of the `/ws` route, `config.wsGuard` included. */
  route?: WsRouteOptions
  /** Fastify options (logger serializers, http.maxHeaderSize...). */
  app?: FastifyServerOptions
  /** More routes and plugins, registered after the guard. */
  setup?: (app: FastifyInstance) => void | Promise<void>
}

/**
 * An app guarded with `auth` and one route `/ws` whose handler answers any message with
 * `request.wsUser` as JSON (a handler that speaks on open could race the client's listener).
 */
export async function authApp (t: Test, auth: WsGuardAuthOptions | undefined, options: AuthAppOptions = {}): Promise<AuthApp> {
  let calls = 0
  const started = await startApp(t, async (app) => {
    await app.register(wsGuard, { ...options.plugin, ...(auth === undefined ? {} : { auth }) })
    app.wsRoute('/ws', options.route ?? {}, userEcho(() => { calls++ }))
    await options.setup?.(app)
  }, options.app)
  return Object.defineProperty(started as AuthApp, 'calls', { get: () => calls, enumerable: true })
}

/** A handler that answers every message with the request's `wsUser` and its subprotocol. */
export function userEcho (onCall: () => void = () => {}) {
  return (socket: WebSocket, request: FastifyRequest): void => {
    onCall()
    socket.on('message', () => socket.send(JSON.stringify({ user: request.wsUser, protocol: socket.protocol })))
  }
}

/** Asks an open socket for the route's `wsUser` (see {@link userEcho}). */
export async function askUser (socket: WebSocket): Promise<{ user: JWTPayload | null, protocol: string }> {
  const reply = new Promise<string>((resolve) => socket.once('message', (data) => resolve(String(data))))
  socket.send('who')
  return JSON.parse(await reply)
}

/** Connects, expects the socket to open, answers with the user it was admitted as, and closes it. */
export async function expectOpen (t: Test, url: string, protocols: string | string[] = [], options: ClientOptions = {}): Promise<{ user: JWTPayload | null, protocol: string, headers: Record<string, string | string[] | undefined> }> {
  const outcome = await tryConnect(url, protocols, options)
  if (outcome.kind !== 'open') {
    t.fail(`expected the connection to open, got ${JSON.stringify(outcome)}`)
    return { user: null, protocol: '', headers: {} }
  }
  t.teardown(() => outcome.socket.terminate())
  const answer = await askUser(outcome.socket)
  outcome.socket.close()
  return { ...answer, headers: outcome.headers }
}

export interface Refusal {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: { statusCode: number, code: string, error: string, message: string }
  raw: string
}

/** Connects and expects an HTTP refusal with `status` and `code`; returns it for more checks. */
export async function expectRefused (t: Test, url: string, status: number, code: string, protocols: string | string[] = [], options: ClientOptions = {}): Promise<Refusal> {
  const outcome = await tryConnect(url, protocols, options)
  return checkRefusal(t, outcome, status, code)
}

export function checkRefusal (t: Test, outcome: Outcome, status: number, code: string): Refusal {
  if (outcome.kind !== 'refused') {
    t.fail(`expected an HTTP ${status} refusal, got ${JSON.stringify(outcome.kind === 'open' ? { kind: 'open' } : outcome)}`)
    if (outcome.kind === 'open') outcome.socket.terminate()
    return { status: 0, headers: {}, body: { statusCode: 0, code: '', error: '', message: '' }, raw: '' }
  }
  const body = JSON.parse(outcome.body) as Refusal['body']
  t.equal(outcome.status, status, `status ${status}`)
  t.equal(body.code, code, `code ${code}`)
  t.equal(body.statusCode, status, 'the body repeats the status')
  t.equal(outcome.headers.connection, 'close', 'the server closes the connection')
  return { status: outcome.status, headers: outcome.headers, body, raw: outcome.body }
}

export interface Challenge {
  scheme: string
  params: Record<string, string>
}

/** Parses `Bearer realm="x", error="y", error_description="z"` (RFC 6750 §3). */
export function parseChallenge (value: string | string[] | undefined): Challenge {
  if (typeof value !== 'string') throw new Error(`expected one WWW-Authenticate header, got ${JSON.stringify(value)}`)
  const space = value.indexOf(' ')
  const scheme = value.slice(0, space)
  const params: Record<string, string> = {}
  const pattern = /([a-z_]+)="([^"\\]*)"(?:, |$)/gy
  pattern.lastIndex = space + 1
  let end = space + 1
  let match: RegExpExecArray | null
  while ((match = pattern.exec(value)) !== null) {
    params[match[1]!] = match[2]!
    end = pattern.lastIndex
  }
  if (end !== value.length) throw new Error(`malformed challenge: ${value}`)
  return { scheme, params }
}

/** Asserts the `WWW-Authenticate` challenge of a refusal: `error` undefined for "no error attribute". */
export function checkChallenge (t: Test, refusal: Refusal, error: string | undefined, realm = 'websocket'): Challenge {
  const challenge = parseChallenge(refusal.headers['www-authenticate'])
  t.equal(challenge.scheme, 'Bearer', 'Bearer challenge')
  t.equal(challenge.params.realm, realm, 'realm')
  if (error === undefined) {
    t.same(Object.keys(challenge.params), ['realm'], 'no error attribute without a token (RFC 6750 §3.1)')
  } else {
    t.equal(challenge.params.error, error, `error="${error}"`)
    t.type(challenge.params.error_description, 'string', 'an error_description')
    t.ok(challenge.params.error_description!.length > 0 && challenge.params.error_description!.length <= 200, 'a short error_description')
  }
  return challenge
}

/** Asserts none of `needles` (tokens, claim values, jose's messages) occurs in `haystack`. */
export function assertNoLeak (t: Test, haystack: string, needles: readonly string[], where: string): void {
  for (const needle of needles) {
    t.notOk(haystack.includes(needle), `${where} does not contain ${needle.length > 40 ? needle.slice(0, 20) + '...' : needle}`)
  }
}

/** Everything a refusal shows a client: status line, headers, body. */
export function refusalText (refusal: Refusal): string {
  return JSON.stringify(refusal.headers) + refusal.raw
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

/** The guard's own log lines (those with a `wsGuard` field). */
export function guardLines (logs: { lines: Array<Record<string, unknown>> }): Array<Record<string, unknown>> {
  return logs.lines.filter((line) => line.wsGuard !== undefined)
}

/**
 * Like helpers.rawExchange, for requests the server may refuse before it read them whole:
 * a reset while writing is expected, the status line is what counts.
 */
export async function rawSend (port: number, request: string): Promise<{ status: number, text: string }> {
  const socket = connect({ port, host: '127.0.0.1' })
  let text = ''
  socket.on('data', (chunk) => { text += chunk.toString() })
  socket.on('error', () => {})
  await once(socket, 'connect')
  const closed = new Promise((resolve) => socket.on('close', resolve))
  socket.end(request)
  await closed
  return { status: Number(text.split(' ')[1]), text }
}
