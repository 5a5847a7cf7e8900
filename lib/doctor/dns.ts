import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { failed, skipped, stageResult } from './stage.js'
import { fill } from './template.js'
import { startClock, timedOut, within } from './time.js'
import type { StageResult } from './types.js'
import type { Target } from './url.js'

export interface Address {
  readonly address: string
  readonly family: number
}

/** Stage 2: resolve the host as a client would (getaddrinfo: /etc/hosts, then DNS), all addresses. */
export async function resolveHost (target: Target, timeout: number): Promise<{ result: StageResult, addresses?: readonly Address[] }> {
  const family = isIP(target.host)
  if (family !== 0) {
    return { result: skipped('dns', `${target.host} is an IP address: nothing to resolve`), addresses: [{ address: target.host, family }] }
  }
  const elapsed = startClock()
  const outcome = await within(lookup(target.host, { all: true, verbatim: true }).catch((err: NodeJS.ErrnoException) => err), timeout)
  if (outcome === timedOut || outcome instanceof Error) {
    const code = outcome === timedOut ? 'ETIMEOUT' : String(outcome.code)
    const explain = lookupErrors[code] ?? lookupErrors.other!
    const values = { host: target.host, timeout }
    return { result: stageResult('dns', elapsed(), `${target.host} did not resolve (${code})`, { findings: [failed(code, fill(explain.cause, values), fill(explain.fix, values))] }) }
  }
  const addresses = outcome.map(({ address, family }) => ({ address, family }))
  return {
    result: stageResult('dns', elapsed(), `${target.host} -> ${addresses.map((a) => a.address).join(', ')}`, { data: { addresses } }),
    addresses
  }
}

const checkName = 'check the name; `getent hosts {host}` shows what this machine resolves, `dig {host}` what DNS says'

const lookupErrors: Readonly<Record<string, { cause: string, fix: string }>> = {
  ENOTFOUND: {
    cause: '{host} does not exist in DNS: a typo, or a record never created or not yet propagated',
    fix: checkName
  },
  EAI_AGAIN: {
    cause: 'the resolver could not answer for now: no network, or the DNS server is unreachable',
    fix: `check the network and /etc/resolv.conf, then retry; ${checkName}`
  },
  ETIMEOUT: {
    cause: 'no answer from the resolver in {timeout} ms',
    fix: `check the DNS servers in /etc/resolv.conf, or raise --timeout; ${checkName}`
  },
  other: {
    cause: 'the lookup failed',
    fix: checkName
  }
}
