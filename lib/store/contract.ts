/*
 * What the guard needs from the place where a fleet shares its state: leases that count a
 * user's connections across instances and come back by themselves when an instance dies, and
 * a control channel that carries disconnects and revocations to every instance.
 * `MemoryStore` is the one-process default; `RedisStore` (fastify-ws-guard/redis) the fleet's.
 */

/**
 * One connection's slot under a key (`user:<sub>`). The instance that took it renews it while
 * the connection lives; a lease not renewed for `leaseTtl` ms is gone, and so is its slot.
 */
export interface Lease {
  readonly key: string
  /** Unique in the fleet: the instance's id and a counter. */
  readonly id: string
}

/** Which sessions a disconnect applies to: every field given must match. */
export interface SessionFilter {
  readonly sub?: string | undefined
  readonly jti?: string | undefined
  readonly route?: string | undefined
}

/**
 * A revoked token (`jti`), or every token of a subject issued before `issuedBefore`. Times are
 * epoch seconds; the revocation is dropped after `until`.
 */
export type Revocation =
  | { readonly jti: string, readonly until: number }
  | { readonly sub: string, readonly issuedBefore: number, readonly until: number }

/** What instances tell each other. `from` is the sending instance's id: it acts at once, not on its echo. */
export type ControlMessage =
  | { readonly type: 'disconnect', readonly from: string, readonly filter: SessionFilter, readonly code: number, readonly reason: string }
  | { readonly type: 'revoke', readonly from: string, readonly revocation: Revocation }

/** How a store tells the guard what happens on its side. */
export interface StoreListener {
  /** A control message from any instance, this one included. */
  message: (message: ControlMessage) => void
  /**
   * The store answers commands (again): the guard re-adds its live leases and reloads the
   * revocations, whatever was lost or missed while it was away. Disconnect messages sent
   * meanwhile are not replayed.
   */
  available: () => void
  /** The store went away; handshakes that need it follow `onStoreError`. */
  unavailable: (err: unknown) => void
}

/**
 * A place to count connections and carry control messages. Methods on the handshake path may
 * answer synchronously (the memory store does); a store that cannot reach its backend throws
 * or rejects, and the guard follows `onStoreError`.
 */
export interface ConnectionStore {
  /** How long a lease lives without renewal, in ms. The guard renews every third of it. */
  readonly leaseTtl: number
  /** Takes a slot under `lease.key` unless `limit` live leases hold it; says whether it did. */
  acquire: (lease: Lease, limit: number) => boolean | Promise<boolean>
  /**
   * Extends live leases by `leaseTtl`, re-adding any the store lost, whatever the limit: after
   * a store lost its data, a user may hold more than the limit until leases lapse. Called in batches.
   */
  renew: (leases: readonly Lease[]) => void | Promise<void>
  release: (lease: Lease) => void | Promise<void>
  /** Live leases under `key`, fleet-wide. */
  count: (key: string) => number | Promise<number>
  /** Sends a message to every instance; a revocation is also kept until its `until`, for instances that start later. */
  publish: (message: ControlMessage) => void | Promise<void>
  /** The revocations still in force. */
  revocations: () => readonly Revocation[] | Promise<readonly Revocation[]>
  /**
   * Starts delivering to `listener`; resolves with the way to stop (at `app.close()`). Rejects
   * when the store cannot be reached at all: the app does not start without it.
   */
  listen: (listener: StoreListener) => Promise<() => Promise<void>>
}
