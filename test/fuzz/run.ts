import { parseArgs } from 'node:util'
import { connectionsSettle, openDescriptors, runCampaign, startFuzzApp } from './campaign.js'

/*
 * `npm run fuzz -- --n 100000 --seed 7`: the long handshake fuzz campaign. Prints its figures
 * and exits non-zero when any figure that must be zero is not.
 */

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '100000' },
    seed: { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '64' }
  }
})
const count = Number(values.n)
const seed = Number(values.seed)
const concurrency = Number(values.concurrency)
if (![count, seed, concurrency].every(Number.isSafeInteger) || count < 1 || count > 10_000_000 || concurrency < 1 || concurrency > 1000) {
  console.error('usage: npm run fuzz -- [--n COUNT (1 to 10,000,000)] [--seed S] [--concurrency C (1 to 1000)]')
  process.exit(2)
}

const target = await startFuzzApp()
const descriptors = openDescriptors()
const result = await runCampaign(target, { seed, count, concurrency, patience: 500 })
const leakedSockets = await connectionsSettle(target.app, 0, 10_000)
const leakedDescriptors = openDescriptors() - descriptors
const stats = target.app.wsGuard.stats()
await target.app.close()

const figures = {
  seed,
  requests: result.requests,
  seconds: Math.round(result.durationMs / 100) / 10,
  crashes: 0,
  leakedSockets,
  leakedDescriptors: Math.max(0, leakedDescriptors),
  openAfter: stats.open,
  accepted: stats.accepted,
  handlerCalls: target.handlerCalls,
  switchingProtocols: result.switched,
  tokensInResponses: result.tokensInResponses,
  tokensInLogs: result.tokensInLogs,
  statuses: result.statuses
}
console.log(JSON.stringify(figures, null, 2))
const clean = leakedSockets === 0 && leakedDescriptors <= 0 && stats.open === 0 && stats.accepted === target.handlerCalls &&
  result.tokensInResponses === 0 && result.tokensInLogs === 0
process.exitCode = clean ? 0 : 1
