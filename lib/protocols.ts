import type { IncomingMessage } from 'node:http'
import type { WebSocketServer } from 'ws'
import { InvalidProtocolHeaderError, UnsupportedProtocolError, type GuardError } from './errors.js'
import { kHandshake } from './symbols.js'

const tokenShape = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** The subprotocols a client offered, in its order; an error when the header is malformed. */
export function parseOfferedProtocols (header: string | undefined): string[] | GuardError {
  if (header === undefined) return []
  const offered: string[] = []
  for (const part of header.split(',')) {
    const protocol = part.trim()
    if (!tokenShape.test(protocol) || offered.includes(protocol)) return new InvalidProtocolHeaderError()
    offered.push(protocol)
  }
  return offered
}

/**
 * Picks the subprotocol the 101 will name: the first of the route's `protocols` the client
 * offered. `undefined` leaves the choice to ws's default (first offered, never a token).
 */
export function selectProtocol (offered: readonly string[], spoken: readonly string[]): string | undefined | GuardError {
  if (spoken.length === 0 || offered.length === 0) return undefined
  for (const protocol of spoken) {
    if (offered.includes(protocol)) return protocol
  }
  return new UnsupportedProtocolError(spoken.join(', '))
}

/**
 * Makes ws name the subprotocol the guard chose. Without this, ws echoes the first offered
 * subprotocol, which reflects `bearer.<token>` back when a browser sends its token that way.
 */
export function installProtocolSelection (wss: WebSocketServer): void {
  const original = wss.options.handleProtocols
  wss.options.handleProtocols = (protocols: Set<string>, request: IncomingMessage): string | false => {
    const chosen = (request as GuardedIncomingMessage)[kHandshake]?.protocol
    if (chosen !== undefined) return chosen
    if (original !== undefined) return original(protocols, request)
    for (const protocol of protocols) {
      if (!protocol.startsWith('bearer.')) return protocol
    }
    return false
  }
}

interface GuardedIncomingMessage extends IncomingMessage {
  [kHandshake]?: { protocol: string | false | undefined }
}
