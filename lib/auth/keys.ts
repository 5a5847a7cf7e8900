import { createPublicKey, KeyObject, webcrypto, type JsonWebKey as NodeJsonWebKey } from 'node:crypto'
import { types } from 'node:util'
import type { FastifyBaseLogger } from 'fastify'
import { createRemoteJWKSet, customFetch, importSPKI, type JWK, type JWTVerifyGetKey } from 'jose'
import { InvalidOptionError } from '../errors.js'
import { assertKnownKeys, assertPlainObject, describe, optionalInteger } from '../validate.js'

/** Where verification keys come from; exactly one per auth configuration. */
export interface KeySourceOptions {
  /** HMAC secret (HS256/384/512), at least 32 bytes. */
  secret?: string | Uint8Array | undefined
  /** A public key: PEM (SPKI), a JWK, a KeyObject or a CryptoKey (RS*, PS*, ES*, EdDSA). */
  publicKey?: string | JWK | KeyObject | webcrypto.CryptoKey | undefined
  /** A JWK Set URL, fetched and cached with jose's `createRemoteJWKSet`. */
  jwksUrl?: string | URL | undefined
  /** Passed through to `createRemoteJWKSet`. */
  jwks?: { timeoutDuration?: number | undefined, cooldownDuration?: number | undefined, cacheMaxAge?: number | undefined } | undefined
  /** A jose key resolver `(protectedHeader, token) => key`. */
  getKey?: JWTVerifyGetKey | undefined
}

export const keySourceKeys = ['secret', 'publicKey', 'jwksUrl', 'jwks', 'getKey'] as const

/** A key source ready for `jwtVerify`: the resolver and the algorithms that fit it. */
export interface KeySource {
  readonly kind: 'secret' | 'publicKey' | 'jwksUrl' | 'getKey'
  readonly resolve: JWTVerifyGetKey
  readonly algorithms: readonly string[]
  /** A remote JWK Set's failures, told to the operator (see {@link RemoteKeysMonitor}). */
  readonly remote?: RemoteKeysMonitor
}

/**
 * What went wrong with a remote JWK Set, in the words an operator acts on (refused, timeout,
 * an HTTP status, not JSON), and a warning at most once per cooldown: every handshake fails
 * while the set is unreachable, and one line says it as well as a thousand.
 */
export class RemoteKeysMonitor {
  readonly host: string
  readonly #cooldown: number
  #lastStatus = 0
  #warnedAt = -Infinity

  constructor (url: URL, cooldown: number) {
    this.host = url.host
    this.#cooldown = cooldown
  }

  /** jose's fetch, watched for the HTTP status it does not report. */
  readonly fetch = async (url: string, init: RequestInit): Promise<Response> => {
    const response = await fetch(url, init)
    this.#lastStatus = response.status
    return response
  }

  /** Why fetching the set failed; never its content. */
  cause (err: unknown): string {
    const { code, cause } = err as { code?: unknown, cause?: { code?: unknown } }
    if (code === 'ERR_JWKS_TIMEOUT') return 'timeout'
    if (code === 'ERR_JWKS_INVALID') return 'not a JSON Web Key Set'
    if (typeof cause?.code === 'string') return cause.code === 'ECONNREFUSED' ? 'connection refused' : cause.code
    if (code === 'ERR_JOSE_GENERIC') return this.#lastStatus === 200 ? 'not JSON' : `HTTP ${this.#lastStatus}`
    return typeof code === 'string' ? code : 'unknown'
  }

  /** One warn line per cooldown, with the host and the cause. */
  report (log: FastifyBaseLogger, cause: string): void {
    const now = Date.now()
    if (now - this.#warnedAt < this.#cooldown) return
    this.#warnedAt = now
    log.warn({ wsGuard: { code: 'FST_WS_GUARD_KEYS_UNAVAILABLE', jwksHost: this.host, cause } }, `websocket guard cannot use the JSON Web Key Set at ${this.host}: ${cause}; every authenticated handshake is refused with 503 meanwhile`)
  }
}

const hmac = ['HS256', 'HS384', 'HS512']
const rsa = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']
const asymmetric = [...rsa, 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']
const curves: Record<string, string> = { prime256v1: 'ES256', secp384r1: 'ES384', secp521r1: 'ES512' }

/**
 * Imports the one configured key source at registration: keys are parsed and checked here,
 * never per request. HMAC is never accepted with public keys or a JWK Set.
 */
export function createKeySource (options: KeySourceOptions, name: string): KeySource {
  const sources = ['secret', 'publicKey', 'jwksUrl', 'getKey'] as const
  const given = sources.filter((key) => options[key] !== undefined)
  if (given.length !== 1) {
    // `secret: process.env.WS_SECRET` with the variable unset: say so, not "none".
    const unset = sources.filter((key) => Object.hasOwn(options, key) && options[key] === undefined)
    const hint = given.length === 0 && unset.length > 0 ? ` (${unset.map((key) => `${name}.${key}`).join(' and ')} ${unset.length === 1 ? 'was' : 'were'} given but undefined: an unset environment variable?)` : ''
    throw new InvalidOptionError(`${name} needs exactly one key source (secret, publicKey, jwksUrl or getKey), got ${given.length === 0 ? 'none' : given.join(' and ')}${hint}`)
  }
  if (options.jwks !== undefined && given[0] !== 'jwksUrl') {
    throw new InvalidOptionError(`${name}.jwks only applies with jwksUrl`)
  }
  switch (given[0]!) {
    case 'secret': return secretSource(options.secret, name)
    case 'publicKey': return publicKeySource(options.publicKey, name)
    case 'jwksUrl': return jwksSource(options.jwksUrl, options.jwks, name)
    case 'getKey': return getKeySource(options.getKey, name)
  }
}

function secretSource (secret: unknown, name: string): KeySource {
  const bytes = typeof secret === 'string' ? new TextEncoder().encode(secret) : secret
  if (!(bytes instanceof Uint8Array)) {
    throw new InvalidOptionError(`${name}.secret must be a string or a Uint8Array, got ${describe(secret)}`)
  }
  if (bytes.byteLength < 32) {
    throw new InvalidOptionError(`${name}.secret is ${bytes.byteLength} bytes; HMAC secrets need at least 32 random bytes (generate one with: openssl rand -base64 32)`)
  }
  return {
    kind: 'secret',
    algorithms: hmac,
    // jose would import a raw secret on every verify.
    resolve: importedOncePerAlgorithm((alg) => webcrypto.subtle.importKey('raw', bytes, { name: 'HMAC', hash: `SHA-${alg.slice(2)}` }, false, ['verify']) as Promise<webcrypto.CryptoKey>)
  }
}

/** A resolver that imports the key for an algorithm on first use and hands out that one CryptoKey after. */
function importedOncePerAlgorithm (importFor: (alg: string) => Promise<webcrypto.CryptoKey>): JWTVerifyGetKey {
  const keys = new Map<string, Promise<webcrypto.CryptoKey>>()
  return ({ alg }) => {
    let key = keys.get(alg)
    if (key === undefined) {
      key = importFor(alg)
      keys.set(alg, key)
    }
    return key
  }
}

function publicKeySource (publicKey: unknown, name: string): KeySource {
  // createPublicKey() would quietly derive the public half of a private key: refuse those.
  const isPrivate = (typeof publicKey === 'string' && publicKey.includes('PRIVATE KEY')) ||
    (typeof publicKey === 'object' && publicKey !== null && ('d' in publicKey || (publicKey as { type?: unknown }).type === 'private'))
  if (isPrivate) {
    throw new InvalidOptionError(`${name}.publicKey is a private key; pass the public key only (openssl pkey -in private.pem -pubout)`)
  }
  let key: KeyObject
  try {
    if (typeof publicKey === 'string') key = createPublicKey(publicKey)
    else if (publicKey instanceof KeyObject) key = publicKey
    else if (types.isCryptoKey(publicKey)) key = KeyObject.from(publicKey as webcrypto.CryptoKey)
    else if (typeof publicKey === 'object' && publicKey !== null) key = createPublicKey({ key: publicKey as NodeJsonWebKey, format: 'jwk' })
    else throw new TypeError('unsupported type')
  } catch {
    throw new InvalidOptionError(`${name}.publicKey must be a PEM public key (-----BEGIN PUBLIC KEY-----), a public JWK, a KeyObject or a CryptoKey; it could not be imported from ${describe(publicKey)}`)
  }
  if (key.type !== 'public') {
    throw new InvalidOptionError(`${name}.publicKey is a ${key.type} key; pass the public key (never a secret or private key)`)
  }
  const spki = key.export({ type: 'spki', format: 'pem' }) as string
  return {
    kind: 'publicKey',
    algorithms: algorithmsFor(key, name),
    // Handed a KeyObject, jose looks it up in a WeakMap and re-checks it on every verify.
    resolve: importedOncePerAlgorithm((alg) => importSPKI(spki, alg))
  }
}

/** The algorithms a public key verifies; a key no supported algorithm can use fails registration. */
function algorithmsFor (key: KeyObject, name: string): readonly string[] {
  const type = key.asymmetricKeyType
  if (type === 'rsa') {
    if (key.asymmetricKeyDetails!.modulusLength! < 2048) {
      throw new InvalidOptionError(`${name}.publicKey is an RSA key shorter than 2048 bits, which JWS does not accept; use a 2048-bit or longer key`)
    }
    return rsa
  }
  if (type === 'ec') {
    const alg = curves[key.asymmetricKeyDetails!.namedCurve!]
    if (alg !== undefined) return [alg]
  }
  if (type === 'ed25519') return ['EdDSA', 'Ed25519']
  const detail = type === 'ec' ? `an EC key on ${key.asymmetricKeyDetails?.namedCurve}` : `a ${type} key`
  throw new InvalidOptionError(`${name}.publicKey is ${detail}, which no supported JWS algorithm verifies; use RSA (2048+ bits, also for PS256), EC P-256/P-384/P-521 or Ed25519`)
}

function jwksSource (jwksUrl: unknown, jwks: KeySourceOptions['jwks'], name: string): KeySource {
  let url: URL
  try {
    url = new URL(String(jwksUrl))
  } catch {
    throw new InvalidOptionError(`${name}.jwksUrl must be an absolute http(s) URL, got ${describe(jwksUrl)}`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new InvalidOptionError(`${name}.jwksUrl must be an http(s) URL, got ${url.protocol}`)
  }
  const options = normalizeJwksOptions(jwks, `${name}.jwks`)
  // jose's own default: it refetches no sooner after a failure either.
  const remote = new RemoteKeysMonitor(url, options.cooldownDuration ?? 30_000)
  const resolve = createRemoteJWKSet(url, { ...options, [customFetch]: remote.fetch })
  return { kind: 'jwksUrl', algorithms: asymmetric, resolve, remote }
}

function normalizeJwksOptions (jwks: unknown, name: string): NonNullable<KeySourceOptions['jwks']> {
  if (jwks === undefined) return {}
  assertPlainObject(jwks, name)
  assertKnownKeys(jwks, ['timeoutDuration', 'cooldownDuration', 'cacheMaxAge'], name)
  const options: NonNullable<KeySourceOptions['jwks']> = {}
  for (const key of ['timeoutDuration', 'cooldownDuration', 'cacheMaxAge'] as const) {
    if (jwks[key] !== undefined) options[key] = optionalInteger(jwks[key], 0, `${name}.${key}`, 0)
  }
  return options
}

function getKeySource (getKey: unknown, name: string): KeySource {
  if (typeof getKey !== 'function') {
    throw new InvalidOptionError(`${name}.getKey must be a function (protectedHeader, token) => key, got ${describe(getKey)}`)
  }
  return { kind: 'getKey', algorithms: asymmetric, resolve: getKey as JWTVerifyGetKey }
}

/** Checks an explicit `algorithms` allowlist against the key source. */
export function checkAlgorithms (value: unknown, source: KeySource, name: string): readonly string[] {
  if (value === undefined) return source.algorithms
  if (!Array.isArray(value) || value.length === 0 || !value.every((alg) => typeof alg === 'string')) {
    throw new InvalidOptionError(`${name}.algorithms must be a non-empty array of JWS algorithm names, as in ['ES256']`)
  }
  for (const alg of value as string[]) {
    if (![...hmac, ...asymmetric].includes(alg)) {
      throw new InvalidOptionError(`${name}.algorithms: "${alg}" is not a supported JWS algorithm (${[...hmac, ...asymmetric].join(', ')})`)
    }
    if (source.kind === 'secret' ? !hmac.includes(alg) : (hmac.includes(alg) && source.kind !== 'getKey')) {
      throw new InvalidOptionError(`${name}.algorithms: "${alg}" does not fit the ${source.kind} key source${hmac.includes(alg) ? ' (HMAC is never accepted with public keys or a JWK Set)' : ''}`)
    }
    if (source.kind === 'publicKey' && !source.algorithms.includes(alg)) {
      throw new InvalidOptionError(`${name}.algorithms: "${alg}" does not fit the public key's type; it fits ${source.algorithms.join(', ')}`)
    }
  }
  return Object.freeze([...value as string[]])
}
