import type { Acquired } from 'cachelock';
import { script } from './script.js';

/**
 * KEYS: lease (the fence counter, line and waiters are named after it and share its hash
 * slot). ARGV: owner, ttlMs, lineMs ('0': not waiting). Returns the fence, or nil when another
 * owner holds the lease.
 *
 * The free key's fast path is two calls: the fence is counted first and kept only if SET NX
 * wins, so a refused attempt skips a number, and fences still only grow. The owner already
 * holding the key (a hand-off granted it, or a retry after a lost reply) gets its lease
 * refreshed and the same fence. A waiter that finds the key held joins the line (or keeps its
 * place and pushes its deadline), and marks the lease `<fence>*:<owner>` so that its release
 * knows to hand the key on.
 */
export const ACQUIRE = script(
  'acquire',
  `local lease = KEYS[1]
local fence = redis.call('INCR', lease .. ':fence')
if redis.call('SET', lease, fence .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[3] ~= '0' and redis.call('ZREM', lease .. ':line', ARGV[1]) == 1 then
    redis.call('HDEL', lease .. ':waiters', ARGV[1])
  end
  return fence
end
local value = redis.call('GET', lease)
local sep = string.find(value, ':', 1, true)
local held = string.sub(value, 1, sep - 1)
if string.sub(value, sep + 1) == ARGV[1] then
  redis.call('PEXPIRE', lease, ARGV[2])
  return tonumber((string.gsub(held, '%*', '')))
end
if ARGV[3] ~= '0' then
  local line_ms = tonumber(ARGV[3])
  local line, waiters = lease .. ':line', lease .. ':waiters'
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local arrival = now[1] .. string.sub('00000' .. now[2], -6)
  local claim_ms = math.min(line_ms, tonumber(ARGV[2]))
  redis.call('ZADD', line, 'NX', arrival, ARGV[1])
  redis.call('HSET', waiters, ARGV[1], string.format('%d:%d', now_ms + line_ms, claim_ms))
  local keep = math.max(redis.call('PTTL', line), line_ms)
  redis.call('PEXPIRE', line, keep)
  redis.call('PEXPIRE', waiters, keep)
  if string.sub(held, -1) ~= '*' then
    redis.call('SET', lease, held .. '*' .. string.sub(value, sep), 'KEEPTTL')
  end
end
return false
`,
);

/** The acquire script's reply: the fence when granted, `null` when another owner holds it. */
export function acquired(reply: unknown): Acquired | null {
  return reply === null || reply === undefined ? null : { fence: BigInt(String(reply)) };
}
