import { STATUS_CODES } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { WebSocketServer } from 'ws'
import type { GuardError } from '../errors.js'
import { rejectedChannel, type RejectedMessage, type StatsCounter } from '../stats.js'
import type { HandshakeState, Rejection } from './contract.js'

/**
 * Answers with `{ statusCode, code, error, message }`, `Connection: close`, then closes the
 * socket. An upgrade request is answered on its socket directly: refusing must stay cheap
 * under a flood, and Fastify's reply path costs as much as an accepted handshake.
 */
export function sendHttpRejection (request: FastifyRequest, reply: FastifyReply, rejection: Rejection): void {
  const { error } = rejection
  const status = error.statusCode
  const body = JSON.stringify({ statusCode: status, code: error.code, error: STATUS_CODES[status], message: error.message })
  const headers: Record<string, string> = { connection: status === 426 ? 'upgrade, close' : 'close', ...error.headers, ...rejection.headers }
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
    socket.close(error.closeCode, error.closeReason)
    // ws waits 30 s for a silent client to answer the close: a refused one gets two.
    const timer = setTimeout(() => socket.terminate(), closeRejectionGrace)
    socket.once('close', () => clearTimeout(timer))
  })
}

const closeRejectionGrace = 2000

const emptyHead = Buffer.alloc(0)
function noop (): void {}

/**
 * Refuses over HTTP a request that never became a handshake of the chain (a malformed one, an
 * upgrade to a plain route or to no route), and records it.
 */
export function refuseBeforeHandshake (stats: StatsCounter, request: FastifyRequest, reply: FastifyReply, error: GuardError): void {
  sendHttpRejection(request, reply, { error })
  recordRejection(stats, request, undefined, error)
}

/** One info line per refused handshake (code and reason, never a URL), counted and published. */
export function recordRejection (stats: StatsCounter, request: FastifyRequest, state: HandshakeState | undefined, error: GuardError): void {
  const route = state?.route ?? request.routeOptions.url
  request.log.info({ wsGuard: { code: error.code, statusCode: error.statusCode, route, causeCode: error.causeCode } }, `websocket handshake rejected: ${error.message}`)
  stats.countRejection(error.code)
  if (rejectedChannel.hasSubscribers) {
    rejectedChannel.publish({
      requestId: request.id,
      route,
      code: error.code,
      statusCode: error.statusCode,
      sub: state?.user?.sub,
      handshakeMs: state === undefined ? 0 : performance.now() - state.startedAt
    } satisfies RejectedMessage)
  }
}
