import { test } from 'tap'
import { connect, type CloseReport, type ConnectOptions, type FailureReport, type WebSocketLike } from '../../client.js'

/*
 * The reconnect policy, exactly: each close-code rule and the bounds of every wait, with the
 * jitter pinned to its extremes through the `random` option: 0, and 1, which Math.random never
 * returns but which gives each range's upper bound. The sockets are scripted (each one closes
 * with the next scripted close), so no server is involved and the delays are small.
 */

interface Close { code: number, reason: string }

/** A WebSocket class whose sockets close, in turn, with the closes of `script`. */
function scriptedSocket (script: Close[]): new (url: string, protocols: string[]) => WebSocketLike {
  return class ScriptedSocket implements WebSocketLike {
    readyState = 0
    readonly #closeListeners: Array<(event: Close) => void> = []
    constructor () {
      const close = script.shift() ?? { code: 1000, reason: 'the script is over' }
      setTimeout(() => {
        this.readyState = 3
        for (const listener of this.#closeListeners) listener(close)
      })
    }

    addEventListener (type: string, listener: (event: Close) => void): void {
      if (type === 'close') this.#closeListeners.push(listener)
    }

    send (): void {}
    close (): void {}
  }
}

/** Connects through `script` and resolves with every close report, up to the one that stops. */
async function closeReports (script: Close[], options: Omit<ConnectOptions, 'WebSocket' | 'onClose'> = {}): Promise<CloseReport[]> {
  const reports: CloseReport[] = []
  return await new Promise((resolve) => {
    connect('ws://scripted.invalid/', {
      WebSocket: scriptedSocket([...script]),
      ...options,
      onClose: (report) => {
        reports.push(report)
        if (!report.willRetry) resolve(reports)
      }
    })
  })
}

/** The delays of `reports`, `undefined` for the one that stops. */
function delays (reports: Array<CloseReport | FailureReport>): Array<number | undefined> {
  return reports.map((report) => report.willRetry ? report.delay : undefined)
}

const lowest = () => 0
const highest = () => 1
const times = (count: number, close: Close): Close[] => Array.from({ length: count }, () => close)

test('stop codes: 4400, 4403, 4404, and 4401 for anything but an expired token', async (t) => {
  const stops = [
    [4401, 'authentication required'], [4401, 'invalid token'], [4401, 'token revoked'], [4401, 'Token Expired'],
    [4403, 'forbidden'], [4403, 'origin not allowed'], [4403, 'disconnected'],
    [4400, 'bad request'], [4400, 'unsupported protocol'], [4404, 'not found']
  ] as const
  for (const [code, reason] of stops) {
    t.same(await closeReports([{ code, reason }, { code: 1006, reason: '' }]), [{ code, reason, willRetry: false }], `${code} ${reason}`)
  }
})

test("4401 'token expired': at once, then backoff while no connection was stable", async (t) => {
  const expired = { code: 4401, reason: 'token expired' }
  t.same(delays(await closeReports(times(4, expired), { minDelay: 10, maxDelay: 1000, maxRetries: 3, random: highest })), [0, 20, 40, undefined],
    'delay 0, then [0, minDelay × 2^attempt] as for any close, until maxRetries')
  t.same(delays(await closeReports(times(2, expired), { minDelay: 10, maxRetries: 0 })), [undefined], 'maxRetries 0 stops even an expired token')
})

test('1001, 1013 and 4429 with a hint: [hint, 1.5 × hint], the hint clamped to [minDelay, maxDelay / 1.5]', async (t) => {
  for (const code of [1001, 1013, 4429]) {
    const hinted = { code, reason: 'server shutting down; retry-after=20' }
    const limits = { minDelay: 10, maxDelay: 100, maxRetries: 3 }
    t.same(delays(await closeReports(times(4, hinted), { ...limits, random: lowest })), [20, 20, 20, undefined], `${code}: from the hint, whatever the attempt`)
    t.same(delays(await closeReports(times(4, hinted), { ...limits, random: highest })), [30, 30, 30, undefined], `${code}: up to 1.5 × the hint`)
  }
  const capacity = { code: 1013, reason: 'server at capacity; retry-after=5000' }
  t.same(delays(await closeReports([capacity, capacity], { minDelay: 10, maxDelay: 60, maxRetries: 1, random: lowest })), [40, undefined], 'a hint past maxDelay / 1.5 is shortened...')
  t.same(delays(await closeReports([capacity, capacity], { minDelay: 10, maxDelay: 60, maxRetries: 1, random: highest })), [60, undefined], '...so that the wait stays within maxDelay')
  const now = { code: 1001, reason: 'restarting; retry-after=0' }
  t.same(delays(await closeReports([now, now], { minDelay: 10, maxRetries: 1, random: lowest })), [10, undefined], 'a hint under minDelay waits minDelay...')
  t.same(delays(await closeReports([now, now], { minDelay: 10, maxRetries: 1, random: highest })), [15, undefined], '...up to 1.5 × minDelay')
})

test('a hint counts on 1001, 1013 and 4429 only, and only as retry-after=<digits>', async (t) => {
  const options = { minDelay: 10, maxDelay: 1000, maxRetries: 1, random: highest }
  for (const code of [1000, 1006, 1011, 4000]) {
    t.same(delays(await closeReports(times(2, { code, reason: 'retry-after=500' }), options)), [10, undefined], `${code}: backoff, the hint ignored`)
  }
  t.same(delays(await closeReports(times(2, { code: 1013, reason: 'try again later' }), options)), [10, undefined], '1013 without a hint: backoff')
  t.same(delays(await closeReports(times(2, { code: 1013, reason: 'retry-after=soon' }), options)), [10, undefined], 'a hint that is not a number: backoff')
})

test('backoff: full jitter in [0, min(maxDelay, minDelay × 2^attempt)]', async (t) => {
  for (const code of [1006, 1000, 1011, 1008, 4999]) {
    const closes = times(9, { code, reason: '' })
    const limits = { minDelay: 1, maxDelay: 16, maxRetries: 8 }
    t.same(delays(await closeReports(closes, { ...limits, random: highest })), [1, 2, 4, 8, 16, 16, 16, 16, undefined], `${code}: the cap doubles up to maxDelay`)
    t.same(delays(await closeReports(closes, { ...limits, random: lowest })), [0, 0, 0, 0, 0, 0, 0, 0, undefined], `${code}: from 0`)
  }
})

test('an attempt that opened no socket backs off the same way', async (t) => {
  const failures: FailureReport[] = []
  await new Promise<void>((resolve) => {
    connect('ws://scripted.invalid/', {
      WebSocket: scriptedSocket([]),
      token: async () => { throw new Error('token service offline') },
      minDelay: 1,
      maxDelay: 4,
      maxRetries: 3,
      random: highest,
      onFailure: (report) => {
        failures.push(report)
        if (!report.willRetry) resolve()
      }
    })
  })
  t.same(delays(failures), [1, 2, 4, undefined])
})

test('Math.random by default', async (t) => {
  const [report] = await closeReports([{ code: 1006, reason: '' }], { minDelay: 10, maxRetries: 1 })
  t.ok(report?.willRetry && report.delay >= 0 && report.delay < 10, 'within [0, minDelay)')
})

test('reconnects a hint asked for do not grow the backoff: a client moved along by a rolling deploy is not treated as failing', async (t) => {
  const moved = { code: 1001, reason: 'server shutting down; retry-after=10' }
  const dropped = { code: 1006, reason: '' }
  const reports = await closeReports([...times(3, moved), dropped, dropped], { minDelay: 10, maxDelay: 1000, maxRetries: 5, random: highest })
  t.same(delays(reports), [15, 15, 15, 10, 20, undefined], 'three hinted moves, then the backoff starts from minDelay, and maxRetries still counts every reconnect')
})
