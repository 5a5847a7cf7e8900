import type { Duplex } from 'node:stream'
import { TooManyConnectionsError, TooManyUserConnectionsError } from './errors.js'
import type { GuardStep, HandshakeState } from './guard.js'
import type { Rejection } from './reject.js'

/**
 * Where connections are counted. The in-memory default counts this process; a shared store
 * (Redis, say) can count a fleet. `acquire` counts one more connection under `key` unless
 * `limit` is reached and says whether it did; `release` forgets one. Keys are
 * `'connections'` (every guarded connection) and `'user:<sub>'`.
 */
export interface ConnectionStore {
  acquire: (key: string, limit: number) => boolean | Promise<boolean>
  release: (key: string) => void | Promise<void>
}

/** The default store: counts in this process. */
export class MemoryStore implements ConnectionStore {
  readonly #counts = new Map<string, number>()

  acquire (key: string, limit: number): boolean {
    const count = this.#counts.get(key) ?? 0
    if (count >= limit) return false
    this.#counts.set(key, count + 1)
    return true
  }

  release (key: string): void {
    const count = this.#counts.get(key) ?? 0
    if (count <= 1) this.#counts.delete(key)
    else this.#counts.set(key, count - 1)
  }

  count (key: string): number {
    return this.#counts.get(key) ?? 0
  }
}

const globalKey = 'connections'

/**
 * The last step before the upgrade: counts the connection in the store, process-wide and per
 * user (`sub`). Whatever happens next, the counts are released when the socket closes.
 */
export function createLimitStep (store: ConnectionStore, maxConnections: number | undefined, onStoreError: (err: unknown) => void): GuardStep {
  return function limitConnections (_request, state) {
    const perUser = state.settings.maxConnectionsPerUser
    const sub = state.user?.sub
    const userKey = perUser !== undefined && typeof sub === 'string' ? 'user:' + sub : undefined
    if (maxConnections === undefined && userKey === undefined) return undefined
    return acquireAll(store, state, maxConnections, userKey, perUser ?? 0, onStoreError)
  }
}

function acquireAll (
  store: ConnectionStore, state: HandshakeState, maxConnections: number | undefined,
  userKey: string | undefined, perUser: number, onStoreError: (err: unknown) => void
): Rejection | undefined | Promise<Rejection | undefined> {
  const held: string[] = []
  const acquireUser = (): Rejection | undefined | Promise<Rejection | undefined> => {
    if (userKey === undefined) return settle(store, state.socket, held, undefined, onStoreError)
    return step(store.acquire(userKey, perUser), (ok) => {
      if (ok) held.push(userKey)
      return settle(store, state.socket, held, ok ? undefined : { error: new TooManyUserConnectionsError() }, onStoreError)
    })
  }
  if (maxConnections === undefined) return acquireUser()
  return step(store.acquire(globalKey, maxConnections), (ok) => {
    if (!ok) return { error: new TooManyConnectionsError() }
    held.push(globalKey)
    return acquireUser()
  })
}

/** On refusal releases what was taken at once; otherwise when the socket closes. */
function settle (store: ConnectionStore, socket: Duplex, held: string[], rejection: Rejection | undefined, onStoreError: (err: unknown) => void): Rejection | undefined {
  const release = (): void => {
    for (const key of held) {
      // A store that throws, at once or later, is logged: it never takes the process down.
      try {
        Promise.resolve(store.release(key)).catch(onStoreError)
      } catch (err) {
        onStoreError(err)
      }
    }
  }
  if (rejection !== undefined || socket.destroyed) release()
  else socket.once('close', release)
  return rejection
}

/** Applies `next` to a value or to a promise of it, staying synchronous for a sync store. */
function step<T, R> (value: T | PromiseLike<T>, next: (value: T) => R | Promise<R>): R | Promise<R> {
  return typeof (value as PromiseLike<T> | undefined)?.then === 'function' ? Promise.resolve(value).then(next) : next(value as T)
}
