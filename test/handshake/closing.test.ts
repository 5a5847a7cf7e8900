import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { authApp, startAppBounded } from '../helpers/app.js'
import { tryConnect } from '../helpers/clients.js'
import { assertRefusal } from '../helpers/refusals.js'
import { bearer, mint, now, secretBytes } from '../helpers/tokens.js'
import { deferred } from '../helpers/wait.js'
import wsGuard from '../../index.js'

/*
 * Handshakes in flight when app.close() starts: none of them upgrades, none runs its handler,
 * and app.close() never waits for them past shutdownGrace.
 */

async function token (): Promise<string> {
  return await mint(secretBytes, { sub: 'alice', exp: now(600) })
}

for (const rejectWith of ['http', 'close'] as const) {
  test(`a handshake whose authorize settles while closing is refused (rejectWith: '${rejectWith}')`, async (t) => {
    const entered = deferred<void>()
    const decide = deferred<boolean>()
    const app = await authApp(t, {
      secret: secretBytes,
      authorize: async () => {
        entered.resolve()
        return await decide.promise
      }
    }, { plugin: { rejectWith, shutdownGrace: 5000 } })
    const outcome = tryConnect(app.url('/ws'), [], bearer(await token()))
    await entered.promise
    const closing = app.app.close()
    await sleep(50)
    decide.resolve(true)
    const result = await outcome
    if (rejectWith === 'http') {
      assertRefusal(t, result, 503, 'FST_WS_GUARD_SHUTTING_DOWN')
    } else {
      t.same(result, { kind: 'closed', code: 1013, reason: 'server shutting down; retry-after=5000' }, '1013 with the retry hint of Retry-After: 5')
    }
    await closing
    t.equal(app.calls, 0, 'the handler never ran')
    t.equal(app.app.wsGuard.stats().rejected.FST_WS_GUARD_SHUTTING_DOWN, 1, 'counted as a refusal')
  })
}

test('a handshake whose authorize never settles is refused when the grace ends, and app.close() does not wait for it', async (t) => {
  const entered = deferred<void>()
  const app = await authApp(t, {
    secret: secretBytes,
    authorize: async () => {
      entered.resolve()
      return await new Promise<boolean>(() => {})
    }
  }, { plugin: { shutdownGrace: 300, handshakeTimeout: 30_000 } })
  const outcome = tryConnect(app.url('/ws'), [], bearer(await token()))
  await entered.promise
  const started = Date.now()
  await app.app.close()
  const took = Date.now() - started
  t.ok(took < 1000, `app.close() took ${took} ms with shutdownGrace 300`)
  assertRefusal(t, await outcome, 503, 'FST_WS_GUARD_SHUTTING_DOWN')
  t.equal(app.calls, 0)
})

test('a handshake still in the app\'s own async hooks when closing starts never runs its handler', async (t) => {
  const entered = deferred<void>()
  const release = deferred<void>()
  let calls = 0
  const { app, url } = await startAppBounded(t, 5000, async (app) => {
    await app.register(wsGuard, { shutdownGrace: 5000 })
    app.wsRoute('/ws', {
      // The app's own preHandler: the guard's last check runs after it.
      preHandler: async () => {
        entered.resolve()
        await release.promise
      }
    }, () => { calls++ })
  })
  const outcome = tryConnect(url('/ws'))
  await entered.promise
  const closing = app.close()
  await sleep(50)
  release.resolve()
  assertRefusal(t, await outcome, 503, 'FST_WS_GUARD_SHUTTING_DOWN')
  await closing
  t.equal(calls, 0, 'the handler never ran')
})
