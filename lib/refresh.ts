import type { FastifyRequest } from 'fastify'
import { RefreshUnavailableError, TokenInvalidError, TokenRevokedError, type GuardError } from './errors.js'
import type { HandshakeState } from './guard.js'
import { closeReasonFor } from './reject.js'
import { kHandshake } from './symbols.js'
import { precheckToken, verifyToken } from './auth/verify.js'

/**
 * `request.wsRefresh(token)`: verifies a fresh token delivered by the app's own protocol with
 * the route's settings, requires the same `sub`, and moves the expiry deadline. On failure
 * the connection closes with 4401 and the promise rejects.
 */
export async function wsRefresh (this: FastifyRequest, token: string): Promise<void> {
  const state = (this.raw as FastifyRequest['raw'] & { [kHandshake]?: HandshakeState })[kHandshake]
  const connection = state?.connection
  const auth = state?.settings.auth
  if (connection === undefined || auth === undefined) throw new RefreshUnavailableError()
  const claims = typeof token === 'string' ? (precheckToken(token, auth.verify) ?? await verifyToken(token, auth.verify)) : new TokenInvalidError('malformed token')
  let error: GuardError | undefined
  if (claims instanceof Error) error = claims
  else if (claims.sub !== state!.user?.sub) error = new TokenInvalidError('the fresh token is for another subject')
  else if (auth.isRevoked !== undefined && await auth.isRevoked(claims, this) !== false) error = new TokenRevokedError()
  if (error !== undefined) {
    connection.close('tokenExpired', 4401, closeReasonFor(error))
    throw error
  }
  const fresh = Object.freeze(claims as Exclude<typeof claims, GuardError>)
  state!.user = fresh
  this.wsUser = fresh
  connection.tracker.setExpiry(connection, fresh.exp)
}
