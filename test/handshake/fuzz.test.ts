import { test } from 'tap'
import { connectionsSettle, openDescriptors, runCampaign, startFuzzApp } from '../fuzz/campaign.js'

/*
 * A deterministic handshake fuzz over real sockets (`npm run fuzz` runs the long version):
 * header order, duplicates and casing, missing pieces, near-limit sizes, invalid UTF-8, NUL,
 * folding, absolute-form targets, bodies on upgrades, pipelining, HTTP/1.0, garbage, slow and
 * split writes, truncation, against auth from three token sources and an Origin allowlist.
 */

test('20,000 mutated handshakes: nothing leaks, nothing echoes a token, every upgrade runs its handler once', async (t) => {
  const target = await startFuzzApp()
  t.teardown(() => target.app.close())
  const descriptors = openDescriptors()
  const result = await runCampaign(target, { seed: 20_261_129, count: 20_000, concurrency: 64, patience: 500 })
  t.equal(result.requests, 20_000)
  t.ok(result.switched > 1000, `${result.switched} upgrades`)
  t.ok(Object.keys(result.statuses).length >= 8, `answers: ${JSON.stringify(result.statuses)}`)
  t.equal(await connectionsSettle(target.app, 0, 10_000), 0, 'server.getConnections() back to 0')
  t.ok(openDescriptors() <= descriptors, 'open file descriptors back to their baseline')
  const stats = target.app.wsGuard.stats()
  t.equal(stats.open, 0, 'no guarded connection left open')
  t.equal(target.handlerCalls, stats.accepted, 'the handler ran once per accepted upgrade')
  t.equal(result.tokensInResponses, 0, 'no token in any response')
  t.equal(result.tokensInLogs, 0, 'no token in any log line')
})
