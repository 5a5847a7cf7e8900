/**
 * Client helpers for fastify-ws-guard, safe in browsers and Node (no dependencies).
 * @module fastify-ws-guard/client
 */

/**
 * The subprotocol list that carries a bearer token through the WebSocket handshake, for
 * clients that cannot set headers (browsers). The server selects one of `appProtocols` (or
 * the marker `bearer` when there are none) and never echoes the token.
 * @example
 * ```js
 * const socket = new WebSocket(url, bearerProtocols(token, 'chat.v1'))
 * ```
 */
export function bearerProtocols (token: string, ...appProtocols: string[]): string[] {
  // Subprotocols are RFC 7230 tokens: a JWT's base64url segments and dots are fine.
  if (typeof token !== 'string' || !/^[A-Za-z0-9._~-]+$/.test(token)) {
    throw new TypeError('bearerProtocols: the token must be a non-empty JWT string')
  }
  return [...(appProtocols.length > 0 ? appProtocols : ['bearer']), 'bearer.' + token]
}
