import type { FastifyRequest } from 'fastify'
import {
  InvalidKeyError,
  UnsupportedUpgradeError,
  UnsupportedVersionError,
  UpgradeHeadersStrippedError,
  UpgradeRequiredError,
  type GuardError
} from '../errors.js'
import { listsUpgrade } from '../upgrade-headers.js'

// 16 bytes in base64: 22 characters and two padding characters (the test ws itself applies).
const keyShape = /^[A-Za-z0-9+/]{22}==$/

/**
 * The cheap checks of RFC 6455 §4.2.1, run before anything else. Node emits an upgrade
 * (`request.ws`) only when both `Upgrade` and `Connection: upgrade` arrived; a plain request
 * that still carries part of a handshake tells that a proxy dropped the hop-by-hop headers.
 */
export function checkHandshakeShape (request: FastifyRequest): GuardError | undefined {
  const headers = request.headers
  if (!request.ws) return diagnosePlainRequest(headers)
  if (headers.upgrade?.toLowerCase() !== 'websocket') return new UnsupportedUpgradeError()
  // injectWS passes the version as a number.
  if (String(headers['sec-websocket-version']) !== '13') return new UnsupportedVersionError()
  const key = headers['sec-websocket-key']
  if (key === undefined) return new InvalidKeyError('missing')
  if (!keyShape.test(key)) return new InvalidKeyError('malformed')
  return undefined
}

function diagnosePlainRequest (headers: FastifyRequest['headers']): GuardError {
  const hasUpgrade = headers.upgrade !== undefined
  const hasConnectionUpgrade = listsUpgrade(headers.connection)
  if (hasUpgrade && !hasConnectionUpgrade) {
    return new UpgradeHeadersStrippedError('"Connection: Upgrade" (Upgrade arrived alone)')
  }
  if (!hasUpgrade && hasConnectionUpgrade) {
    return new UpgradeHeadersStrippedError('"Upgrade: websocket" ("Connection: Upgrade" arrived alone)')
  }
  if (!hasUpgrade && (headers['sec-websocket-key'] !== undefined || headers['sec-websocket-version'] !== undefined)) {
    return new UpgradeHeadersStrippedError('"Upgrade" and "Connection" (Sec-WebSocket-Key/Version arrived without them)')
  }
  return new UpgradeRequiredError('"Upgrade: websocket" and "Connection: Upgrade"')
}
