import { test } from 'tap'
import { parseControlMessage, parseRevocation } from '../../lib/store/redis-messages.js'

// What comes off a Redis channel is read field by field: the exact shapes pass, as fresh
// objects; anything else is dropped.

const disconnect = { type: 'disconnect', from: 'i-1', filter: { sub: 'alice', jti: 'j', route: '/chat' }, code: 4001, reason: 'logged out' }
const revokeJti = { type: 'revoke', from: 'i-1', revocation: { jti: 'j', until: 1700000000.5 } }
const revokeSub = { type: 'revoke', from: 'i-1', revocation: { sub: 'alice', issuedBefore: 1700000000, until: 1700003600 } }

test('well-formed messages are read as they were sent', async (t) => {
  for (const message of [disconnect, revokeJti, revokeSub, { ...disconnect, filter: {} }, { ...disconnect, code: 1000, reason: '' }, { ...disconnect, code: 3000 }, { ...disconnect, code: 4999 }]) {
    t.same(parseControlMessage(JSON.stringify(message)), message, JSON.stringify(message))
  }
  t.same(parseControlMessage(JSON.stringify({ ...disconnect, extra: 'dropped', filter: { sub: 'a', other: 1 } })), { ...disconnect, filter: { sub: 'a' } }, 'unknown fields are left out')
  t.same(parseRevocation(JSON.stringify(revokeJti.revocation)), revokeJti.revocation, 'a stored revocation')
})

test('anything else is dropped', async (t) => {
  const bad: Array<[string, unknown]> = [
    ['not JSON', undefined],
    ['null', null],
    ['an array', [disconnect]],
    ['no from', { ...disconnect, from: undefined }],
    ['a numeric from', { ...disconnect, from: 1 }],
    ['an unknown type', { ...disconnect, type: 'shutdown' }],
    ['no filter', { ...disconnect, filter: undefined }],
    ['a filter field not a string', { ...disconnect, filter: { sub: 1 } }],
    ['a close code ws refuses (1005)', { ...disconnect, code: 1005 }],
    ['a close code out of range (999)', { ...disconnect, code: 999 }],
    ['a close code out of range (1015)', { ...disconnect, code: 1015 }],
    ['a close code out of range (2999)', { ...disconnect, code: 2999 }],
    ['a close code out of range (5000)', { ...disconnect, code: 5000 }],
    ['a fractional close code', { ...disconnect, code: 4000.5 }],
    ['a close code as a string', { ...disconnect, code: '4001' }],
    ['a reason over 123 bytes', { ...disconnect, reason: 'é'.repeat(62) }],
    ['a reason not a string', { ...disconnect, reason: 1 }],
    ['a revocation without until', { ...revokeJti, revocation: { jti: 'j' } }],
    ['a revocation with until as a string', { ...revokeJti, revocation: { jti: 'j', until: '1700000000' } }],
    ['a revocation neither by jti nor by sub', { ...revokeJti, revocation: { until: 1 } }],
    ['a sub revocation without issuedBefore', { ...revokeSub, revocation: { sub: 'alice', until: 1 } }],
    ['a revocation not an object', { ...revokeJti, revocation: 'j' }]
  ]
  for (const [what, value] of bad) {
    t.equal(parseControlMessage(value === undefined ? '{not json' : JSON.stringify(value)), undefined, what)
  }
  t.equal(parseControlMessage('{"type":"revoke","from":"x","revocation":{"jti":"j","until":1e400}}'), undefined, 'a revocation with an infinite until')
  t.equal(parseRevocation('garbage'), undefined, 'a stored value that is not JSON')
})
