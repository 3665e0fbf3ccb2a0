import { ownerOf, script } from './script.js';

/** KEYS: lease. ARGV: owner, ttlMs. Compare-and-expire: 1 if owner still held it. */
export const EXTEND = script(
  'extend',
  `local value = redis.call('GET', KEYS[1])
if value and ${ownerOf('value')} == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`,
);
