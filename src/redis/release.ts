import { script } from './script.js';

/**
 * KEYS: lease (the line and waiters are named after it). ARGV: owner, keepMs. Returns 0 if
 * owner did not hold it, else 1, or the hand-off it made. The channel is named like the lease
 * key (channels are not keys, so Cluster routing is unaffected).
 *
 * With keepMs > 0 (holdAtLeast) the lease is only shortened. An unmarked lease (nobody joined
 * the line while it was held) is just deleted: two calls. A marked one (`<fence>*:<owner>`)
 * goes to the first waiter in line whose place has not lapsed, in this same step: it gets a
 * new fence and its claim lease (at most its lineMs, so a waiter that died in line holds the
 * key up only that long), and the channel says who holds it now: `<fence>:<claimMs>:<owner>`.
 * The reply says the same, so that a waiter in the releasing process learns it without waiting
 * for the message.
 * With nobody live in line the key is deleted and the channel says it is free (an empty
 * message). A non-holder's release only leaves the line.
 */
export const RELEASE = script(
  'release',
  `local lease = KEYS[1]
local value = redis.call('GET', lease)
local sep = value and string.find(value, ':', 1, true)
if not value or string.sub(value, sep + 1) ~= ARGV[1] then
  if redis.call('ZREM', lease .. ':line', ARGV[1]) == 1 then
    redis.call('HDEL', lease .. ':waiters', ARGV[1])
  end
  return 0
end
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', lease, ARGV[2])
  return 1
end
if string.byte(value, sep - 1) ~= 42 then -- not marked '*'
  redis.call('DEL', lease)
  return 1
end
local line, waiters = lease .. ':line', lease .. ':waiters'
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
while true do
  local first = redis.call('ZRANGE', line, 0, 0)[1]
  if not first then break end
  redis.call('ZREM', line, first)
  local entry = redis.call('HGET', waiters, first)
  redis.call('HDEL', waiters, first)
  if entry then
    local sep = string.find(entry, ':', 1, true)
    if tonumber(string.sub(entry, 1, sep - 1)) > now_ms then
      local fence = redis.call('INCR', lease .. ':fence')
      local claim_ms = string.sub(entry, sep + 1)
      local mark = redis.call('EXISTS', line) == 1 and '*' or ''
      redis.call('SET', lease, fence .. mark .. ':' .. first, 'PX', claim_ms)
      local handoff = fence .. ':' .. claim_ms .. ':' .. first
      redis.call('PUBLISH', lease, handoff)
      return handoff
    end
  end
end
redis.call('DEL', lease)
redis.call('PUBLISH', lease, '')
return 1
`,
);

/** The release and extend scripts' reply: whether the owner still held the lease. */
export const isOne = (reply: unknown): boolean => Number(reply) === 1;
