import { test, type Test } from 'tap'
import { authApp } from '../helpers/app.js'
import { assertNoLeak } from '../helpers/logs.js'
import { checkChallenge, expectRefused, refusalText } from '../helpers/refusals.js'
import { bearer, hmacToken, now, secret } from '../helpers/tokens.js'

const header = { alg: 'HS256', typ: 'JWT' }

/** Connects with `token` to an HMAC authApp; expects 401 invalid_token and returns the description and message. */
async function refusalOf (t: Test, token: string): Promise<{ description: string, message: string, text: string }> {
  const app = await authApp(t, { secret })
  const refusal = await expectRefused(t, app.url('/ws'), 401, 'FST_WS_GUARD_TOKEN_INVALID', [], bearer(token))
  const challenge = checkChallenge(t, refusal, 'invalid_token')
  t.equal(app.calls, 0, 'the handler never ran')
  return { description: challenge.params.error_description ?? '', message: refusal.body.message, text: refusalText(refusal) }
}

test('an nbf that is a string: the claim has the wrong type, not "not valid yet"', async (t) => {
  const { description, message } = await refusalOf(t, hmacToken(header, { sub: 'alice', exp: now(3600), nbf: String(now(-60)) }))
  t.equal(description, "Invalid token: the 'nbf' claim has the wrong type", 'the challenge says the claim has the wrong type')
  t.equal(message, 'Invalid token: the "nbf" claim has the wrong type', 'and so does the body')
  t.notMatch(description, /not valid yet/, 'not "not valid yet"')
})

test('an exp that is a string: the claim has the wrong type, not "not accepted"', async (t) => {
  const { description } = await refusalOf(t, hmacToken(header, { sub: 'alice', exp: String(now(3600)) }))
  t.equal(description, "Invalid token: the 'exp' claim has the wrong type", 'the challenge says the claim has the wrong type')
})

test('an nbf in the future still says "not valid yet"', async (t) => {
  const { description, message } = await refusalOf(t, hmacToken(header, { sub: 'alice', exp: now(3600), nbf: now(600) }))
  t.match(description, /not valid yet/, 'the challenge says not valid yet')
  t.match(message, /not valid yet/, 'and so does the body')
  t.notMatch(description, /wrong type/, 'not a type error')
})

test('an unknown critical header parameter is described as such, not as an unsupported algorithm', async (t) => {
  const token = hmacToken({ ...header, crit: ['x-unknown-SENSITIVE'], 'x-unknown-SENSITIVE': true }, { sub: 'alice', exp: now(3600) })
  const { description, message, text } = await refusalOf(t, token)
  t.match(description, /critical header parameter/, 'the challenge names a critical header parameter')
  t.match(message, /critical header parameter/, 'and so does the body')
  t.notMatch(description, /algorithm is not supported/, 'not "algorithm is not supported"')
  assertNoLeak(t, text, ['x-unknown-SENSITIVE', 'Extension Header Parameter'], 'the refusal')
})
