import type { RedisDriver } from './driver.js';
import { type LockKeys, scriptKeys } from './keys.js';
import { ownerOf, script } from './script.js';

/**
 * KEYS: lease, fence, line, waiters. ARGV: owner, keepMs. Returns 1 if owner held it. The
 * channel is named like the lease key (channels are not keys, so Cluster routing is unaffected).
 *
 * With keepMs > 0 (holdAtLeast) the lease is only shortened. Otherwise the key goes to the
 * first waiter in line whose place has not lapsed, in this same step: it gets a new fence and
 * its claim lease (at most its lineMs, so a waiter that died in line holds the key up only that
 * long), and the channel says who holds it now: `<fence>:<claimMs>:<owner>`. With nobody in line the key is deleted and the
 * channel says it is free (an empty message). A non-holder's release only leaves the line.
 */
const RELEASE = script(
  'release',
  `local value = redis.call('GET', KEYS[1])
if not value or ${ownerOf('value')} ~= ARGV[1] then
  if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
    redis.call('HDEL', KEYS[4], ARGV[1])
  end
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  while true do
    local first = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not first then break end
    redis.call('ZREM', KEYS[3], first)
    local entry = redis.call('HGET', KEYS[4], first)
    redis.call('HDEL', KEYS[4], first)
    if entry then
      local sep = string.find(entry, ':', 1, true)
      if tonumber(string.sub(entry, 1, sep - 1)) > now_ms then
        local fence = redis.call('INCR', KEYS[2])
        local claim_ms = string.sub(entry, sep + 1)
        redis.call('SET', KEYS[1], fence .. ':' .. first, 'PX', claim_ms)
        redis.call('PUBLISH', KEYS[1], fence .. ':' .. claim_ms .. ':' .. first)
        return 1
      end
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[1], '')
return 1
`,
);

export function release(
  driver: RedisDriver,
  keys: LockKeys,
  owner: string,
  keepMs: number,
): Promise<boolean> {
  return driver.run(RELEASE, scriptKeys(keys), [owner, String(keepMs)]).then(isOne);
}

const isOne = (reply: unknown) => Number(reply) === 1;
