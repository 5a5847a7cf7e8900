/*
 * What the doctor knows about the codes a server answers with: fastify-ws-guard's
 * FST_WS_GUARD_* refusals (lib/errors.ts) and WebSocket close codes (RFC 6455 §7.4, IANA).
 */

import type { GuardErrorCode } from '../errors.js'
import { nginxUpgradeFix } from '../upgrade-headers.js'

export interface Explanation {
  readonly cause: string
  readonly fix: string
}

/** Every FST_WS_GUARD_* code, by meaning and remedy. */
export const guardCodes: Readonly<Record<GuardErrorCode, Explanation>> = {
  FST_WS_GUARD_UPGRADE_REQUIRED: {
    cause: 'fastify-ws-guard got a plain HTTP request on a WebSocket route: no handshake header reached it, so something in between rewrote the request',
    fix: `connect to the app directly to compare, then fix what sits in between; ${nginxUpgradeFix}`
  },
  FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED: {
    cause: 'the handshake reached fastify-ws-guard without its hop-by-hop Upgrade/Connection headers: a reverse proxy in between dropped them (nginx does unless told otherwise)',
    fix: `${nginxUpgradeFix} (check any CDN's or load balancer's WebSocket setting too)`
  },
  FST_WS_GUARD_UNSUPPORTED_UPGRADE: {
    cause: 'the Upgrade header that reached the app was not "websocket"',
    fix: 'send Upgrade: websocket; if the client does, a proxy rewrote it'
  },
  FST_WS_GUARD_UNSUPPORTED_VERSION: {
    cause: 'Sec-WebSocket-Version was not 13, the only version of RFC 6455',
    fix: 'use a client that speaks RFC 6455'
  },
  FST_WS_GUARD_INVALID_KEY: {
    cause: 'Sec-WebSocket-Key was missing or not 16 bytes of base64',
    fix: 'use a standard client; if it is one, a proxy mangled the header'
  },
  FST_WS_GUARD_NOT_WEBSOCKET_ROUTE: {
    cause: 'the path is a plain HTTP route of the app, not a WebSocket route',
    fix: 'connect to the WebSocket route\'s path (declared with app.wsRoute() or websocket: true)'
  },
  FST_WS_GUARD_ROUTE_NOT_FOUND: {
    cause: 'no route of the app matches the path (the upgrade reached the app, so the host and port are right)',
    fix: 'check the path of the ws:// URL against the app\'s WebSocket routes; behind a proxy, check that it forwards the path unchanged'
  },
  FST_WS_GUARD_INVALID_PROTOCOL_HEADER: {
    cause: 'Sec-WebSocket-Protocol was malformed: characters outside an HTTP token, or duplicates',
    fix: 'offer distinct subprotocol names; a token sent as bearer.<token> must be base64url (JWTs are)'
  },
  FST_WS_GUARD_UNSUPPORTED_PROTOCOL: {
    cause: 'the route speaks none of the offered subprotocols',
    fix: 'offer one the route lists (named in the message), e.g. --protocol <name>'
  },
  FST_WS_GUARD_ORIGIN_NOT_ALLOWED: {
    cause: 'the Origin is not on the route\'s allowlist (browsers always send the page\'s origin)',
    fix: 'add the page\'s exact scheme://host[:port] to the guard\'s `origins`; behind a proxy, set trustProxy so the same-origin default sees X-Forwarded-Host'
  },
  FST_WS_GUARD_HANDSHAKE_TIMEOUT: {
    cause: 'the guard\'s asynchronous checks (key fetch, authorize, isRevoked, origin function) did not finish within handshakeTimeout',
    fix: 'check what those checks call (JWKS endpoint, database), or raise handshakeTimeout'
  },
  FST_WS_GUARD_SHUTTING_DOWN: {
    cause: 'the server is shutting down',
    fix: 'reconnect after Retry-After; clients should reconnect with backoff'
  },
  FST_WS_GUARD_TOO_MANY_CONNECTIONS: {
    cause: 'the server holds maxConnections WebSocket connections already',
    fix: 'retry after Retry-After; raise maxConnections or add servers'
  },
  FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS: {
    cause: 'this user already holds maxConnectionsPerUser connections',
    fix: 'close the user\'s other connections (tabs, stale clients) or raise maxConnectionsPerUser'
  },
  FST_WS_GUARD_STORE_UNAVAILABLE: {
    cause: 'the connection store (Redis, for a fleet) did not answer, and the route has a per-user limit to check there',
    fix: 'retry after Retry-After; look for "websocket connection store unavailable" in the server log, or set onStoreError: \'local\' to count per instance meanwhile'
  },
  FST_WS_GUARD_INTERNAL: {
    cause: 'a guard step threw; the server logged its error code',
    fix: 'look for "websocket guard step failed" in the server log'
  },
  FST_WS_GUARD_TOKEN_MISSING: {
    cause: 'the route requires a token and none arrived where it looks',
    fix: 'pass --token T or --token-env VAR, and --token-in header|protocol|query for where the route reads it'
  },
  FST_WS_GUARD_INVALID_REQUEST: {
    cause: 'the authentication was malformed: bad Authorization syntax, a repeated header, a token in two places, or too long',
    fix: 'send exactly one token, in one place'
  },
  FST_WS_GUARD_PROTOCOL_REQUIRED: {
    cause: 'the client offered only bearer.<token> as subprotocol: it must also offer its application protocol or the marker `bearer`',
    fix: 'offer one, e.g. --protocol chat; in a browser: new WebSocket(url, bearerProtocols(token, \'chat\'))'
  },
  FST_WS_GUARD_TOKEN_INVALID: {
    cause: 'the token failed verification: signature, algorithm, issuer, audience, type or a required claim',
    fix: 'check that the token was issued for this server (issuer, audience, signing key); the WWW-Authenticate description says what failed'
  },
  FST_WS_GUARD_TOKEN_EXPIRED: {
    cause: 'the token has expired',
    fix: 'get a fresh token and reconnect; clients should refresh before exp'
  },
  FST_WS_GUARD_TOKEN_REVOKED: {
    cause: 'the token was revoked',
    fix: 'sign in again for a new token'
  },
  FST_WS_GUARD_FORBIDDEN: {
    cause: 'the token is valid but does not grant access to this route (authorize said no)',
    fix: 'use a token with the scope or role the route requires'
  },
  FST_WS_GUARD_KEYS_UNAVAILABLE: {
    cause: 'the server cannot get the keys that verify tokens (JWKS unreachable, slow or invalid), so it refuses everyone',
    fix: 'check the JWKS URL from the server\'s network; clients retry after Retry-After'
  },
  FST_WS_GUARD_REFRESH_UNAVAILABLE: {
    cause: 'the app called request.wsRefresh() outside an open, authenticated WebSocket (a bug in the app, not in the client)',
    fix: 'call wsRefresh() only from the handler of an authenticated route, while the socket is open'
  },
  FST_WS_GUARD_INVALID_OPTION: {
    cause: 'the app registered fastify-ws-guard with an invalid option',
    fix: 'read the startup error in the server log and fix the option'
  }
}

/** What the doctor knows of a code read off a response body, which may name one it does not know. */
export function explainGuardCode (code: string): Explanation | undefined {
  return Object.hasOwn(guardCodes, code) ? guardCodes[code as GuardErrorCode] : undefined
}

/** WebSocket close codes a server sends, and fastify-ws-guard's own (4000 + HTTP status). */
export const closeCodes: Readonly<Record<number, Explanation>> = {
  1000: { cause: 'normal closure: the server ended the connection on purpose', fix: 'if it happens right after the upgrade, read the route handler: it closes the socket' },
  1001: { cause: 'going away: the server is shutting down or restarting', fix: 'clients should reconnect with backoff' },
  1002: { cause: 'protocol error: the server saw a frame it could not accept', fix: 'check the client\'s frames (masking, fragmentation, extensions)' },
  1003: { cause: 'unsupported data: the server does not accept this kind of message (text vs binary)', fix: 'send the message type the server expects' },
  1005: { cause: 'closed without a status code (e.g. @fastify/websocket on app.close())', fix: 'if the server shut down, reconnect with backoff' },
  1007: { cause: 'invalid payload: a text message that is not UTF-8, or data the server could not decode', fix: 'check what the client sends' },
  1008: { cause: 'policy violation: the server refused the connection by policy (auth, origin, rate)', fix: 'read the reason and the server log' },
  1009: { cause: 'message too big: a message exceeded the server\'s limit (maxPayload)', fix: 'send smaller messages or raise the server\'s limit' },
  1010: { cause: 'the client did not negotiate an extension the server requires', fix: 'enable the extension on the client' },
  1011: { cause: 'internal error: the server hit an error handling the connection', fix: 'read the server log' },
  1012: { cause: 'service restart', fix: 'reconnect with backoff' },
  1013: { cause: 'try again later: the server is overloaded or at its connection limit', fix: 'reconnect with backoff' },
  1014: { cause: 'bad gateway: a proxy got an invalid answer from the upstream', fix: 'check the upstream behind the proxy' },
  4400: { cause: 'fastify-ws-guard refused a bad request after the upgrade (rejectWith: \'close\')', fix: 'read the reason; the same check answers 400 with rejectWith: \'http\'' },
  4401: { cause: 'authentication failed or lapsed (fastify-ws-guard: missing, invalid or expired token)', fix: 'get a fresh token and reconnect; if it says "token expired", refresh tokens before exp' },
  4403: { cause: 'forbidden (fastify-ws-guard: origin not allowed, or the token lacks access)', fix: 'check --origin against the allowlist, or the token\'s scope' },
  4429: { cause: 'too many connections for this user (fastify-ws-guard: maxConnectionsPerUser)', fix: 'close the user\'s other connections or raise the limit' }
}
