import { constants } from 'node:os';

/**
 * The exit codes of the `cachelock` command. Besides these it exits with the command's own
 * status, or 128+N when the command was killed by signal N.
 */
export const Exit = {
  ok: 0,
  /** Something unexpected: a bug in cachelock. */
  internal: 1,
  /** Bad use: unknown option, bad duration, unknown URL scheme, no `--` (sysexits EX_USAGE). */
  usage: 64,
  /** The cache could not be reached or opened (sysexits EX_UNAVAILABLE). */
  unavailable: 69,
  /** The lease was lost while the command ran, and the command was stopped. */
  lost: 70,
  /** The lock was held, or the wait ran out (sysexits EX_TEMPFAIL); `--conflict-exit-code`. */
  conflict: 75,
  /** The command was found but could not be executed (as shells do). */
  notExecutable: 126,
  /** The command was not found (as shells do). */
  notFound: 127,
} as const;

/** 128+N for signal N, as shells report a process killed by a signal. */
export function signalExit(signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? 0);
}

/** A command-line mistake: reported with the usage line and exit code 64. */
export class UsageError extends Error {
  override name = 'UsageError';
}
