/*
 * Tokens for the bench, minted with node:crypto before any measurement (jose's async signing
 * would be slower and is not what is measured), and a local JWK Set server.
 */
import { createHmac, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** Signs a JWS signing input the way one algorithm does. */
export interface Signer {
  readonly alg: 'HS256' | 'ES256'
  readonly kid?: string
  sign: (input: string) => Buffer
}

export function hs256Signer (secret: string): Signer {
  return { alg: 'HS256', sign: (input) => createHmac('sha256', secret).update(input).digest() }
}

export function es256Signer (privateKey: KeyObject, kid?: string): Signer {
  return {
    alg: 'ES256',
    ...(kid === undefined ? {} : { kid }),
    sign: (input) => sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' })
  }
}

/** A fresh HMAC secret: 32 random bytes, base64url (the guard encodes the string as UTF-8). */
export function newSecret (): string {
  return randomBytes(32).toString('base64url')
}

export function newEcKeyPair (): { privateKey: KeyObject, publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' })
}

/**
 * `count` distinct tokens (their own `sub` and `jti`), valid an hour, as an access token of a
 * real app would be; with `sub`, all of that one user (still each with its own `jti`).
 */
export function mintTokens (signer: Signer, count: number, prefix: string, sub?: string): string[] {
  const header = Buffer.from(JSON.stringify({ alg: signer.alg, typ: 'JWT', ...(signer.kid === undefined ? {} : { kid: signer.kid }) })).toString('base64url')
  const iat = Math.floor(Date.now() / 1000)
  const tokens: string[] = new Array(count)
  for (let i = 0; i < count; i++) {
    const payload = Buffer.from(JSON.stringify({ sub: sub ?? `${prefix}-user-${i}`, jti: `${prefix}-${i}-${randomBytes(6).toString('base64url')}`, scope: 'chat:read chat:write', iat, exp: iat + 3600 })).toString('base64url')
    const input = `${header}.${payload}`
    tokens[i] = `${input}.${signer.sign(input).toString('base64url')}`
  }
  return tokens
}

/** A JWK Set on 127.0.0.1, counting its requests. */
export interface JwksServer {
  readonly url: string
  readonly requests: () => number
  close: () => Promise<void>
}

export async function startJwksServer (publicKey: KeyObject, kid: string): Promise<JwksServer> {
  const body = JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' }] })
  let requests = 0
  const server: Server = createServer((request, response) => {
    requests++
    if (request.url !== '/jwks.json') {
      response.writeHead(404).end()
      return
    }
    response.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=600' }).end(body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    requests: () => requests,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  }
}
