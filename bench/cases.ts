/*
 * What is measured: the servers, the handshake cases (each with its tokens minted up front,
 * distinct per handshake where the case says "fresh") and the idle-connection cases.
 */
import { socketIoPath, type HandshakeRequest } from './load.js'
import type { ServerConfig } from './protocol.js'
import { es256Signer, hs256Signer, mintTokens, newEcKeyPair, newSecret, startJwksServer, type JwksServer } from './tokens.js'

export const allowedOrigin = 'https://app.example.com'
const originHeader = `Origin: ${allowedOrigin}\r\n`
const badOriginHeader = 'Origin: https://evil.example\r\n'
const bearer = (token: string): string => `Authorization: Bearer ${token}\r\n`

export type ServerKey = 'bare' | 'origin' | 'hs256' | 'es256' | 'jwks' | 'jose-hs256' | 'jose-es256' | 'fastify-jwt-hs256' | 'fastify-jwt-es256' | 'socketio-hs256'

export interface HandshakeCase<K extends string = ServerKey> {
  readonly id: string
  readonly label: string
  readonly server: K
  /** Accepted cases compare handshakes/s to bare; refused ones compare server CPU per handshake. */
  readonly accepted: boolean
  readonly requestFor: (index: number) => HandshakeRequest
  /**
   * Reference and peer servers: a handshake with a forged token, which the server must refuse
   * before the case is timed (a server that accepts anything would be measured doing nothing).
   */
  readonly refusal?: HandshakeRequest
  /** The guard case a peer is set beside in "What you would use instead". */
  readonly peerOf?: string
}

export interface IdleCase {
  readonly id: string
  readonly label: string
  readonly server: ServerConfig
  readonly headersFor: (index: number) => string
  /** Run in `--quick` mode too. */
  readonly quick: boolean
  /** What the row is: the baseline, the guard, or the naive-heartbeat reference. */
  readonly role: 'bare' | 'guard' | 'reference'
  /** 1 s pings: the event-loop and CPU budget applies. */
  readonly pings: boolean
}

/** An echo server of the message suite, and what its connections send in their handshake. */
export interface MessageCase {
  readonly id: string
  readonly label: string
  readonly server: ServerConfig
  readonly headers: string
}

export type FleetServerKey = 'bare' | 'fleet-memory' | 'fleet-redis'

/** The fleet suite: per-user limits counted in memory or in Redis, and a revocation fanned out. */
export interface FleetFixtures {
  readonly handshakeCases: ReadonlyArray<HandshakeCase<FleetServerKey>>
  /** The servers, once the Redis URL is known. */
  readonly servers: (redisUrl: string) => Readonly<Record<FleetServerKey, ServerConfig>>
  /** A guard instance of the fan-out: HS256, the Redis store, no per-user limit. */
  readonly fanoutServer: (redisUrl: string, index: number) => ServerConfig
  /** `count` handshakes' headers, every token of the user `sub` (minted when called). */
  readonly fanoutHeaders: (sub: string, count: number) => string[]
}

export interface Fixtures {
  readonly servers: Readonly<Record<ServerKey, ServerConfig>>
  readonly handshakeCases: readonly HandshakeCase[]
  readonly idleCases: readonly IdleCase[]
  readonly messageCases: readonly MessageCase[]
  readonly fleet: FleetFixtures
  readonly jwks: JwksServer
}

/** Fresh tokens, one per call, never reused. */
function freshTokens (tokens: readonly string[]): () => string {
  let next = 0
  return () => {
    if (next >= tokens.length) throw new Error('the bench ran out of pre-minted tokens')
    return tokens[next++]!
  }
}

/**
 * Keys, tokens and server settings. `handshakesPerCase` bounds how many tokens each fresh case
 * gets; `idleConnections` how many the authenticated idle case gets.
 */
export async function prepareFixtures (handshakesPerCase: number, idleConnections: number, warmupPerServer: number): Promise<Fixtures> {
  const secret = newSecret()
  const otherSecret = newSecret()
  const ec = newEcKeyPair()
  const kid = 'bench-key-1'
  const jwks = await startJwksServer(ec.publicKey, kid)
  const publicKey = ec.publicKey.export({ type: 'spki', format: 'pem' }).toString()

  const servers: Record<ServerKey, ServerConfig> = {
    bare: { name: 'bare', kind: 'bare' },
    origin: { name: 'guard-origin', kind: 'guard', origins: [allowedOrigin] },
    hs256: { name: 'guard-hs256', kind: 'guard', origins: [allowedOrigin], auth: { secret } },
    es256: { name: 'guard-es256', kind: 'guard', origins: [allowedOrigin], auth: { publicKey } },
    jwks: { name: 'guard-jwks', kind: 'guard', origins: [allowedOrigin], auth: { jwksUrl: jwks.url } },
    'jose-hs256': { name: 'jose-hs256', kind: 'jose', auth: { secret } },
    'jose-es256': { name: 'jose-es256', kind: 'jose', auth: { publicKey } },
    'fastify-jwt-hs256': { name: 'fastify-jwt-hs256', kind: 'fastify-jwt', auth: { secret } },
    'fastify-jwt-es256': { name: 'fastify-jwt-es256', kind: 'fastify-jwt', auth: { publicKey } },
    'socketio-hs256': { name: 'socketio-hs256', kind: 'socketio', auth: { secret } }
  }

  const hs = hs256Signer(secret)
  const es = es256Signer(ec.privateKey)
  const esKid = es256Signer(ec.privateKey, kid)
  // Several cases draw from each fresh set: the guard's, the naive reference's and the peers'.
  const count = (consumers: number): number => consumers * handshakesPerCase + 512
  const hsFresh = freshTokens(mintTokens(hs, count(4), 'hs'))
  const esFresh = freshTokens(mintTokens(es, count(3), 'es'))
  const jwksFresh = freshTokens(mintTokens(esKid, count(1), 'jwks'))
  const forged = freshTokens(mintTokens(hs256Signer(otherSecret), count(1), 'forged'))
  // Signed by another key of the right algorithm: what each peer must refuse.
  const [forgedHs] = mintTokens(hs256Signer(otherSecret), 1, 'forged-peer')
  const [forgedEs] = mintTokens(es256Signer(newEcKeyPair().privateKey), 1, 'forged-peer')
  const refuse = (token: string): HandshakeRequest => ({ headers: originHeader + bearer(token), expectStatus: 401 })
  const socketIo = (token: string, expect: 'connect' | 'refuse'): HandshakeRequest => ({ headers: originHeader, expectStatus: 101, path: socketIoPath, socketIo: { token, expect } })
  const [reused] = mintTokens(es, 1, 'reused')
  const [valid] = mintTokens(hs, 1, 'valid')

  const accept = (headers: () => string) => () => ({ headers: headers(), expectStatus: 101 })
  const handshakeCases: HandshakeCase[] = [
    { id: 'bare', label: 'bare @fastify/websocket (echo)', server: 'bare', accepted: true, requestFor: accept(() => originHeader) },
    { id: 'origin', label: 'guard, origin check only', server: 'origin', accepted: true, requestFor: accept(() => originHeader) },
    { id: 'hs256', label: 'guard + HS256, fresh tokens', server: 'hs256', accepted: true, requestFor: accept(() => originHeader + bearer(hsFresh())) },
    { id: 'es256', label: 'guard + ES256, fresh tokens', server: 'es256', accepted: true, requestFor: accept(() => originHeader + bearer(esFresh())) },
    { id: 'jose-hs256', label: 'reference: bare + jwtVerify hook, HS256', server: 'jose-hs256', accepted: true, requestFor: accept(() => originHeader + bearer(hsFresh())), refusal: refuse(forgedHs!), peerOf: 'hs256' },
    { id: 'jose-es256', label: 'reference: bare + jwtVerify hook, ES256', server: 'jose-es256', accepted: true, requestFor: accept(() => originHeader + bearer(esFresh())), refusal: refuse(forgedEs!), peerOf: 'es256' },
    { id: 'fastify-jwt-hs256', label: 'peer: @fastify/jwt onRequest jwtVerify, HS256', server: 'fastify-jwt-hs256', accepted: true, requestFor: accept(() => originHeader + bearer(hsFresh())), refusal: refuse(forgedHs!), peerOf: 'hs256' },
    { id: 'fastify-jwt-es256', label: 'peer: @fastify/jwt onRequest jwtVerify, ES256', server: 'fastify-jwt-es256', accepted: true, requestFor: accept(() => originHeader + bearer(esFresh())), refusal: refuse(forgedEs!), peerOf: 'es256' },
    { id: 'socketio-hs256', label: 'peer: socket.io, io.use + jose, HS256', server: 'socketio-hs256', accepted: true, requestFor: () => socketIo(hsFresh(), 'connect'), refusal: socketIo(forgedHs!, 'refuse'), peerOf: 'hs256' },
    { id: 'es256-cached', label: 'guard + ES256, one token (cache hit)', server: 'es256', accepted: true, requestFor: accept(() => originHeader + bearer(reused!)) },
    { id: 'jwks', label: 'guard + JWKS (ES256), fresh tokens', server: 'jwks', accepted: true, requestFor: accept(() => originHeader + bearer(jwksFresh())) },
    { id: 'reject-origin', label: 'refused: bad origin (HS256 route)', server: 'hs256', accepted: false, requestFor: () => ({ headers: badOriginHeader + bearer(valid!), expectStatus: 403 }) },
    { id: 'reject-missing', label: 'refused: missing token', server: 'hs256', accepted: false, requestFor: () => ({ headers: originHeader, expectStatus: 401 }) },
    { id: 'reject-badsig', label: 'refused: bad signature', server: 'hs256', accepted: false, requestFor: () => ({ headers: originHeader + bearer(forged()), expectStatus: 401 }) }
  ]

  // Every idle case sends the same request, a distinct token included, whether its server
  // reads it or not: a connection retains its request, so only then do sizes compare.
  const idleRequests = (id: string): () => string => {
    // Twice: the ping cases run once alone, once side by side.
    const next = freshTokens(mintTokens(hs, 2 * (idleConnections + warmupPerServer) + 256, id))
    return () => originHeader + bearer(next())
  }
  const idleCases: IdleCase[] = [
    { id: 'idle-bare', label: 'bare @fastify/websocket, no heartbeat', server: { name: 'idle-bare', kind: 'bare' }, headersFor: idleRequests('idle-bare'), quick: true, role: 'bare', pings: false },
    { id: 'idle-guard', label: 'guard, origin only, heartbeat 30 s (default)', server: { name: 'idle-guard', kind: 'guard', origins: [allowedOrigin] }, headersFor: idleRequests('idle-guard'), quick: true, role: 'guard', pings: false },
    { id: 'idle-guard-hs256', label: 'guard + HS256, heartbeat 30 s (default)', server: { name: 'idle-guard-hs256', kind: 'guard', origins: [allowedOrigin], auth: { secret } }, headersFor: idleRequests('idle-guard-hs256'), quick: false, role: 'guard', pings: false },
    { id: 'idle-jose-hs256', label: 'reference: bare + jose hook, HS256, claims kept', server: { name: 'idle-jose-hs256', kind: 'jose', auth: { secret } }, headersFor: idleRequests('idle-jose-hs256'), quick: false, role: 'reference', pings: false },
    { id: 'idle-timer', label: 'reference: per-connection setInterval, 30 s', server: { name: 'idle-timer', kind: 'timer', timerInterval: 30_000 }, headersFor: idleRequests('idle-timer'), quick: false, role: 'reference', pings: false },
    { id: 'ping-guard', label: 'guard, pings every 1 s (timer wheel)', server: { name: 'ping-guard', kind: 'guard', origins: [allowedOrigin], heartbeat: { pingInterval: 1000, readDeadline: 2000 } }, headersFor: idleRequests('ping-guard'), quick: true, role: 'guard', pings: true },
    { id: 'ping-timer', label: 'reference: per-connection setInterval, 1 s', server: { name: 'ping-timer', kind: 'timer', timerInterval: 1000 }, headersFor: idleRequests('ping-timer'), quick: true, role: 'reference', pings: true }
  ]
  // A rate no client of the suite reaches, so that only the checks' own cost shows.
  const messageGuards = { maxMessageBytes: 64 * 1024, messageRate: { messages: 1_000_000, interval: 1000 } }
  const messageCases: MessageCase[] = [
    { id: 'msg-bare', label: 'bare @fastify/websocket (echo)', server: { name: 'msg-bare', kind: 'bare' }, headers: originHeader },
    { id: 'msg-guard', label: 'guard, no message guards', server: { name: 'msg-guard', kind: 'guard', origins: [allowedOrigin] }, headers: originHeader },
    { id: 'msg-guard-limits', label: 'guard + maxMessageBytes 64 KiB + messageRate 1e6/s', server: { name: 'msg-guard-limits', kind: 'guard', origins: [allowedOrigin], messageGuards }, headers: originHeader }
  ]
  const fleetFresh = freshTokens(mintTokens(hs, 2 * handshakesPerCase + 512, 'fleet'))
  const perUserLimit = 5
  const fleet: FleetFixtures = {
    handshakeCases: [
      { id: 'bare', label: 'bare @fastify/websocket (echo)', server: 'bare', accepted: true, requestFor: accept(() => originHeader) },
      { id: 'fleet-memory', label: `guard + HS256, maxConnectionsPerUser ${perUserLimit}, MemoryStore`, server: 'fleet-memory', accepted: true, requestFor: accept(() => originHeader + bearer(fleetFresh())) },
      { id: 'fleet-redis', label: `guard + HS256, maxConnectionsPerUser ${perUserLimit}, RedisStore`, server: 'fleet-redis', accepted: true, requestFor: accept(() => originHeader + bearer(fleetFresh())) }
    ],
    servers: (redisUrl) => ({
      bare: { name: 'fleet-bare', kind: 'bare' },
      'fleet-memory': { name: 'fleet-memory', kind: 'guard', origins: [allowedOrigin], auth: { secret }, maxConnectionsPerUser: perUserLimit },
      'fleet-redis': { name: 'fleet-redis', kind: 'guard', origins: [allowedOrigin], auth: { secret }, maxConnectionsPerUser: perUserLimit, store: { redisUrl } }
    }),
    fanoutServer: (redisUrl, index) => ({ name: `fanout-${index}`, kind: 'guard', origins: [allowedOrigin], auth: { secret }, store: { redisUrl } }),
    fanoutHeaders: (sub, count) => mintTokens(hs, count, sub, sub).map((token) => originHeader + bearer(token))
  }
  return { servers, handshakeCases, idleCases, messageCases, fleet, jwks }
}
