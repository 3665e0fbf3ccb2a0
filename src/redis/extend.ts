import type { RedisDriver } from './driver.js';
import { ownerOf, script } from './script.js';

/** KEYS: lease. ARGV: owner, ttlMs. Compare-and-expire: 1 if owner still held it. */
const EXTEND = script(
  'extend',
  `local value = redis.call('GET', KEYS[1])
if value and ${ownerOf('value')} == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`,
);

export function extend(
  driver: RedisDriver,
  lease: string,
  owner: string,
  ttlMs: number,
): Promise<boolean> {
  return driver.run(EXTEND, [lease], [owner, String(ttlMs)]).then(isOne);
}

const isOne = (reply: unknown) => Number(reply) === 1;
