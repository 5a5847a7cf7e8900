import { randomUUID } from 'node:crypto'
import type { ConnectionStore, Lease } from '../store/contract.js'
import { MemoryStore } from '../store/memory.js'
import type { StoreHealth } from './store-health.js'

/** A lease this instance holds; `local` when it was taken in the fallback store during an outage. */
export interface HeldLease extends Lease {
  readonly local: boolean
}

/** What taking a lease came to: held, refused because the user is at the limit, or no store. */
export type LeaseOutcome = HeldLease | 'full' | 'unavailable'

/**
 * The leases of this instance's connections, one per authenticated connection under
 * `user:<sub>`: they count a user's connections across the fleet. Renewed together every
 * third of the store's `leaseTtl`, in one batch; a dead instance's leases lapse by themselves.
 */
export class LeaseKeeper {
  /** Names this instance's leases and control messages in the fleet. */
  readonly instanceId = randomUUID()
  readonly #idPrefix = this.instanceId + ':'
  readonly #store: ConnectionStore
  readonly #fallback: MemoryStore | undefined
  readonly #health: StoreHealth
  readonly #held = new Set<HeldLease>()
  #counter = 0
  #renewTimer: NodeJS.Timeout | undefined

  constructor (store: ConnectionStore, onStoreError: 'reject' | 'local', health: StoreHealth) {
    this.#store = store
    this.#fallback = onStoreError === 'local' ? new MemoryStore() : undefined
    this.#health = health
  }

  /** Takes a slot for `sub`, fleet-wide, unless `limit` connections hold one already. */
  acquire (sub: string, limit: number): LeaseOutcome | Promise<LeaseOutcome> {
    const lease = { key: 'user:' + sub, id: this.#idPrefix + ++this.#counter, local: false }
    let answer: boolean | Promise<boolean>
    try {
      answer = this.#store.acquire(lease, limit)
    } catch (err) {
      return this.#withoutStore(lease, limit, err)
    }
    if (typeof answer === 'boolean') return this.#took(lease, answer)
    return answer.then((ok) => this.#took(lease, ok), (err: unknown) => this.#withoutStore(lease, limit, err))
  }

  release (lease: HeldLease): void {
    this.#held.delete(lease)
    if (lease.local) this.#fallback!.release(lease)
    this.#settle(() => this.#store.release(lease))
  }

  /** Every third of the lease's life, extends all this instance holds; idle without leases. */
  startRenewing (): void {
    const ttl = this.#store.leaseTtl
    if (!Number.isFinite(ttl)) return
    this.#renewTimer = setInterval(() => this.renewAll(), Math.max(1, Math.floor(ttl / 3)))
    this.#renewTimer.unref()
  }

  stopRenewing (): void {
    clearInterval(this.#renewTimer)
  }

  /** Also after an outage: the store gets back every lease it lost, those taken locally meanwhile included. */
  renewAll (): void {
    if (this.#held.size === 0) return
    const leases = [...this.#held]
    this.#settle(() => this.#store.renew(leases))
  }

  count (sub: string): number | Promise<number> {
    return this.#store.count('user:' + sub)
  }

  #took (lease: HeldLease, ok: boolean): LeaseOutcome {
    this.#health.back()
    if (!ok) return 'full'
    this.#held.add(lease)
    return lease
  }

  /** `onStoreError: 'local'` counts in this process until the store is back; `'reject'` refuses. */
  #withoutStore (lease: HeldLease, limit: number, err: unknown): LeaseOutcome {
    this.#health.lost(err)
    if (this.#fallback === undefined) return 'unavailable'
    const local = { ...lease, local: true }
    if (!this.#fallback.acquire(local, limit)) return 'full'
    this.#held.add(local)
    return local
  }

  /** Runs a store call whose failure only the health needs to hear of: the connection is not at stake. */
  #settle (call: () => void | Promise<void>): void {
    try {
      const pending = call()
      if (pending !== undefined) pending.then(() => this.#health.back(), (err: unknown) => this.#health.lost(err))
    } catch (err) {
      this.#health.lost(err)
    }
  }
}
