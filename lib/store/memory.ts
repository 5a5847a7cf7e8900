import type { ConnectionStore, ControlMessage, Lease, Revocation, StoreListener } from './contract.js'

/**
 * The default store: one process. Leases live as long as the process, so they never need
 * renewing; the control channel reaches every guard that shares this store object (several
 * plugin instances in one app, say).
 */
export class MemoryStore implements ConnectionStore {
  readonly leaseTtl = Infinity
  /** key → the id of the one lease held under it, or the ids of several: most users hold one. */
  readonly #leases = new Map<string, string | Set<string>>()
  readonly #revocations: Revocation[] = []
  readonly #listeners = new Set<StoreListener>()

  acquire (lease: Lease, limit: number): boolean {
    const held = this.#leases.get(lease.key)
    if (sizeOf(held) >= limit) return false
    if (held === undefined) this.#leases.set(lease.key, lease.id)
    else if (typeof held !== 'string') held.add(lease.id)
    else if (held !== lease.id) this.#leases.set(lease.key, new Set([held, lease.id]))
    return true
  }

  renew (): void {}

  release (lease: Lease): void {
    const held = this.#leases.get(lease.key)
    if (held === lease.id) {
      this.#leases.delete(lease.key)
    } else if (typeof held === 'object' && held.delete(lease.id) && held.size === 1) {
      this.#leases.set(lease.key, held.values().next().value!)
    }
  }

  count (key: string): number {
    return sizeOf(this.#leases.get(key))
  }

  publish (message: ControlMessage): void {
    if (message.type === 'revoke') {
      this.#dropExpired()
      this.#revocations.push(message.revocation)
    }
    // Delivered after the caller's own work, as over a network.
    queueMicrotask(() => {
      for (const listener of this.#listeners) listener.message(message)
    })
  }

  revocations (): readonly Revocation[] {
    this.#dropExpired()
    return [...this.#revocations]
  }

  #dropExpired (): void {
    const now = Date.now() / 1000
    for (let i = this.#revocations.length - 1; i >= 0; i--) {
      if (this.#revocations[i]!.until <= now) this.#revocations.splice(i, 1)
    }
  }

  async listen (listener: StoreListener): Promise<() => Promise<void>> {
    this.#listeners.add(listener)
    listener.available()
    return async () => { this.#listeners.delete(listener) }
  }
}

function sizeOf (held: string | Set<string> | undefined): number {
  return held === undefined ? 0 : typeof held === 'string' ? 1 : held.size
}
