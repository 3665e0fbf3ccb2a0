import type { Handoff, LeaseInfo } from 'cachelock';
import { script } from './script.js';

/**
 * KEYS: lease. Returns `{ value, pttl }` in one step, or nil when free. A key of another type
 * reads as the empty value: held by someone cachelock cannot name.
 */
export const INSPECT = script(
  'inspect',
  `local value = redis.pcall('GET', KEYS[1])
if not value then return false end
if type(value) ~= 'string' then value = '' end
return { value, redis.call('PTTL', KEYS[1]) }
`,
);

/** The inspect script's reply as a `LeaseInfo`, or `null` when the key is free. */
export function leaseInfo(reply: unknown): LeaseInfo | null {
  if (!Array.isArray(reply)) return null;
  const pttl = Number(reply[1]);
  const lease = parseLease(String(reply[0]));
  // PTTL -1: a value cachelock did not write, with no expiry.
  return { ...lease, ttlMs: pttl === -1 ? Number.POSITIVE_INFINITY : Math.max(0, pttl) };
}

const CURRENT = /^2\/(\d+)\*?:/;
const FIRST_RELEASE = /^(\d+)\*?:/;

/**
 * A lease value as stored: `2/<fence>:<owner>` (`2/<fence>*:<owner>` while waiters are in
 * line), or the first release's `<fence>:<owner>`. Anything else was not written by
 * cachelock: the owner is unknown (`''`) and there is no fence.
 */
export function parseLease(value: string): { owner: string; fence?: bigint } {
  const match = CURRENT.exec(value) ?? FIRST_RELEASE.exec(value);
  if (match === null || match[0].length === value.length) return { owner: '' };
  return { owner: value.slice(match[0].length), fence: BigInt(match[1]!) };
}

/** The owner a hand-off `<fence>:<claimMs>:<owner>` names. */
export function handoffOwner(message: string): string {
  return message.slice(message.indexOf(':', message.indexOf(':') + 1) + 1);
}

/** A hand-off as published on release: `<fence>:<claimMs>:<owner>`. */
export function parseHandoff(message: string): Handoff {
  const first = message.indexOf(':');
  const second = message.indexOf(':', first + 1);
  return {
    fence: BigInt(message.slice(0, first)),
    ttlMs: Number(message.slice(first + 1, second)),
    owner: message.slice(second + 1),
  };
}
