import createError from '@fastify/error'
import { nginxUpgradeFix } from './upgrade-headers.js'

/*
 * Every error the guard answers with, in one place, each with everything its answer needs:
 * the HTTP status and headers of `rejectWith: 'http'`, the close code and reason of
 * `rejectWith: 'close'`. Codes are stable: clients and dashboards switch on them. Messages
 * never carry a token, a claim or a library's text. Refusals are expected outcomes, answered
 * by the thousand in a flood: they are built without a stack trace.
 */

/** How a refusal is answered, beside its status: fixed at definition, never per request. */
interface Answer {
  /** Close code with `rejectWith: 'close'`: 4000 + the status, 1011 internal, 1013 try again later. */
  readonly closeCode: number
  /** Short, fixed close reason: a close frame is no place for details. */
  readonly closeReason: string
  /** Extra response headers of the HTTP answer. */
  readonly headers?: Readonly<Record<string, string>>
}

/** What every guard refusal carries, readable on any instance. */
export interface GuardError extends Error {
  readonly code: GuardErrorCode
  readonly statusCode: number
  readonly closeCode: number
  readonly closeReason: string
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** The library error code behind an internal or key-source failure, for the log line only. */
  causeCode?: string
}

/** A constructor of one refusal: `new TokenInvalidError('malformed token')`. */
export interface GuardErrorConstructor<Code extends GuardErrorCode, Status extends number = number> {
  new (...args: unknown[]): GuardError & { readonly code: Code, readonly statusCode: Status }
  (...args: unknown[]): GuardError & { readonly code: Code, readonly statusCode: Status }
  readonly prototype: GuardError & { readonly code: Code, readonly statusCode: Status }
}

function refusal<Code extends GuardErrorCode, Status extends number> (code: Code, message: string, statusCode: Status, answer: Answer): GuardErrorConstructor<Code, Status> {
  const GuardErrorClass = createError(code, message, statusCode, Error, false)
  // On the prototype: one copy per code, nothing more per refusal.
  Object.assign(GuardErrorClass.prototype, answer)
  return GuardErrorClass as unknown as GuardErrorConstructor<Code, Status>
}

const upgradeWebSocket = Object.freeze({ upgrade: 'websocket' })
// Capacity and timing refusals are temporary: say when to come back, in the header and, for
// clients that only see the close frame, as a hint in ms at the end of its reason.
const retryLater = Object.freeze({ 'retry-after': '5' })
const retryHint = '; retry-after=5000'

// Handshake shape (lib/handshake/shape.ts, lib/handshake/protocols.ts, lib/setup/routes.ts)
export const UpgradeRequiredError = refusal(
  'FST_WS_GUARD_UPGRADE_REQUIRED',
  'This route only accepts WebSocket connections: the request lacks the %s headers a WebSocket client sends',
  426,
  { closeCode: 4400, closeReason: 'bad request', headers: upgradeWebSocket }
)
export const UpgradeHeadersStrippedError = refusal(
  'FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED',
  `A WebSocket handshake arrived without %s: a proxy in between is dropping the hop-by-hop upgrade headers; ${nginxUpgradeFix}`,
  426,
  { closeCode: 4400, closeReason: 'bad request', headers: upgradeWebSocket }
)
export const UnsupportedUpgradeError = refusal(
  'FST_WS_GUARD_UNSUPPORTED_UPGRADE',
  'The Upgrade header must be "websocket"',
  426,
  { closeCode: 4400, closeReason: 'bad request', headers: upgradeWebSocket }
)
export const UnsupportedVersionError = refusal(
  'FST_WS_GUARD_UNSUPPORTED_VERSION',
  'Sec-WebSocket-Version must be 13',
  426,
  { closeCode: 4400, closeReason: 'bad request', headers: Object.freeze({ ...upgradeWebSocket, 'sec-websocket-version': '13' }) }
)
export const InvalidKeyError = refusal(
  'FST_WS_GUARD_INVALID_KEY',
  'Sec-WebSocket-Key is %s: it must be the base64 encoding of 16 random bytes',
  400,
  { closeCode: 4400, closeReason: 'bad request' }
)
export const NotWebSocketRouteError = refusal(
  'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE',
  'Route %s %s exists but is not a WebSocket route',
  400,
  { closeCode: 4400, closeReason: 'bad request' }
)
export const RouteNotFoundError = refusal(
  'FST_WS_GUARD_ROUTE_NOT_FOUND',
  'No route matches %s %s: check the path of the WebSocket URL',
  404,
  { closeCode: 4404, closeReason: 'not found' }
)
export const InvalidProtocolHeaderError = refusal(
  'FST_WS_GUARD_INVALID_PROTOCOL_HEADER',
  'Sec-WebSocket-Protocol must be a comma-separated list of distinct tokens',
  400,
  { closeCode: 4400, closeReason: 'bad request' }
)
export const UnsupportedProtocolError = refusal(
  'FST_WS_GUARD_UNSUPPORTED_PROTOCOL',
  'None of the offered subprotocols is spoken by this route; offer one of: %s',
  400,
  { closeCode: 4400, closeReason: 'unsupported protocol' }
)

// Origin (lib/handshake/origin.ts)
export const OriginNotAllowedError = refusal(
  'FST_WS_GUARD_ORIGIN_NOT_ALLOWED',
  'Origin not allowed: %s',
  403,
  { closeCode: 4403, closeReason: 'origin not allowed' }
)

// Capacity and time (lib/handshake/chain.ts, lib/handshake/limits.ts)
export const HandshakeTimeoutError = refusal(
  'FST_WS_GUARD_HANDSHAKE_TIMEOUT',
  'The WebSocket handshake checks did not finish in time',
  503,
  { closeCode: 1013, closeReason: 'handshake timeout' + retryHint, headers: retryLater }
)
export const ShuttingDownError = refusal(
  'FST_WS_GUARD_SHUTTING_DOWN',
  'The server is shutting down',
  503,
  { closeCode: 1013, closeReason: 'server shutting down' + retryHint, headers: retryLater }
)
export const TooManyConnectionsError = refusal(
  'FST_WS_GUARD_TOO_MANY_CONNECTIONS',
  'The server has reached its WebSocket connection limit',
  503,
  { closeCode: 1013, closeReason: 'server at capacity' + retryHint, headers: retryLater }
)
export const TooManyUserConnectionsError = refusal(
  'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS',
  'Too many WebSocket connections for this user',
  429,
  { closeCode: 4429, closeReason: 'too many connections' + retryHint, headers: retryLater }
)
export const StoreUnavailableError = refusal(
  'FST_WS_GUARD_STORE_UNAVAILABLE',
  'The connection store is unavailable right now',
  503,
  { closeCode: 1013, closeReason: 'try again later' + retryHint, headers: retryLater }
)
export const InternalError = refusal(
  'FST_WS_GUARD_INTERNAL',
  'The WebSocket handshake failed on an internal error',
  500,
  { closeCode: 1011, closeReason: 'internal error' }
)

// Authentication (lib/auth/*.ts, lib/handshake/authenticate.ts), RFC 6750 semantics
export const TokenMissingError = refusal(
  'FST_WS_GUARD_TOKEN_MISSING',
  'Authentication required: send a bearer token',
  401,
  { closeCode: 4401, closeReason: 'authentication required' }
)
export const InvalidRequestError = refusal(
  'FST_WS_GUARD_INVALID_REQUEST',
  'Invalid authentication request: %s',
  400,
  { closeCode: 4400, closeReason: 'invalid request' }
)
export const ProtocolRequiredError = refusal(
  'FST_WS_GUARD_PROTOCOL_REQUIRED',
  'The client offered only its bearer.<token> subprotocol, which the server never echoes: also offer %s (bearerProtocols(token, ...appProtocols) from fastify-ws-guard/client does)',
  400,
  { closeCode: 4400, closeReason: 'protocol required' }
)
export const TokenInvalidError = refusal(
  'FST_WS_GUARD_TOKEN_INVALID',
  'Invalid token: %s',
  401,
  { closeCode: 4401, closeReason: 'invalid token' }
)
export const TokenExpiredError = refusal(
  'FST_WS_GUARD_TOKEN_EXPIRED',
  'The token has expired: get a fresh one and reconnect',
  401,
  { closeCode: 4401, closeReason: 'token expired' }
)
export const TokenRevokedError = refusal(
  'FST_WS_GUARD_TOKEN_REVOKED',
  'The token has been revoked',
  401,
  { closeCode: 4401, closeReason: 'token revoked' }
)
export const ForbiddenError = refusal(
  'FST_WS_GUARD_FORBIDDEN',
  'The token does not grant access to this route',
  403,
  { closeCode: 4403, closeReason: 'forbidden' }
)
export const KeysUnavailableError = refusal(
  'FST_WS_GUARD_KEYS_UNAVAILABLE',
  'The keys to verify tokens are unavailable right now',
  503,
  { closeCode: 1013, closeReason: 'try again later' + retryHint, headers: retryLater }
)

// Misuse by the app, never a client's refusal
export const RefreshUnavailableError = refusal(
  'FST_WS_GUARD_REFRESH_UNAVAILABLE',
  'wsRefresh() is only available on an open WebSocket of an authenticated route',
  500,
  { closeCode: 1011, closeReason: 'internal error' }
)

// Registration
export const InvalidOptionError = createError(
  'FST_WS_GUARD_INVALID_OPTION',
  'fastify-ws-guard: %s',
  500,
  TypeError
)

/** Every code the guard answers or throws with: a `switch` over it is checked for exhaustiveness. */
export type GuardErrorCode =
  | 'FST_WS_GUARD_UPGRADE_REQUIRED'
  | 'FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED'
  | 'FST_WS_GUARD_UNSUPPORTED_UPGRADE'
  | 'FST_WS_GUARD_UNSUPPORTED_VERSION'
  | 'FST_WS_GUARD_INVALID_KEY'
  | 'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE'
  | 'FST_WS_GUARD_ROUTE_NOT_FOUND'
  | 'FST_WS_GUARD_INVALID_PROTOCOL_HEADER'
  | 'FST_WS_GUARD_UNSUPPORTED_PROTOCOL'
  | 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED'
  | 'FST_WS_GUARD_HANDSHAKE_TIMEOUT'
  | 'FST_WS_GUARD_SHUTTING_DOWN'
  | 'FST_WS_GUARD_TOO_MANY_CONNECTIONS'
  | 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS'
  | 'FST_WS_GUARD_STORE_UNAVAILABLE'
  | 'FST_WS_GUARD_INTERNAL'
  | 'FST_WS_GUARD_TOKEN_MISSING'
  | 'FST_WS_GUARD_INVALID_REQUEST'
  | 'FST_WS_GUARD_PROTOCOL_REQUIRED'
  | 'FST_WS_GUARD_TOKEN_INVALID'
  | 'FST_WS_GUARD_TOKEN_EXPIRED'
  | 'FST_WS_GUARD_TOKEN_REVOKED'
  | 'FST_WS_GUARD_FORBIDDEN'
  | 'FST_WS_GUARD_KEYS_UNAVAILABLE'
  | 'FST_WS_GUARD_REFRESH_UNAVAILABLE'
  | 'FST_WS_GUARD_INVALID_OPTION'
