import { InvalidOptionError } from './errors.js'

/*
 * Small assertions for option validation at registration. Each failure says which option,
 * what arrived and what to write instead.
 */

export function assertPlainObject (value: unknown, name: string): asserts value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidOptionError(`${name} must be an object, got ${describe(value)}`)
  }
}

export function assertKnownKeys (value: Record<string, unknown>, known: readonly string[], name: string): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      throw new InvalidOptionError(`unknown option ${name === '' ? key : name + '.' + key}; known options are ${known.join(', ')}`)
    }
  }
}

export function optionalBoolean (value: unknown, fallback: boolean, name: string): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw new InvalidOptionError(`${name} must be true or false, got ${describe(value)}`)
  return value
}

/** A whole number of milliseconds or bytes, at least `min`. */
export function optionalInteger (value: unknown, fallback: number, name: string, min = 1): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidOptionError(`${name} must be a whole number >= ${min}, got ${describe(value)}${typeof value === 'number' ? ' ' + String(value) : ''}`)
  }
  return value
}

export function optionalOneOf<T extends string> (value: unknown, choices: readonly T[], fallback: T, name: string): T {
  if (value === undefined) return fallback
  if (!choices.includes(value as T)) {
    throw new InvalidOptionError(`${name} must be one of ${choices.map((c) => `'${c}'`).join(', ')}, got ${describe(value)}`)
  }
  return value as T
}

export function optionalFunction<T> (value: unknown, name: string): T | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'function') throw new InvalidOptionError(`${name} must be a function, got ${describe(value)}`)
  return value as T
}

/** A string with at least one character. */
export function nonEmptyString (value: unknown, name: string): string {
  if (typeof value !== 'string' || value === '') throw new InvalidOptionError(`${name} must be a non-empty string, got ${describe(value)}`)
  return value
}

/** Printable ASCII that fits in a quoted-string (an HTTP header parameter) as it is. */
export function quotedStringSafe (value: unknown, name: string): string {
  const text = nonEmptyString(value, name)
  if (!/^[\x20-\x21\x23-\x5b\x5d-\x7e]+$/.test(text)) throw new InvalidOptionError(`${name} must be printable ASCII without quotes or backslashes, got ${describe(value)}`)
  return text
}

/** One non-empty string or an array of them. */
export function stringOrList (value: unknown, name: string): string | string[] | undefined {
  if (value === undefined || typeof value === 'string') return value === '' ? nonEmptyString(value, name) : value
  return stringList(value, name)
}

/** An array of non-empty strings, copied. */
export function stringList (value: unknown, name: string): string[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value) || !value.every((entry) => typeof entry === 'string' && entry !== '')) {
    throw new InvalidOptionError(`${name} must be an array of non-empty strings, got ${describe(value)}`)
  }
  return [...value]
}

/** How a wrong option value is named in a message. */
export function describe (value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (value instanceof RegExp) return 'a RegExp'
  return typeof value === 'string' ? `the string "${value}"` : typeof value
}

/** RFC 7230 token characters: subprotocol names, cookie and query parameter names. */
export const tokenShape = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
