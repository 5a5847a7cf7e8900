import { performance } from 'node:perf_hooks'
import type { Duplex } from 'node:stream'
import type { FastifyRequest } from 'fastify'
import type { JWTPayload } from 'jose'
import type { GuardError } from '../errors.js'
import type { RouteSettings } from '../setup/options.js'

/*
 * What the steps of the handshake chain share: the state of one handshake, the shape of a
 * step and of a refusal. The chain (chain.ts) imports the steps, never the reverse.
 */

/** Where the guard keeps a handshake's state on the raw request, for ws's callbacks. */
export const kHandshake = Symbol('fastify-ws-guard.handshake')

/**
 * What the guard knows about one handshake; kept on the raw request under {@link kHandshake}.
 * A class, not an object literal: V8 moves a literal whose objects tend to live long into the
 * old generation as it is allocated, and every socket such a state points to then survives the
 * young-generation collections until the next full one, short-lived handshakes included.
 */
export class HandshakeState {
  /** The subprotocol the 101 names; `false` for none. */
  protocol: string | false = false
  /** The verified claims, on authenticated routes. */
  user: Readonly<JWTPayload> | null = null
  /** `performance.now()` when the guard started on this handshake. */
  readonly startedAt = performance.now()

  constructor (
    /** The plugin instance that guards it: several may share one ws server. */
    readonly owner: symbol,
    readonly settings: RouteSettings,
    /** The route's URL pattern, never the request URL (which may carry a token in its query). */
    readonly route: string,
    readonly offeredProtocols: readonly string[],
    /** The upgrade socket; limits release their counts when it closes. */
    readonly socket: Duplex,
    readonly request: FastifyRequest
  ) {}
}

/** A refusal: the error, and response headers beyond the error's own (an auth challenge). */
export interface Rejection {
  readonly error: GuardError
  readonly headers?: Readonly<Record<string, string>> | undefined
}

/** One check of the chain: `undefined` to go on, a rejection to stop, or a promise of either. */
export type GuardStep = (request: FastifyRequest, state: HandshakeState) => Rejection | undefined | Promise<Rejection | undefined>

/** The raw request of a guarded handshake. */
export type GuardedIncomingMessage = FastifyRequest['raw'] & { [kHandshake]?: HandshakeState }
