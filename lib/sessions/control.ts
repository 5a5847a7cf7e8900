import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import type { RevocationList } from '../auth/revocations.js'
import type { Connection, ConnectionTracker } from '../connection/tracker.js'
import { InvalidOptionError } from '../errors.js'
import { errorIdentity } from '../serializers.js'
import type { ConnectionStore, ControlMessage, Revocation, SessionFilter } from '../store/contract.js'
import { describe } from '../validate.js'
import type { LeaseKeeper } from './leases.js'
import type { StoreHealth } from './store-health.js'

/** What `app.wsGuard.sessions()` shows of one open connection: never its token. */
export interface SessionView {
  /** Unique in the fleet while the instance runs. */
  readonly id: string
  readonly sub: string | undefined
  readonly jti: string | undefined
  /** The route's URL pattern. */
  readonly route: string
  readonly protocol: string | false
  readonly remoteAddress: string | undefined
  /** Epoch ms. */
  readonly openedAt: number
  /** Epoch ms of the token's `exp`; `null` without one. */
  readonly expiresAt: number | null
}

/** `app.wsGuard.revoke()`: one token by `jti`, or a subject's tokens issued up to `issuedBefore` (epoch seconds, default now). */
export type RevokeTarget = { jti: string } | { sub: string, issuedBefore?: number | undefined }

/**
 * Sessions across the fleet: this instance's open connections, and the disconnects and
 * revocations every instance that shares the store applies. The instance that asks acts at
 * once; the others when the store's control channel brings the message.
 */
export class SessionControl {
  readonly #tracker: ConnectionTracker
  readonly #store: ConnectionStore
  readonly #leases: LeaseKeeper
  readonly #revocations: RevocationList
  readonly #health: StoreHealth
  readonly #log: FastifyBaseLogger
  readonly #revocationTtl: number
  #stopListening: (() => Promise<void>) | undefined

  constructor (tracker: ConnectionTracker, store: ConnectionStore, leases: LeaseKeeper, revocations: RevocationList, health: StoreHealth, log: FastifyBaseLogger, revocationTtl: number) {
    this.#tracker = tracker
    this.#store = store
    this.#leases = leases
    this.#revocations = revocations
    this.#health = health
    this.#log = log
    this.#revocationTtl = revocationTtl
  }

  /** At registration: the control channel, then the revocations in force, before the first handshake. */
  async start (): Promise<void> {
    let started = false
    this.#stopListening = await this.#store.listen({
      message: (message) => this.#receive(message),
      // The first load is awaited below; later ones follow outages.
      available: () => { if (started) this.#resync() },
      unavailable: (err) => this.#health.lost(err)
    })
    await this.#syncRevocations()
    started = true
    this.#leases.startRenewing()
  }

  async stop (): Promise<void> {
    this.#leases.stopRenewing()
    await this.#stopListening?.()
  }

  sessions (filter: SessionFilter = {}): SessionView[] {
    const match = sessionMatcher(filter, 'sessions')
    const views: SessionView[] = []
    for (const connection of this.#tracker.open) {
      if (match(connection)) views.push(viewOf(connection, this.#leases.instanceId))
    }
    return views
  }

  /** Closes the matching sessions on every instance; resolves with how many closed here. */
  async disconnect (filter: SessionFilter, options: { code?: number | undefined, reason?: string | undefined } = {}): Promise<number> {
    const match = sessionMatcher(filter, 'disconnect')
    const code = closeCode(options.code)
    const reason = closeReason(options.reason)
    const closed = this.#closeMatching(match, code, reason)
    await this.#store.publish({ type: 'disconnect', from: this.#leases.instanceId, filter: { ...filter }, code, reason })
    return closed
  }

  /**
   * Logs out everywhere: closes the matching sessions on every instance with 4401 `token
   * revoked`, and refuses matching tokens, at the handshake and on `wsRefresh`, until `until`
   * (epoch seconds). Resolves with how many closed here.
   */
  async revoke (target: RevokeTarget, options: { until?: number | undefined } = {}): Promise<number> {
    const revocation = revocationOf(target, options.until, this.#revocationTtl)
    this.#revocations.add(revocation)
    const closed = this.#closeRevoked()
    await this.#store.publish({ type: 'revoke', from: this.#leases.instanceId, revocation })
    return closed
  }

  /** How many connections `sub` holds across the fleet. */
  async count (filter: { sub: string }): Promise<number> {
    if (typeof filter?.sub !== 'string' || filter.sub === '') throw new InvalidOptionError(`count() needs { sub: 'user id' }, got ${describe(filter?.sub)}`)
    return await this.#leases.count(filter.sub)
  }

  #receive (message: ControlMessage): void {
    // What another instance sent went through its checks; a store bug must not end this process.
    try {
      if (message.from === this.#leases.instanceId) return
      if (message.type === 'disconnect') {
        this.#closeMatching(sessionMatcher(message.filter, 'disconnect'), closeCode(message.code), closeReason(message.reason))
      } else {
        this.#revocations.add(message.revocation)
        this.#closeRevoked()
      }
    } catch (err) {
      this.#log.warn({ wsGuard: { err: errorIdentity(err) } }, 'websocket control message ignored')
    }
  }

  /** The store is back: give it the leases it lost, and exchange revocations with it. */
  #resync (): void {
    this.#health.back()
    this.#leases.renewAll()
    this.#syncRevocations().catch((err: unknown) => this.#health.lost(err))
  }

  /** Takes the store's revocations in, and gives back those in force it lost or never got. */
  async #syncRevocations (): Promise<void> {
    const missing = this.#revocations.merge(await this.#store.revocations())
    this.#closeRevoked()
    for (const revocation of missing) await this.#store.publish({ type: 'revoke', from: this.#leases.instanceId, revocation })
  }

  #closeMatching (match: (connection: Connection) => boolean, code: number, reason: string): number {
    let closed = 0
    for (const connection of this.#tracker.open) {
      if (!connection.isOpen || !match(connection)) continue
      connection.close('disconnected', code, reason)
      closed++
    }
    if (closed > 0) this.#log.info({ wsGuard: { closed, code } }, 'websocket sessions disconnected')
    return closed
  }

  #closeRevoked (): number {
    let closed = 0
    for (const connection of this.#tracker.open) {
      const user = connection.state.user
      if (user === null || !connection.isOpen || !this.#revocations.revokes(user)) continue
      connection.close('revoked', 4401, 'token revoked')
      closed++
    }
    if (closed > 0) this.#log.info({ wsGuard: { closed } }, 'websocket sessions revoked')
    return closed
  }
}

function viewOf (connection: Connection, instanceId: string): SessionView {
  const { state } = connection
  const exp = state.user?.exp
  return Object.freeze({
    id: `${instanceId}:${connection.id}`,
    sub: stringClaim(state.user?.sub),
    jti: stringClaim(state.user?.jti),
    route: state.route,
    protocol: state.protocol,
    remoteAddress: state.request.socket.remoteAddress,
    openedAt: Math.round(performance.timeOrigin + connection.openedAt),
    expiresAt: typeof exp === 'number' ? exp * 1000 : null
  })
}

function stringClaim (value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined
}

/** A filter's test; `disconnect` insists on at least one field, so that nobody kicks everyone by accident. */
function sessionMatcher (filter: SessionFilter, method: string): (connection: Connection) => boolean {
  if (typeof filter !== 'object' || filter === null) throw new InvalidOptionError(`${method}() takes a filter { sub?, jti?, route? }, got ${describe(filter)}`)
  const { sub, jti, route } = filter
  for (const [name, value] of [['sub', sub], ['jti', jti], ['route', route]] as const) {
    if (value !== undefined && typeof value !== 'string') throw new InvalidOptionError(`${method}(): filter.${name} must be a string, got ${describe(value)}`)
  }
  if (method === 'disconnect' && sub === undefined && jti === undefined && route === undefined) {
    throw new InvalidOptionError('disconnect() needs a filter with sub, jti or route; to close every connection, close the app')
  }
  return (connection) => {
    const user = connection.state.user
    return (sub === undefined || user?.sub === sub) &&
      (jti === undefined || user?.jti === jti) &&
      (route === undefined || connection.state.route === route)
  }
}

/** Codes an app may close with: normal, going away, policy, and the application range. */
function closeCode (code: unknown): number {
  if (code === undefined) return 4403
  if (code === 1000 || code === 1001 || code === 1008 || (Number.isInteger(code) && (code as number) >= 4000 && (code as number) <= 4999)) return code as number
  throw new InvalidOptionError(`disconnect(): code must be 1000, 1001, 1008 or 4000 to 4999, got ${describe(code)}${typeof code === 'number' ? ' ' + String(code) : ''}`)
}

function closeReason (reason: unknown): string {
  if (reason === undefined) return 'disconnected'
  // RFC 6455 §5.5: a control frame's payload is at most 125 bytes, two of them the code.
  if (typeof reason !== 'string' || Buffer.byteLength(reason) > 123) {
    throw new InvalidOptionError(`disconnect(): reason must be a string of at most 123 bytes, got ${typeof reason === 'string' ? `${Buffer.byteLength(reason)} bytes` : describe(reason)}`)
  }
  return reason
}

function revocationOf (target: RevokeTarget, until: unknown, revocationTtl: number): Revocation {
  const now = Math.floor(Date.now() / 1000)
  if (until !== undefined && (typeof until !== 'number' || !Number.isFinite(until) || until <= now)) {
    throw new InvalidOptionError(`revoke(): until is epoch seconds in the future, as in Math.floor(Date.now() / 1000) + 3600, got ${describe(until)}${typeof until === 'number' ? ' ' + String(until) : ''}`)
  }
  const expires = (until as number | undefined) ?? now + revocationTtl
  const { jti, sub, issuedBefore } = (target ?? {}) as { jti?: unknown, sub?: unknown, issuedBefore?: unknown }
  if (typeof jti === 'string' && jti !== '' && sub === undefined) return { jti, until: expires }
  if (typeof sub === 'string' && sub !== '' && jti === undefined) {
    if (issuedBefore !== undefined && (typeof issuedBefore !== 'number' || !Number.isFinite(issuedBefore))) {
      throw new InvalidOptionError(`revoke(): issuedBefore is epoch seconds, got ${describe(issuedBefore)}`)
    }
    return { sub, issuedBefore: (issuedBefore as number | undefined) ?? now, until: expires }
  }
  throw new InvalidOptionError('revoke() takes { jti } for one token or { sub, issuedBefore? } for a user\'s tokens')
}
