import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import wsGuard, { MemoryStore, type ControlMessage, type StoreListener } from '../../index.js'
import { startApp, type StartedApp } from '../helpers/app.js'
import { ask, openClient, whenClosed } from '../helpers/clients.js'
import { expectRefused } from '../helpers/refusals.js'
import { bearer, mint, now, secret, secretBytes } from '../helpers/tokens.js'
import { waitFor } from '../helpers/wait.js'

// What an instance does with the control messages its store delivers: those of other
// instances apply, its own echo does not, and a malformed one (a store's bug) is ignored.

/** A MemoryStore that keeps the guard's listener, so a test can deliver messages as a store would. */
class ListenedStore extends MemoryStore {
  listener: StoreListener | undefined

  override async listen (listener: StoreListener): Promise<() => Promise<void>> {
    this.listener = listener
    return await super.listen(listener)
  }
}

async function instance (t: Test, store: ListenedStore): Promise<StartedApp> {
  const echo = (socket: WebSocket): void => { socket.on('message', (data) => socket.send(String(data))) }
  return await startApp(t, async (app) => {
    await app.register(wsGuard, { auth: { secret }, store })
    app.wsRoute('/ws', echo)
    app.wsRoute('/public', { config: { wsGuard: { auth: false } } }, echo)
  })
}

async function connect (t: Test, started: StartedApp, claims: Record<string, unknown>): Promise<WebSocket> {
  return await openClient(t, started.url('/ws'), [], bearer(await mint(secretBytes, claims)))
}

function ignoredLines (started: StartedApp): Array<Record<string, unknown>> {
  return started.logs.lines.filter((line) => line.msg === 'websocket control message ignored')
}

test('a malformed control message is ignored with a warning, and the instance goes on', async (t) => {
  const store = new ListenedStore()
  const started = await instance(t, store)
  const alice = await connect(t, started, { sub: 'alice', jti: 'j1' })
  const anonymous = await openClient(t, started.url('/public'))
  const malformed: Array<[string, unknown]> = [
    ['a disconnect with code 5', { type: 'disconnect', from: 'other', filter: { sub: 'alice' }, code: 5, reason: 'x' }],
    ['a disconnect with a filter that is not an object', { type: 'disconnect', from: 'other', filter: 'alice', code: 4000, reason: 'x' }],
    ['a disconnect without a filter', { type: 'disconnect', from: 'other', code: 4000, reason: 'x' }],
    ['a disconnect with an empty filter', { type: 'disconnect', from: 'other', filter: {}, code: 4000, reason: 'x' }],
    ['a disconnect with a filter field that is not a string', { type: 'disconnect', from: 'other', filter: { sub: ['alice'] }, code: 4000, reason: 'x' }],
    ['a disconnect with a reason of 200 bytes', { type: 'disconnect', from: 'other', filter: { sub: 'alice' }, code: 4000, reason: 'x'.repeat(200) }],
    ['a revoke without a revocation', { type: 'revoke', from: 'other' }],
    ['a message of an unknown type', { type: 'shutdown', from: 'other' }]
  ]
  for (const [name, message] of malformed) {
    const before = ignoredLines(started).length
    store.listener!.message(message as ControlMessage)
    t.equal(ignoredLines(started).length, before + 1, `${name}: one warning`)
  }
  const lines = ignoredLines(started)
  t.ok(lines.every((line) => line.level === 40), 'warnings')
  t.match(lines[0], { wsGuard: { err: { code: 'FST_WS_GUARD_INVALID_OPTION' } } }, 'naming the error by its code')
  t.match(lines[6], { wsGuard: { err: { name: 'TypeError' } } }, 'or its name')
  t.notOk(started.logs.text.includes('x'.repeat(200)), 'the message itself is not logged')
  t.equal(await ask(alice, 'alice'), 'alice', 'nothing was closed')
  t.equal(await ask(anonymous, 'anonymous'), 'anonymous')

  // Well-formed messages still apply.
  const closed = whenClosed(alice)
  store.listener!.message({ type: 'disconnect', from: 'other', filter: { jti: 'j1' }, code: 4001, reason: 'moved' })
  const { code, reason } = await closed
  t.same([code, reason], [4001, 'moved'], 'a valid disconnect from another instance applies')
  t.equal(await ask(anonymous, 'anonymous'), 'anonymous', 'to the matching session only')
})

test('a message from this instance itself is ignored: it acted when it sent it', async (t) => {
  const store = new ListenedStore()
  const started = await instance(t, store)
  const alice = await connect(t, started, { sub: 'alice' })
  const instanceId = started.app.wsGuard.sessions()[0]!.id.split(':')[0]!
  store.listener!.message({ type: 'disconnect', from: instanceId, filter: { sub: 'alice' }, code: 4000, reason: 'echo' })
  store.listener!.message({ type: 'revoke', from: instanceId, revocation: { sub: 'alice', issuedBefore: now(), until: now(60) } })
  t.equal(await ask(alice, 'alice'), 'alice', 'its own disconnect and revoke change nothing')
  await openClient(t, started.url('/ws'), [], bearer(await mint(secretBytes, { sub: 'alice' })))
  t.equal(ignoredLines(started).length, 0, 'and are not warned about')

  const closed = whenClosed(alice)
  store.listener!.message({ type: 'revoke', from: 'other', revocation: { sub: 'alice', issuedBefore: now(), until: now(60) } })
  t.equal((await closed).code, 4401, 'the same revoke from another instance applies')
})

test('a null control message is ignored with a warning', async (t) => {
  const store = new ListenedStore()
  const started = await instance(t, store)
  const alice = await connect(t, started, { sub: 'alice' })
  t.doesNotThrow(() => store.listener!.message(null as unknown as ControlMessage), 'the store\'s delivery does not throw')
  t.equal(ignoredLines(started).length, 1, 'one warning')
  t.equal(await ask(alice, 'alice'), 'alice', 'nothing was closed')
})

test('when the store comes back, its revocations and this instance\'s are merged both ways', async (t) => {
  const store = new ListenedStore()
  const started = await instance(t, store)
  // A revocation heard over the channel that the store does not keep (a store that lost it).
  const ghost = { jti: 'ghost', until: now(600) }
  store.listener!.message({ type: 'revoke', from: 'other', revocation: ghost })
  await expectRefused(t, started.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_REVOKED', [], bearer(await mint(secretBytes, { sub: 'alice', jti: 'ghost' })))
  const bob = await connect(t, started, { sub: 'bob' })
  // One the store keeps, that this instance never heard.
  const silent = new MemoryStore()
  silent.publish({ type: 'revoke', from: 'other', revocation: { sub: 'bob', issuedBefore: now(), until: now(600) } })
  const kept = silent.revocations()
  const revocations = store.revocations.bind(store)
  store.revocations = () => [...kept, ...revocations()]
  const closed = whenClosed(bob)
  store.listener!.available()
  t.equal((await closed).code, 4401, 'bob\'s session closes: the store revoked him')
  await waitFor(() => revocations().length === 1, 'the store to be given the revocation it lacked')
  t.same(revocations(), [ghost], 'the store gets back what only this instance held')
  await expectRefused(t, started.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_REVOKED', [], bearer(await mint(secretBytes, { sub: 'alice', jti: 'ghost' })))
  t.equal(ignoredLines(started).length, 0, 'the echo of its own give-back is not warned about')
})
