import { readFileSync } from 'node:fs'
import { test } from 'tap'
import * as errors from '../lib/errors.js'
import {
  HandshakeTimeoutError,
  InternalError,
  InvalidKeyError,
  OriginNotAllowedError,
  UnsupportedProtocolError
} from '../lib/errors.js'
import { explainGuardCode } from '../lib/doctor/codes.js'

/*
 * The error table of lib/errors.ts: what each export answers with, that the doctor explains
 * every code, and that README.md lists every code where clients and dashboards look them up.
 */

/** Every exported error constructor, by export name. */
const constructors = Object.entries(errors)
  .filter(([, value]) => typeof value === 'function') as Array<[string, new (...args: unknown[]) => errors.GuardError]>

/** The code and HTTP status each export documents (README.md, "Status and close codes"). */
const documented: Record<string, [code: string, statusCode: number]> = {
  UpgradeRequiredError: ['FST_WS_GUARD_UPGRADE_REQUIRED', 426],
  UpgradeHeadersStrippedError: ['FST_WS_GUARD_UPGRADE_HEADERS_STRIPPED', 426],
  UnsupportedUpgradeError: ['FST_WS_GUARD_UNSUPPORTED_UPGRADE', 426],
  UnsupportedVersionError: ['FST_WS_GUARD_UNSUPPORTED_VERSION', 426],
  InvalidKeyError: ['FST_WS_GUARD_INVALID_KEY', 400],
  NotWebSocketRouteError: ['FST_WS_GUARD_NOT_WEBSOCKET_ROUTE', 400],
  RouteNotFoundError: ['FST_WS_GUARD_ROUTE_NOT_FOUND', 404],
  InvalidProtocolHeaderError: ['FST_WS_GUARD_INVALID_PROTOCOL_HEADER', 400],
  UnsupportedProtocolError: ['FST_WS_GUARD_UNSUPPORTED_PROTOCOL', 400],
  OriginNotAllowedError: ['FST_WS_GUARD_ORIGIN_NOT_ALLOWED', 403],
  HandshakeTimeoutError: ['FST_WS_GUARD_HANDSHAKE_TIMEOUT', 503],
  ShuttingDownError: ['FST_WS_GUARD_SHUTTING_DOWN', 503],
  TooManyConnectionsError: ['FST_WS_GUARD_TOO_MANY_CONNECTIONS', 503],
  TooManyUserConnectionsError: ['FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS', 429],
  StoreUnavailableError: ['FST_WS_GUARD_STORE_UNAVAILABLE', 503],
  InternalError: ['FST_WS_GUARD_INTERNAL', 500],
  TokenMissingError: ['FST_WS_GUARD_TOKEN_MISSING', 401],
  InvalidRequestError: ['FST_WS_GUARD_INVALID_REQUEST', 400],
  ProtocolRequiredError: ['FST_WS_GUARD_PROTOCOL_REQUIRED', 400],
  TokenInvalidError: ['FST_WS_GUARD_TOKEN_INVALID', 401],
  TokenExpiredError: ['FST_WS_GUARD_TOKEN_EXPIRED', 401],
  TokenRevokedError: ['FST_WS_GUARD_TOKEN_REVOKED', 401],
  ForbiddenError: ['FST_WS_GUARD_FORBIDDEN', 403],
  KeysUnavailableError: ['FST_WS_GUARD_KEYS_UNAVAILABLE', 503],
  RefreshUnavailableError: ['FST_WS_GUARD_REFRESH_UNAVAILABLE', 500],
  InvalidOptionError: ['FST_WS_GUARD_INVALID_OPTION', 500]
}

/** Every code of every exported error. */
const codes = constructors.map(([, ErrorClass]) => new ErrorClass().code)

test('every exported error has its documented code and status', async (t) => {
  t.same(constructors.map(([name]) => name).sort(), Object.keys(documented).sort(), 'every export is in the table, and only those')
  for (const [name, ErrorClass] of constructors) {
    const error = new ErrorClass('x', 'y')
    const [code, statusCode] = documented[name] ?? []
    t.equal(error.code, code, `${name}: ${String(code)}`)
    t.equal(error.statusCode, statusCode, `${name}: status ${String(statusCode)}`)
  }
})

test('close codes and reasons', async (t) => {
  t.equal(new OriginNotAllowedError('x').closeCode, 4403)
  t.equal(new UnsupportedProtocolError('x').closeCode, 4400)
  t.equal(new InternalError().closeCode, 1011)
  t.equal(new HandshakeTimeoutError().closeCode, 1013)
  t.equal(new OriginNotAllowedError('https://evil.example').closeReason, 'origin not allowed', 'the reason is fixed, never the details')
  t.equal(new InvalidKeyError('missing').closeReason, 'bad request')
  for (const [name, ErrorClass] of constructors) {
    // A registration error: it never reaches a client, over HTTP or in a close frame.
    if (name === 'InvalidOptionError') continue
    const error = new ErrorClass('x', 'y')
    t.ok(Buffer.byteLength(error.closeReason) <= 123, `${error.code}: the reason fits a close frame`)
    const expected = error.statusCode >= 500 ? (error.statusCode === 500 ? 1011 : 1013) : error.statusCode === 426 ? 4400 : 4000 + error.statusCode
    t.equal(error.closeCode, expected, `${error.code}: ${error.statusCode} closes with ${expected}`)
    // A refusal that says when to come back says it in both answers: the header, and a hint in
    // ms at the end of the close reason for clients that only see the close frame.
    const retryAfter = error.headers?.['retry-after']
    const hint = /; retry-after=(\d+)$/.exec(error.closeReason)
    if (retryAfter === undefined) t.equal(hint, null, `${error.code}: no retry hint without Retry-After`)
    else t.equal(Number(hint?.[1]), Number(retryAfter) * 1000, `${error.code}: retry-after=${Number(retryAfter) * 1000} in the reason, as Retry-After: ${retryAfter}`)
  }
})

test('the retryable refusals: Retry-After 5 and the hint in their close reasons', async (t) => {
  const retryable = constructors
    .map(([, ErrorClass]) => new ErrorClass('x', 'y'))
    .filter((error) => error.headers?.['retry-after'] !== undefined)
    .map((error) => [error.code, error.closeCode, error.closeReason])
    .sort(([a], [b]) => String(a).localeCompare(String(b)))
  t.same(retryable, [
    ['FST_WS_GUARD_HANDSHAKE_TIMEOUT', 1013, 'handshake timeout; retry-after=5000'],
    ['FST_WS_GUARD_KEYS_UNAVAILABLE', 1013, 'try again later; retry-after=5000'],
    ['FST_WS_GUARD_SHUTTING_DOWN', 1013, 'server shutting down; retry-after=5000'],
    ['FST_WS_GUARD_STORE_UNAVAILABLE', 1013, 'try again later; retry-after=5000'],
    ['FST_WS_GUARD_TOO_MANY_CONNECTIONS', 1013, 'server at capacity; retry-after=5000'],
    ['FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS', 4429, 'too many connections; retry-after=5000']
  ], 'every temporary refusal, with its hint')
  t.equal(new errors.StoreUnavailableError().statusCode, 503, 'a store that does not answer: 503, temporary')
})

test('every FST_WS_GUARD_* code of lib/errors.ts is explained by the doctor', async (t) => {
  const guardCodes = codes.filter((code) => code.startsWith('FST_WS_GUARD_'))
  t.ok(guardCodes.length >= 20, `${guardCodes.length} codes`)
  t.same(guardCodes.filter((code) => explainGuardCode(code) === undefined), [])
})

test("every code is listed in README.md's section Status and close codes", async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8').split('\n')
  const start = readme.indexOf('## Status and close codes')
  t.not(start, -1, 'README.md has the section')
  const end = readme.findIndex((line, i) => i > start && line.startsWith('## '))
  const section = readme.slice(start + 1, end === -1 ? undefined : end).join('\n')
  t.ok(codes.length >= 20, `${codes.length} codes`)
  for (const code of codes) {
    t.ok(section.includes(`\`${code}\``), `${code} is listed`)
  }
})
