import { connect, isIPv6, type Socket } from 'node:net'
import type { Address } from './dns.js'
import { failed, stageResult } from './stage.js'
import { fill } from './template.js'
import { startClock } from './time.js'
import type { StageResult } from './types.js'

/** `127.0.0.1:80`, `[::1]:80`. */
export function hostPort (address: string, port: number): string {
  return isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`
}

/** Stage 3: a TCP connection to each address in turn, until one answers. */
export async function connectTcp (addresses: readonly Address[], port: number, timeout: number): Promise<{ result: StageResult, socket?: Socket, address?: string }> {
  const elapsed = startClock()
  const failures: Array<{ address: string, code: string }> = []
  for (const { address } of addresses) {
    const outcome = await attempt(address, port, timeout)
    if (typeof outcome !== 'string') {
      const details = failures.map((f) => `${hostPort(f.address, port)}: ${f.code} (tried first)`)
      return {
        result: stageResult('tcp', elapsed(), `connected to ${hostPort(address, port)}`, { details, data: { address, port, failures } }),
        socket: outcome,
        address
      }
    }
    failures.push({ address, code: outcome })
  }
  const first = failures[0]!
  const explain = connectErrors[first.code] ?? connectErrors.other!
  const where = hostPort(first.address, port)
  const values = { where, port, timeout }
  return {
    result: stageResult('tcp', elapsed(), `could not connect to ${where} (${first.code})`, {
      details: failures.slice(1).map((f) => `${hostPort(f.address, port)}: ${f.code}`),
      findings: [failed(first.code, fill(explain.cause, values), fill(explain.fix, values))],
      data: { port, failures }
    })
  }
}

/** The connected socket, or the error code; a socket that errors later is reported by the next stage. */
async function attempt (address: string, port: number, timeout: number): Promise<Socket | string> {
  return await new Promise((resolve) => {
    const socket = connect({ host: address, port, noDelay: true })
    const timer = setTimeout(() => {
      socket.destroy()
      resolve('ETIMEDOUT')
    }, timeout)
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      resolve(String(err.code))
    })
    socket.once('connect', () => {
      clearTimeout(timer)
      resolve(socket)
    })
  })
}

const connectErrors: Readonly<Record<string, { cause: string, fix: string }>> = {
  ECONNREFUSED: {
    cause: 'nothing is listening on {where}: the server is down, the port is wrong, or it listens on another address (127.0.0.1 vs ::1 vs 0.0.0.0)',
    fix: 'start the server or fix the port; on the server, `ss -ltnp | grep :{port}` shows what listens where'
  },
  ETIMEDOUT: {
    cause: 'no answer from {where} in {timeout} ms: a firewall or security group drops the packets, or the address is wrong',
    fix: 'allow TCP port {port} in the firewall or security group, check the address; `nc -vz host {port}` tests the path'
  },
  ECONNRESET: {
    cause: '{where} reset the connection: a firewall rejecting it, or a server refusing connections',
    fix: 'check the firewall and the server logs'
  },
  EHOSTUNREACH: {
    cause: 'no route to {where}: the host is down or a firewall answers for it',
    fix: 'check the address, the VPN and the routing'
  },
  ENETUNREACH: {
    cause: 'no route to the network of {where} (an IPv6 address without IPv6 connectivity?)',
    fix: 'check the address and the network; try the IPv4 address'
  },
  other: {
    cause: 'connecting to {where} failed',
    fix: 'check the address and port'
  }
}
