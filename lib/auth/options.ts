import type { FastifyRequest } from 'fastify'
import type { JWTPayload, JWTVerifyOptions } from 'jose'
import type { WebSocket } from 'ws'
import type { WsUser } from '../types.js'
import { InvalidOptionError } from '../errors.js'
import {
  assertKnownKeys,
  assertPlainObject,
  describe,
  nonEmptyString,
  optionalBoolean,
  optionalFunction,
  optionalInteger,
  quotedStringSafe,
  stringList,
  stringOrList,
  tokenShape
} from '../validate.js'
import { checkAlgorithms, createKeySource, keySourceKeys, type KeySource, type KeySourceOptions } from './keys.js'
import { VerifiedTokenCache } from './token-cache.js'
import type { TokenSource, TokenSourceSettings } from './token-sources.js'
import type { VerifySettings } from './verify.js'

/**
 * JWT authentication before the upgrade. Exactly one key source (`secret`, `publicKey`,
 * `jwksUrl` or `getKey`); everything else is optional.
 */
export interface WsGuardAuthOptions<User = WsUser> extends KeySourceOptions {
  /** Accepted JWS algorithms. Default: what fits the key; HMAC never with public keys or JWKS. */
  algorithms?: readonly string[] | undefined
  /** Expected `iss`. */
  issuer?: string | readonly string[] | undefined
  /** Expected `aud`. */
  audience?: string | readonly string[] | undefined
  /** Expected `sub`. */
  subject?: string | undefined
  /** Expected `typ` header, as in `'at+jwt'`. */
  typ?: string | undefined
  /** Seconds of clock skew tolerated on `exp`, `nbf` and `iat`. Default `5`. */
  clockTolerance?: number | undefined
  /** Maximum age of the token from its `iat`, in seconds or as `'2h'`. */
  maxTokenAge?: number | string | undefined
  /** Claims that must be present. `exp` is always required unless `allowMissingExp`. */
  requiredClaims?: readonly string[] | undefined
  /** Accept tokens without `exp` (they would never expire). Default `false`. */
  allowMissingExp?: boolean | undefined
  /** Longest token accepted, checked before jose parses it. Default `8192`. */
  maxTokenLength?: number | undefined
  /** Where tokens are looked for. Default `['header', 'protocol']`. */
  tokenSources?: ReadonlyArray<Exclude<TokenSource, 'custom'>> | undefined
  /** Cookie holding the token with the `'cookie'` source. Default `'access_token'`. */
  cookieName?: string | undefined
  /** Query parameter holding the token with the `'query'` source. Default `'access_token'`. */
  queryParam?: string | undefined
  /** A custom, synchronous token extractor, looked at after `tokenSources`. */
  getToken?: ((request: FastifyRequest) => string | undefined) | undefined
  /** `realm` of the `WWW-Authenticate` challenge. Default `'websocket'`. */
  realm?: string | undefined
  /** Extra authorization after verification; `false` answers 403 insufficient_scope. */
  authorize?: ((user: User, request: FastifyRequest) => boolean | Promise<boolean>) | undefined
  /** Revocation check after verification; `true` answers 401 invalid_token. */
  isRevoked?: ((user: User, request: FastifyRequest) => boolean | Promise<boolean>) | undefined
  /** The verified-token cache: on by default (`{ max: 10000 }`), `false` to turn it off. */
  cache?: boolean | { max?: number | undefined } | undefined
  /** Close the connection with 4401 `token expired` when `exp` passes. Default `true`. */
  closeOnExpiry?: boolean | undefined
  /**
   * Tells the app `before` ms ahead of `exp`, so that it can ask its client for a fresh token
   * in its own protocol and apply it with `request.wsRefresh()`. `expiresAt` is epoch ms.
   * @example expiryNotice: { before: 60_000, notify: (socket) => socket.send('{"type":"token-expiring"}') }
   */
  expiryNotice?: {
    before: number
    notify: (socket: WebSocket, request: FastifyRequest, expiresAt: number) => void | Promise<void>
  } | undefined
  /**
   * Runs `isRevoked` and `authorize` again on every open connection once per `interval` ms,
   * spread over the interval; failures close with 4401 `token revoked` or 4403 `forbidden`.
   * (`app.wsGuard.revoke()` needs no recheck: it closes what it revokes at once.)
   */
  recheck?: { interval: number } | undefined
}

/** Validated authentication settings of one route. */
export interface AuthSettings {
  readonly verify: VerifySettings
  readonly sources: TokenSourceSettings
  readonly realm: string
  readonly authorize: WsGuardAuthOptions<JWTPayload>['authorize']
  readonly isRevoked: WsGuardAuthOptions<JWTPayload>['isRevoked']
  readonly cache: VerifiedTokenCache | undefined
  readonly clockTolerance: number
  readonly closeOnExpiry: boolean
  readonly expiryNotice: Readonly<NonNullable<WsGuardAuthOptions['expiryNotice']>> | undefined
  /** `recheck.interval`, in ms. */
  readonly recheck: number | undefined
  /** The options these settings came from, to merge route overrides into. */
  readonly options: Readonly<Record<string, unknown>>
}

const authKeys = [
  ...keySourceKeys, 'algorithms', 'issuer', 'audience', 'subject', 'typ', 'clockTolerance', 'maxTokenAge',
  'requiredClaims', 'allowMissingExp', 'maxTokenLength', 'tokenSources', 'cookieName', 'queryParam', 'getToken',
  'realm', 'authorize', 'isRevoked', 'cache', 'closeOnExpiry', 'expiryNotice', 'recheck'
] as const
const sourceNames: readonly string[] = ['header', 'protocol', 'cookie', 'query']

/**
 * Validates `auth` once. A route's `auth` merges over the plugin's: a route that names its own
 * key source replaces the plugin's, otherwise the plugin's imported keys are shared.
 */
export function normalizeAuth (value: unknown, name: string, inherited: AuthSettings | undefined): AuthSettings | undefined {
  if (value === undefined || value === false) return undefined
  assertPlainObject(value, name)
  assertKnownKeys(value, authKeys, name)
  const ownKeySource = keySourceKeys.some((key) => value[key] !== undefined)
  const options: Record<string, unknown> = { ...inherited?.options }
  if (ownKeySource) for (const key of keySourceKeys) delete options[key]
  Object.assign(options, value)

  const keys: KeySource = ownKeySource || inherited === undefined
    ? createKeySource(options as KeySourceOptions, name)
    : inherited.verify.keys
  const allowMissingExp = optionalBoolean(options.allowMissingExp, false, `${name}.allowMissingExp`)
  const requiredClaims = stringList(options.requiredClaims, `${name}.requiredClaims`) ?? []
  const clockTolerance = optionalInteger(options.clockTolerance, 5, `${name}.clockTolerance`, 0)
  const jwtOptions: JWTVerifyOptions = {
    algorithms: [...checkAlgorithms(options.algorithms, keys, name)],
    requiredClaims: allowMissingExp || requiredClaims.includes('exp') ? [...requiredClaims] : [...requiredClaims, 'exp'],
    clockTolerance
  }
  const issuer = stringOrList(options.issuer, `${name}.issuer`)
  if (issuer !== undefined) jwtOptions.issuer = issuer
  const audience = stringOrList(options.audience, `${name}.audience`)
  if (audience !== undefined) jwtOptions.audience = audience
  if (options.subject !== undefined) jwtOptions.subject = nonEmptyString(options.subject, `${name}.subject`)
  if (options.typ !== undefined) jwtOptions.typ = nonEmptyString(options.typ, `${name}.typ`)
  if (options.maxTokenAge !== undefined) jwtOptions.maxTokenAge = maxTokenAge(options.maxTokenAge, `${name}.maxTokenAge`)

  const sources = normalizeSources(options, name)
  // A route that shares the plugin's key source and claims checks shares its cache too.
  const shareCache = inherited !== undefined && !ownKeySource && sameVerification(inherited.options, options)
  return Object.freeze({
    verify: Object.freeze({
      keys,
      options: Object.freeze(jwtOptions),
      maxTokenLength: optionalInteger(options.maxTokenLength, 8192, `${name}.maxTokenLength`, 16)
    }),
    sources,
    realm: quotedStringSafe(options.realm ?? 'websocket', `${name}.realm`),
    authorize: optionalFunction<AuthSettings['authorize']>(options.authorize, `${name}.authorize`),
    isRevoked: optionalFunction<AuthSettings['isRevoked']>(options.isRevoked, `${name}.isRevoked`),
    cache: shareCache ? inherited.cache : normalizeCache(options.cache, `${name}.cache`),
    clockTolerance,
    closeOnExpiry: optionalBoolean(options.closeOnExpiry, true, `${name}.closeOnExpiry`),
    expiryNotice: normalizeExpiryNotice(options.expiryNotice, `${name}.expiryNotice`),
    recheck: normalizeRecheck(options.recheck, `${name}.recheck`),
    options: Object.freeze(options)
  })
}

function normalizeSources (options: Record<string, unknown>, name: string): TokenSourceSettings {
  const listed = options.tokenSources ?? ['header', 'protocol']
  if (!Array.isArray(listed) || listed.some((source) => !sourceNames.includes(source))) {
    throw new InvalidOptionError(`${name}.tokenSources must be an array of ${sourceNames.map((s) => `'${s}'`).join(', ')}, got ${describe(listed)}`)
  }
  const getToken = optionalFunction<TokenSourceSettings['getToken']>(options.getToken, `${name}.getToken`)
  const sources = [...new Set(listed as TokenSource[])]
  if (getToken !== undefined) sources.push('custom')
  if (sources.length === 0) {
    throw new InvalidOptionError(`${name}.tokenSources is empty and there is no getToken: no token could ever be found`)
  }
  return Object.freeze({
    sources: Object.freeze(sources),
    cookieName: param(options.cookieName, `${name}.cookieName`),
    queryParam: param(options.queryParam, `${name}.queryParam`),
    getToken
  })
}

function normalizeExpiryNotice (value: unknown, name: string): AuthSettings['expiryNotice'] {
  if (value === undefined) return undefined
  assertPlainObject(value, name)
  assertKnownKeys(value, ['before', 'notify'], name)
  if (typeof value.notify !== 'function') {
    throw new InvalidOptionError(`${name}.notify must be a function (socket, request, expiresAt) => {}, got ${describe(value.notify)}`)
  }
  return Object.freeze({
    before: requiredInteger(value.before, `${name}.before`, 1, 'ms ahead of exp, as in before: 60000'),
    notify: value.notify as NonNullable<AuthSettings['expiryNotice']>['notify']
  })
}

function normalizeRecheck (value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined
  assertPlainObject(value, name)
  assertKnownKeys(value, ['interval'], name)
  // Below a second, rechecks would cost more than the connections they guard.
  return requiredInteger(value.interval, `${name}.interval`, 1000, 'ms, as in interval: 60000')
}

function requiredInteger (value: unknown, name: string, min: number, example: string): number {
  if (value === undefined) throw new InvalidOptionError(`${name} is required: a whole number of ${example}`)
  return optionalInteger(value, 0, name, min)
}

function normalizeCache (value: unknown, name: string): VerifiedTokenCache | undefined {
  if (value === false) return undefined
  if (value === undefined || value === true) return new VerifiedTokenCache(10_000)
  assertPlainObject(value, name)
  assertKnownKeys(value, ['max'], name)
  return new VerifiedTokenCache(optionalInteger(value.max, 10_000, `${name}.max`))
}

const verificationKeys = ['cache', 'algorithms', 'issuer', 'audience', 'subject', 'typ', 'clockTolerance', 'maxTokenAge', 'requiredClaims', 'allowMissingExp', 'maxTokenLength']
function sameVerification (a: Readonly<Record<string, unknown>>, b: Readonly<Record<string, unknown>>): boolean {
  return verificationKeys.every((key) => a[key] === b[key])
}

function param (value: unknown, name: string): string {
  if (value === undefined) return 'access_token'
  if (typeof value !== 'string' || !tokenShape.test(value)) throw new InvalidOptionError(`${name} must be a non-empty name without spaces, got ${describe(value)}`)
  return value
}

const spanUnits: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800, y: 31_557_600 }
const spanShape = /^(\d+(?:\.\d+)?) ?(s|sec|secs|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?|y|yrs?|years?)$/i

/** `maxTokenAge` in seconds: the cache needs a number to know when an entry goes stale. */
function maxTokenAge (value: unknown, name: string): number {
  if (typeof value === 'number' && Number.isFinite(value) && value > 0) return value
  const match = typeof value === 'string' ? spanShape.exec(value) : null
  if (match === null) throw new InvalidOptionError(`${name} must be a number of seconds or a span such as '2h', got ${describe(value)}`)
  return Number(match[1]) * spanUnits[match[2]![0]!.toLowerCase()]!
}
