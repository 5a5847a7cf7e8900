import { createHash } from 'node:crypto'

/*
 * The Lua run by RedisStore. Each script reads the clock with Redis TIME, so every instance
 * of a fleet judges expiry by the same clock, whatever its own says. A lease set holds one
 * member per lease, scored with its expiry in ms; a revocation is a string key expiring at its
 * `until`, listed in an index scored the same way. Each script touches one hash slot.
 */

/** A script and its SHA1, for EVALSHA. */
export interface RedisScript {
  readonly source: string
  readonly sha: string
}

function script (body: string): RedisScript {
  const source = `local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
${body}`
  return Object.freeze({ source, sha: createHash('sha1').update(source).digest('hex') })
}

/**
 * KEYS[1] lease set; ARGV[1] lease id, ARGV[2] limit or 'inf', ARGV[3] lease ttl in ms.
 * Returns 1 when the lease holds a slot (it already did, or took one), 0 at the limit.
 */
export const acquireLease = script(`
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
-- Asked twice for the same lease: it keeps its slot, renewed.
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not held and ARGV[2] ~= 'inf' and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
-- The newest lease expires last: the set goes with it if every instance holding it dies.
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

/** KEYS[1] lease set; ARGV[1] lease ttl in ms, ARGV[2..] lease ids, re-added when missing. */
export const renewLeases = script(`
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
`)

/** KEYS[1] lease set. Returns how many leases have not expired. */
export const countLeases = script(`
return redis.call('ZCOUNT', KEYS[1], '(' .. now_ms(), '+inf')
`)

/**
 * KEYS[1] revocation index, KEYS[2] the revocation's key; ARGV[1] the revocation as JSON,
 * ARGV[2] its end in epoch ms. A revocation already over is not stored.
 */
export const storeRevocation = script(`
local now = now_ms()
local ends = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ends > now then
  redis.call('SET', KEYS[2], ARGV[1], 'PXAT', ARGV[2])
  redis.call('ZADD', KEYS[1], ends, KEYS[2])
end
-- The index lives as long as its longest revocation, not forever.
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return 1
`)

/**
 * KEYS[1] revocation index. Returns the JSON of every revocation still in force. The keys
 * it reads come from the index: they share its hash tag, hence its slot.
 */
export const listRevocations = script(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
local values = {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local value = redis.call('GET', key)
  if value then values[#values + 1] = value end
end
return values
`)
