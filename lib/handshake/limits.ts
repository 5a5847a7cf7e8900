import { StoreUnavailableError, TooManyConnectionsError, TooManyUserConnectionsError } from '../errors.js'
import type { HeldLease, LeaseKeeper, LeaseOutcome } from '../sessions/leases.js'
import type { GuardStep, HandshakeState, Rejection } from './contract.js'

/**
 * Step 7 of the chain, the last before the upgrade: room for one more connection in this
 * process (`maxConnections`, counted here: it protects one process), then the user's lease in
 * the store, which counts their connections across the fleet (`maxConnectionsPerUser`, and
 * `app.wsGuard.count()`). Whatever happens next, both are given back when the socket closes.
 */
export function createLimitStep (leases: LeaseKeeper, maxConnections: number | undefined): GuardStep {
  let open = 0
  const leave = (): void => { open-- }
  return function limitConnections (_request, state) {
    if (maxConnections !== undefined) {
      if (open >= maxConnections) return { error: new TooManyConnectionsError() }
      open++
      state.socket.once('close', leave)
    }
    const sub = state.user?.sub
    if (typeof sub !== 'string') return undefined
    const limit = state.settings.maxConnectionsPerUser ?? Infinity
    const outcome = leases.acquire(sub, limit)
    return outcome instanceof Promise ? outcome.then((taken) => hold(leases, state, limit, taken)) : hold(leases, state, limit, outcome)
  }
}

function hold (leases: LeaseKeeper, state: HandshakeState, limit: number, outcome: LeaseOutcome): Rejection | undefined {
  if (outcome === 'full') return { error: new TooManyUserConnectionsError() }
  // Without a limit the lease only counts: no reason to refuse the user while the store is away.
  if (outcome === 'unavailable') return limit === Infinity ? undefined : { error: new StoreUnavailableError() }
  const release = (): void => leases.release(outcome as HeldLease)
  // A client that hung up while the store answered: nothing will close later.
  if (state.socket.destroyed) release()
  else state.socket.once('close', release)
  return undefined
}
