import { channel } from 'node:diagnostics_channel'
import type { GuardErrorCode } from './errors.js'

/**
 * Why a guarded connection ended: `normal` a close handshake either side started; `abnormal`
 * no close frame (a reset, a vanished client); `heartbeatTimeout` the read deadline;
 * `writeDeadline` a client not reading; `tokenExpired` its token's `exp`, or a refresh
 * refused; `forbidden` a refresh `authorize` refused; `shutdown` `app.close()`; `limit`
 * `maxBufferedBytes`; `protocolError` the client broke RFC 6455 or a ws limit (bad frames,
 * too many fragments); `error` the app's handler or one of its listeners failed; `revoked`
 * `revoke()` or a recheck; `disconnected` `disconnect()`; `messageTooBig` `maxMessageBytes`;
 * `messageRate` `messageRate` with `onExcess: 'close'`; `maxAge` `maxConnectionAge`.
 */
export type CloseReason =
  | 'normal' | 'abnormal' | 'heartbeatTimeout' | 'writeDeadline' | 'tokenExpired' | 'forbidden' | 'shutdown' | 'limit'
  | 'protocolError' | 'error' | 'revoked' | 'disconnected' | 'messageTooBig' | 'messageRate' | 'maxAge'

/** What `app.wsGuard.stats()` returns. */
export interface WsGuardStats {
  /** Guarded connections open now. */
  open: number
  /** Upgrades the guard let through since start. */
  accepted: number
  /** Refused handshakes, by error code. */
  rejected: Record<string, number>
  /** Ended connections, by reason. */
  closed: Record<CloseReason, number>
  /** Messages `messageRate` dropped (`onExcess: 'drop'`). */
  dropped: number
}

/**
 * `diagnostics_channel` names the guard publishes on. Messages carry the request id, the
 * route pattern, codes or reasons, the user's `sub` where known and durations; never a token.
 */
export const channels = Object.freeze({
  /** `{ requestId, route, protocol, sub, handshakeMs }` */
  accepted: 'fastify-ws-guard:accepted',
  /** `{ requestId, route, code, statusCode, sub, handshakeMs }` */
  rejected: 'fastify-ws-guard:rejected',
  /** `{ requestId, route, reason, code, sub, durationMs }` */
  closed: 'fastify-ws-guard:closed',
  /** `{ requestId, route, sub }`: a message `messageRate` dropped. */
  dropped: 'fastify-ws-guard:dropped'
})

/** A message of `channels.accepted`. */
export interface AcceptedMessage {
  readonly requestId: string
  readonly route: string
  readonly protocol: string | false
  readonly sub: unknown
  readonly handshakeMs: number
}

/** A message of `channels.rejected`. */
export interface RejectedMessage {
  readonly requestId: string
  /** `undefined` for an upgrade to a path no route matches. */
  readonly route: string | undefined
  readonly code: GuardErrorCode
  readonly statusCode: number
  readonly sub: unknown
  /** 0 for a handshake refused before the chain started (malformed, not a WebSocket route). */
  readonly handshakeMs: number
}

/** A message of `channels.closed`. */
export interface ClosedMessage {
  readonly requestId: string
  readonly route: string
  readonly reason: CloseReason
  readonly code: number
  readonly sub: unknown
  readonly durationMs: number
}

/** A message of `channels.dropped`. */
export interface DroppedMessage {
  readonly requestId: string
  readonly route: string
  readonly sub: unknown
}

export const acceptedChannel = channel(channels.accepted)
export const rejectedChannel = channel(channels.rejected)
export const closedChannel = channel(channels.closed)
export const droppedChannel = channel(channels.dropped)

/** Counters of one plugin instance; the open count is the tracker's, not kept twice. */
export class StatsCounter {
  accepted = 0
  dropped = 0
  readonly rejected: Record<string, number> = {}
  readonly closed: Record<CloseReason, number> = { normal: 0, abnormal: 0, heartbeatTimeout: 0, writeDeadline: 0, tokenExpired: 0, forbidden: 0, shutdown: 0, limit: 0, protocolError: 0, error: 0, revoked: 0, disconnected: 0, messageTooBig: 0, messageRate: 0, maxAge: 0 }

  countRejection (code: string): void {
    this.rejected[code] = (this.rejected[code] ?? 0) + 1
  }

  snapshot (open: number): WsGuardStats {
    return { open, accepted: this.accepted, rejected: { ...this.rejected }, closed: { ...this.closed }, dropped: this.dropped }
  }
}
