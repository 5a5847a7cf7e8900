import type { IncomingMessage } from 'node:http'
import type { WebSocketServer } from 'ws'
import { carriesToken } from '../auth/token-sources.js'
import { InvalidProtocolHeaderError, ProtocolRequiredError, UnsupportedProtocolError, type GuardError } from '../errors.js'
import { tokenShape } from '../validate.js'
import { kHandshake, type GuardedIncomingMessage, type GuardStep } from './contract.js'

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
 * Picks the subprotocol the 101 will name, never a `bearer.<token>`: the first of the route's
 * `protocols` the client offered (or, when the route names none, the client's first
 * application protocol), else the marker `bearer`, else none. A client that offered only its
 * token gets an error: selecting nothing makes browsers fail the connection. With `required`,
 * a client that offers none of the route's protocols is refused, whatever else it offered.
 */
export function selectProtocol (offered: readonly string[], spoken: readonly string[], required = false): string | false | GuardError {
  const application = offered.filter((protocol) => protocol !== 'bearer' && !carriesToken(protocol))
  if (spoken.length > 0) {
    for (const protocol of spoken) {
      if (application.includes(protocol)) return protocol
    }
    if (application.length > 0 || required) return new UnsupportedProtocolError(spoken.join(', '))
  } else if (application.length > 0) {
    return application[0]!
  }
  if (offered.includes('bearer')) return 'bearer'
  if (offered.length > 0) return new ProtocolRequiredError(spoken.length > 0 ? spoken.map((p) => `"${p}"`).join(' or ') : 'the marker "bearer"')
  return false
}

/** Step 5 of the chain: the subprotocol the 101 will name. */
export const selectProtocolStep: GuardStep = (_request, state) => {
  const selected = selectProtocol(state.offeredProtocols, state.settings.protocols, state.settings.requireProtocol)
  if (typeof selected === 'object') return { error: selected }
  state.protocol = selected
  return undefined
}

/**
 * Makes ws name the subprotocol the guard chose. Without this, ws echoes the first offered
 * subprotocol, which reflects `bearer.<token>` back when a browser sends its token that way.
 */
export function installProtocolSelection (wss: WebSocketServer): void {
  const original = wss.options.handleProtocols
  wss.options.handleProtocols = (protocols: Set<string>, request: IncomingMessage): string | false => {
    const state = (request as GuardedIncomingMessage)[kHandshake]
    if (state !== undefined) {
      // The route's `protocols` decided, or the guard's default did: the app's own
      // handleProtocols may still choose among the application protocols.
      if (typeof original !== 'function' || state.settings.protocols.length > 0 || state.protocol === false || state.protocol === 'bearer') return state.protocol
      return original(new Set([...protocols].filter((protocol) => protocol !== 'bearer' && !carriesToken(protocol))), request)
    }
    // A route outside the guard: the app's choice or ws's default, never shown a token.
    const offered = [...protocols].filter((protocol) => !carriesToken(protocol))
    if (typeof original === 'function') return original(new Set(offered), request)
    return offered[0] ?? false
  }
}
