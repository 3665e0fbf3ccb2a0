import { script } from './script.js';

/**
 * KEYS: lease. ARGV: owner, ttlMs. Compare-and-expire: 1 if owner still held it. Only a value in
 * cachelock's own format (`2/<fence>[*]:<owner>`, see keys.ts) names an owner, as in acquire.
 */
export const EXTEND = script(
  'extend',
  `local value = redis.pcall('GET', KEYS[1])
if type(value) ~= 'string' or ARGV[1] == '' then return 0 end
if string.match(value, '^2/%d+%*?:(.+)$') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`,
);
