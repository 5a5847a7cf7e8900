import type { Duplex } from 'node:stream'
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
  // 'close' listeners shared by every socket of this guard (`this` is the socket): nothing
  // allocated per connection, which holds its count and lease for as long as it is open. A
  // socket closes once, so `on()` does what `once()` would without its wrapper.
  const leave = (): void => { open-- }
  function releaseLease (this: LeasedSocket): void {
    leases.release(this[kLease]!)
  }
  return function limitConnections (_request, state) {
    if (maxConnections !== undefined) {
      if (open >= maxConnections) return { error: new TooManyConnectionsError() }
      open++
      state.socket.on('close', leave)
    }
    const sub = state.user?.sub
    if (typeof sub !== 'string') return undefined
    const limit = state.settings.maxConnectionsPerUser ?? Infinity
    const outcome = leases.acquire(sub, limit)
    return outcome instanceof Promise ? outcome.then((taken) => hold(state, limit, taken)) : hold(state, limit, outcome)
  }

  function hold (state: HandshakeState, limit: number, outcome: LeaseOutcome): Rejection | undefined {
    if (outcome === 'full') return { error: new TooManyUserConnectionsError() }
    // Without a limit the lease only counts: no reason to refuse the user while the store is away.
    if (outcome === 'unavailable') return limit === Infinity ? undefined : { error: new StoreUnavailableError() }
    // A client that hung up while the store answered: nothing will close later.
    if (state.socket.destroyed) {
      leases.release(outcome)
      return undefined
    }
    const socket = state.socket as LeasedSocket
    socket[kLease] = outcome
    socket.on('close', releaseLease)
    return undefined
  }
}

const kLease = Symbol('fastify-ws-guard.lease')

type LeasedSocket = Duplex & { [kLease]?: HeldLease }
