import { STATUS_CODES } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { WebSocketServer } from 'ws'
import type { GuardError } from './errors.js'

/** Close codes for `rejectWith: 'close'`, by HTTP status: 4000 + status, 1013 "try again later". */
const closeCodes: Record<number, number> = { 400: 4400, 401: 4401, 403: 4403, 429: 4429, 500: 1011, 503: 1013 }

/** Short, fixed close reasons: a close frame is no place for details. */
const closeReasons: Record<string, string> = {
  FST_WS_GUARD_ORIGIN_NOT_ALLOWED: 'origin not allowed',
  FST_WS_GUARD_TOKEN_MISSING: 'authentication required',
  FST_WS_GUARD_TOKEN_INVALID: 'invalid token',
  FST_WS_GUARD_TOKEN_EXPIRED: 'token expired',
  FST_WS_GUARD_TOKEN_REVOKED: 'token revoked',
  FST_WS_GUARD_FORBIDDEN: 'forbidden',
  FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS: 'too many connections',
  FST_WS_GUARD_TOO_MANY_CONNECTIONS: 'server at capacity',
  FST_WS_GUARD_SHUTTING_DOWN: 'server shutting down',
  FST_WS_GUARD_HANDSHAKE_TIMEOUT: 'handshake timeout',
  FST_WS_GUARD_KEYS_UNAVAILABLE: 'try again later',
  FST_WS_GUARD_UNSUPPORTED_PROTOCOL: 'unsupported protocol',
  FST_WS_GUARD_PROTOCOL_REQUIRED: 'protocol required',
  FST_WS_GUARD_INVALID_REQUEST: 'invalid request',
  FST_WS_GUARD_INTERNAL: 'internal error'
}

/** A refusal: the error, extra response headers, and whether a close frame may carry it. */
export interface Rejection {
  error: GuardError
  headers?: Readonly<Record<string, string>> | undefined
}

export function closeCodeFor (error: GuardError): number {
  return closeCodes[error.statusCode] ?? 4400
}

export function closeReasonFor (error: GuardError): string {
  return closeReasons[error.code] ?? 'bad request'
}

/**
 * Answers with `{ statusCode, code, error, message }`, `Connection: close`, then closes the
 * socket. An upgrade request is answered on its socket directly: refusing must stay cheap
 * under a flood, and Fastify's reply path costs as much as an accepted handshake.
 */
export function sendHttpRejection (request: FastifyRequest, reply: FastifyReply, rejection: Rejection): void {
  const { error } = rejection
  const status = error.statusCode
  const body = JSON.stringify({ statusCode: status, code: error.code, error: STATUS_CODES[status], message: error.message })
  const headers: Record<string, string> = { connection: status === 426 ? 'upgrade, close' : 'close' }
  // Capacity and timing refusals are temporary: say when to come back.
  if (status === 503 || status === 429) headers['retry-after'] = '5'
  Object.assign(headers, rejection.headers)
  if (!request.ws) {
    reply.code(status).headers(headers).type('application/json; charset=utf-8').send(body)
    return
  }
  reply.hijack()
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`
  for (const name in headers) head += `${name}: ${headers[name]}\r\n`
  const socket = reply.raw.socket!
  socket.write(head + '\r\n' + body)
  // Once the kernel holds the answer, closing the descriptor sends it and the FIN: no
  // shutdown() round trip, and a client that keeps its side open cannot hold the socket.
  if (socket.writableLength === 0) {
    socket.destroy()
    return
  }
  socket.end()
  socket.once('finish', () => socket.destroy())
}

/**
 * Completes the upgrade only to close at once with a code and a short reason, so that browser
 * code can read why in `CloseEvent`. The route handler never runs.
 */
export function sendCloseRejection (wss: WebSocketServer, request: FastifyRequest, reply: FastifyReply, error: GuardError): void {
  reply.hijack()
  // The upgrade socket is the reply's (also under injectWS). Bytes a client pipelined after
  // its handshake are dropped with the connection anyway.
  wss.handleUpgrade(request.raw, reply.raw.socket!, emptyHead, (socket) => {
    socket.on('error', noop)
    socket.close(closeCodeFor(error), closeReasonFor(error))
  })
}

const emptyHead = Buffer.alloc(0)
function noop (): void {}
