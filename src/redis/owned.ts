import type { ClientLibrary, IoredisLike, NodeRedisLike, RedisDriver } from './driver.js';
import { driverFor } from './driver.js';
import { keepAlive } from './keepalive.js';

// Longer than the store's default commandTimeout (5 s, rejected within 6.25 s) and Redlock's
// serverTimeout, so that a command's failure is reported before the process may end.
const HOLD_MAX_MS = 10_000;

/**
 * The driver of a client the store opened itself (from a URL): its connection holds the process
 * open only while a command is in flight, so that a script that released its locks ends by
 * itself. A waiter between attempts is kept alive by its poll timer, a held lock by the work
 * that holds it; `closeAll()` still ends everything at once.
 */
export function ownedDriver(
  client: IoredisLike | NodeRedisLike,
  library: ClientLibrary,
): RedisDriver & { busy(): boolean } {
  const driver = driverFor(client, library);
  const hold = keepAlive(client, library);
  const nodeRedis = library === 'node-redis' ? (client as NodeRedisLike) : undefined;
  const failing = connectionFailures(client);
  return {
    library: driver.library,
    busy: () => hold.busy(),
    send(script, key, args, byText) {
      // node-redis stops reconnecting while nothing waits (see openRedisClient): connect again.
      if (nodeRedis !== undefined && !nodeRedis.isOpen) nodeRedis.connect().catch(() => {});
      const release = hold();
      // A server that accepted the connection and never answers leaves the command pending
      // after the store gave up on it (commandTimeout, serverTimeout): stop holding by then.
      const cap = setTimeout(release, HOLD_MAX_MS);
      cap.unref();
      const done = () => {
        clearTimeout(cap);
        release();
      };
      try {
        return failing(driver.send(script, key, args, byText)).finally(done);
      } catch (error) {
        done();
        throw error;
      }
    },
    openSubscriber: () => driver.openSubscriber(),
    // Goodbyes are awaited (`await closeAll()` at a script's end): hold the process for them.
    async quit() {
      const release = hold();
      try {
        await driver.quit();
      } finally {
        release();
      }
    },
  };
}

/**
 * Make a command fail with the reason its connection failed: the libraries keep a command
 * waiting while they reconnect (node-redis until the server is back, ioredis for a retry) and
 * then fail it, if at all, with no word of why; the reason comes only as an `error` event,
 * which is where the store listens (the client is its own). So a command fails as soon as the
 * connection does, with that error, and a later failure of the library's own carries the last
 * connection error as its cause.
 */
function connectionFailures(
  client: IoredisLike | NodeRedisLike,
): <T>(command: Promise<T>) => Promise<T> {
  let last: Error | undefined;
  const pending = new Set<(error: Error) => void>();
  client.on('error', (error: Error) => {
    last = error;
    for (const fail of pending) fail(error);
  });
  client.on('ready', () => {
    last = undefined;
  });
  return <T>(command: Promise<T>) => {
    let fail: (error: Error) => void = () => {};
    const failed = new Promise<never>((_, reject) => {
      fail = reject;
    });
    pending.add(fail);
    return Promise.race([command, failed])
      .catch((error: unknown) => {
        if (last === undefined || error === last || isReply(error)) throw error;
        throw new Error((error as Error)?.message ?? String(error), { cause: last });
      })
      .finally(() => pending.delete(fail));
  };
}

// An error the server sent (a Lua error, say): the connection itself was fine.
function isReply(error: unknown): boolean {
  const name = (error as { name?: unknown } | null)?.name;
  return name === 'ReplyError' || name === 'ErrorReply' || name === 'SimpleError';
}
