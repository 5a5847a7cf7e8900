import { isIP, type Socket } from 'node:net'
import { checkServerIdentity, connect, type PeerCertificate, type TLSSocket } from 'node:tls'
import { failed, stageResult } from './stage.js'
import { fill } from './template.js'
import { startClock, timedOut, within } from './time.js'
import type { DoctorOptions, Finding, StageResult } from './types.js'
import type { Target } from './url.js'

/** Stage 4 (wss:// only): the TLS handshake over the TCP connection, then the certificate's checks. */
export async function startTls (target: Target, socket: Socket, options: DoctorOptions): Promise<{ result: StageResult, socket?: TLSSocket }> {
  const elapsed = startClock()
  // Verification is done below, by hand, so that every problem is named, not only the first.
  const tlsSocket = connect({
    socket,
    servername: serverName(target.host),
    ca: options.ca,
    rejectUnauthorized: false,
    ALPNProtocols: ['http/1.1']
  })
  const outcome = await within(new Promise<true | NodeJS.ErrnoException>((resolve) => {
    tlsSocket.once('secureConnect', () => resolve(true))
    tlsSocket.on('error', resolve)
  }), options.timeout)
  if (outcome !== true) {
    tlsSocket.destroy()
    const code = outcome === timedOut ? 'ETIMEDOUT' : String(outcome.code)
    const explain = handshakeErrors[code] ?? handshakeErrors.other!
    const cause = fill(explain.cause, { timeout: options.timeout })
    return { result: stageResult('tls', elapsed(), `TLS handshake failed (${code})`, { findings: [failed(code, cause, explain.fix)] }) }
  }
  const cert = tlsSocket.getPeerCertificate()
  const facts = describeCertificate(cert)
  const protocol = `${tlsSocket.getProtocol()}, ${tlsSocket.getCipher().name}`
  const findings: Finding[] = []
  // Node names a hostname mismatch in authorizationError only when the chain is fine.
  const chainError = tlsSocket.authorized ? undefined : String(tlsSocket.authorizationError)
  if (chainError !== undefined && chainError !== 'ERR_TLS_CERT_ALTNAME_INVALID') findings.push(chainFinding(chainError, facts, options))
  const identityError = checkServerIdentity(target.host, cert)
  if (identityError !== undefined) findings.push(nameFinding(target.host, facts, options))
  const result = stageResult('tls', elapsed(), `${protocol}; certificate for ${facts.subject}, issued by ${facts.issuer}`, {
    details: [
      `subject  ${facts.subject}`,
      `SANs     ${facts.sans}`,
      `issuer   ${facts.issuer}`,
      `valid    ${facts.validFrom} -> ${facts.validTo}`
    ],
    findings,
    data: { protocol: tlsSocket.getProtocol(), cipher: tlsSocket.getCipher().name, certificate: facts, authorizationError: chainError ?? null }
  })
  if (result.verdict === 'fail') {
    tlsSocket.destroy()
    return { result }
  }
  return { result, socket: tlsSocket }
}

/**
 * After `ws://` got no HTTP answer: does the port speak TLS? A TLS server drops a plain request
 * without a byte, so only a ClientHello of our own can tell.
 */
export async function speaksTls (address: string, port: number, host: string, timeout: number): Promise<boolean> {
  const socket = connect({ host: address, port, servername: serverName(host), rejectUnauthorized: false })
  const outcome = await within(new Promise<boolean>((resolve) => {
    socket.once('secureConnect', () => resolve(true))
    socket.on('error', () => resolve(false))
  }), timeout)
  socket.destroy()
  return outcome === true
}

/** SNI carries host names only (RFC 6066). */
function serverName (host: string): string | undefined {
  return isIP(host) === 0 ? host : undefined
}

interface CertificateFacts {
  subject: string
  issuer: string
  sans: string
  validFrom: string
  validTo: string
  fingerprint256: string
}

function describeCertificate (cert: PeerCertificate): CertificateFacts {
  return {
    subject: distinguishedName(cert.subject),
    issuer: distinguishedName(cert.issuer),
    sans: cert.subjectaltname ?? '(none)',
    validFrom: new Date(cert.valid_from).toISOString(),
    validTo: new Date(cert.valid_to).toISOString(),
    fingerprint256: cert.fingerprint256
  }
}

function distinguishedName (name: PeerCertificate['subject']): string {
  return Object.entries(name).map(([key, value]) => `${key}=${String(value)}`).join(', ')
}

function chainFinding (code: string, facts: CertificateFacts, options: DoctorOptions): Finding {
  const explain = chainErrors[code] ?? chainErrors.other!
  return certificateFinding(code, fill(explain.cause, { ...facts }), explain.fix, options)
}

function nameFinding (host: string, facts: CertificateFacts, options: DoctorOptions): Finding {
  return certificateFinding(
    'ERR_TLS_CERT_ALTNAME_INVALID',
    `the certificate is not valid for ${host}: it names ${facts.sans} (clients ignore the subject CN when SANs exist, and modern ones ignore it always)`,
    `connect with a name the certificate lists, or reissue it with subjectAltName=${isIP(host) === 0 ? 'DNS' : 'IP'}:${host}`,
    options
  )
}

function certificateFinding (code: string, cause: string, fix: string, options: DoctorOptions): Finding {
  if (options.insecure) return { verdict: 'warn', code, cause: `${cause} (--insecure: going on)`, fix }
  return failed(code, cause, `${fix}; to look past it for now, --insecure`)
}

const selfSigned = {
  cause: 'the certificate is self-signed ({subject}): no client trusts it unless told to',
  fix: 'pass it with --ca FILE; Node clients need the `ca` option or NODE_EXTRA_CA_CERTS, browsers need it installed; in production use a certificate from a public CA'
}
const unknownCa = {
  cause: 'the certificate\'s issuer ({issuer}) is not a trusted CA, or the server does not send its intermediate certificates',
  fix: 'for a private CA pass its certificate with --ca FILE (NODE_EXTRA_CA_CERTS for Node clients); for a public CA serve the full chain (fullchain.pem, not cert.pem)'
}

/** Certificate verification errors (OpenSSL's names, as Node reports them). */
const chainErrors: Readonly<Record<string, { cause: string, fix: string }>> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: selfSigned,
  SELF_SIGNED_CERT_IN_CHAIN: unknownCa,
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: unknownCa,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: unknownCa,
  UNABLE_TO_GET_ISSUER_CERT: unknownCa,
  CERT_HAS_EXPIRED: {
    cause: 'the certificate expired on {validTo}',
    fix: 'renew it (e.g. `certbot renew`) and reload the server'
  },
  CERT_NOT_YET_VALID: {
    cause: 'the certificate is not valid before {validFrom}: a clock is wrong, here or where it was issued',
    fix: 'check both clocks (NTP)'
  },
  other: {
    cause: 'the certificate failed verification',
    fix: 'check the certificate with `openssl s_client -connect host:port -servername host`'
  }
}

const plainOnTlsPort = {
  cause: 'the port answered in plain text, not TLS: it serves http://, so ws:// is the URL for it',
  fix: 'use ws:// for this port, or the port where the server terminates TLS'
}

/** Handshake failures, before any certificate is seen. */
const handshakeErrors: Readonly<Record<string, { cause: string, fix: string }>> = {
  ERR_SSL_WRONG_VERSION_NUMBER: plainOnTlsPort,
  ERR_SSL_PACKET_LENGTH_TOO_LONG: plainOnTlsPort,
  ECONNRESET: {
    cause: 'the server closed the connection during the TLS handshake: it does not speak TLS on this port, wants a TLS version, cipher or SNI name we did not offer, or a proxy cut it',
    fix: 'check the port and the server\'s TLS settings; `openssl s_client -connect host:port -servername host` shows the handshake'
  },
  ETIMEDOUT: {
    cause: 'no TLS answer in {timeout} ms: the server waits for something else (a protocol where the server speaks first?) or is overloaded',
    fix: 'check the port; try ws:// if it is not a TLS port'
  },
  ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION: {
    cause: 'the server accepts no TLS version this client offers',
    fix: 'enable TLS 1.2 or 1.3 on the server'
  },
  ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE: {
    cause: 'the server refused the handshake: no common cipher, or an SNI name it does not serve',
    fix: 'connect with the host name the server is configured for; check its ciphers'
  },
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: {
    cause: 'the server requires a client certificate (mutual TLS), which the doctor does not send',
    fix: 'test from a client configured with its certificate'
  },
  other: {
    cause: 'the TLS handshake failed',
    fix: 'check the server\'s TLS settings; `openssl s_client -connect host:port -servername host` shows the handshake'
  }
}
