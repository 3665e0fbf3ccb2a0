import { formatDuration, type Holder, Lock, Semaphore } from 'cachelock';
import { describeHolder } from './holder.js';

/** Before the first look at the holder: an acquisition that succeeds at once shows nothing. */
const FIRST_LOOK_MS = 150;
const LOOK_EVERY_MS = 1_000;
const CLEAR_LINE = '\r\x1b[2K';

/**
 * The line on stderr that says who holds the lock while `run` waits for it. On a terminal it is
 * rewritten in place every second; elsewhere (a log file, cron mail) it is printed once, and
 * again only when the lock changes hands, so that logs stay short. Returns the stop function.
 */
export function showWaiting(
  key: string,
  lockOptions: { cache: string; prefix: string },
  waitMs: number,
  permits?: number,
): () => void {
  const out = process.stderr;
  const tty = out.isTTY === true;
  const started = performance.now();
  let stopped = false;
  let drawn = false;
  let lastOwner: string | undefined;
  let timer: NodeJS.Timeout | undefined;

  const look = async () => {
    let text: string | undefined;
    try {
      let holders: Holder[];
      if (permits === undefined) {
        const holder = await Lock.inspect(key, lockOptions);
        holders = holder === null ? [] : [holder];
      } else {
        holders = (await Semaphore.inspect(key, lockOptions)).holders;
      }
      const owners = holders.map((holder) => holder.owner).join(' ');
      if (holders.length > 0 && (tty || owners !== lastOwner)) {
        lastOwner = owners;
        const left =
          waitMs === Number.POSITIVE_INFINITY
            ? ''
            : `, giving up in ${formatDuration(waitMs - (performance.now() - started))}`;
        const held =
          permits === undefined
            ? `held by ${describeHolder(holders[0]!)}`
            : `its ${permits === 1 ? 'permit' : `${permits} permits`} held by ${holders.map(describeHolder).join(', ')}`;
        text = `cachelock: waiting for ${JSON.stringify(key)}, ${held}${left}`;
      }
    } catch {
      // The acquisition itself reports a store that cannot be reached.
    }
    if (stopped) return;
    if (text !== undefined) {
      out.write(tty ? `${CLEAR_LINE}${text}` : `${text}\n`);
      drawn = true;
    }
    timer = setTimeout(look, LOOK_EVERY_MS);
    timer.unref();
  };
  timer = setTimeout(look, FIRST_LOOK_MS);
  timer.unref();

  return () => {
    stopped = true;
    clearTimeout(timer);
    if (tty && drawn) out.write(CLEAR_LINE);
  };
}
