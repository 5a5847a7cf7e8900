/** Where the guard keeps a handshake's state on the raw request, for ws's callbacks. */
export const kHandshake = Symbol('fastify-ws-guard.handshake')
