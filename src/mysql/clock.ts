/**
 * The server's clock in microseconds since the epoch, as SQL. UTC_TIMESTAMP(6) is the
 * statement's start time in UTC, so the session's time zone and daylight saving do not enter;
 * TIMESTAMPDIFF turns it into a plain integer without a time-zone conversion either.
 */
export const NOW_US = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))";

/** A lease in milliseconds as whole microseconds, at least 1. */
export function micros(ms: number): number {
  return Math.max(1, Math.ceil(ms * 1000));
}
