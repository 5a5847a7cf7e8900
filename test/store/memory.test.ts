import { test } from 'tap'
import { MemoryStore, type ControlMessage, type Lease, type StoreListener } from '../../index.js'
import { now } from '../helpers/tokens.js'

function lease (key: string, id: string): Lease {
  return { key, id }
}

/** A listener that keeps what it heard. */
function recorder (): StoreListener & { messages: ControlMessage[], availableCalls: number, unavailableCalls: number } {
  const heard = {
    messages: [] as ControlMessage[],
    availableCalls: 0,
    unavailableCalls: 0,
    message: (message: ControlMessage) => { heard.messages.push(message) },
    available: () => { heard.availableCalls++ },
    unavailable: () => { heard.unavailableCalls++ }
  }
  return heard
}

/** Lets queued microtasks (the store's deliveries) run. */
async function delivered (): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve))
}

test('leases never lapse: leaseTtl is Infinity', async (t) => {
  t.equal(new MemoryStore().leaseTtl, Infinity)
})

test('acquire takes one slot per lease id under a key, up to the limit', async (t) => {
  const store = new MemoryStore()
  t.equal(store.acquire(lease('user:alice', 'a:1'), 2), true, 'first')
  t.equal(store.acquire(lease('user:alice', 'a:2'), 2), true, 'second')
  t.equal(store.acquire(lease('user:alice', 'a:3'), 2), false, 'not past the limit')
  t.equal(store.count('user:alice'), 2, 'the refused lease is not counted')
  t.equal(store.acquire(lease('user:bob', 'a:4'), 2), true, 'keys are counted apart')
  t.equal(store.count('user:bob'), 1)
  t.equal(store.acquire(lease('user:carol', 'a:5'), Infinity), true, 'no limit')
  store.release(lease('user:alice', 'a:1'))
  t.equal(store.count('user:alice'), 1, 'a released lease frees its slot')
  t.equal(store.acquire(lease('user:alice', 'a:3'), 2), true, 'and the slot can be taken again')
  t.equal(store.count('user:alice'), 2)
})

test('a limit of 0 refuses every lease and leaves nothing behind', async (t) => {
  const store = new MemoryStore()
  t.equal(store.acquire(lease('user:alice', 'a:1'), 0), false, 'refused on an unknown key')
  t.equal(store.count('user:alice'), 0, 'nothing counted')
  t.equal(store.acquire(lease('user:alice', 'a:2'), 1), true, 'a later limit of 1 still has its slot')
  t.equal(store.acquire(lease('user:alice', 'a:3'), 0), false, 'refused on a key with leases')
  t.equal(store.count('user:alice'), 1)
})

test('releasing an unknown lease changes nothing', async (t) => {
  const store = new MemoryStore()
  store.release(lease('user:nobody', 'a:1'))
  t.equal(store.count('user:nobody'), 0, 'an unknown key stays at zero')
  t.equal(store.acquire(lease('user:alice', 'a:1'), 2), true)
  store.release(lease('user:alice', 'a:99'))
  t.equal(store.count('user:alice'), 1, 'an unknown id under a known key releases nothing')
  store.release(lease('user:alice', 'a:1'))
  store.release(lease('user:alice', 'a:1'))
  t.equal(store.count('user:alice'), 0, 'releasing twice stays at zero')
  t.equal(store.acquire(lease('user:alice', 'a:2'), 1), true, 'and the key starts afresh')
  t.equal(store.count('user:alice'), 1)
})

test('a key goes from one lease to several and back, counting right at every step', async (t) => {
  const store = new MemoryStore()
  t.equal(store.acquire(lease('user:alice', 'a:1'), 3), true)
  t.equal(store.acquire(lease('user:alice', 'a:1'), 3), true, 'the same lease again is no second slot')
  t.equal(store.count('user:alice'), 1)
  t.equal(store.acquire(lease('user:alice', 'a:2'), 3), true)
  t.equal(store.acquire(lease('user:alice', 'a:3'), 3), true)
  t.equal(store.count('user:alice'), 3)
  store.release(lease('user:alice', 'a:99'))
  t.equal(store.count('user:alice'), 3, 'an unknown id among several releases nothing')
  store.release(lease('user:alice', 'a:2'))
  t.equal(store.count('user:alice'), 2)
  store.release(lease('user:alice', 'a:1'))
  t.equal(store.count('user:alice'), 1, 'down to the one left')
  store.release(lease('user:alice', 'a:1'))
  t.equal(store.count('user:alice'), 1, 'a lease already given back is not the one left')
  t.equal(store.acquire(lease('user:alice', 'a:4'), 2), true, 'and it grows again')
  t.equal(store.acquire(lease('user:alice', 'a:5'), 2), false, 'up to the limit')
  store.release(lease('user:alice', 'a:3'))
  store.release(lease('user:alice', 'a:4'))
  t.equal(store.count('user:alice'), 0, 'every lease given back')
  t.equal(store.acquire(lease('user:alice', 'a:6'), 1), true, 'the key starts afresh')
})

test('renew is a no-op: leases live as long as the process', async (t) => {
  const store = new MemoryStore()
  store.acquire(lease('user:alice', 'a:1'), 5)
  t.equal(store.renew(), undefined, 'answers synchronously')
  t.equal(store.count('user:alice'), 1, 'a held lease stays held')
  t.equal(store.count('user:bob'), 0, 'and renewing adds nothing')
})

test('listen tells the listener the store is available at once and resolves with a stop function', async (t) => {
  const store = new MemoryStore()
  const listener = recorder()
  const stop = await store.listen(listener)
  t.equal(listener.availableCalls, 1, 'available once')
  t.equal(listener.unavailableCalls, 0, 'never unavailable')
  t.type(stop, 'function')
})

test('publish reaches every listener sharing the store, after the caller\'s own work', async (t) => {
  const store = new MemoryStore()
  const a = recorder()
  const b = recorder()
  await store.listen(a)
  await store.listen(b)
  const message: ControlMessage = { type: 'disconnect', from: 'instance-a', filter: { sub: 'alice' }, code: 4403, reason: 'disconnected' }
  store.publish(message)
  t.same(a.messages, [], 'not delivered synchronously')
  await delivered()
  t.same(a.messages, [message], 'the sender\'s own listener hears it')
  t.same(b.messages, [message], 'and so does every other')
  t.same(store.revocations(), [], 'a disconnect is not kept')
})

test('the stop function from listen() stops deliveries to that listener only', async (t) => {
  const store = new MemoryStore()
  const a = recorder()
  const b = recorder()
  const stopA = await store.listen(a)
  await store.listen(b)
  await stopA()
  const revocation = { jti: 'token-1', until: now(60) }
  store.publish({ type: 'revoke', from: 'instance-b', revocation })
  await delivered()
  t.same(a.messages, [], 'a stopped listener hears nothing')
  t.same(b.messages, [{ type: 'revoke', from: 'instance-b', revocation }], 'the other one still does')
  await t.resolves(stopA(), 'stopping twice is harmless')
})

test('revocations() keeps published revocations until their until, and drops expired ones', async (t) => {
  const store = new MemoryStore()
  const live = { jti: 'token-1', until: now(60) }
  const subject = { sub: 'alice', issuedBefore: now(), until: now(120) }
  store.publish({ type: 'revoke', from: 'x', revocation: live })
  store.publish({ type: 'revoke', from: 'x', revocation: { jti: 'old', until: now(-1) } })
  store.publish({ type: 'revoke', from: 'x', revocation: subject })
  const listed = store.revocations()
  t.same(listed, [live, subject], 'the expired revocation is dropped, the others kept in order')
  ;(listed as unknown[]).length = 0
  t.same(store.revocations(), [live, subject], 'the answer is a copy')
  // Time passes (the store reads Date.now()).
  const realNow = Date.now
  const start = realNow()
  t.teardown(() => { Date.now = realNow })
  Date.now = () => start + 90_000
  t.same(store.revocations(), [subject], 'a revocation is dropped once its until has passed')
  store.publish({ type: 'revoke', from: 'x', revocation: { jti: 'token-2', until: now(60) } })
  Date.now = () => start + 200_000
  t.same(store.revocations(), [], 'every revocation is gone after its until')
})
