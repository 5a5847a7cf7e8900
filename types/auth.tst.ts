import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { JWK, JWTPayload, JWTVerifyGetKey } from 'jose'
import { describe, expect, test } from 'tstyche'
import type { WebSocket } from 'ws'
import { bearerProtocols } from '../client.js'
import wsGuard, {
  requestSerializer,
  type TokenSource,
  type WsGuardAuthOptions,
  type WsGuardOptions,
  type WsGuardRouteOptions,
  type WsRouteHandler,
  type WsUser
} from '../index.js'

// The WsGuardUserRegistry declaration merging is tested in types/registry/: an augmentation
// here would retype request.wsUser for every file of the project.

declare const app: FastifyInstance
declare function auth (options: WsGuardAuthOptions): void
declare const pem: string
declare const jwk: JWK
declare const cryptoKey: CryptoKey
declare const keyObject: import('node:crypto').KeyObject

interface Claims {
  sub: string
  role: 'admin' | 'member'
}

describe('request.wsUser', () => {
  test('defaults to the verified JWTPayload, or null', () => {
    expect<WsUser>().type.toBe<JWTPayload>()
    expect<FastifyRequest['wsUser']>().type.toBe<JWTPayload | null>()
    app.wsRoute('/chat', (socket, request) => {
      expect(socket).type.toBe<WebSocket>()
      expect(request.wsUser).type.toBe<JWTPayload | null>()
      if (request.wsUser !== null) {
        expect(request.wsUser.sub).type.toBe<string | undefined>()
        expect(request.wsUser.exp).type.toBe<number | undefined>()
      }
    })
  })

  test('wsRoute<User> refines the claims of one route', () => {
    app.wsRoute<Claims>('/admin', (_socket, request) => {
      // Refined over the registry's (here the default) claims.
      expect(request.wsUser).type.toBe<(JWTPayload & Claims) | null>()
      if (request.wsUser !== null) {
        expect(request.wsUser.role).type.toBe<'admin' | 'member'>()
        expect(request.wsUser.sub).type.toBe<string>()
      }
    })
    app.wsRoute<Claims>('/admin', { config: { wsGuard: { auth: { audience: 'admin' } } } }, (_socket, request) => {
      expect(request.wsUser).type.toBe<(JWTPayload & Claims) | null>()
    })
  })

  test('a handler typed for other claims is refused where they do not fit', () => {
    const handler: WsRouteHandler<Claims> = () => {}
    expect(app.wsRoute<Claims>).type.toBeCallableWith('/admin', handler)
    expect(app.wsRoute<{ sub: number }>).type.not.toBeCallableWith('/admin', handler)
  })

  test('wsUser is read-write on any request and null-able', () => {
    app.get('/http', async (request) => {
      expect(request.wsUser).type.toBe<JWTPayload | null>()
      request.wsUser = null
      return 'ok'
    })
  })
})

describe('WsGuardAuthOptions', () => {
  test('one key source: a secret, a public key in four forms, a JWK Set URL or a resolver', () => {
    expect(auth).type.toBeCallableWith({ secret: 'a-long-enough-secret-of-32-bytes!' })
    expect(auth).type.toBeCallableWith({ secret: new Uint8Array(32) })
    expect(auth).type.toBeCallableWith({ publicKey: pem })
    expect(auth).type.toBeCallableWith({ publicKey: jwk })
    expect(auth).type.toBeCallableWith({ publicKey: keyObject })
    expect(auth).type.toBeCallableWith({ publicKey: cryptoKey })
    expect(auth).type.toBeCallableWith({ jwksUrl: 'https://issuer.example/jwks.json', jwks: { timeoutDuration: 2000, cooldownDuration: 30_000, cacheMaxAge: 600_000 } })
    expect(auth).type.toBeCallableWith({ jwksUrl: new URL('https://issuer.example/jwks.json') })
    const getKey: JWTVerifyGetKey = () => new Uint8Array(32)
    expect(auth).type.toBeCallableWith({ getKey })
  })

  test('key sources of the wrong type are refused', () => {
    expect(auth).type.not.toBeCallableWith({ secret: 42 })
    expect(auth).type.not.toBeCallableWith({ publicKey: 42 })
    expect(auth).type.not.toBeCallableWith({ jwksUrl: 42 })
    expect(auth).type.not.toBeCallableWith({ jwksUrl: 'https://x', jwks: { timeoutDuration: '2s' } })
    expect(auth).type.not.toBeCallableWith({ getKey: 'key' })
  })

  test('claims checks', () => {
    expect(auth).type.toBeCallableWith({
      secret: 's',
      algorithms: ['HS256', 'HS512'],
      issuer: ['https://a.example', 'https://b.example'],
      audience: 'chat',
      subject: 'alice',
      typ: 'at+jwt',
      clockTolerance: 5,
      maxTokenAge: '2h',
      requiredClaims: ['scope'],
      allowMissingExp: false,
      maxTokenLength: 8192,
      realm: 'chat'
    })
    expect(auth).type.toBeCallableWith({ secret: 's', maxTokenAge: 3600, issuer: 'https://a.example', audience: ['a', 'b'] })
    expect(auth).type.not.toBeCallableWith({ secret: 's', clockTolerance: '5s' })
    expect(auth).type.not.toBeCallableWith({ secret: 's', allowMissingExp: 'yes' })
    expect(auth).type.not.toBeCallableWith({ secret: 's', requiredClaims: 'scope' })
    expect(auth).type.not.toBeCallableWith({ secret: 's', audiences: ['a'] })
  })

  test('token sources', () => {
    expect<TokenSource>().type.toBe<'header' | 'protocol' | 'cookie' | 'query' | 'custom'>()
    expect(auth).type.toBeCallableWith({ secret: 's', tokenSources: ['header', 'protocol', 'cookie', 'query'], cookieName: 'session', queryParam: 'jwt' })
    expect(auth).type.toBeCallableWith({ secret: 's', tokenSources: [], getToken: (request: FastifyRequest) => request.headers['x-token'] as string | undefined })
    expect(auth).type.not.toBeCallableWith({ secret: 's', tokenSources: ['custom'] })
    expect(auth).type.not.toBeCallableWith({ secret: 's', tokenSources: ['body'] })
    expect(auth).type.not.toBeCallableWith({ secret: 's', getToken: async () => 'token' })
  })

  test('authorize and isRevoked get the claims and the request', () => {
    expect(auth).type.toBeCallableWith({
      secret: 's',
      authorize: (user: JWTPayload, request: FastifyRequest) => user.sub === request.params,
      isRevoked: async (user: JWTPayload) => user.jti === 'revoked'
    })
    const options: WsGuardAuthOptions<Claims> = { secret: 's', authorize: (user) => user.role === 'admin' }
    expect(options.authorize).type.toBe<((user: Claims, request: FastifyRequest) => boolean | Promise<boolean>) | undefined>()
    expect(auth).type.not.toBeCallableWith({ secret: 's', authorize: () => 'yes' })
  })

  test('the cache', () => {
    expect(auth).type.toBeCallableWith({ secret: 's', cache: false })
    expect(auth).type.toBeCallableWith({ secret: 's', cache: { max: 100 } })
    expect(auth).type.not.toBeCallableWith({ secret: 's', cache: { ttl: 100 } })
  })

  test('auth rides on the plugin options and on a route, where false opts out', () => {
    expect<WsGuardOptions['auth']>().type.toBe<WsGuardAuthOptions | false | undefined>()
    expect<WsGuardRouteOptions['auth']>().type.toBe<WsGuardAuthOptions | false | undefined>()
    expect(app.register).type.toBeCallableWith(wsGuard, { auth: { secret: 's' }, rejectWith: 'close' })
    expect(app.wsRoute).type.toBeCallableWith('/public', { config: { wsGuard: { auth: false } } }, () => {})
    expect(app.wsRoute).type.toBeCallableWith('/admin', { config: { wsGuard: { auth: { audience: 'admin' } } } }, () => {})
    expect(app.wsRoute).type.not.toBeCallableWith('/admin', { config: { wsGuard: { auth: true } } }, () => {})
  })
})

describe('helpers', () => {
  test('bearerProtocols', () => {
    expect(bearerProtocols('token', 'chat.v1')).type.toBe<string[]>()
    expect(bearerProtocols).type.toBeCallableWith('token')
    expect(bearerProtocols).type.not.toBeCallableWith()
    expect(bearerProtocols).type.not.toBeCallableWith('token', ['chat.v1'])
  })

  test('requestSerializer fits a Fastify logger serializer', () => {
    expect(requestSerializer).type.toBeAssignableTo<(request: FastifyRequest) => Record<string, unknown>>()
  })
})
