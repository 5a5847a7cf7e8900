import { test, type Test } from 'tap'
import type WebSocket from 'ws'
import { startRedis } from '../helpers/redis.js'
import { mint, now, secretBytes } from '../helpers/tokens.js'
import { closeWithin, connectAs, describeOutcome, echoWithin, openAs, startFleet, testPrefix, type FleetInstance } from './fleet.js'
import { nginxPath, startNginx } from './nginx.js'
import { requireBinary } from './system.js'

// Three real instances of the built package behind nginx, round robin, as a deployment runs
// them: clients never choose an instance, and the per-user limit and revocations still hold,
// because the instances count and talk through Redis.

async function tokenFor (sub: string, iat = now()): Promise<string> {
  return await mint(secretBytes, {}, { sub, iat })
}

/** The upstream of the three instances and a WebSocket location that balances over it. */
function roundRobin (fleet: FleetInstance[]): { http: string, server: string } {
  return {
    http: `upstream fleet {\n    ${fleet.map((instance) => `server 127.0.0.1:${instance.port};`).join('\n    ')}\n  }`,
    server: `location / {
      proxy_pass http://fleet;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 60s;
    }`
  }
}

/** How many of `sub`'s sessions each instance holds. */
async function spread (fleet: FleetInstance[], sub: string): Promise<number[]> {
  return await Promise.all(fleet.map(async (instance) => (await instance.sessions(sub)).length))
}

/** Refusals with `code` so far, per instance. */
async function rejectionsOf (fleet: FleetInstance[], code: string): Promise<number[]> {
  return await Promise.all(fleet.map(async (instance) => (await instance.stats()).rejected[code] ?? 0))
}

/**
 * Status and code of a refusal that came through nginx (nginx answers the client with its own
 * Connection header, so only the guard's status and body are compared).
 */
async function refusalVia (url: string, token: string): Promise<[number, string] | string> {
  const outcome = await connectAs(url, token)
  if (outcome.kind !== 'refused') return describeOutcome(outcome)
  try {
    return [outcome.status, (JSON.parse(outcome.body) as { code: string }).code]
  } catch {
    return `${outcome.status} ${outcome.body}`
  }
}

async function stillOpen (t: Test, socket: WebSocket, what: string): Promise<void> {
  t.equal(await echoWithin(socket, `ping ${what}`), `ping ${what}`, `${what}: open and echoing`)
}

test('a fleet of three behind nginx, round robin', async (t) => {
  if (!requireBinary(t, nginxPath, 'nginx')) return
  const redis = await startRedis(t)
  if (redis === undefined) return
  const fleet = await startFleet(t, 3, { redisUrl: redis.url, prefix: testPrefix('nginx'), leaseTtl: 3000, guard: { maxConnectionsPerUser: 2 } })
  const nginx = await startNginx(t, roundRobin(fleet))
  if (nginx === undefined) return
  const [a] = fleet as [FleetInstance]

  t.test('the per-user limit holds through nginx, whichever instance the third connection lands on', async (t) => {
    const alice = await tokenFor('lb-alice')
    const accepted = [await openAs(t, nginx.url('/ws'), alice, 'alice #1 via nginx'), await openAs(t, nginx.url('/ws'), alice, 'alice #2 via nginx')]
    const served = await spread(fleet, 'lb-alice')
    t.comment(`alice's sessions per instance (A, B, C): ${served.join(', ')}`)
    t.equal(served.filter((n) => n === 1).length, 2, 'nginx spread them over two instances, one each')

    // Round robin: three more attempts land once on each instance.
    const before = await rejectionsOf(fleet, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')
    for (let attempt = 1; attempt <= 3; attempt++) {
      t.same(await refusalVia(nginx.url('/ws'), alice), [429, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS'], `attempt #${attempt + 2} via nginx: 429`)
    }
    const refusedBy = (await rejectionsOf(fleet, 'FST_WS_GUARD_TOO_MANY_USER_CONNECTIONS')).map((n, i) => n - before[i]!)
    t.comment(`refusals per instance (A, B, C): ${refusedBy.join(', ')}`)
    t.same(refusedBy, [1, 1, 1], 'each instance refused once: the two holding alice\'s connections and the one holding none')
    t.equal(await a.count('lb-alice'), 2, 'still two slots taken fleet-wide')
    for (const [i, socket] of accepted.entries()) await stillOpen(t, socket, `alice #${i + 1}`)
  })

  t.test('a revoke through one instance closes the user\'s sockets that came through nginx', async (t) => {
    const dave = await tokenFor('lb-dave', now(-10))
    const bob = await tokenFor('lb-bob', now(-10))
    const daves = [await openAs(t, nginx.url('/ws'), dave, 'dave #1 via nginx'), await openAs(t, nginx.url('/ws'), dave, 'dave #2 via nginx')]
    const bobSocket = await openAs(t, nginx.url('/ws'), bob, 'bob via nginx')
    const served = await spread(fleet, 'lb-dave')
    t.comment(`dave's sessions per instance (A, B, C): ${served.join(', ')}`)
    t.same(served.slice().sort(), [0, 1, 1], 'one connection each on two instances')
    // Revoked through an instance that holds none of them, when there is one.
    const revoker = fleet[served.indexOf(0)] ?? a

    const closes = daves.map(async (socket) => await closeWithin(socket, 5000))
    const revokeAt = Date.now()
    const revocation = await revoker.revoke({ sub: 'lb-dave' })
    t.equal(revocation.closed, served[fleet.indexOf(revoker)], `${revoker.name} closed what it held itself`)
    const seen = await Promise.all(closes)
    t.same(seen.map((close) => close && [close.code, close.reason]), [[4401, 'token revoked'], [4401, 'token revoked']], 'both closed with 4401 token revoked, through nginx')
    const fanOut = Math.max(...seen.map((close) => (close?.at ?? Infinity) - revokeAt))
    t.comment(`revoke via ${revoker.name}: last close seen through nginx ${fanOut} ms after the call`)
    t.ok(fanOut <= 1000, `within one second (${fanOut} ms)`)
    await stillOpen(t, bobSocket, 'bob')

    const before = await rejectionsOf(fleet, 'FST_WS_GUARD_TOKEN_REVOKED')
    for (let attempt = 1; attempt <= 3; attempt++) {
      t.same(await refusalVia(nginx.url('/ws'), dave), [401, 'FST_WS_GUARD_TOKEN_REVOKED'], `revoked token, attempt #${attempt} via nginx: 401`)
    }
    t.same((await rejectionsOf(fleet, 'FST_WS_GUARD_TOKEN_REVOKED')).map((n, i) => n - before[i]!), [1, 1, 1], 'refused by each instance in turn, the one that never held dave included')
  })
})
