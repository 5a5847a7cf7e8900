import { channel } from 'node:diagnostics_channel'
import { metrics, SpanKind, SpanStatusCode, trace, type Attributes } from '@opentelemetry/api'
import { AggregationTemporality, DataPointType, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader, type MetricData } from '@opentelemetry/sdk-metrics'
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider, type ReadableSpan } from '@opentelemetry/sdk-trace'
import { test, type Test } from 'tap'
import wsGuard, { channels } from '../index.js'
import { recordWsGuardTelemetry } from '../example/opentelemetry.js'
import { startApp } from './helpers/app.js'
import { openClient, tryConnect, whenClosed } from './helpers/clients.js'
import { bearer, mint, secret, secretBytes, sensitive } from './helpers/tokens.js'
import { waitFor } from './helpers/wait.js'

/** An SDK as an app sets one up, with in-memory exporters: metrics are read on `collect()`. */
function inMemorySdk (t: Test) {
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  // An interval far past the test: exports happen on forceFlush() only.
  const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 })
  const meterProvider = new MeterProvider({ readers: [reader] })
  const spanExporter = new InMemorySpanExporter()
  const tracerProvider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter: spanExporter })] })
  t.teardown(async () => {
    await meterProvider.shutdown()
    await tracerProvider.shutdown()
  })
  return {
    meterProvider,
    tracerProvider,
    spans: (): ReadableSpan[] => spanExporter.getFinishedSpans(),
    /** Every metric of the last export, by name. */
    collect: async (): Promise<Map<string, MetricData>> => {
      await reader.forceFlush()
      const last = metricExporter.getMetrics().at(-1)
      return new Map((last?.scopeMetrics ?? []).flatMap((scope) => scope.metrics).map((metric) => [metric.descriptor.name, metric]))
    }
  }
}

/** `[attributes, value]` of each data point of a counter. */
function sums (metric: MetricData | undefined): Array<[Attributes, number]> {
  if (metric?.dataPointType !== DataPointType.SUM) return []
  return metric.dataPoints.map((point) => [point.attributes, point.value])
}

test('the OpenTelemetry example records real handshakes as metrics and spans', async (t) => {
  const sdk = inMemorySdk(t)
  const stop = recordWsGuardTelemetry({ meterProvider: sdk.meterProvider, tracerProvider: sdk.tracerProvider })
  t.teardown(stop)
  const { app, url } = await startApp(t, async (app) => {
    await app.register(wsGuard, {
      origins: ['https://app.example.com'],
      handshakeTimeout: 200,
      auth: { secret, authorize: (user) => user.role === 'slow' ? new Promise<boolean>(() => {}) : true }
    })
    app.wsRoute('/chat/:room', () => {})
  })
  const origin = 'https://app.example.com'
  const good = await mint(secretBytes, { sub: sensitive.sub })
  const forged = await mint(new TextEncoder().encode('not-the-secret-0123456789-abcdefghijklmnopqrstuv'), { sub: sensitive.sub })
  const slow = await mint(secretBytes, { sub: sensitive.sub, role: 'slow' })

  const alice = await openClient(t, url('/chat/1'), [], bearer(good, { origin }))
  const refusals = [
    await tryConnect(url('/chat/1'), [], bearer(forged, { origin })),
    await tryConnect(url('/chat/1'), [], bearer(good, { origin: 'https://evil.example' })),
    await tryConnect(url('/chat/1'), [], bearer(slow, { origin })),
    await tryConnect(url('/nowhere'), [], bearer(good, { origin }))
  ]
  t.same(refusals.map((outcome) => outcome.kind === 'refused' && outcome.status), [401, 403, 503, 404], 'four handshakes refused')
  const closed = whenClosed(alice)
  alice.close()
  await closed
  await waitFor(() => app.wsGuard.stats().closed.normal === 1, 'the close')

  const recorded = await sdk.collect()
  const route = { 'http.route': '/chat/:room' }
  t.same(sums(recorded.get('ws_guard.connections.accepted')), [[route, 1]], 'one accepted, by route pattern')
  t.same(sums(recorded.get('ws_guard.handshakes.rejected')).sort(byCode), [
    [{ ...route, 'ws_guard.code': 'FST_WS_GUARD_HANDSHAKE_TIMEOUT' }, 1],
    [{ ...route, 'ws_guard.code': 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED' }, 1],
    [{ 'ws_guard.code': 'FST_WS_GUARD_ROUTE_NOT_FOUND' }, 1],
    [{ ...route, 'ws_guard.code': 'FST_WS_GUARD_TOKEN_INVALID' }, 1]
  ], 'refusals by code; no route pattern (and never the URL) when no route matched')
  t.same(sums(recorded.get('ws_guard.connections.closed')), [[{ ...route, 'ws_guard.close_reason': 'normal' }, 1]], 'one closed, by reason')

  const durations = recorded.get('ws_guard.handshake.duration')
  t.equal(durations?.descriptor.unit, 's', 'the handshake duration is in seconds')
  const histogram = durations?.dataPointType === DataPointType.HISTOGRAM ? durations.dataPoints : []
  t.equal(histogram.reduce((count, point) => count + point.value.count, 0), 5, 'five handshakes timed')
  const timedOut = histogram.find((point) => point.attributes['ws_guard.code'] === 'FST_WS_GUARD_HANDSHAKE_TIMEOUT')
  t.ok((timedOut?.value.sum ?? 0) >= 0.2, 'the timed-out one took its handshakeTimeout')

  const spans = sdk.spans()
  t.same(spans.map((span) => span.attributes['ws_guard.code'] ?? span.attributes['ws_guard.outcome']).sort(), [
    'FST_WS_GUARD_HANDSHAKE_TIMEOUT', 'FST_WS_GUARD_ORIGIN_NOT_ALLOWED', 'FST_WS_GUARD_ROUTE_NOT_FOUND', 'FST_WS_GUARD_TOKEN_INVALID', 'accepted'
  ], 'a span per handshake, with its outcome')
  for (const span of spans) {
    t.equal(span.name, 'ws_guard.handshake', 'one span name for every handshake')
    t.equal(span.kind, SpanKind.SERVER, 'a server span')
    const ms = span.attributes['ws_guard.handshake.duration_ms'] as number
    const spanMs = span.duration[0] * 1000 + span.duration[1] / 1e6
    t.ok(Math.abs(spanMs - ms) < 1, `the span lasts its handshake (${ms.toFixed(3)} ms)`)
  }
  const accepted = spans.find((span) => span.attributes['ws_guard.outcome'] === 'accepted')
  t.same(accepted?.attributes, { ...route, 'ws_guard.outcome': 'accepted', 'http.response.status_code': 101, 'ws_guard.handshake.duration_ms': accepted?.attributes['ws_guard.handshake.duration_ms'] }, 'route, outcome, status and duration: nothing else')
  t.same(spans.filter((span) => span.status.code === SpanStatusCode.ERROR).map((span) => span.status.message), ['FST_WS_GUARD_HANDSHAKE_TIMEOUT'], 'only the 5xx refusal is a span error')

  // Every exported name and attribute, of every metric point and every span.
  const exported = JSON.stringify([
    [...recorded.values()].map((metric) => [metric.descriptor, metric.dataPoints.map((point) => point.attributes)]),
    spans.map((span) => [span.name, span.attributes, span.status, span.events, span.links])
  ])
  for (const secretValue of [good, forged, slow, sensitive.sub, 'slow']) {
    t.notOk(exported.includes(secretValue), `no exported attribute holds ${secretValue === sensitive.sub ? 'the sub' : secretValue.length > 20 ? 'a token' : `'${secretValue}'`}`)
  }

  stop()
  channel(channels.accepted).publish({ route: '/chat/:room', handshakeMs: 1 })
  t.same(sums((await sdk.collect()).get('ws_guard.connections.accepted')), [[route, 1]], 'stop() stops recording')
  t.equal(sdk.spans().length, 5, 'and tracing')
})

test('without providers, the example uses the global ones the SDK registered', async (t) => {
  const sdk = inMemorySdk(t)
  metrics.setGlobalMeterProvider(sdk.meterProvider)
  trace.setGlobalTracerProvider(sdk.tracerProvider)
  t.teardown(() => {
    metrics.disable()
    trace.disable()
  })
  const stop = recordWsGuardTelemetry()
  t.teardown(stop)
  const { url } = await startApp(t, async (app) => {
    await app.register(wsGuard, { origins: '*' })
    app.wsRoute('/ws', () => {})
  })
  await openClient(t, url('/ws'))
  t.same(sums((await sdk.collect()).get('ws_guard.connections.accepted')), [[{ 'http.route': '/ws' }, 1]], 'the global meter provider')
  t.equal(sdk.spans().length, 1, 'the global tracer provider')
})

function byCode ([a]: [Attributes, number], [b]: [Attributes, number]): number {
  return String(a['ws_guard.code']).localeCompare(String(b['ws_guard.code']))
}
