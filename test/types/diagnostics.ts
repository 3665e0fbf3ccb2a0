// Compiled by `npm run typecheck` (strict) and never run: subscribers get typed events without
// casts, and a misspelled channel or member is a compile error.
import { type LockEvents, subscribe } from 'cachelock';

export const stop = subscribe('lost', (event) => {
  const key: string = event.key;
  const reason: string = event.error.message;
  const fence: bigint | undefined = event.fence;
  return [key, reason, fence];
});

subscribe('acquire', (event) => {
  const waited: number = event.waitedMs;
  // @ts-expect-error: a waitedMs is a number, not a string
  const wrong: string = event.waitedMs;
  return [waited, wrong];
});

subscribe('release', (event: LockEvents['release']) => event.heldMs.toFixed(0));

// @ts-expect-error: there is no such channel
subscribe('acquired', () => {});

subscribe('extend', (event) => {
  // @ts-expect-error: the event is typed, not any
  event.nonexistent;
});
