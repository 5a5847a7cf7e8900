import { test } from 'tap'
import { MemoryStore } from '../../index.js'

test('MemoryStore counts per key up to the limit and never below zero', async (t) => {
  const store = new MemoryStore()
  t.equal(store.acquire('user:alice', 2), true, 'first')
  t.equal(store.acquire('user:alice', 2), true, 'second')
  t.equal(store.acquire('user:alice', 2), false, 'not past the limit')
  t.equal(store.acquire('user:bob', 2), true, 'keys are counted apart')
  t.equal(store.count('user:alice'), 2, 'two held')
  store.release('user:alice')
  t.equal(store.count('user:alice'), 1, 'one released')
  store.release('user:alice')
  store.release('user:alice')
  store.release('user:nobody')
  t.equal(store.count('user:alice'), 0, 'releasing more than was taken stays at zero')
  t.equal(store.count('user:nobody'), 0, 'an unknown key counts zero')
  t.equal(store.acquire('user:alice', 1), true, 'and can be taken again')
})
