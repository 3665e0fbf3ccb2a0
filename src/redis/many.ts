import type { AcquiredKeys } from 'cachelock';
import { keySlot } from './keys.js';
import { RELEASE_ONE } from './release.js';
import { script } from './script.js';

/**
 * KEYS: the leases of several exclusive keys (the same names `acquire` takes one at a time),
 * all in one hash slot. ARGV: owner, ttlMs. All or none: when every key is free or already the
 * owner's, take the free ones with the server's `TIME` in microseconds as their fence and
 * refresh the owner's own (keeping their fence); otherwise change nothing and return nil. A key
 * held by another owner, by the first release's format or by a value cachelock did not write
 * refuses the whole set, and a lease of another owner that refused it is marked as waited for
 * (as a waiter in line marks it), so that its release is announced. Returns the fences in the
 * order of KEYS, or the one fence they all have.
 */
export const MANY_ACQUIRE = script(
  'acquire-keys',
  `local held = {}
for i, lease in ipairs(KEYS) do
  local value = redis.pcall('GET', lease)
  if value then
    if type(value) ~= 'string' then return false end
    local last, mark, owner = string.match(value, '^2/(%d+)(%*?):(.+)$')
    if owner ~= ARGV[1] then
      -- Refused: mark the holder's lease, so that its release announces itself to this waiter.
      if owner and mark == '' then
        redis.call('SET', lease, '2/' .. last .. '*:' .. owner, 'KEEPTTL')
      end
      return false
    end
    held[i] = last
  end
end
local now = redis.call('TIME')
local fence = now[1] .. string.sub('00000' .. now[2], -6)
local fences, same = {}, true
for i, lease in ipairs(KEYS) do
  if held[i] then
    redis.call('PEXPIRE', lease, ARGV[2])
    fences[i] = held[i]
    same = same and held[i] == fence
  else
    redis.call('SET', lease, '2/' .. fence .. ':' .. ARGV[1], 'PX', ARGV[2])
    fences[i] = fence
  end
end
-- Every key taken now (the usual case): their one fence, a shorter reply to send and read.
if same then return fence end
return fences
`,
);

/**
 * KEYS: leases. ARGV: owner, keepMs. Each key the owner holds is released as by one release
 * (handed to its first waiter in line where one joined); the owner leaves the others' lines.
 * Returns per key 0 (not the owner's), 1, or the hand-off made; 1 alone when every key was 1.
 */
export const MANY_RELEASE = script(
  'release-keys',
  `${RELEASE_ONE}
local replies, all = {}, true
for i, lease in ipairs(KEYS) do
  replies[i] = release_one(lease, ARGV[1], ARGV[2])
  all = all and replies[i] == 1
end
-- Each key simply released (the usual case): one 1 rather than one per key.
if all then return 1 end
return replies
`,
);

/** KEYS: leases. ARGV: owner, ttlMs. 1 and every lease extended if the owner held them all. */
export const MANY_EXTEND = script(
  'extend-keys',
  `for _, lease in ipairs(KEYS) do
  local value = redis.pcall('GET', lease)
  if type(value) ~= 'string' or string.match(value, '^2/%d+%*?:(.+)$') ~= ARGV[1] then
    return 0
  end
end
for _, lease in ipairs(KEYS) do redis.call('PEXPIRE', lease, ARGV[2]) end
return 1
`,
);

/** The acquire script's reply for `count` keys: a fence per key, or `null` when one was held. */
export function acquiredKeys(reply: unknown, count: number): AcquiredKeys | null {
  if (typeof reply === 'string') return { fences: new Array(count).fill(BigInt(reply)) };
  if (!Array.isArray(reply)) return null;
  return { fences: reply.map((fence) => BigInt(String(fence))) };
}

/**
 * A Cluster runs a script only on keys of one slot: refuse a set that spans slots before
 * sending it, naming each key as the user wrote it (`shown`), the name it is stored under
 * (which is what is hashed), its slot, and what to do about it.
 */
export function sameSlot(
  keys: readonly string[],
  leases: readonly string[],
  shown?: readonly string[],
): TypeError | null {
  const slots = leases.map(keySlot);
  if (slots.every((slot) => slot === slots[0])) return null;
  const named = keys
    .map((key, i) => {
      const given = shown?.[i];
      const stored = JSON.stringify(key);
      return given === undefined || given === key
        ? `${stored} (slot ${slots[i]})`
        : `${JSON.stringify(given)} (stored as ${stored}, slot ${slots[i]})`;
    })
    .join(', ');
  return new TypeError(
    `Redis Cluster: the keys of one lock must map to one hash slot, but they map to different slots: ${named}; ` +
      "give every key of the lock the same hash tag, e.g. '{acct}:1' and '{acct}:2'",
  );
}
