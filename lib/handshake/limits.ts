import type { Duplex } from 'node:stream'
import { TooManyConnectionsError, TooManyUserConnectionsError } from '../errors.js'
import type { ConnectionStore } from '../store/contract.js'
import type { GuardStep, HandshakeState, Rejection } from './contract.js'

const globalKey = 'connections'

/**
 * Step 7 of the chain, the last before the upgrade: counts the connection in the store, process-wide and per
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
