import type { FastifyRequest } from 'fastify'
import { checkUser } from '../auth/authorize.js'
import type { AuthSettings } from '../auth/options.js'
import type { RevocationList } from '../auth/revocations.js'
import { precheckToken, verifyToken } from '../auth/verify.js'
import { RefreshUnavailableError, TokenInvalidError, TokenRevokedError, type GuardError } from '../errors.js'
import type { Connection, ConnectionTracker } from './tracker.js'

/**
 * `request.wsRefresh(token)` for the connections of one tracker: verifies a fresh token
 * delivered by the app's own protocol with the route's settings, requires the same `sub`, checks
 * the revocations, `isRevoked` and `authorize` as the handshake did, and moves the expiry deadline. On a refusal
 * the connection closes (4403 `forbidden` when `authorize` says no, 4401 otherwise) and the
 * promise rejects. Refreshes of one connection apply in the order they were called.
 */
export function createRefresh (tracker: ConnectionTracker, revocations: RevocationList): (this: FastifyRequest, token: string) => Promise<void> {
  return function wsRefresh (token) {
    const connection = tracker.connectionOf(this)
    const auth = connection?.state.settings.auth
    if (connection === undefined || auth === undefined || !connection.isOpen) return Promise.reject(new RefreshUnavailableError())
    const applied = connection.refreshed.then(() => refresh(tracker, revocations, connection, auth, token, this))
    connection.refreshed = applied.catch(noop)
    return applied
  }
}

async function refresh (tracker: ConnectionTracker, revocations: RevocationList, connection: Connection, auth: AuthSettings, token: unknown, request: FastifyRequest): Promise<void> {
  const { state } = connection
  const claims = typeof token === 'string' ? (precheckToken(token, auth.verify) ?? await verifyToken(token, auth.verify)) : new TokenInvalidError('malformed token')
  let error: GuardError | undefined
  if (claims instanceof Error) error = claims
  else if (typeof claims.sub !== 'string' || claims.sub !== state.user?.sub) error = new TokenInvalidError('the fresh token is for another subject')
  else if (revocations.revokes(claims)) error = new TokenRevokedError()
  else error = await checkUser(auth, claims, request)
  // Closed meanwhile: nothing to refresh, nothing to schedule.
  if (!connection.isOpen) throw new RefreshUnavailableError()
  if (error !== undefined) {
    const forbidden = error.closeCode === 4403
    const reason = forbidden ? 'forbidden' : error.code === 'FST_WS_GUARD_TOKEN_REVOKED' ? 'revoked' : 'tokenExpired'
    connection.close(reason, forbidden ? 4403 : 4401, error.closeReason)
    throw error
  }
  const fresh = Object.freeze(claims as Exclude<typeof claims, GuardError>)
  state.user = fresh
  request.wsUser = fresh
  tracker.setExpiry(connection, fresh.exp)
}

function noop (): void {}
