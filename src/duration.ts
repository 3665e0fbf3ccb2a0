/** A number of milliseconds, or a string with a unit: `'250ms'`, `'30s'`, `'1.5m'`, `'2h'`, `'1d'`. */
export type Duration = number | `${number}${DurationUnit}` | (string & {});
export type DurationUnit = 'ms' | 's' | 'm' | 'h' | 'd';

const UNITS: Record<DurationUnit, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};
const PATTERN = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)\s*$/;

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'object' && value !== null) {
    try {
      return JSON.stringify(value) ?? String(value);
    } catch {
      return Object.prototype.toString.call(value);
    }
  }
  return String(value);
}

/**
 * Milliseconds for a `Duration` option, or a `TypeError`/`RangeError` that names the option and
 * shows the bad value. `forever` admits `Infinity` and `'forever'` (for `wait`).
 */
export function toMs(option: string, value: unknown, forever = false): number {
  if (typeof value === 'number') {
    if (Number.isNaN(value)) throw new RangeError(`${option} must be a duration, got NaN`);
    if (value === Number.POSITIVE_INFINITY && forever) return value;
    if (!Number.isFinite(value)) {
      throw new RangeError(`${option} must be a finite duration, got ${show(value)}`);
    }
    if (value < 0) throw new RangeError(`${option} must not be negative, got ${show(value)}`);
    return value;
  }
  if (typeof value === 'string') {
    if (forever && value.trim() === 'forever') return Number.POSITIVE_INFINITY;
    const match = PATTERN.exec(value);
    if (!match && /^\s*-\s*(\d|\.\d)/.test(value)) {
      throw new RangeError(`${option} must not be negative, got ${show(value)}`);
    }
    if (!match) {
      const examples = forever
        ? `'250ms', '30s', '1.5m', '2h', '1d' or 'forever'`
        : `'250ms', '30s', '1.5m', '2h' or '1d'`;
      throw new TypeError(
        `${option} must be milliseconds or a duration such as ${examples}, got ${show(value)}`,
      );
    }
    return Number(match[1]) * UNITS[match[2] as DurationUnit];
  }
  throw new TypeError(`${option} must be milliseconds or a duration string, got ${show(value)}`);
}

/**
 * The longest delay a Node.js timer takes (2^31-1 ms, about 24.8 days; a longer one fires after
 * 1 ms), and so the longest lease: a holder's watchdog must be able to wait for it, and a plain
 * cache that expires keys with a timer must too.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Like `toMs`, for a lease (`ttl`): at least 1 ms and at most `MAX_TIMER_MS`. */
export function toLeaseMs(option: string, value: unknown): number {
  const ms = toHoldMs(option, value);
  if (ms < 1) throw new RangeError(`${option} must be at least 1 ms, got ${show(value)}`);
  return ms;
}

/** Like `toMs`, for how long a key stays taken (`holdAtLeast`): at most `MAX_TIMER_MS`. */
export function toHoldMs(option: string, value: unknown): number {
  const ms = toMs(option, value);
  if (ms > MAX_TIMER_MS) {
    throw new RangeError(
      `${option} must be at most ${MAX_TIMER_MS} ms (about 24.8 days), got ${show(value)}`,
    );
  }
  return ms;
}

/**
 * A duration for people, in the one style of every message cachelock prints: `250ms`, `1s`,
 * `2.5s`, `45s`, `3m 20s`, `2h 5m`, `forever`. Rounds up, so a lease never looks shorter than it is.
 */
export function formatDuration(ms: number): string {
  if (ms === Number.POSITIVE_INFINITY) return 'forever';
  const whole = Math.max(0, Math.ceil(ms));
  if (whole < 1_000) return `${whole}ms`;
  const tenths = Math.ceil(whole / 100);
  if (tenths < 100) return `${tenths % 10 === 0 ? tenths / 10 : (tenths / 10).toFixed(1)}s`;
  const seconds = Math.ceil(whole / 1000);
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 120) return `${minutes}m ${seconds % 60}s`;
  return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
}

export { show as showValue };
