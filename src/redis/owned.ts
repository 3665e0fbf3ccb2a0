import type { ClientLibrary, IoredisLike, NodeRedisLike, RedisDriver } from './driver.js';
import { driverFor } from './driver.js';
import { keepAlive } from './keepalive.js';

/**
 * The driver of a client the store opened itself (from a URL): its connection holds the process
 * open only while a command is in flight, so that a script that released its locks ends by
 * itself. A waiter between attempts is kept alive by its poll timer, a held lock by the work
 * that holds it; `closeAll()` still ends everything at once.
 */
export function ownedDriver(
  client: IoredisLike | NodeRedisLike,
  library: ClientLibrary,
): RedisDriver {
  const driver = driverFor(client, library);
  const hold = keepAlive(client, library);
  return {
    library: driver.library,
    run(script, key, args) {
      const release = hold();
      try {
        return driver.run(script, key, args).finally(release);
      } catch (error) {
        release();
        throw error;
      }
    },
    openSubscriber: () => driver.openSubscriber(),
    quit: () => driver.quit(),
  };
}
