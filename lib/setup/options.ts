import type { ServerOptions } from 'ws'
import { normalizeAuth, type AuthSettings, type WsGuardAuthOptions } from '../auth/options.js'
import { InvalidOptionError } from '../errors.js'
import type { MessageGuardSettings, MessageRateSettings } from '../connection/message-guards.js'
import { compileOrigins, type OriginOption, type OriginSettings } from '../handshake/origin-policy.js'
import type { ConnectionStore } from '../store/contract.js'
import { MemoryStore } from '../store/memory.js'
import {
  assertKnownKeys,
  assertPlainObject,
  describe,
  optionalBoolean,
  optionalInteger,
  optionalOneOf,
  tokenShape
} from '../validate.js'

/** Settings that apply plugin-wide and can be overridden per route with `config.wsGuard`. */
export interface WsGuardRouteOptions {
  /**
   * Browser origins allowed to connect. Default: same origin only (the Origin's host and port
   * equal the Host header).
   * @example origins: ['https://app.example.com', 'https://*.example.com', /^https:\/\/pr-\d+\.preview\.dev$/]
   */
  origins?: OriginOption | undefined
  /** Allow requests without an Origin header (non-browser clients). Default `true`. */
  allowMissingOrigin?: boolean | undefined
  /** Log origin decisions without enforcing them, to roll an allowlist out safely. Default `false`. */
  originReportOnly?: boolean | undefined
  /**
   * How a refused upgrade is answered: `'http'` (default) with an HTTP error response, or
   * `'close'` with the upgrade followed at once by a close frame (4400/4401/4403/4429/1013)
   * that browser code can read in `CloseEvent`. Malformed handshakes always get HTTP.
   */
  rejectWith?: 'http' | 'close' | undefined
  /** Bound, in ms, on the guard's own async work before the upgrade. Default `10000`. */
  handshakeTimeout?: number | undefined
  /**
   * The application subprotocols this route speaks, in order of preference. When set, the
   * first one the client offered is selected.
   */
  protocols?: readonly string[] | undefined
  /**
   * Refuse a client that offers none of `protocols` (400 / 4400 `FST_WS_GUARD_UNSUPPORTED_PROTOCOL`).
   * Default `false`: a client that offers no subprotocol at all is accepted, with none selected.
   */
  requireProtocol?: boolean | undefined
  /**
   * JWT authentication before the upgrade; `false` on a route makes it public. A route's
   * `auth` merges over the plugin's.
   */
  auth?: WsGuardAuthOptions | false | undefined
  /**
   * Pings and read deadline, or `false`. Every inbound frame moves the read deadline; a peer
   * silent past it is terminated. Default `{ pingInterval: 30000, readDeadline: 45000 }`:
   * below the 60 s idle timeouts of nginx and common load balancers.
   */
  heartbeat?: { pingInterval?: number | undefined, readDeadline?: number | undefined } | false | undefined
  /**
   * A connection whose outgoing buffer stays non-empty without draining for this many ms is
   * terminated (slow consumer), or `false`. Default `30000`.
   */
  writeDeadline?: number | false | undefined
  /** A connection whose outgoing buffer grows past this many bytes is terminated. Default 8 MiB. */
  maxBufferedBytes?: number | undefined
  /**
   * Open connections per user (`sub` claim) on authenticated routes, across every instance
   * that shares the `store`; over it: 429 or 4429.
   */
  maxConnectionsPerUser?: number | undefined
  /**
   * Largest message the route accepts, in bytes; a bigger one closes with 1009 `message too
   * big`. `websocket.maxPayload` stays the hard bound: a route may only lower it.
   */
  maxMessageBytes?: number | undefined
  /**
   * A token bucket per connection (or per user, with `perUser`): `messages` per `interval` ms,
   * up to `burst` at once (default `messages`). Over it, `onExcess: 'close'` (default) closes
   * with 1008 `message rate exceeded`; `'drop'` drops the message before the app sees it.
   * Pings and pongs are not counted.
   * @example messageRate: { messages: 20, interval: 1000, burst: 40 }
   */
  messageRate?: {
    messages: number
    interval: number
    burst?: number | undefined
    perUser?: boolean | undefined
    onExcess?: 'close' | 'drop' | undefined
  } | undefined
  /**
   * Connections older than this many ms (±10%) close with 1001 `connection max age;
   * retry-after=<ms>`, so that load rebalances after a scale-out. Default: no limit.
   */
  maxConnectionAge?: number | undefined
}

/** Options of `app.register(wsGuard, options)`. */
export interface WsGuardOptions extends WsGuardRouteOptions {
  /**
   * `ws` server options, used when the guard registers `@fastify/websocket` itself. Defaults
   * safer than ws's are merged in: `maxPayload` 1 MiB, `perMessageDeflate` off,
   * `maxFragments` 1024, `maxBufferedChunks` 16384.
   */
  websocket?: Omit<ServerOptions, 'noServer' | 'server' | 'port' | 'host' | 'path'> | undefined
  /** Open guarded connections per plugin instance (the process); over it: 503 or 1013. */
  maxConnections?: number | undefined
  /**
   * Where users' connections are counted and where instances send each other disconnects and
   * revocations. Default: in memory (one process); `RedisStore` from `fastify-ws-guard/redis`
   * for a fleet.
   */
  store?: ConnectionStore | undefined
  /**
   * When the store does not answer: `'reject'` (default) refuses handshakes that need it (a
   * per-user limit) with 503 / 1013; `'local'` counts in this process until it is back.
   * Open connections are never touched.
   */
  onStoreError?: 'reject' | 'local' | undefined
  /** Seconds a `revoke()` lasts when it names no `until`. Default `86400` (24 h). */
  revocationTtl?: number | undefined
  /** On `app.close()`, ms to wait for clients to answer the 1001 close before terminating them. Default `10000`. */
  shutdownGrace?: number | undefined
  /**
   * On `app.close()`, the 1001 closes are spread over this many ms, so that clients do not all
   * reconnect at once; `0` closes all at once. Default: 1 ms per open connection (a thousand
   * closes a second), at most half of `shutdownGrace` and at most 5000.
   */
  drainSpread?: number | undefined
}

/** The validated, defaulted settings of one guarded route. */
export interface RouteSettings {
  readonly origin: OriginSettings
  readonly originReportOnly: boolean
  readonly rejectWith: 'http' | 'close'
  readonly handshakeTimeout: number
  readonly protocols: readonly string[]
  readonly requireProtocol: boolean
  readonly auth: AuthSettings | undefined
  readonly heartbeat: { readonly pingInterval: number, readonly readDeadline: number } | undefined
  readonly writeDeadline: number | undefined
  readonly maxBufferedBytes: number
  readonly maxConnectionsPerUser: number | undefined
  /** `undefined` without `maxMessageBytes` and `messageRate`: nothing to check per message. */
  readonly messages: MessageGuardSettings | undefined
  readonly maxConnectionAge: number | undefined
}

export const defaultWebSocketOptions = Object.freeze({
  maxPayload: 1024 * 1024,
  perMessageDeflate: false,
  maxFragments: 1024,
  maxBufferedChunks: 16 * 1024
})

const routeKeys = [
  'origins', 'allowMissingOrigin', 'originReportOnly', 'rejectWith', 'handshakeTimeout', 'protocols', 'requireProtocol', 'auth',
  'heartbeat', 'writeDeadline', 'maxBufferedBytes', 'maxConnectionsPerUser', 'maxMessageBytes', 'messageRate', 'maxConnectionAge'
] as const
const pluginOnlyKeys = ['websocket', 'maxConnections', 'store', 'onStoreError', 'revocationTtl', 'shutdownGrace', 'drainSpread'] as const
const pluginKeys = [...routeKeys, ...pluginOnlyKeys]

export interface NormalizedOptions {
  readonly websocket: ServerOptions
  readonly maxConnections: number | undefined
  readonly store: ConnectionStore
  readonly onStoreError: 'reject' | 'local'
  /** Seconds. */
  readonly revocationTtl: number
  readonly shutdownGrace: number
  /** `undefined`: scaled to the open connections at close time, up to {@link maxDefaultDrainSpread}. */
  readonly drainSpread: number | undefined
  readonly maxDefaultDrainSpread: number
  /** The user's route-level options, kept to merge with each route's overrides. */
  readonly routeDefaults: Readonly<WsGuardRouteOptions>
  readonly route: RouteSettings
}

/** Validates and defaults the plugin options once, at registration. */
export function normalizeOptions (options: unknown): NormalizedOptions {
  assertPlainObject(options ?? {}, 'options')
  const opts = (options ?? {}) as Record<string, unknown>
  assertKnownKeys(opts, pluginKeys, '')
  if (opts.websocket !== undefined) assertPlainObject(opts.websocket, 'websocket')
  const routeDefaults: Record<string, unknown> = {}
  for (const key of routeKeys) {
    if (opts[key] !== undefined) routeDefaults[key] = opts[key]
  }
  const websocket: ServerOptions = { ...defaultWebSocketOptions, ...(opts.websocket as ServerOptions | undefined) }
  const shutdownGrace = optionalInteger(opts.shutdownGrace, 10_000, 'shutdownGrace', 0)
  const drainSpread = opts.drainSpread === undefined ? undefined : optionalInteger(opts.drainSpread, 0, 'drainSpread', 0)
  if (drainSpread !== undefined && drainSpread > shutdownGrace) {
    throw new InvalidOptionError(`drainSpread (${drainSpread}) must not exceed shutdownGrace (${shutdownGrace}): the last 1001 would go out after the grace is over; lower drainSpread or raise shutdownGrace`)
  }
  return Object.freeze({
    websocket,
    maxConnections: opts.maxConnections === undefined ? undefined : optionalInteger(opts.maxConnections, 0, 'maxConnections'),
    store: normalizeStore(opts.store),
    onStoreError: optionalOneOf(opts.onStoreError, ['reject', 'local'], 'reject', 'onStoreError'),
    revocationTtl: optionalInteger(opts.revocationTtl, 86_400, 'revocationTtl'),
    shutdownGrace,
    drainSpread,
    maxDefaultDrainSpread: Math.min(5000, Math.floor(shutdownGrace / 2)),
    routeDefaults: Object.freeze(routeDefaults),
    route: normalizeRouteOptions(routeDefaults, 'options', normalizeAuth(routeDefaults.auth, 'options.auth', undefined))
  })
}

/**
 * Merges a route's `config.wsGuard` overrides over the plugin's route-level options and
 * validates the result; called once per route, at declaration.
 */
export function resolveRouteSettings (defaults: NormalizedOptions, overrides: unknown, routeName: string): RouteSettings {
  if (overrides === undefined || overrides === true) return defaults.route
  const name = `config.wsGuard of ${routeName}`
  assertPlainObject(overrides, name)
  assertKnownKeys(overrides, routeKeys, name)
  // A route's auth merges over the plugin's, sharing its imported keys where it can.
  const auth = overrides.auth === undefined
    ? defaults.route.auth
    : normalizeAuth(overrides.auth, `${name}.auth`, defaults.route.auth)
  return normalizeRouteOptions({ ...defaults.routeDefaults, ...overrides }, name, auth)
}

function normalizeRouteOptions (opts: Record<string, unknown>, name: string, auth: AuthSettings | undefined): RouteSettings {
  const usesCookie = auth?.sources.sources.includes('cookie') === true
  if (usesCookie && (opts.allowMissingOrigin === true || opts.origins === '*' || opts.originReportOnly === true)) {
    const culprit = opts.origins === '*' ? "origins: '*'" : opts.allowMissingOrigin === true ? 'allowMissingOrigin: true' : 'originReportOnly: true'
    throw new InvalidOptionError(`${name}: cookie auth is ambient, so any site could open a socket with your users' cookies; it needs an enforced origin check: remove ${culprit}`)
  }
  const protocols = normalizeProtocols(opts.protocols, `${name}.protocols`)
  const requireProtocol = optionalBoolean(opts.requireProtocol, false, `${name}.requireProtocol`)
  if (requireProtocol && protocols.length === 0) {
    throw new InvalidOptionError(`${name}.requireProtocol needs the subprotocols the route speaks: add protocols, as in protocols: ['chat.v1']`)
  }
  return Object.freeze({
    origin: Object.freeze({
      policy: compileOrigins(opts.origins, `${name}.origins`),
      // Cookie auth: a request without Origin could come from anywhere (CSWSH).
      allowMissingOrigin: usesCookie ? false : optionalBoolean(opts.allowMissingOrigin, true, `${name}.allowMissingOrigin`)
    }),
    originReportOnly: optionalBoolean(opts.originReportOnly, false, `${name}.originReportOnly`),
    rejectWith: optionalOneOf(opts.rejectWith, ['http', 'close'], 'http', `${name}.rejectWith`),
    handshakeTimeout: optionalInteger(opts.handshakeTimeout, 10_000, `${name}.handshakeTimeout`),
    protocols,
    requireProtocol,
    auth,
    heartbeat: normalizeHeartbeat(opts.heartbeat, `${name}.heartbeat`),
    writeDeadline: opts.writeDeadline === false ? undefined : optionalInteger(opts.writeDeadline, 30_000, `${name}.writeDeadline`),
    maxBufferedBytes: optionalInteger(opts.maxBufferedBytes, 8 * 1024 * 1024, `${name}.maxBufferedBytes`),
    maxConnectionsPerUser: opts.maxConnectionsPerUser === undefined ? undefined : optionalInteger(opts.maxConnectionsPerUser, 0, `${name}.maxConnectionsPerUser`),
    messages: normalizeMessageGuards(opts, name),
    maxConnectionAge: opts.maxConnectionAge === undefined ? undefined : optionalInteger(opts.maxConnectionAge, 0, `${name}.maxConnectionAge`, 1000)
  })
}

/**
 * At a route's declaration, once the ws server in use is known (the guard's, or one the app
 * registered itself): ws cuts at `maxPayload` before buffering a message, and the route's
 * bound is only checked after, so it may lower that bound, never raise it.
 */
export function assertWithinMaxPayload (settings: RouteSettings, maxPayload: number | undefined, routeName: string): void {
  const maxBytes = settings.messages?.maxBytes
  if (maxBytes === undefined || maxPayload === undefined || maxPayload === 0 || maxBytes <= maxPayload) return
  throw new InvalidOptionError(`maxMessageBytes (${maxBytes}) of ${routeName} is above the ws server's maxPayload (${maxPayload}), the hard bound every route shares: lower maxMessageBytes, or raise websocket.maxPayload`)
}

function normalizeMessageGuards (opts: Record<string, unknown>, name: string): MessageGuardSettings | undefined {
  const maxBytes = opts.maxMessageBytes === undefined ? undefined : optionalInteger(opts.maxMessageBytes, 0, `${name}.maxMessageBytes`)
  const rate = normalizeMessageRate(opts.messageRate, `${name}.messageRate`)
  if (maxBytes === undefined && rate === undefined) return undefined
  return Object.freeze({ maxBytes, rate })
}

function normalizeMessageRate (value: unknown, name: string): MessageRateSettings | undefined {
  if (value === undefined) return undefined
  assertPlainObject(value, name)
  assertKnownKeys(value, ['messages', 'interval', 'burst', 'perUser', 'onExcess'], name)
  if (value.messages === undefined || value.interval === undefined) {
    throw new InvalidOptionError(`${name} needs messages and interval (ms), as in { messages: 20, interval: 1000 }`)
  }
  const messages = optionalInteger(value.messages, 0, `${name}.messages`)
  return Object.freeze({
    messages,
    interval: optionalInteger(value.interval, 0, `${name}.interval`),
    burst: optionalInteger(value.burst, messages, `${name}.burst`),
    perUser: optionalBoolean(value.perUser, false, `${name}.perUser`),
    onExcess: optionalOneOf(value.onExcess, ['close', 'drop'], 'close', `${name}.onExcess`)
  })
}

function normalizeHeartbeat (value: unknown, name: string): RouteSettings['heartbeat'] {
  if (value === false) return undefined
  if (value !== undefined) {
    assertPlainObject(value, name)
    assertKnownKeys(value, ['pingInterval', 'readDeadline'], name)
  }
  const options = (value ?? {}) as Record<string, unknown>
  const pingInterval = optionalInteger(options.pingInterval, 30_000, `${name}.pingInterval`)
  const readDeadline = optionalInteger(options.readDeadline, Math.ceil(pingInterval * 1.5), `${name}.readDeadline`)
  if (readDeadline <= pingInterval) {
    throw new InvalidOptionError(`${name}.readDeadline (${readDeadline}) must be longer than pingInterval (${pingInterval}): a healthy peer answers a ping within the deadline, for example readDeadline: ${Math.ceil(pingInterval * 1.5)}`)
  }
  return Object.freeze({ pingInterval, readDeadline })
}

const storeMethods = ['acquire', 'renew', 'release', 'count', 'publish', 'revocations', 'listen'] as const

function normalizeStore (value: unknown): ConnectionStore {
  if (value === undefined) return new MemoryStore()
  if (typeof value !== 'object' || value === null) throw new InvalidOptionError(`store must be a ConnectionStore such as new RedisStore({ client }), got ${describe(value)}`)
  const store = value as Record<string, unknown>
  const missing = storeMethods.filter((method) => typeof store[method] !== 'function')
  if (missing.length > 0) {
    throw new InvalidOptionError(`store lacks ${missing.join(', ')}: it must implement ConnectionStore (leases and a control channel), as MemoryStore and RedisStore (fastify-ws-guard/redis) do`)
  }
  if (typeof store.leaseTtl !== 'number' || !(store.leaseTtl > 0)) {
    throw new InvalidOptionError(`store.leaseTtl must be a number of ms > 0 (Infinity for leases that never lapse), got ${describe(store.leaseTtl)}`)
  }
  return value as ConnectionStore
}

function normalizeProtocols (value: unknown, name: string): readonly string[] {
  if (value === undefined) return []
  if (!Array.isArray(value)) throw new InvalidOptionError(`${name} must be an array of subprotocol names, got ${describe(value)}`)
  for (const protocol of value) {
    if (typeof protocol !== 'string' || !tokenShape.test(protocol)) {
      throw new InvalidOptionError(`${name}: ${describe(protocol)} is not a valid subprotocol name (letters, digits and !#$%&'*+-.^_\`|~)`)
    }
    if (protocol === 'bearer' || protocol.startsWith('bearer.')) {
      throw new InvalidOptionError(`${name}: "${protocol}" is reserved for bearer tokens; name the application protocol, as in "chat.v1"`)
    }
  }
  return Object.freeze([...value])
}
