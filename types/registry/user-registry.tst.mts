/*
 * WsGuardUserRegistry declaration merging. This file is a project of its own (tsconfig.json
 * here; .mts so that the root tsconfig's "types/**\/*.ts" leaves it out): the augmentation
 * below retypes request.wsUser for every file of the program that sees it.
 * Run: npx tstyche --config types/registry/tstyche.config.json
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { expect, test } from 'tstyche'
import wsGuard, { type WsGuardAuthOptions, type WsRouteHandler, type WsUser } from '../../index.js'

interface AppClaims {
  sub: string
  role: 'admin' | 'member'
  exp: number
}

declare module '../../index.js' {
  interface WsGuardUserRegistry {
    user: AppClaims
  }
}

declare const app: FastifyInstance

test('the declared claims become WsUser', () => {
  expect<WsUser>().type.toBe<AppClaims>()
})

test('request.wsUser is typed everywhere', () => {
  expect<FastifyRequest['wsUser']>().type.toBe<AppClaims | null>()
  app.wsRoute('/chat', (_socket, request) => {
    expect(request.wsUser).type.toBe<AppClaims | null>()
    if (request.wsUser !== null) {
      expect(request.wsUser.role).type.toBe<'admin' | 'member'>()
      expect(request.wsUser).type.not.toHaveProperty('scope')
    }
  })
  app.get('/http', async (request) => {
    expect(request.wsUser).type.toBe<AppClaims | null>()
    return 'ok'
  })
})

test('wsRoute<User> still refines one route', () => {
  interface Admin { role: 'admin', scope: string[] }
  app.wsRoute<Admin>('/admin', (_socket, request) => {
    expect(request.wsUser).type.toBe<(AppClaims & Admin) | null>()
  })
  expect<Parameters<WsRouteHandler>[1]['wsUser']>().type.toBe<AppClaims | null>()
})

test('authorize and isRevoked in the plugin and route options receive the declared claims', () => {
  app.register(wsGuard, {
    auth: {
      secret: 's',
      authorize: (user) => {
        expect(user).type.toBe<AppClaims>()
        return user.role === 'admin'
      },
      isRevoked: (user) => {
        expect(user).type.toBe<AppClaims>()
        return false
      }
    }
  })
  expect<NonNullable<WsGuardAuthOptions['authorize']>>().type.toBe<(user: AppClaims, request: FastifyRequest) => boolean | Promise<boolean>>()
})

test('WsGuardAuthOptions<User> takes explicit claims', () => {
  const options: WsGuardAuthOptions<WsUser> = {
    secret: 's',
    authorize: (user) => user.role === 'admin',
    isRevoked: (user) => user.exp < 0
  }
  expect(options.authorize).type.toBe<((user: AppClaims, request: FastifyRequest) => boolean | Promise<boolean>) | undefined>()
})
