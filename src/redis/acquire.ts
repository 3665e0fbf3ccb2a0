import type { Acquired } from 'cachelock';
import { script } from './script.js';

/**
 * KEYS: lease (the line and waiters are named after it and share its hash slot). ARGV: owner,
 * ttlMs, lineMs ('0': not waiting), the store's wake channel ('' or absent: none). Returns the fence, or nil when the key is held: by another
 * owner, or by a value cachelock did not write (never touched).
 *
 * The lease value is `2/<fence>:<owner>` (see keys.ts for the layout). A fence is the
 * server's time in microseconds: a free key has no state, and its last fence was issued at
 * least a round trip before its release (see release.ts for hand-offs). The free key's fast
 * path is three calls. The owner already holding the key (a hand-off granted it, or a retry
 * after a lost reply) gets its lease refreshed and the same fence. A waiter that finds the key
 * held joins the line (or keeps its place and pushes its deadline), and marks the lease
 * `2/<fence>*:<owner>` so that its release knows to hand the key on.
 */
export const ACQUIRE = script(
  'acquire',
  `local lease = KEYS[1]
local now = redis.call('TIME')
local fence = now[1] .. string.sub('00000' .. now[2], -6)
if redis.call('SET', lease, '2/' .. fence .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2]) then
  local line = lease .. ':v2:line'
  if ARGV[3] ~= '0' and redis.call('ZREM', line, ARGV[1]) == 1 then
    redis.call('HDEL', lease .. ':v2:waiters', ARGV[1])
    redis.call('HDEL', lease .. ':v2:wake', ARGV[1])
  end
  -- Free with others still in line (a lease or claim ran out): marked, so that the release
  -- hands the key on rather than leaving them to find it by polling.
  if redis.call('EXISTS', line) == 1 then
    redis.call('SET', lease, '2/' .. fence .. '*:' .. ARGV[1], 'KEEPTTL')
  end
  return fence
end
local value = redis.pcall('GET', lease)
-- Another type under the name: a value cachelock did not write.
if type(value) ~= 'string' then return false end
local last, mark, owner = string.match(value, '^2/(%d+)(%*?):(.+)$')
if owner == ARGV[1] then
  redis.call('PEXPIRE', lease, ARGV[2])
  return last
end
-- The first release's '<fence>:<owner>', held by one of its processes, or a value cachelock
-- did not write: left as it is, with no line (polling finds the key once it is free).
if not owner then return false end
if ARGV[3] ~= '0' then
  local line_ms = tonumber(ARGV[3])
  local line, waiters = lease .. ':v2:line', lease .. ':v2:waiters'
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local claim_ms = math.min(line_ms, tonumber(ARGV[2]))
  redis.call('ZADD', line, 'NX', fence, ARGV[1])
  redis.call('HSET', waiters, ARGV[1], string.format('%d:%d', now_ms + line_ms, claim_ms))
  -- The line outlives every place in it, renewed a second ahead so that most joins need not.
  local keep = redis.call('PTTL', line)
  if keep < line_ms then
    keep = line_ms + 1000
    redis.call('PEXPIRE', line, keep)
    redis.call('PEXPIRE', waiters, keep)
  end
  -- Where the hand-off reaches this waiter's store alone (older stores leave none).
  if ARGV[4] and ARGV[4] ~= '' then
    local wake = lease .. ':v2:wake'
    redis.call('HSET', wake, ARGV[1], ARGV[4])
    redis.call('PEXPIRE', wake, keep)
  end
  if mark == '' then
    redis.call('SET', lease, '2/' .. last .. '*:' .. owner, 'KEEPTTL')
  end
  -- Refused in line: when, so that a hand-off older than this refusal is known to be void.
  return '-' .. fence
end
return false
`,
);

/**
 * The acquire script's reply: the fence when granted, `null` when the key is held. A waiter's
 * refusal is `-<server time in us>`, given to `refused`.
 */
export function acquired(reply: unknown, refused?: (at: bigint) => void): Acquired | null {
  if (reply === null || reply === undefined) return null;
  const text = String(reply);
  if (text.startsWith('-')) {
    refused?.(BigInt(text.slice(1)));
    return null;
  }
  return { fence: BigInt(text) };
}
