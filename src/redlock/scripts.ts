import { type Script, script } from 'cachelock/redis';

// Redlock keeps one plain lease per server: the owner as the value, no fence (independent
// servers cannot agree on one), and the lease as the key's expiry by that server's clock.

/** KEYS: lease. ARGV: owner, ttlMs. 1 if taken or already ours (lease refreshed), else 0. */
export const ACQUIRE: Script = script(
  'redlock-acquire',
  `local value = redis.call('GET', KEYS[1])
if value == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if value then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`,
);

/** KEYS: lease. ARGV: owner, ttlMs. Compare-and-expire. */
export const EXTEND: Script = script(
  'redlock-extend',
  `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`,
);

/** KEYS: lease. ARGV: owner, keepMs. Compare-and-delete, or shorten to keepMs. */
export const RELEASE: Script = script(
  'redlock-release',
  `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
`,
);

/** KEYS: lease. Returns { owner, pttl } or nil. */
export const INSPECT: Script = script(
  'redlock-inspect',
  `local value = redis.call('GET', KEYS[1])
if not value then return false end
return { value, redis.call('PTTL', KEYS[1]) }
`,
);
