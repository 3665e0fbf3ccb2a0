import type { Acquired, LeaseInfo } from 'cachelock';
import { script } from './script.js';

/**
 * Shared leases (permits, readers and writers) under one weighted rule. KEYS: holders, data,
 * line, places, wake (see `SharedKeys` in keys.ts; the holders' name is also the channel). The
 * holders' sorted set, scored by expiry on the server's clock, is the truth about who holds;
 * `data` keeps each holder's `<seq>:<weight>:<fence>`, the weight held, the last sequence
 * number and the fence readers share. A lease's sequence number is the server's `TIME` in microseconds, or the last
 * one + 1 when the clock has not passed it, so sequence numbers and fences only rise, as in the
 * exclusive lock. Every name expires with the last lease or place it holds.
 */
const COMMON = `local holders, data, line, places, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
-- The last ARGV: how long the fence readers share outlives the last lease (0: not at all).
local linger = tonumber(ARGV[#ARGV])
local function int(n) return string.format('%.0f', n) end
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local now_ms = math.floor(now_us / 1000)

-- The weight an entry '<seq>:<weight>:<fence>' counts for.
local function weight_of(entry) return tonumber(string.match(entry, '^%d+:(%d+):')) end

-- Drop the expired leases, and return the weight the live ones hold with the last sequence
-- number and the shared fence. Each holder has its entry in data, which outlives the holders'
-- set; when the set is gone (it expired with its last lease) nothing of theirs may stay.
local function prune()
  -- The earliest expiry first: most calls find it ahead, so nothing to drop and someone holds.
  local oldest = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
  local held = oldest[1] ~= nil
  if held and tonumber(oldest[2]) <= now_ms then
    local gone = redis.call('ZRANGEBYSCORE', holders, '-inf', now_ms)
    local freed = 0
    for _, owner in ipairs(gone) do
      local entry = redis.call('HGET', data, 'o' .. owner)
      if entry then
        freed = freed + weight_of(entry)
        redis.call('HDEL', data, 'o' .. owner)
      end
    end
    redis.call('ZREMRANGEBYSCORE', holders, '-inf', now_ms)
    -- Not when nothing was known of them (evicted data): that would restart the count at 0.
    if freed > 0 then redis.call('HINCRBY', data, 'total', int(-freed)) end
    held = redis.call('EXISTS', holders) == 1
  end
  local meta = redis.call('HMGET', data, 'total', 'last', 'share')
  local total = tonumber(meta[1]) or 0
  if total ~= 0 and not held then
    redis.call('DEL', data)
    if meta[2] then redis.call('HSET', data, 'last', meta[2]) end
    if meta[3] then redis.call('HSET', data, 'share', meta[3]) end
    total = 0
  elseif held and not meta[1] then
    -- The data is gone (evicted under maxmemory) while leases are live: their weights are
    -- unknown, so count them as everything until they end rather than admit too many.
    total = 2 ^ 52
  end
  return total, meta[2], meta[3]
end

-- A place in line gone, with the wake channel its store left.
local function leave(owner)
  redis.call('ZREM', line, owner)
  redis.call('HDEL', places, owner)
  redis.call('HDEL', wake, owner)
end

-- A place's '<deadlineMs>:<weight>:<limit>:<most claimMs>' as numbers (no claim bound from
-- an older version), or nil when it has lapsed or is missing.
local function place_of(entry)
  if not entry then return nil end
  local deadline, weight, limit, most = string.match(entry, '^(%d+):(%d+):(%d+):?(%d*)')
  deadline = tonumber(deadline)
  if not deadline or deadline <= now_ms then return nil end
  return deadline, tonumber(weight), tonumber(limit), tonumber(most)
end

-- The first live place in line (owner, weight, limit), dropping the lapsed places before it.
local function head()
  while true do
    local first = redis.call('ZRANGE', line, 0, 0)[1]
    if not first then return nil end
    local deadline, weight, limit = place_of(redis.call('HGET', places, first))
    if deadline then return first, weight, limit end
    leave(first)
  end
end

-- Wake the first in line when it would now be admitted, by name: nobody else would be.
local function wake_first(total)
  local first, weight, limit = head()
  if first and total + weight <= limit then
    redis.call('PUBLISH', holders, first)
    return true
  end
  return false
end

-- Holders and data live as long as the last lease or place; data a second longer, so that it
-- never vanishes before the holders it describes, or the linger when that is longer. Nothing
-- held, nobody in line and no linger: nothing left. line_ms: what is left of the line, when
-- known (0: nobody in line).
local function expire(line_ms)
  local last = redis.call('ZRANGE', holders, -1, -1, 'WITHSCORES')[2]
  local ms = last and tonumber(last) - now_ms or 0
  if ms > 0 then redis.call('PEXPIRE', holders, int(ms)) end
  ms = math.max(ms, line_ms or redis.call('PTTL', line))
  if ms > 0 or linger > 0 then
    redis.call('PEXPIRE', data, int(math.max(ms + 1000, linger)))
  else
    redis.call('DEL', data)
  end
end

local total, last, share = prune()
`;

/**
 * ARGV: owner, ttlMs, limit, weight, share ('1': take the last non-sharing fence), lineMs
 * ('0': not waiting), the store's wake channel ('': none), lingerMs. Returns the fence, or nil
 * when refused. The owner that already holds a lease gets it refreshed with the same fence.
 * Otherwise it is admitted when nobody is ahead of it in line and the weight held plus its own
 * is within its limit; refused, a waiter joins the line (leaving its store's wake channel, to
 * be told of a permit handed over there) or renews its place. An admitted waiter wakes the rest when the next in line would
 * fit too, so that readers behind a writer all come in.
 */
export const SHARED_ACQUIRE = script(
  'acquire-shared',
  `${COMMON}
local owner, ttl = ARGV[1], tonumber(ARGV[2])
local limit, weight, line_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
if redis.call('ZSCORE', holders, owner) then
  local entry = redis.call('HGET', data, 'o' .. owner)
  -- Its data was evicted: the fence is unknown, so the lease is left to run out, refused.
  if not entry then return false end
  redis.call('ZADD', holders, int(now_ms + ttl), owner)
  expire()
  return string.match(entry, ':(%d*)$')
end
-- The line matters only when there is room: with none, whoever is first is refused.
local room = total + weight <= limit
local first = room and head() or nil
if room and (first == nil or first == owner) then
  local seq = int(math.max(now_us, (tonumber(last) or 0) + 1))
  local fence = seq
  if ARGV[5] == '1' then fence = share or seq end
  redis.call('HSET', data, 'last', seq, 'share', fence, 'o' .. owner, seq .. ':' .. ARGV[4] .. ':' .. fence, 'total', int(total + weight))
  redis.call('ZADD', holders, int(now_ms + ttl), owner)
  if first == owner then
    leave(owner)
    wake_first(total + weight)
    expire()
  else
    expire(0)
  end
  return fence
end
if line_ms > 0 then
  redis.call('ZADD', line, 'NX', int(now_us), owner)
  -- A permit handed over on its place is claimed for at most its ttl, as a lock's hand-off is:
  -- a waiter that died in line holds it no longer than it would have held it.
  redis.call('HSET', places, owner, int(now_ms + line_ms) .. ':' .. ARGV[4] .. ':' .. ARGV[3] .. ':' .. int(math.min(line_ms, ttl)))
  local keep = math.max(redis.call('PTTL', line), line_ms)
  redis.call('PEXPIRE', line, int(keep))
  redis.call('PEXPIRE', places, int(keep))
  if ARGV[7] ~= '' then
    redis.call('HSET', wake, owner, ARGV[7])
    redis.call('PEXPIRE', wake, int(keep))
  end
  -- The holders did not change (dropping expired leases never needs them to live longer), and
  -- data already outlives them by a second: it need only outlive the line too.
  local data_ms = redis.call('PTTL', data)
  if linger > 0 or data_ms == -1 then
    expire()
  elseif data_ms >= 0 and data_ms < keep + 1000 then
    redis.call('PEXPIRE', data, int(keep + 1000))
  end
  -- Refused in line: when, so that a hand-over older than this refusal is known to be void.
  return '-' .. int(now_us)
end
expire()
return false
`,
);

/**
 * ARGV: owner, keepMs, handOver ('1': permits, handed over), lingerMs. Leaves the line; ends
 * the owner's lease (or shortens it to keepMs) and returns 1 if it held one, else 0. Wakes the
 * first in line when it would now fit; with handOver, admits it here instead (and the next
 * while they fit), each for a claim of what was left of its place, at most its ttl, and tells each
 * `<fence>:<claimMs>:<owner>`, so that a permit goes to its waiter in this one step.
 */
export const SHARED_RELEASE = script(
  'release-shared',
  `${COMMON}
-- Admit the first places in line while they fit, reading them a few at a time. Returns
-- whether any was admitted (each admission writes the total) and whether the line is now empty.
local function hand_over(total)
  local admitted = false
  while true do
    local batch = redis.call('ZRANGE', line, 0, 3)
    if #batch == 0 then return admitted, true end
    local entries = redis.call('HMGET', places, unpack(batch))
    local done, full = {}, false
    for i, first in ipairs(batch) do
      local deadline, weight, limit, most = place_of(entries[i])
      if deadline then
        if total + weight > limit then
          full = true
          break
        end
        local claim = deadline - now_ms
        if most and most < claim then claim = most end
        local seq = int(math.max(now_us, (tonumber(last) or 0) + 1))
        last = seq
        total = total + weight
        admitted = true
        redis.call('HSET', data, 'last', seq, 'share', seq, 'o' .. first, seq .. ':' .. weight .. ':' .. seq, 'total', int(total))
        redis.call('ZADD', holders, int(now_ms + claim), first)
        local channel = redis.call('HGET', wake, first)
        local handoff = seq .. ':' .. int(claim) .. ':' .. first
        if channel then
          -- To the waiter's store alone, naming the holders' channel.
          redis.call('PUBLISH', channel, #holders .. ':' .. holders .. handoff)
        else
          redis.call('PUBLISH', holders, handoff)
        end
      end
      -- Admitted or lapsed: its place is gone.
      done[#done + 1] = first
    end
    if #done > 0 then
      redis.call('ZREM', line, unpack(done))
      redis.call('HDEL', places, unpack(done))
      redis.call('HDEL', wake, unpack(done))
    end
    if full then return admitted, false end
    if #batch < 4 then return admitted, true end
  end
end
local owner = ARGV[1]
local holds = redis.call('ZSCORE', holders, owner)
local left, freed = false, 0
if not holds then
  -- Only a waiter can be in line: a holder left it when it was admitted.
  left = redis.call('ZREM', line, owner) == 1
  if left then
    redis.call('HDEL', places, owner)
    redis.call('HDEL', wake, owner)
  end
elseif ARGV[2] ~= '0' then
  redis.call('ZADD', holders, 'XX', int(now_ms + tonumber(ARGV[2])), owner)
else
  local entry = redis.call('HGET', data, 'o' .. owner)
  redis.call('ZREM', holders, owner)
  if entry then
    freed = weight_of(entry)
    redis.call('HDEL', data, 'o' .. owner)
    total = total - freed
  end
end
local line_left = nil
if (holds and ARGV[2] == '0') or left then
  if ARGV[3] == '1' then
    local admitted, empty = hand_over(total)
    -- An admission wrote the total, less the freed weight; without one, it is taken off here.
    if admitted then freed = 0 end
    if empty then line_left = 0 end
  else
    wake_first(total)
  end
end
if freed > 0 then redis.call('HINCRBY', data, 'total', int(-freed)) end
expire(line_left)
return holds and 1 or 0
`,
);

/** ARGV: owner, ttlMs, lingerMs. 1 and the lease set to ttlMs from now if the owner still holds one. */
export const SHARED_EXTEND = script(
  'extend-shared',
  `${COMMON}
-- Too late (the lease ran out): the prune above may have just reset data, which must expire.
if not redis.call('ZSCORE', holders, ARGV[1]) then
  expire()
  return 0
end
redis.call('ZADD', holders, 'XX', int(now_ms + tonumber(ARGV[2])), ARGV[1])
expire()
return 1
`,
);

/**
 * The live leases, each `{ owner, ttlMs, seq, fence }`, without changing anything (no prune:
 * an inspection is read-only).
 */
export const SHARED_INSPECT = script(
  'inspect-shared',
  `local holders, data = KEYS[1], KEYS[2]
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', holders, '(' .. string.format('%.0f', now_ms), '+inf', 'WITHSCORES')
local leases = {}
for i = 1, #live, 2 do
  local entry = redis.call('HGET', data, 'o' .. live[i])
  if entry then
    local seq, fence = string.match(entry, '^(%d+):%d+:(%d*)$')
    leases[#leases + 1] = { live[i], string.format('%.0f', tonumber(live[i + 1]) - now_ms), seq, fence }
  end
end
return leases
`,
);

/**
 * The acquire script's reply: the fence when admitted, `null` when refused. A waiter's refusal
 * is `-<server time in us>`, given to `refused`.
 */
export function acquiredShared(reply: unknown, refused?: (at: bigint) => void): Acquired | null {
  if (reply === null || reply === undefined) return null;
  const text = String(reply);
  if (text.startsWith('-')) {
    refused?.(BigInt(text.slice(1)));
    return null;
  }
  return { fence: BigInt(text) };
}

/** The inspect script's reply, oldest lease first. */
export function sharedLeases(reply: unknown): LeaseInfo[] {
  if (!Array.isArray(reply)) return [];
  return (reply as string[][])
    .map(([owner, ttl, seq, fence]) => ({
      seq: BigInt(String(seq)),
      lease: { owner: String(owner), ttlMs: Number(ttl), fence: BigInt(String(fence)) },
    }))
    .sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0))
    .map(({ lease }) => lease);
}
