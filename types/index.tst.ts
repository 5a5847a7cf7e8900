import type { FastifyContextConfig, FastifyInstance, FastifyRequest } from 'fastify'
import { describe, expect, test } from 'tstyche'
import type { WebSocket } from 'ws'
import wsGuard, {
  fastifyWsGuard,
  InvalidOptionError,
  OriginNotAllowedError,
  type GuardError,
  type OriginOption,
  type OriginPredicate,
  type WsGuardOptions,
  type WsGuardRouteOptions,
  type WsRouteMethod,
  type WsRouteOptions
} from '../index.js'

declare const app: FastifyInstance
declare function options (options: WsGuardOptions): void
declare function routeOptions (options: WsGuardRouteOptions): void

describe('plugin', () => {
  test('default and named exports are the same plugin', () => {
    expect(wsGuard).type.toBe(fastifyWsGuard)
  })

  test('registers with or without options', () => {
    expect(app.register).type.toBeCallableWith(wsGuard)
    expect(app.register).type.toBeCallableWith(wsGuard, {})
    expect(app.register).type.toBeCallableWith(wsGuard, { origins: ['https://app.example.com'], rejectWith: 'close' })
  })

  test('a wrong option type is rejected at register', () => {
    expect(app.register).type.not.toBeCallableWith(wsGuard, { origins: 42 })
    expect(app.register).type.not.toBeCallableWith(wsGuard, { rejectWith: 'reset' })
    expect(app.register).type.not.toBeCallableWith(wsGuard, { handshakeTimeout: '10s' })
  })
})

describe('WsGuardOptions', () => {
  test('origins: exact, wildcard and RegExp entries, a function, or the literal *', () => {
    expect(options).type.toBeCallableWith({ origins: ['https://app.example.com', 'https://*.example.com', 'null', /^https:\/\/pr-\d+\.dev$/] })
    expect(options).type.toBeCallableWith({ origins: [] })
    expect(options).type.toBeCallableWith({ origins: '*' })
    expect(options).type.toBeCallableWith({ origins: (origin: string) => origin.endsWith('.example.com') })
    expect(options).type.toBeCallableWith({ origins: async (origin: string, request: FastifyRequest) => origin === request.headers.origin })
    const readonlyList = ['https://a.example.com'] as const
    expect(options).type.toBeCallableWith({ origins: readonlyList })
  })

  test('origins: anything else is rejected', () => {
    expect(options).type.not.toBeCallableWith({ origins: 'https://app.example.com' })
    expect(options).type.not.toBeCallableWith({ origins: true })
    expect(options).type.not.toBeCallableWith({ origins: [42] })
    expect(options).type.not.toBeCallableWith({ origins: (origin: string) => origin })
    expect(options).type.not.toBeCallableWith({ origins: (origin: number) => origin > 0 })
  })

  test('rejectWith is a literal union', () => {
    expect<WsGuardOptions['rejectWith']>().type.toBe<'http' | 'close' | undefined>()
    expect(options).type.toBeCallableWith({ rejectWith: 'http' })
    expect(options).type.toBeCallableWith({ rejectWith: 'close' })
    expect(options).type.not.toBeCallableWith({ rejectWith: 'reset' })
    const widened: string = 'close'
    expect(options).type.not.toBeCallableWith({ rejectWith: widened })
  })

  test('the other options', () => {
    expect(options).type.toBeCallableWith({
      allowMissingOrigin: false,
      originReportOnly: true,
      handshakeTimeout: 5000,
      protocols: ['chat.v2', 'chat.v1'],
      websocket: { maxPayload: 65536, perMessageDeflate: false }
    })
    expect(options).type.not.toBeCallableWith({ allowMissingOrigin: 'no' })
    expect(options).type.not.toBeCallableWith({ handshakeTimeout: '5000' })
    expect(options).type.not.toBeCallableWith({ protocols: 'chat' })
    expect(options).type.not.toBeCallableWith({ websocket: { maxPayload: '1mb' } })
  })

  test('ws options the plugin owns are not accepted', () => {
    expect(options).type.not.toBeCallableWith({ websocket: { noServer: true } })
    expect(options).type.not.toBeCallableWith({ websocket: { port: 8080 } })
    expect(options).type.not.toBeCallableWith({ websocket: { path: '/ws' } })
  })

  test('unknown keys are rejected', () => {
    expect(options).type.not.toBeCallableWith({ origin: ['https://app.example.com'] })
  })

  test('route options are plugin options without websocket', () => {
    expect<WsGuardRouteOptions>().type.toBeAssignableTo<WsGuardOptions>()
    expect<WsGuardOptions>().type.toHaveProperty('websocket')
    expect<WsGuardRouteOptions>().type.not.toHaveProperty('websocket')
    expect(routeOptions).type.not.toBeCallableWith({ websocket: {} })
  })

  test('OriginOption and OriginPredicate', () => {
    expect<OriginPredicate>().type.toBe<(origin: string, request: FastifyRequest) => boolean | Promise<boolean>>()
    expect<OriginPredicate>().type.toBeAssignableTo<OriginOption>()
    expect<'*'>().type.toBeAssignableTo<OriginOption>()
    expect<string>().type.not.toBeAssignableTo<OriginOption>()
    expect<ReadonlyArray<string | RegExp>>().type.toBeAssignableTo<OriginOption>()
  })
})

describe('app.wsRoute', () => {
  test('is decorated on every instance', () => {
    expect(app.wsRoute).type.toBe<WsRouteMethod>()
  })

  test('(path, handler) and (path, options, handler)', () => {
    expect(app.wsRoute).type.toBeCallableWith('/ws', (socket: WebSocket, request: FastifyRequest) => { socket.send(request.url) })
    expect(app.wsRoute).type.toBeCallableWith('/ws', { config: { wsGuard: { origins: '*' } } }, (socket: WebSocket) => { socket.close() })
    expect(app.wsRoute).type.toBeCallableWith('/ws', { logLevel: 'warn', onRequest: async () => {} }, () => {})
    expect(app.wsRoute('/ws', () => {})).type.toBe<FastifyInstance>()
  })

  test('the handler gets a ws socket and the request', () => {
    app.wsRoute('/ws', (socket, request) => {
      expect(socket).type.toBe<WebSocket>()
      expect(request).type.toBeAssignableTo<FastifyRequest>()
    })
  })

  test('without a handler, with a wrong handler or wrong options: rejected', () => {
    expect(app.wsRoute).type.not.toBeCallableWith('/ws')
    expect(app.wsRoute).type.not.toBeCallableWith('/ws', {})
    expect(app.wsRoute).type.not.toBeCallableWith('/ws', {}, 'handler')
    expect(app.wsRoute).type.not.toBeCallableWith(42, () => {})
    expect(app.wsRoute).type.not.toBeCallableWith('/ws', { config: { wsGuard: { origins: 42 } } }, () => {})
    expect(app.wsRoute).type.not.toBeCallableWith('/ws', { websocket: true }, () => {})
  })

  test('WsRouteOptions has no websocket flag', () => {
    expect<WsRouteOptions>().type.not.toHaveProperty('websocket')
    expect<WsRouteOptions>().type.toHaveProperty('config')
  })
})

describe('config.wsGuard', () => {
  test('is typed on every route', () => {
    expect<FastifyContextConfig['wsGuard']>().type.toBe<WsGuardRouteOptions | false | undefined>()
  })

  test('overrides or false on a websocket route', () => {
    expect(app.get).type.toBeCallableWith('/ws', { websocket: true, config: { wsGuard: { origins: ['https://a.example.com'], rejectWith: 'close' } } }, () => {})
    expect(app.get).type.toBeCallableWith('/ws', { websocket: true, config: { wsGuard: false } }, () => {})
    expect(app.wsRoute).type.toBeCallableWith('/ws', { config: { wsGuard: false } }, () => {})
  })

  test('wrong overrides are rejected', () => {
    expect(app.wsRoute).type.not.toBeCallableWith('/ws', { config: { wsGuard: true } }, () => {})
    expect(app.wsRoute).type.not.toBeCallableWith('/ws', { config: { wsGuard: 'off' } }, () => {})
    expect(app.wsRoute).type.not.toBeCallableWith('/ws', { config: { wsGuard: { rejectWith: 'drop' } } }, () => {})
    expect(app.wsRoute).type.not.toBeCallableWith('/ws', { config: { wsGuard: { websocket: {} } } }, () => {})
    // app.get's own overloads infer a generic ContextConfig, which loosens excess-property
    // checks on config; wrong value types are still caught.
    expect(app.get).type.not.toBeCallableWith('/ws', { websocket: true, config: { wsGuard: { rejectWith: 'drop' } } }, () => {})
    expect(app.get).type.not.toBeCallableWith('/ws', { websocket: true, config: { wsGuard: { origins: 42 } } }, () => {})
  })
})

describe('errors', () => {
  test('carry a code and a status', () => {
    const error = new OriginNotAllowedError('https://evil.example')
    expect(error.code).type.toBe<'FST_WS_GUARD_ORIGIN_NOT_ALLOWED'>()
    expect(error.statusCode).type.toBe<403>()
    expect(error).type.toBeAssignableTo<GuardError>()
    expect(new InvalidOptionError('x')).type.toBeAssignableTo<Error>()
    expect<GuardError>().type.toHaveProperty('code')
    expect<GuardError>().type.toHaveProperty('statusCode')
  })
})
