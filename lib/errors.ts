import createError from '@fastify/error'

/*
 * Every error the guard answers with, in one place. Codes are stable: clients and
 * dashboards switch on them. Messages never carry a token, a claim or a library's text.
 * Refusals are expected outcomes, answered by the thousand in a flood: they are built
 * without a stack trace.
 */

// Handshake shape (lib/handshake.ts)
export const UpgradeRequiredError = createError(
  'FST_WS_GUARD_UPGRADE_REQUIRED',
  'This route only accepts WebSocket connections: the request lacks the %s headers a WebSocket client sends',
  426,
  Error,
  false
)
export const UpgradeHeadersStrippedError = createError(
  'FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED',
  'A WebSocket handshake arrived without %s: a proxy in between is dropping the hop-by-hop upgrade headers. For nginx add to the location: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";',
  426,
  Error,
  false
)
export const UnsupportedUpgradeError = createError(
  'FST_WS_GUARD_UNSUPPORTED_UPGRADE',
  'The Upgrade header must be "websocket"',
  426,
  Error,
  false
)
export const UnsupportedVersionError = createError(
  'FST_WS_GUARD_UNSUPPORTED_VERSION',
  'Sec-WebSocket-Version must be 13',
  426,
  Error,
  false
)
export const InvalidKeyError = createError(
  'FST_WS_GUARD_INVALID_KEY',
  'Sec-WebSocket-Key is %s: it must be the base64 encoding of 16 random bytes',
  400,
  Error,
  false
)
export const NotWebSocketRouteError = createError(
  'FST_WS_GUARD_NOT_WEBSOCKET_ROUTE',
  'Route %s %s exists but is not a WebSocket route',
  400,
  Error,
  false
)
export const InvalidProtocolHeaderError = createError(
  'FST_WS_GUARD_INVALID_PROTOCOL_HEADER',
  'Sec-WebSocket-Protocol must be a comma-separated list of distinct tokens',
  400,
  Error,
  false
)
export const UnsupportedProtocolError = createError(
  'FST_WS_GUARD_UNSUPPORTED_PROTOCOL',
  'None of the offered subprotocols is spoken by this route; offer one of: %s',
  400,
  Error,
  false
)

// Origin (lib/origin.ts)
export const OriginNotAllowedError = createError(
  'FST_WS_GUARD_ORIGIN_NOT_ALLOWED',
  'Origin not allowed: %s',
  403,
  Error,
  false
)

// Capacity and time (lib/guard.ts, lib/limits.ts, lib/shutdown.ts)
export const HandshakeTimeoutError = createError(
  'FST_WS_GUARD_HANDSHAKE_TIMEOUT',
  'The WebSocket handshake checks did not finish in time',
  503,
  Error,
  false
)
export const ShuttingDownError = createError(
  'FST_WS_GUARD_SHUTTING_DOWN',
  'The server is shutting down',
  503,
  Error,
  false
)
export const TooManyConnectionsError = createError(
  'FST_WS_GUARD_TOO_MANY_CONNECTIONS',
  'The server has reached its WebSocket connection limit',
  503,
  Error,
  false
)
export const TooManyUserConnectionsError = createError(
  'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS',
  'Too many WebSocket connections for this user',
  429,
  Error,
  false
)
export const InternalError = createError(
  'FST_WS_GUARD_INTERNAL',
  'The WebSocket handshake failed on an internal error',
  500,
  Error,
  false
)

// Authentication (lib/auth/*.ts), RFC 6750 semantics
export const TokenMissingError = createError(
  'FST_WS_GUARD_TOKEN_MISSING',
  'Authentication required: send a bearer token',
  401,
  Error,
  false
)
export const InvalidRequestError = createError(
  'FST_WS_GUARD_INVALID_REQUEST',
  'Invalid authentication request: %s',
  400,
  Error,
  false
)
export const ProtocolRequiredError = createError(
  'FST_WS_GUARD_PROTOCOL_REQUIRED',
  'The client offered only its bearer.<token> subprotocol, which the server never echoes: also offer %s (bearerProtocols(token, ...appProtocols) from fastify-ws-guard/client does)',
  400,
  Error,
  false
)
export const TokenInvalidError = createError(
  'FST_WS_GUARD_TOKEN_INVALID',
  'Invalid token: %s',
  401,
  Error,
  false
)
export const TokenExpiredError = createError(
  'FST_WS_GUARD_TOKEN_EXPIRED',
  'The token has expired: get a fresh one and reconnect',
  401,
  Error,
  false
)
export const TokenRevokedError = createError(
  'FST_WS_GUARD_TOKEN_REVOKED',
  'The token has been revoked',
  401,
  Error,
  false
)
export const ForbiddenError = createError(
  'FST_WS_GUARD_FORBIDDEN',
  'The token does not grant access to this route',
  403,
  Error,
  false
)
export const KeysUnavailableError = createError(
  'FST_WS_GUARD_KEYS_UNAVAILABLE',
  'The keys to verify tokens are unavailable right now',
  503,
  Error,
  false
)

export const RefreshUnavailableError = createError(
  'FST_WS_GUARD_REFRESH_UNAVAILABLE',
  'wsRefresh() is only available on an open WebSocket of an authenticated route',
  500,
  Error,
  false
)

// Registration
export const InvalidOptionError = createError(
  'FST_WS_GUARD_INVALID_OPTION',
  'fastify-ws-guard: %s',
  500,
  TypeError
)

/** The shape every guard rejection shares. */
export interface GuardError extends Error {
  code: string
  statusCode: number
}
