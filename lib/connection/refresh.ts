import type { FastifyRequest } from 'fastify'
import { precheckToken, verifyToken } from '../auth/verify.js'
import { RefreshUnavailableError, TokenInvalidError, TokenRevokedError, type GuardError } from '../errors.js'
import type { ConnectionTracker } from './tracker.js'

/**
 * `request.wsRefresh(token)` for the connections of one tracker: verifies a fresh token
 * delivered by the app's own protocol with the route's settings, requires the same `sub`, and
 * moves the expiry deadline. On failure the connection closes with 4401 and the promise rejects.
 */
export function createRefresh (tracker: ConnectionTracker): (this: FastifyRequest, token: string) => Promise<void> {
  return async function wsRefresh (token) {
    const connection = tracker.connectionOf(this)
    const auth = connection?.state.settings.auth
    if (connection === undefined || auth === undefined) throw new RefreshUnavailableError()
    const { state } = connection
    const claims = typeof token === 'string' ? (precheckToken(token, auth.verify) ?? await verifyToken(token, auth.verify)) : new TokenInvalidError('malformed token')
    let error: GuardError | undefined
    if (claims instanceof Error) error = claims
    else if (claims.sub !== state.user?.sub) error = new TokenInvalidError('the fresh token is for another subject')
    else if (auth.isRevoked !== undefined && await auth.isRevoked(claims, this) !== false) error = new TokenRevokedError()
    if (error !== undefined) {
      connection.close('tokenExpired', 4401, error.closeReason)
      throw error
    }
    const fresh = Object.freeze(claims as Exclude<typeof claims, GuardError>)
    state.user = fresh
    this.wsUser = fresh
    tracker.setExpiry(connection, fresh.exp)
  }
}
