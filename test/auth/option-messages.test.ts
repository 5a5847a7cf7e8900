import { test } from 'tap'
import { mapJoseError } from '../../lib/auth/verify.js'
import { registrationError } from '../helpers/app.js'

/* What registration and verification say, where the cause is easy to miss. */

test('an auth key option given but undefined says so (an unset environment variable)', async (t) => {
  const one = await registrationError(t, { auth: { secret: process.env.FASTIFY_WS_GUARD_UNSET_VARIABLE } })
  t.equal(one?.code, 'FST_WS_GUARD_INVALID_OPTION')
  t.match(one?.message, /options\.auth needs exactly one key source .* got none \(options\.auth\.secret was given but undefined: an unset environment variable\?\)/)
  const two = await registrationError(t, { auth: { secret: undefined, jwksUrl: undefined } })
  t.match(two?.message, /\(options\.auth\.secret and options\.auth\.jwksUrl were given but undefined/)
  const none = await registrationError(t, { auth: {} })
  t.match(none?.message, /got none$/, 'nothing given: no hint')
  const both = await registrationError(t, { auth: { secret: 'a'.repeat(32), getKey: () => new Uint8Array(32), publicKey: undefined } })
  t.match(both?.message, /got secret and getKey$/, 'two given: the undefined one does not matter')
})

test('jose\'s unsupported-algorithm error is told apart from an unknown critical header', async (t) => {
  t.equal(mapJoseError({ code: 'ERR_JOSE_NOT_SUPPORTED', message: 'Unsupported "alg" value for a JSON Web Key Set' }, 'secret').message, 'Invalid token: the token\'s algorithm is not supported')
  t.equal(mapJoseError({ code: 'ERR_JOSE_NOT_SUPPORTED', message: 'Extension Header Parameter "x" is not recognized' }, 'secret').message, 'Invalid token: the token has a critical header parameter this server does not understand')
})
