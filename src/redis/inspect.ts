import type { Handoff, LeaseInfo } from 'cachelock';
import { script } from './script.js';

/** KEYS: lease. Returns `{ value, pttl }` in one step, or nil when free. */
export const INSPECT = script(
  'inspect',
  `local value = redis.call('GET', KEYS[1])
if not value then return false end
return { value, redis.call('PTTL', KEYS[1]) }
`,
);

/** The inspect script's reply as a `LeaseInfo`, or `null` when the key is free. */
export function leaseInfo(reply: unknown): LeaseInfo | null {
  if (!Array.isArray(reply)) return null;
  return { ...parseLease(String(reply[0])), ttlMs: Math.max(0, Number(reply[1])) };
}

/** A lease value as stored: `<fence>:<owner>`, or `<fence>*:<owner>` while waiters are in line. */
export function parseLease(value: string): { owner: string; fence: bigint } {
  const sep = value.indexOf(':');
  const end = value.charCodeAt(sep - 1) === 42 /* '*' */ ? sep - 1 : sep;
  return { fence: BigInt(value.slice(0, end)), owner: value.slice(sep + 1) };
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
