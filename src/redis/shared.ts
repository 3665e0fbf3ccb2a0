import type { Acquired, LeaseInfo } from 'cachelock';
import { script } from './script.js';

/**
 * Shared leases (permits, readers and writers) under one weighted rule. KEYS: holders, data,
 * line, places (see `SharedKeys` in keys.ts; the holders' name is also the channel). The
 * holders' sorted set, scored by expiry on the server's clock, is the truth about who holds;
 * `data` keeps each holder's `<seq>:<weight>:<fence>`, the weight held, the last sequence
 * number and the fence readers share. A lease's sequence number is the server's `TIME` in
 * microseconds, or the last one + 1 when the clock has not passed it, so sequence numbers and
 * fences only rise, as in the exclusive lock. Every name expires once the leases and places it
 * holds have ended: the set with its last lease, the line with its last place (or a second
 * after), data a second after both.
 */
const COMMON = `local holders, data, line, places = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- The last ARGV: how long the fence readers share outlives the last lease (0: not at all).
local linger = tonumber(ARGV[#ARGV])
-- Whole numbers as text: '%d' rather than '%.0f', which formats through glibc's slow path.
local function int(n) return string.format('%d', n) end
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local now_ms = math.floor(now_us / 1000)

-- The weight an entry '<seq>:<weight>:<fence>' counts for.
local function weight_of(entry) return tonumber(string.match(entry, '^%d+:(%d+):')) end

-- Drop the expired leases, and return the weight the live ones hold, the last sequence number,
-- the shared fence, the entry of \`mine\` (an owner), whether anything was dropped or reset
-- (then \`settle\` sets every expiry again) and how long the earliest lease has left (0: none),
-- which the holders' set and data outlast. Each holder has its entry in data, which outlives
-- the holders' set; when the set is gone (it expired with its last lease) nothing of theirs may
-- stay. So an entry in data means a lease in the set.
local function prune(mine)
  -- The earliest expiry first: most calls find it ahead, so nothing to drop and someone holds.
  local oldest = redis.call('ZRANGE', holders, '0', '0', 'WITHSCORES')
  local held = oldest[1] ~= nil
  local changed = false
  local left = held and tonumber(oldest[2]) - now_ms or 0
  if held and left <= 0 then
    left = 0
    changed = true
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
  local meta = redis.call('HMGET', data, 'total', 'last', 'share', 'o' .. mine)
  local total = tonumber(meta[1]) or 0
  if total ~= 0 and not held then
    redis.call('DEL', data)
    if meta[2] then redis.call('HSET', data, 'last', meta[2]) end
    if meta[3] then redis.call('HSET', data, 'share', meta[3]) end
    total = 0
    meta[4] = false
    changed = true
  elseif held and not meta[1] then
    -- The data is gone (evicted under maxmemory) while leases are live: their weights are
    -- unknown, so count them as everything until they end rather than admit too many.
    total = 2 ^ 52
  end
  return total, meta[2], meta[3], meta[4], changed, left
end

-- A place in line gone.
local function leave(owner)
  redis.call('ZREM', line, owner)
  redis.call('HDEL', places, owner)
end

-- A place's '<deadlineMs>:<weight>:<limit>:<most claimMs>[:<wake channel>]' as numbers and the
-- channel ('' when none; an older version's place has no claim bound either), or nil when it
-- has lapsed or is missing.
local function place_of(entry)
  if not entry then return nil end
  local deadline, weight, limit, most, channel = string.match(entry, '^(%d+):(%d+):(%d+):?(%d*):?(.*)$')
  deadline = tonumber(deadline)
  if not deadline or deadline <= now_ms then return nil end
  return deadline, tonumber(weight), tonumber(limit), tonumber(most), channel
end

-- The first live place in line (owner, weight, limit), dropping the lapsed places before it.
local function head()
  while true do
    local first = redis.call('ZRANGE', line, '0', '0')[1]
    if not first then return nil end
    local deadline, weight, limit = place_of(redis.call('HGET', places, first))
    if deadline then return first, weight, limit end
    leave(first)
  end
end

-- Wake the first in line when it would now be admitted, by name: nobody else would be.
-- Returns whether the line is empty.
local function wake_first(total)
  local first, weight, limit = head()
  if first and total + weight <= limit then
    redis.call('PUBLISH', holders, first)
  end
  return first == nil
end

-- Data lives a second longer than anything it describes lasts (\`ms\` from now), or the linger
-- when that is longer; it is never shortened here.
local function cover_data(ms)
  local need = math.max(ms + 1000, linger)
  local has = redis.call('PTTL', data)
  if has == -1 or (has >= 0 and has < need) then redis.call('PEXPIRE', data, int(need)) end
end

-- A lease that ends \`ms\` from now was written: the holders' set, and data, last that long
-- (and data the linger from now, where there is one).
local function cover(ms)
  if redis.call('PTTL', holders) < ms then
    redis.call('PEXPIRE', holders, int(ms))
    cover_data(ms)
  elseif linger > 0 then
    cover_data(ms)
  end
end

-- Every expiry set again from what is there, after leases were dropped or data reset: the
-- holders' set as long as its last lease, data a second longer than it and the line, or the
-- linger. Nothing held, nobody in line and no linger: nothing left.
local function settle()
  local last = redis.call('ZRANGE', holders, '-1', '-1', 'WITHSCORES')[2]
  local ms = last and tonumber(last) - now_ms or 0
  if ms > 0 then redis.call('PEXPIRE', holders, int(ms)) end
  ms = math.max(ms, redis.call('PTTL', line))
  if ms > 0 or linger > 0 then
    redis.call('PEXPIRE', data, int(math.max(ms + 1000, linger)))
  else
    redis.call('DEL', data)
  end
end

-- Nothing held and nobody in line: data goes, or stays for the linger.
local function empty()
  if linger > 0 then
    redis.call('PEXPIRE', data, int(linger))
  else
    redis.call('DEL', data)
  end
end
`;

/** How much longer than a place the line is kept, so that most waiters joining need not renew it. */
const LINE_SLACK_MS = 1_000;

/**
 * ARGV: owner, ttlMs, limit, weight, share ('1': take the last non-sharing fence), lineMs
 * ('0': not waiting), the store's wake channel ('': none), lingerMs. Returns the fence, or nil
 * when refused. The owner that already holds a lease gets it refreshed with the same fence.
 * Otherwise it is admitted when nobody is ahead of it in line and the weight held plus its own
 * is within its limit; refused, a waiter joins the line (leaving its store's wake channel on
 * its place, to be told there of a permit handed over) or renews its place. An admitted waiter
 * wakes the rest when the next in line would fit too, so that readers behind a writer all come in.
 */
export const SHARED_ACQUIRE = script(
  'acquire-shared',
  `${COMMON}
local owner, ttl = ARGV[1], tonumber(ARGV[2])
local limit, weight, line_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local total, last, share, mine, changed, earliest = prune(owner)
if mine and redis.call('ZSCORE', holders, owner) then
  redis.call('ZADD', holders, int(now_ms + ttl), owner)
  settle()
  return string.match(mine, ':(%d*)$')
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
  end
  if changed then settle() else cover(ttl) end
  return fence
end
if line_ms > 0 then
  redis.call('ZADD', line, 'NX', int(now_us), owner)
  -- A permit handed over on its place is claimed for at most its ttl, as a lock's hand-off is:
  -- a waiter that died in line holds it no longer than it would have held it.
  local place = int(now_ms + line_ms) .. ':' .. ARGV[4] .. ':' .. ARGV[3] .. ':' .. int(math.min(line_ms, ttl))
  if ARGV[7] ~= '' then place = place .. ':' .. ARGV[7] end
  redis.call('HSET', places, owner, place)
  -- The line outlives every place in it, renewed a while ahead so that most joins need not.
  if redis.call('PTTL', line) < line_ms then
    local keep = line_ms + ${LINE_SLACK_MS}
    redis.call('PEXPIRE', line, int(keep))
    redis.call('PEXPIRE', places, int(keep))
    -- Data already outlasts the holders' set, and so the earliest lease, by a second.
    if not changed and (earliest < keep or linger > 0) then cover_data(keep) end
  end
  if changed then settle() end
  -- Refused in line: when, so that a hand-over older than this refusal is known to be void.
  return '-' .. int(now_us)
end
if changed then settle() end
return false
`,
);

/**
 * ARGV: owner, keepMs, handOver ('1': permits, handed over), lingerMs. Leaves the line; ends
 * the owner's lease (or shortens it to keepMs) and returns 1 if it held one, else 0. Wakes the
 * first in line when it would now fit; with handOver, admits it here instead (and the next
 * while they fit), each for a claim of what was left of its place, at most its ttl, and tells
 * each `<fence>:<claimMs>:<owner>` (on its store's wake channel when its place names one), so
 * that a permit goes to its waiter in this one step.
 */
export const SHARED_RELEASE = script(
  'release-shared',
  `${COMMON}
local owner = ARGV[1]
local total, last, share, mine, changed, earliest = prune(owner)
-- Admit the first places in line while they fit, reading them a few at a time. Returns the
-- total now, the longest claim given (0: none; each admission writes the total) and whether
-- the line is now empty.
local function hand_over(total)
  local longest = 0
  while true do
    local batch = redis.call('ZRANGE', line, '0', '3')
    if #batch == 0 then return total, longest, true end
    local entries = redis.call('HMGET', places, unpack(batch))
    local done, full = {}, false
    for i, first in ipairs(batch) do
      local deadline, weight, limit, most, channel = place_of(entries[i])
      if deadline then
        if total + weight > limit then
          full = true
          break
        end
        local claim = deadline - now_ms
        if most and most < claim then claim = most end
        if claim > longest then longest = claim end
        local seq = int(math.max(now_us, (tonumber(last) or 0) + 1))
        last = seq
        total = total + weight
        redis.call('HSET', data, 'last', seq, 'share', seq, 'o' .. first, seq .. ':' .. weight .. ':' .. seq, 'total', int(total))
        redis.call('ZADD', holders, int(now_ms + claim), first)
        local handoff = seq .. ':' .. int(claim) .. ':' .. first
        if channel ~= '' then
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
    end
    if full then return total, longest, false end
    if #batch < 4 then return total, longest, true end
  end
end
local holds, left, freed = false, false, 0
if ARGV[2] ~= '0' then
  holds = redis.call('ZSCORE', holders, owner)
  if holds then redis.call('ZADD', holders, 'XX', int(now_ms + tonumber(ARGV[2])), owner) end
else
  holds = redis.call('ZREM', holders, owner) == 1
  if holds and mine then
    freed = weight_of(mine)
    redis.call('HDEL', data, 'o' .. owner)
    total = total - freed
  end
end
-- Only a waiter can be in line: a holder left it when it was admitted.
if not holds then
  left = redis.call('ZREM', line, owner) == 1
  if left then redis.call('HDEL', places, owner) end
end
local longest, line_empty = 0, false
if (holds and ARGV[2] == '0') or left then
  if ARGV[3] == '1' then
    total, longest, line_empty = hand_over(total)
    -- An admission wrote the total, less the freed weight; without one, it is taken off here.
    if longest > 0 then freed = 0 end
  else
    line_empty = wake_first(total)
  end
end
if freed > 0 then redis.call('HINCRBY', data, 'total', int(-freed)) end
-- A release only shortens what is held: the expiries stand, but for the claims just given
-- (data already outlives the line, and so the places they came from).
if changed then
  settle()
elseif longest > 0 then
  -- The set outlasts its earliest lease already (a release never shortens it).
  if longest > earliest and redis.call('PTTL', holders) < longest then
    redis.call('PEXPIRE', holders, int(longest))
  end
elseif total == 0 and line_empty then
  empty()
end
return holds and 1 or 0
`,
);

/** ARGV: owner, ttlMs, lingerMs. 1 and the lease set to ttlMs from now if the owner still holds one. */
export const SHARED_EXTEND = script(
  'extend-shared',
  `${COMMON}
local total, last, share, mine, changed = prune(ARGV[1])
-- Too late (the lease ran out): the prune above may have just reset data, which must expire.
if not redis.call('ZSCORE', holders, ARGV[1]) then
  if changed then settle() end
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', holders, 'XX', int(now_ms + ttl), ARGV[1])
if changed then settle() else cover(ttl) end
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
