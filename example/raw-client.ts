import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'

/** A WebSocket handshake to send from the demo server to itself. */
export interface Handshake {
  port: number
  /** Where to connect: the demo's own listening address. */
  address: string
  /** Path and query. */
  path: string
  /** Header values as the original client sent them: Host, Origin, Sec-WebSocket-Protocol, Authorization. */
  headers: Record<string, string>
}

/** The server's answer to a handshake, as the lab shows it. */
export interface HttpAnswer {
  status: number
  statusText: string
  /** `Sec-WebSocket-Protocol` of a 101. */
  protocol: string | null
  /** `WWW-Authenticate` of a 401. */
  wwwAuthenticate: string | null
  /** The refusal body's `code` and `message`. */
  code: string | null
  message: string | null
}

/** What the silent client saw: the answer, then the frames it never answered, until the server cut it. */
export interface SilentOutcome {
  answer: HttpAnswer
  pings: number
  dataFrames: number
  closeFrames: number
  /** From the 101 to the end of the TCP connection. */
  silentMs: number
}

/**
 * Sends `handshake` and reads the answer. A refusal is read whole; a 101 is ended at once with
 * a close frame (1000), as a client that only wanted to see the answer would.
 */
export async function replayHandshake (handshake: Handshake): Promise<HttpAnswer> {
  const { response, upgraded } = await send(handshake)
  if (upgraded === undefined) return answerOf(response, await readBody(response))
  upgraded.socket.end(closeFrame1000)
  // Read (and drop) the server's close frame: the socket closes once the server's FIN is read.
  upgraded.socket.resume()
  await once(upgraded.socket, 'close')
  return answerOf(response, '')
}

/**
 * A client that completes the handshake and then never sends a byte: no pong, no close. The
 * server's read deadline is the only thing that ends it; `boundMs` caps the wait.
 */
export async function silentClient (handshake: Handshake, boundMs = 5000): Promise<SilentOutcome> {
  const { response, upgraded } = await send(handshake)
  // The silent route answers with a 101 (a close-mode refusal is a 101 too).
  const { socket, head } = upgraded!
  const upgradedAt = Date.now()
  // Frames by opcode. Control frames (ping 9, close 8) carry at most 125 bytes and the lab's
  // welcome message is shorter: a 7-bit length is all this reader meets.
  const frames = new Array<number>(16).fill(0)
  let pending = head
  const read = (chunk: Buffer): void => {
    pending = Buffer.concat([pending, chunk])
    while (pending.length >= 2 && pending.length >= 2 + (pending[1]! & 0x7f)) {
      frames[pending[0]! & 0x0f]!++
      pending = pending.subarray(2 + (pending[1]! & 0x7f))
    }
  }
  read(Buffer.alloc(0))
  socket.on('data', read)
  const bound = setTimeout(socket.destroy.bind(socket), boundMs)
  await once(socket, 'close')
  clearTimeout(bound)
  return {
    answer: answerOf(response, ''),
    pings: frames[0x9]!,
    dataFrames: frames[0x1]! + frames[0x2]!,
    closeFrames: frames[0x8]!,
    silentMs: Date.now() - upgradedAt
  }
}

/** Our own server answers within its `handshakeTimeout`: no other bound is needed here. */
async function send (handshake: Handshake): Promise<{ response: IncomingMessage, upgraded?: { socket: Socket, head: Buffer } }> {
  const request = httpRequest({
    host: handshake.address,
    port: handshake.port,
    path: handshake.path,
    agent: false,
    headers: {
      ...handshake.headers,
      connection: 'Upgrade',
      upgrade: 'websocket',
      'sec-websocket-version': '13',
      'sec-websocket-key': randomBytes(16).toString('base64')
    }
  })
  return await new Promise((resolve, reject) => {
    request.once('response', (response) => resolve({ response }))
    request.once('upgrade', (response, socket: Socket, head) => resolve({ response, upgraded: { socket, head } }))
    request.once('error', reject)
    request.end()
  })
}

async function readBody (response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of response) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString()
}

function answerOf (response: IncomingMessage, body: string): HttpAnswer {
  // Every refusal of the guard is a JSON body; a 101 has none.
  const { code = null, message = null } = body === '' ? {} : JSON.parse(body) as { code?: string, message?: string }
  return {
    status: response.statusCode!,
    statusText: response.statusMessage!,
    protocol: response.headers['sec-websocket-protocol'] ?? null,
    wwwAuthenticate: response.headers['www-authenticate'] ?? null,
    code,
    message
  }
}

/** A client's close frame: FIN + close, masked (with a zero key), code 1000. */
const closeFrame1000 = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
