import { script } from './script.js';

/**
 * `release_one(lease, owner, keepMs)`: one key's owner-checked release, as described for
 * RELEASE below, shared with the release of several keys. Returns 0, 1 or the hand-off.
 */
export const RELEASE_ONE = `local function release_one(lease, owner, keep)
  local value = redis.pcall('GET', lease)
  -- Only a value in cachelock's own format names an owner, as in acquire and extend.
  local head = type(value) == 'string' and string.match(value, '^2/%d+%*?:')
  if not head or string.sub(value, #head + 1) ~= owner then
    if redis.call('ZREM', lease .. ':v2:line', owner) == 1 then
      redis.call('HDEL', lease .. ':v2:waiters', owner)
      redis.call('HDEL', lease .. ':v2:wake', owner)
    end
    return 0
  end
  if keep ~= '0' then
    redis.call('PEXPIRE', lease, keep)
    return 1
  end
  if string.byte(head, -2) ~= 42 then -- not marked '*'
    redis.call('DEL', lease)
    return 1
  end
  local last = tonumber(string.match(value, '^2/(%d+)')) or 0
  local line, waiters, wake = lease .. ':v2:line', lease .. ':v2:waiters', lease .. ':v2:wake'
  local now = redis.call('TIME')
  local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local now_ms = math.floor(now_us / 1000)
  while true do
    local first = redis.call('ZRANGE', line, 0, 0)[1]
    if not first then break end
    redis.call('ZREM', line, first)
    local entry = redis.call('HGET', waiters, first)
    redis.call('HDEL', waiters, first)
    local channel = redis.call('HGET', wake, first)
    if channel then redis.call('HDEL', wake, first) end
    if entry then
      local sep = string.find(entry, ':', 1, true)
      if tonumber(string.sub(entry, 1, sep - 1)) > now_ms then
        -- Above the last fence even if the clock has not passed it (it stepped back).
        local fence = string.format('%.0f', math.max(now_us, last + 1))
        local claim_ms = string.sub(entry, sep + 1)
        local mark = redis.call('EXISTS', line) == 1 and '*' or ''
        redis.call('SET', lease, '2/' .. fence .. mark .. ':' .. first, 'PX', claim_ms)
        local handoff = fence .. ':' .. claim_ms .. ':' .. first
        if channel then
          -- To the waiter's store alone, naming the key's channel.
          redis.call('PUBLISH', channel, #lease .. ':' .. lease .. handoff)
        else
          redis.call('PUBLISH', lease, handoff)
        end
        return handoff
      end
    end
  end
  redis.call('DEL', lease)
  redis.call('PUBLISH', lease, '')
  return 1
end
`;

/**
 * KEYS: lease (the line and waiters are named after it). ARGV: owner, keepMs. Returns 0 if
 * owner did not hold it, else 1, or the hand-off it made. The channel is named like the lease
 * key (channels are not keys, so Cluster routing is unaffected).
 *
 * With keepMs > 0 (holdAtLeast) the lease is only shortened. An unmarked lease (nobody joined
 * the line while it was held) is just deleted: two calls. A marked one (`2/<fence>*:<owner>`)
 * goes to the first waiter in line whose place has not lapsed, in this same step: it gets a
 * higher fence and a claim lease (at most its lineMs, so a waiter that died in line holds the
 * key up only that long; it holds on the message, see store.ts), and the channel says who holds it
 * now: `<fence>:<claimMs>:<owner>`. The reply says the same, so that a waiter in the releasing
 * process learns it without waiting for the message. With nobody live in line the key is
 * freed and the channel says so (an empty message). A non-holder's release only leaves the
 * line. The owner '' is the unknown owner of a value cachelock did not write: only a forced
 * release names it, and it deletes that value and nothing else.
 */
export const RELEASE = script(
  'release',
  `${RELEASE_ONE}
local lease = KEYS[1]
if ARGV[1] == '' then
  local value = redis.pcall('GET', lease)
  if value and (type(value) ~= 'string' or not (string.find(value, '^2/%d+%*?:.')
      or string.find(value, '^%d+%*?:.'))) then
    redis.call('DEL', lease)
    return 1
  end
  return 0
end
return release_one(lease, ARGV[1], ARGV[2])
`,
);

/** The release and extend scripts' reply: whether the owner still held the lease. */
export const isOne = (reply: unknown): boolean => Number(reply) === 1;
