import type { Acquired } from 'cachelock';
import type { RedisDriver } from './driver.js';
import { type LockKeys, scriptKeys } from './keys.js';
import { script } from './script.js';

/**
 * KEYS: lease, fence, line, waiters. ARGV: owner, ttlMs, lineMs (0: not waiting).
 * Returns the fence as text, or nil when another owner holds the lease.
 *
 * A free key gets a new fence in the same step. The owner already holding it (a hand-off
 * granted it, or a retry after a lost reply) gets its lease refreshed and the same fence. A
 * waiter that finds the key held joins the line (or keeps its place and pushes its deadline).
 */
const ACQUIRE = script(
  'acquire',
  `local value = redis.call('GET', KEYS[1])
local line_ms = tonumber(ARGV[3])
if value then
  local sep = string.find(value, ':', 1, true)
  if string.sub(value, sep + 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return string.sub(value, 1, sep - 1)
  end
  if line_ms > 0 then
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    local arrival = now[1] .. string.sub('00000' .. now[2], -6)
    local claim_ms = math.min(line_ms, tonumber(ARGV[2]))
    redis.call('ZADD', KEYS[3], 'NX', arrival, ARGV[1])
    redis.call('HSET', KEYS[4], ARGV[1], string.format('%d:%d', now_ms + line_ms, claim_ms))
    local keep = math.max(redis.call('PTTL', KEYS[3]), line_ms)
    redis.call('PEXPIRE', KEYS[3], keep)
    redis.call('PEXPIRE', KEYS[4], keep)
  end
  return false
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], fence .. ':' .. ARGV[1], 'PX', ARGV[2])
if line_ms > 0 and redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[4], ARGV[1])
end
return tostring(fence)
`,
);

export async function acquire(
  driver: RedisDriver,
  keys: LockKeys,
  owner: string,
  ttlMs: number,
  lineMs: number,
): Promise<Acquired | null> {
  const reply = await driver.run(ACQUIRE, scriptKeys(keys), [owner, String(ttlMs), String(lineMs)]);
  if (reply === null || reply === undefined) return null;
  return { fence: BigInt(String(reply)) };
}
