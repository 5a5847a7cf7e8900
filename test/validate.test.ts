import { test } from 'tap'
import { describe, optionalFunction } from '../lib/validate.js'

test('describe', async (t) => {
  t.equal(describe(null), 'null')
  t.equal(describe([]), 'an array')
  t.equal(describe(/x/), 'a RegExp')
  t.equal(describe('x'), 'the string "x"')
  t.equal(describe(1), 'number')
  t.equal(describe(undefined), 'undefined')
  t.equal(describe({}), 'object')
})

test('optionalFunction', async (t) => {
  const fn = () => {}
  t.equal(optionalFunction(undefined, 'x'), undefined)
  t.equal(optionalFunction(fn, 'x'), fn)
  t.throws(() => optionalFunction('f', 'options.onThing'), {
    code: 'FST_WS_GUARD_INVALID_OPTION',
    message: 'fastify-ws-guard: options.onThing must be a function, got the string "f"'
  })
})
