import { createHash, randomBytes } from 'node:crypto'

/*
 * Just enough HTTP/1.1 to send a handshake and read what comes back: a response head, and a
 * bounded look at the body of a refusal (content-length, chunked, or until close).
 */

export const maxHeadBytes = 64 * 1024
export const maxBodyBytes = 8 * 1024

const httpPrefix = Buffer.from('HTTP/')
const statusLine = /^HTTP\/\d(?:\.\d)? (\d{3})(?: .*)?$/

export interface ResponseHead {
  readonly statusLine: string
  readonly status: number
  /** Lower-cased names; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string>>
  /** Bytes of the head, blank line included. */
  readonly size: number
}

/** A fresh Sec-WebSocket-Key and the Sec-WebSocket-Accept it calls for (RFC 6455 §4.2.2). */
export function handshakeKey (): { key: string, accept: string } {
  const key = randomBytes(16).toString('base64')
  const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64')
  return { key, accept }
}

/** Whether the bytes so far could start an HTTP response. */
export function looksLikeHttp (buffer: Buffer): boolean {
  const n = Math.min(buffer.length, httpPrefix.length)
  return buffer.subarray(0, n).equals(httpPrefix.subarray(0, n))
}

/** Enough was received to decide: a whole head, something that is not HTTP, or too much. */
export function headDecided (buffer: Buffer): boolean {
  return !looksLikeHttp(buffer) || buffer.includes('\r\n\r\n') || buffer.length > maxHeadBytes
}

/** The response head at the start of `buffer`, or `undefined` if there is no valid one. */
export function parseHead (buffer: Buffer): ResponseHead | undefined {
  const end = buffer.indexOf('\r\n\r\n')
  if (end === -1 || end > maxHeadBytes) return undefined
  const [first = '', ...lines] = buffer.toString('latin1', 0, end).split('\r\n')
  const match = statusLine.exec(first)
  if (match === null) return undefined
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    if (colon < 1) continue
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value
  }
  return { statusLine: first, status: Number(match[1]), headers, size: end + 4 }
}

/** Whether `buffer` holds the whole body the head announced (never true when it runs until close). */
export function bodyComplete (head: ResponseHead, buffer: Buffer): boolean {
  if (buffer.length >= maxBodyBytes) return true
  if (isChunked(head)) return decodeChunked(buffer).complete
  const length = head.headers['content-length']
  return length !== undefined && buffer.length >= Number(length)
}

/** The body's bytes, de-chunked, at most `maxBodyBytes`. */
export function bodyOf (head: ResponseHead, buffer: Buffer): Buffer {
  const body = isChunked(head) ? decodeChunked(buffer).body : buffer
  return body.subarray(0, maxBodyBytes)
}

function isChunked (head: ResponseHead): boolean {
  return /chunked/i.test(head.headers['transfer-encoding'] ?? '')
}

/** Decodes `size CRLF data CRLF` chunks up to the last-chunk, or as far as they arrived. */
export function decodeChunked (buffer: Buffer): { body: Buffer, complete: boolean } {
  const parts: Buffer[] = []
  let offset = 0
  for (;;) {
    const lineEnd = buffer.indexOf('\r\n', offset)
    if (lineEnd === -1) return { body: Buffer.concat(parts), complete: false }
    // parseInt stops at chunk extensions (";name=value"); garbage reads as the end.
    const size = parseInt(buffer.toString('latin1', offset, lineEnd), 16)
    if (!(size > 0)) return { body: Buffer.concat(parts), complete: true }
    const start = lineEnd + 2
    parts.push(buffer.subarray(start, start + size))
    if (buffer.length < start + size + 2) return { body: Buffer.concat(parts), complete: false }
    offset = start + size + 2
  }
}
