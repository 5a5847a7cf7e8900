// Counting fastify-ws-guard's diagnostics channels into prom-client metrics.
// In an app, import `channels` from 'fastify-ws-guard'.
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { channels } from '../index.js'

/**
 * Registers WebSocket metrics on `registry` and counts the guard's events into them; returns a
 * function that stops counting. Labels are the route pattern, the refusal code and the close
 * reason: a bounded set. Never label by `sub`: that is one series per user.
 *
 * @example
 * ```ts
 * const registry = new Registry()
 * countWsGuardEvents(registry)
 * app.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()))
 * ```
 */
export function countWsGuardEvents (registry: Registry): () => void {
  const registers = [registry]
  const accepted = new Counter({ name: 'ws_guard_accepted_total', help: 'WebSocket connections accepted', labelNames: ['route'], registers })
  const rejected = new Counter({ name: 'ws_guard_rejected_total', help: 'WebSocket handshakes refused', labelNames: ['route', 'code'], registers })
  const closed = new Counter({ name: 'ws_guard_closed_total', help: 'WebSocket connections ended', labelNames: ['route', 'reason'], registers })
  const open = new Gauge({ name: 'ws_guard_open', help: 'WebSocket connections open', labelNames: ['route'], registers })
  const lifetime = new Histogram({
    name: 'ws_guard_connection_seconds',
    help: 'How long WebSocket connections lasted',
    labelNames: ['route'],
    buckets: [1, 10, 60, 600, 3600],
    registers
  })

  const onAccepted = (message: unknown): void => {
    const { route } = message as { route: string }
    accepted.inc({ route })
    open.inc({ route })
  }
  const onRejected = (message: unknown): void => {
    const { route, code } = message as { route: string, code: string }
    rejected.inc({ route, code })
  }
  const onClosed = (message: unknown): void => {
    const { route, reason, durationMs } = message as { route: string, reason: string, durationMs: number }
    closed.inc({ route, reason })
    open.dec({ route })
    lifetime.observe({ route }, durationMs / 1000)
  }

  subscribe(channels.accepted, onAccepted)
  subscribe(channels.rejected, onRejected)
  subscribe(channels.closed, onClosed)
  return () => {
    unsubscribe(channels.accepted, onAccepted)
    unsubscribe(channels.rejected, onRejected)
    unsubscribe(channels.closed, onClosed)
  }
}
