import type { FastifyRequest } from 'fastify'

/**
 * A request log serializer that drops the URL's query string. Fastify's default request log
 * line prints the URL, query included: with the `'query'` token source, that is the token.
 * @example
 * ```ts
 * const app = Fastify({ logger: { serializers: { req: requestSerializer } } })
 * ```
 */
export function requestSerializer (request: FastifyRequest): Record<string, unknown> {
  const url = request.url
  const queryStart = url.indexOf('?')
  return {
    method: request.method,
    url: queryStart === -1 ? url : url.slice(0, queryStart),
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket?.remotePort
  }
}

/**
 * A pino `hooks.logMethod` that blanks the value of token query parameters in every message,
 * for the lines that quote a URL whole: Fastify's `Route GET:/chat/?access_token=… not found`.
 * `params`: the query parameter names to blank (the guard's `queryParam`).
 * @example
 * ```ts
 * const app = Fastify({ logger: { serializers: { req: requestSerializer }, hooks: { logMethod: redactQueryTokens() } } })
 * ```
 */
export function redactQueryTokens (params: readonly string[] = ['access_token']): (this: unknown, args: unknown[], method: (...args: unknown[]) => void) => void {
  const escaped = params.map((param) => param.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
  const query = new RegExp(`([?&;](?:${escaped.join('|')})=)[^&#\\s"']*`, 'gi')
  return function logMethod (args, method) {
    for (let i = 0; i < args.length; i++) {
      const arg = args[i]
      if (typeof arg === 'string' && arg.includes('=')) args[i] = arg.replace(query, '$1[redacted]')
    }
    method.apply(this, args)
  }
}

/** Only an error's name and code are logged: its message may carry what must not leak. */
export function errorIdentity (err: unknown): { name?: string, code?: string } {
  if (typeof err !== 'object' || err === null) return { name: typeof err }
  const { name, code } = err as { name?: unknown, code?: unknown }
  return { name: String(name), code: typeof code === 'string' ? code : undefined }
}
