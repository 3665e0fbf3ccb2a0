import { script } from './script.js';

/**
 * KEYS: lease. ARGV: owner, ttlMs. Compare-and-expire: 1 if owner still held it. The owner
 * follows the first colon of every lease value cachelock writes (see keys.ts).
 */
export const EXTEND = script(
  'extend',
  `local value = redis.pcall('GET', KEYS[1])
if type(value) ~= 'string' or ARGV[1] == '' then return 0 end
local sep = string.find(value, ':', 1, true)
if sep and string.sub(value, sep + 1) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`,
);
