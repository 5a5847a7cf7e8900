import { test } from 'tap'
import { closePayload, encodeFrame, opcodes, parseClose, parseFrame } from '../../lib/doctor/frames.js'
import { bodyComplete, bodyOf, decodeChunked, headDecided, parseHead, type ResponseHead } from '../../lib/doctor/http.js'
import { redact } from '../../lib/doctor/redact.js'

/*
 * What the doctor reads off the wire: frames, response heads and bodies; and what it hides
 * when it prints them.
 */

test('frames: parse what servers send', async (t) => {
  t.equal(parseFrame(Buffer.from([0x89])), undefined, 'one byte')
  t.same(parseFrame(Buffer.from([0x89, 0x02, 0x68, 0x69])), { opcode: opcodes.ping, payload: Buffer.from('hi'), size: 4 })
  t.equal(parseFrame(Buffer.from([0x89, 0x02, 0x68])), undefined, 'payload incomplete')

  const medium = Buffer.alloc(300, 0x61)
  const mediumFrame = Buffer.concat([Buffer.from([0x81, 126, 0x01, 0x2c]), medium])
  t.equal(parseFrame(mediumFrame.subarray(0, 3)), undefined, '16-bit length incomplete')
  t.same(parseFrame(mediumFrame), { opcode: opcodes.text, payload: medium, size: 304 })

  const large = Buffer.alloc(70000, 0x62)
  const header = Buffer.alloc(10)
  header[0] = 0x82
  header[1] = 127
  header.writeBigUInt64BE(70000n, 2)
  const largeFrame = Buffer.concat([header, large])
  t.equal(parseFrame(largeFrame.subarray(0, 9)), undefined, '64-bit length incomplete')
  t.same(parseFrame(largeFrame), { opcode: opcodes.binary, payload: large, size: 70010 })

  // Masked frames (clients send them; a broken server might): unmasked on read.
  const masked = encodeFrame(opcodes.pong, Buffer.from('probe'))
  t.equal(masked[0], 0x8a)
  t.equal(masked[1], 0x80 | 5)
  t.same(parseFrame(masked), { opcode: opcodes.pong, payload: Buffer.from('probe'), size: 11 })
  t.equal(parseFrame(masked.subarray(0, 8)), undefined, 'masked payload incomplete')
  t.equal(encodeFrame(opcodes.ping, Buffer.alloc(200)).length, 6 + 125, 'control payloads are capped at 125 bytes')
})

test('frames: close payloads', async (t) => {
  t.same(parseClose(closePayload(4401, 'token expired')), { code: 4401, reason: 'token expired' })
  t.same(parseClose(Buffer.alloc(0)), { code: 1005, reason: '' })
})

test('http: response heads', async (t) => {
  const wire = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-A: 1\r\nx-a: 2\r\nbroken line\r\n: no name\r\n\r\nrest'
  const head = parseHead(Buffer.from(wire))
  t.same(head, {
    statusLine: 'HTTP/1.1 101 Switching Protocols',
    status: 101,
    headers: { upgrade: 'websocket', 'x-a': '1, 2' },
    size: wire.length - 'rest'.length
  })
  t.match(parseHead(Buffer.from('HTTP/1.0 200\r\n\r\n')), { status: 200, statusLine: 'HTTP/1.0 200' }, 'no reason phrase')
  t.equal(parseHead(Buffer.from('HTTP/1.1 200 OK\r\n')), undefined, 'incomplete')
  t.equal(parseHead(Buffer.from('HTTP/1.1 two hundred\r\n\r\n')), undefined, 'not a status line')
  t.equal(parseHead(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nX: '), Buffer.alloc(70 * 1024, 0x61), Buffer.from('\r\n\r\n')])), undefined, 'over 64 KiB')

  t.equal(headDecided(Buffer.from('HTTP/1.1 200')), false)
  t.equal(headDecided(Buffer.from('HTT')), false)
  t.equal(headDecided(Buffer.from('SSH-2.0')), true)
  t.equal(headDecided(Buffer.from('HTTP/1.1 200 OK\r\n\r\n')), true)
  t.equal(headDecided(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\n'), Buffer.alloc(65 * 1024, 0x61)])), true)
})

test('http: bodies', async (t) => {
  const headOf = (headers: Record<string, string>): ResponseHead => ({ statusLine: 'HTTP/1.1 400 Bad Request', status: 400, headers, size: 0 })
  const sized = headOf({ 'content-length': '5' })
  t.equal(bodyComplete(sized, Buffer.from('hell')), false)
  t.equal(bodyComplete(sized, Buffer.from('hello')), true)
  const untilClose = headOf({})
  t.equal(bodyComplete(untilClose, Buffer.from('anything')), false)
  t.equal(bodyComplete(untilClose, Buffer.alloc(8 * 1024)), true, 'bounded')
  t.equal(bodyOf(untilClose, Buffer.alloc(10 * 1024)).length, 8 * 1024)

  const chunked = headOf({ 'transfer-encoding': 'chunked' })
  const wire = Buffer.from('5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n')
  t.equal(bodyComplete(chunked, wire), true)
  t.equal(bodyOf(chunked, wire).toString(), 'hello world')
  t.same(decodeChunked(Buffer.from('5\r\nhel')), { body: Buffer.from('hel'), complete: false })
  t.same(decodeChunked(Buffer.from('5\r\nhello\r\n')), { body: Buffer.from('hello'), complete: false })
  t.same(decodeChunked(Buffer.from('5')), { body: Buffer.alloc(0), complete: false })
  t.same(decodeChunked(Buffer.from('zz\r\n')), { body: Buffer.alloc(0), complete: true }, 'garbage ends the body')
})

test('redact: the token and credential-like query parameters', async (t) => {
  t.equal(redact('GET /ws?access_token=abc&room=1 HTTP/1.1', undefined), 'GET /ws?access_token=<redacted>&room=1 HTTP/1.1')
  t.equal(redact('ws://h/?x=1&token=abc#f', undefined), 'ws://h/?x=1&token=<redacted>#f')
  t.equal(redact('ws://alice:s3cret@h:8080/ws and wss://bob@h/', undefined), 'ws://alice:<redacted>@h:8080/ws and wss://bob@h/')
  t.equal(redact('Authorization: Bearer eyJabc.def; bearer.eyJabc.def', 'eyJabc.def'), 'Authorization: Bearer <redacted>; bearer.<redacted>')
  // A colon that punctuates the text after the URL is no part of the value; one inside it is.
  t.equal(redact('ws://h/ws?access_token=abc: plain text', undefined), 'ws://h/ws?access_token=<redacted>: plain text')
  t.equal(redact('ws://h/ws?access_token=abc:', undefined), 'ws://h/ws?access_token=<redacted>:')
  t.equal(redact('ws://h/ws?token=abc:def:ghi&x=1', undefined), 'ws://h/ws?token=<redacted>&x=1')
})
