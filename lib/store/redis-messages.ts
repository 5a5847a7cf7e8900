import type { ControlMessage, Revocation, SessionFilter } from './contract.js'

/*
 * Control messages and revocations as they travel through Redis: JSON, read back field by
 * field. Anything can publish on a Redis channel, so what does not have the exact shape is
 * dropped here: a bad publisher must not reach the guard, let alone crash the process.
 */

/** The message as it is read from the channel, or `undefined` when it is not one. */
export function parseControlMessage (text: string): ControlMessage | undefined {
  const value = parseJson(text)
  if (!isRecord(value) || typeof value.from !== 'string') return undefined
  if (value.type === 'revoke') {
    const revocation = readRevocation(value.revocation)
    return revocation === undefined ? undefined : { type: 'revoke', from: value.from, revocation }
  }
  if (value.type === 'disconnect') {
    const filter = readFilter(value.filter)
    if (filter === undefined || !isCloseCode(value.code) || !isCloseReason(value.reason)) return undefined
    return { type: 'disconnect', from: value.from, filter, code: value.code, reason: value.reason }
  }
  return undefined
}

/** A stored revocation, or `undefined` when it is not one. */
export function parseRevocation (text: string): Revocation | undefined {
  return readRevocation(parseJson(text))
}

function readRevocation (value: unknown): Revocation | undefined {
  if (!isRecord(value) || !isFiniteNumber(value.until)) return undefined
  if (typeof value.jti === 'string') return { jti: value.jti, until: value.until }
  if (typeof value.sub === 'string' && isFiniteNumber(value.issuedBefore)) {
    return { sub: value.sub, issuedBefore: value.issuedBefore, until: value.until }
  }
  return undefined
}

function readFilter (value: unknown): SessionFilter | undefined {
  if (!isRecord(value)) return undefined
  const filter: { sub?: string, jti?: string, route?: string } = {}
  for (const field of ['sub', 'jti', 'route'] as const) {
    const entry = value[field]
    if (entry === undefined) continue
    if (typeof entry !== 'string') return undefined
    filter[field] = entry
  }
  return filter
}

// What ws accepts in close(): anything else would throw where the guard closes a socket.
function isCloseCode (value: unknown): value is number {
  if (typeof value !== 'number' || !Number.isInteger(value)) return false
  return (value >= 1000 && value <= 1014 && value !== 1004 && value !== 1005 && value !== 1006) ||
    (value >= 3000 && value <= 4999)
}

function isCloseReason (value: unknown): value is string {
  return typeof value === 'string' && Buffer.byteLength(value) <= 123
}

function isFiniteNumber (value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value)
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function parseJson (text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}
