import { randomBytes } from 'node:crypto'

/*
 * The part of RFC 6455 framing a diagnostic listener needs: read the server's frames (control
 * and data, 7/16/64-bit lengths), write masked control frames. Data is counted, never kept.
 */

export const opcodes = { text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const

export interface Frame {
  readonly opcode: number
  readonly payload: Buffer
  /** Bytes the frame took on the wire. */
  readonly size: number
}

/** The first complete frame in `buffer`, or `undefined` while it is incomplete. */
export function parseFrame (buffer: Buffer): Frame | undefined {
  if (buffer.length < 2) return undefined
  const opcode = buffer[0]! & 0x0f
  const masked = (buffer[1]! & 0x80) !== 0
  let length = buffer[1]! & 0x7f
  let offset = 2
  if (length === 126) {
    if (buffer.length < 4) return undefined
    length = buffer.readUInt16BE(2)
    offset = 4
  } else if (length === 127) {
    if (buffer.length < 10) return undefined
    length = Number(buffer.readBigUInt64BE(2))
    offset = 10
  }
  // A server must not mask its frames; unmask anyway rather than misread the stream.
  const maskOffset = offset
  if (masked) offset += 4
  if (buffer.length < offset + length) return undefined
  const payload = Buffer.from(buffer.subarray(offset, offset + length))
  if (masked) {
    for (let i = 0; i < payload.length; i++) payload[i]! ^= buffer[maskOffset + (i % 4)]!
  }
  return { opcode, payload, size: offset + length }
}

/** A final, masked frame, as a client must send; control payloads are at most 125 bytes. */
export function encodeFrame (opcode: number, payload: Buffer): Buffer {
  const body = payload.subarray(0, 125)
  const mask = randomBytes(4)
  const frame = Buffer.alloc(6 + body.length)
  frame[0] = 0x80 | opcode
  frame[1] = 0x80 | body.length
  mask.copy(frame, 2)
  for (let i = 0; i < body.length; i++) frame[6 + i] = body[i]! ^ mask[i % 4]!
  return frame
}

/** A close frame's code and reason; an empty payload means no code (1005). */
export function parseClose (payload: Buffer): { code: number, reason: string } {
  if (payload.length < 2) return { code: 1005, reason: '' }
  return { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString('utf8') }
}

export function closePayload (code: number, reason: string): Buffer {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason))
  payload.writeUInt16BE(code, 0)
  payload.write(reason, 2)
  return payload
}
