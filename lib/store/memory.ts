import type { ConnectionStore, ControlMessage, Lease, Revocation, StoreListener } from './contract.js'

/**
 * The default store: one process. Leases live as long as the process, so they never need
 * renewing; the control channel reaches every guard that shares this store object (several
 * plugin instances in one app, say).
 */
export class MemoryStore implements ConnectionStore {
  readonly leaseTtl = Infinity
  /** key → ids of the leases held under it. */
  readonly #leases = new Map<string, Set<string>>()
  readonly #revocations: Revocation[] = []
  readonly #listeners = new Set<StoreListener>()

  acquire (lease: Lease, limit: number): boolean {
    let held = this.#leases.get(lease.key)
    if (held === undefined) {
      if (limit < 1) return false
      held = new Set()
      this.#leases.set(lease.key, held)
    } else if (held.size >= limit) {
      return false
    }
    held.add(lease.id)
    return true
  }

  renew (): void {}

  release (lease: Lease): void {
    const held = this.#leases.get(lease.key)
    if (held === undefined) return
    held.delete(lease.id)
    if (held.size === 0) this.#leases.delete(lease.key)
  }

  count (key: string): number {
    return this.#leases.get(key)?.size ?? 0
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
