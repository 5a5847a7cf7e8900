// Turning fastify-ws-guard's diagnostics channels into OpenTelemetry metrics and spans, with
// nothing but @opentelemetry/api: the app brings its SDK and exporters.
// In an app, import `channels` from 'fastify-ws-guard'.
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { performance } from 'node:perf_hooks'
import { metrics, SpanKind, SpanStatusCode, trace, type Attributes, type MeterProvider, type TracerProvider } from '@opentelemetry/api'
import { channels, type AcceptedMessage, type ClosedMessage, type RejectedMessage } from '../index.js'

export interface WsGuardTelemetryOptions {
  /** Default: the global one the SDK registered. */
  meterProvider?: MeterProvider
  /** Default: the global one the SDK registered. */
  tracerProvider?: TracerProvider
}

/**
 * Records the guard's events as OpenTelemetry metrics (connections accepted, handshakes
 * refused by code, connections closed by reason, the handshake duration) and one span per
 * handshake; returns a function that stops recording. Attributes are the route pattern, the
 * code, the close reason and the status: a bounded set, and never a token, a claim or `sub`
 * (one series per user, and personal data in every backend the telemetry reaches).
 *
 * @example
 * ```ts
 * // After the SDK started (NodeSDK, or providers registered globally):
 * recordWsGuardTelemetry()
 * ```
 */
export function recordWsGuardTelemetry (options: WsGuardTelemetryOptions = {}): () => void {
  const meter = (options.meterProvider ?? metrics.getMeterProvider()).getMeter('fastify-ws-guard')
  const tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer('fastify-ws-guard')
  const accepted = meter.createCounter('ws_guard.connections.accepted', { description: 'WebSocket connections accepted', unit: '{connection}' })
  const rejected = meter.createCounter('ws_guard.handshakes.rejected', { description: 'WebSocket handshakes refused, by code', unit: '{handshake}' })
  const closed = meter.createCounter('ws_guard.connections.closed', { description: 'WebSocket connections ended, by reason', unit: '{connection}' })
  const handshakeDuration = meter.createHistogram('ws_guard.handshake.duration', {
    description: 'From the upgrade request to the verdict: the guard\'s checks, JWT verification included',
    unit: 's',
    advice: { explicitBucketBoundaries: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] }
  })

  /** One span per handshake, started back when the request came (the messages come at the verdict). */
  const recordHandshake = (attributes: Attributes, handshakeMs: number, failed: boolean): void => {
    const end = performance.timeOrigin + performance.now()
    const span = tracer.startSpan('ws_guard.handshake', {
      kind: SpanKind.SERVER,
      startTime: end - handshakeMs,
      attributes: { ...attributes, 'ws_guard.handshake.duration_ms': handshakeMs }
    })
    // As for HTTP server spans: a refusal of the client's request (4xx) is no server error.
    if (failed) span.setStatus({ code: SpanStatusCode.ERROR, message: String(attributes['ws_guard.code']) })
    span.end(end)
    handshakeDuration.record(handshakeMs / 1000, attributes)
  }

  const onAccepted = (message: unknown): void => {
    const { route, handshakeMs } = message as AcceptedMessage
    accepted.add(1, { 'http.route': route })
    recordHandshake({ 'http.route': route, 'ws_guard.outcome': 'accepted', 'http.response.status_code': 101 }, handshakeMs, false)
  }
  const onRejected = (message: unknown): void => {
    const { route, code, statusCode, handshakeMs } = message as RejectedMessage
    // Upgrades to no route have no route pattern, and never the URL.
    const where: Attributes = route === undefined ? {} : { 'http.route': route }
    rejected.add(1, { ...where, 'ws_guard.code': code })
    recordHandshake({ ...where, 'ws_guard.outcome': 'rejected', 'ws_guard.code': code, 'http.response.status_code': statusCode }, handshakeMs, statusCode >= 500)
  }
  const onClosed = (message: unknown): void => {
    const { route, reason } = message as ClosedMessage
    closed.add(1, { 'http.route': route, 'ws_guard.close_reason': reason })
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
