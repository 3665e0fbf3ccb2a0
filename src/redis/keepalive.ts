import type { ClientLibrary, IoredisLike, NodeRedisLike } from './driver.js';

type Client = IoredisLike | NodeRedisLike;
type Referable = { ref?(): void; unref?(): void };

/** References the connection until the function it returns is called; `busy()`: held now. */
export type Hold = (() => () => void) & { busy(): boolean };

/**
 * Unreference `client`'s connection now and after every reconnection; the returned function
 * references it until the function it returns is called (counted, so overlapping commands
 * each hold it).
 */
export function keepAlive(client: Client, library: ClientLibrary): Hold {
  let active = 0;
  let apply: (ref: boolean) => void;
  if (library === 'ioredis-cluster') {
    // A Cluster's sockets are its nodes'; each node is an ioredis client of its own.
    const cluster = client as IoredisLike & { nodes(): unknown[] };
    const nodes = (cluster.nodes() as Client[]).map((node) => keepAlive(node, 'ioredis'));
    cluster.on('+node', (node: Client) => nodes.push(keepAlive(node, 'ioredis')));
    const hold = () => {
      const holds = nodes.map((each) => each());
      return () => {
        for (const release of holds) release();
      };
    };
    return Object.assign(hold, { busy: () => nodes.some((each) => each.busy()) });
  }
  if (library.startsWith('ioredis')) {
    const redis = client as IoredisLike & {
      stream?: Referable;
      reconnectTimeout?: Referable | null;
    };
    apply = (ref) => {
      const method = ref ? 'ref' : 'unref';
      redis.stream?.[method]?.();
      redis.reconnectTimeout?.[method]?.();
    };
    // A new socket after a reconnection starts referenced; the retry timer is set just after
    // the `reconnecting` event.
    redis.on('connect', () => apply(active > 0));
    redis.on('reconnecting', () => process.nextTick(() => apply(active > 0)));
    apply(false);
  } else {
    const redis = client as NodeRedisLike & Referable & { isReady?: boolean };
    apply = (ref) => (ref ? redis.ref?.() : redis.unref?.());
    // node-redis reaches a socket only once it is connected, and gives a new one the last
    // choice: a socket that connects while a command waits must start referenced, so the
    // choice is made again each time a socket is up.
    redis.on('connect', () => apply(active > 0));
    redis.on('reconnecting', () => apply(true));
    redis.on('error', () => apply(true));
    if (redis.isReady === true) apply(false);
  }
  const hold = () => {
    if (active++ === 0) apply(true);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--active === 0) apply(false);
    };
  };
  return Object.assign(hold, { busy: () => active > 0 });
}
