import { keepAlive } from './keepalive.js';
import type { Script } from './script.js';

/**
 * The little a store needs from a Redis client, whichever library made it: send a script by
 * SHA or by text, and open a subscriber connection.
 */
export interface RedisDriver {
  /** `'ioredis'`, `'ioredis-cluster'`, `'node-redis'`, `'node-redis-cluster'`. */
  readonly library: ClientLibrary;
  /**
   * Send a script on one key, or on several of one hash slot (every script here touches one
   * slot, named by its keys): by its SHA (EVALSHA), or by its text (EVAL) with `byText`.
   * `runScript` falls back from the one to the other.
   */
  send(
    script: Script,
    keys: string | readonly string[],
    args: string[],
    byText?: boolean,
  ): Promise<unknown>;
  /** A new connection for SUBSCRIBE, a duplicate of the client. */
  openSubscriber(): Subscriber;
  /** End the client (only for clients the store opened itself). */
  quit(): Promise<void>;
}

export type ClientLibrary = 'ioredis' | 'ioredis-cluster' | 'node-redis' | 'node-redis-cluster';

export interface Subscriber {
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  /** Called for every message, and with no arguments after the connection came back. */
  listen(handler: (channel?: string, message?: string) => void): void;
  close(): Promise<void>;
}

/** The members of an ioredis `Redis` or `Cluster` this backend uses. */
export interface IoredisLike {
  evalsha(sha: string, numKeys: number, ...keysAndArgs: string[]): Promise<unknown>;
  eval(text: string, numKeys: number, ...keysAndArgs: string[]): Promise<unknown>;
  defineCommand(...args: any[]): unknown;
  duplicate(...args: any[]): IoredisLike;
  subscribe(...channels: string[]): Promise<unknown>;
  unsubscribe(...channels: string[]): Promise<unknown>;
  on(event: string, listener: (...args: any[]) => void): unknown;
  quit(): Promise<unknown>;
  disconnect(): void;
  options: object;
  nodes?: (...args: any[]) => unknown[];
}

/** The members of a node-redis client or cluster (v4 and later) this backend uses. */
export interface NodeRedisLike {
  sendCommand(...args: any[]): Promise<unknown>;
  isOpen: boolean;
  duplicate(...args: any[]): NodeRedisLike;
  connect(): Promise<unknown>;
  SUBSCRIBE(channel: string, listener: (message: string, channel: string) => void): Promise<void>;
  UNSUBSCRIBE(
    channel: string,
    listener?: (message: string, channel: string) => void,
  ): Promise<void>;
  on(event: string, listener: (...args: any[]) => void): unknown;
  quit?(): Promise<unknown>;
  close?(): Promise<unknown>;
  destroy?(): void;
  disconnect?(): Promise<unknown>;
}

const has = (value: object, name: string) => typeof (value as any)[name] === 'function';

/**
 * Which client library made `client`, by duck typing (the core must not import one):
 * ioredis has `evalsha`, `defineCommand` and `duplicate` and an `options` object, its `Cluster`
 * also `nodes()`; node-redis has `sendCommand`, `duplicate` and a boolean `isOpen`, its cluster
 * also a `masters` list (v4 and later).
 */
export function clientLibrary(client: unknown): ClientLibrary | undefined {
  if (typeof client !== 'object' || client === null) return undefined;
  if (
    has(client, 'evalsha') &&
    has(client, 'defineCommand') &&
    has(client, 'duplicate') &&
    typeof (client as any).options === 'object'
  ) {
    return has(client, 'nodes') ? 'ioredis-cluster' : 'ioredis';
  }
  if (has(client, 'sendCommand') && has(client, 'duplicate') && 'isOpen' in client) {
    return Array.isArray((client as any).masters) ? 'node-redis-cluster' : 'node-redis';
  }
  return undefined;
}

const QUIT_MS = 1_000;

/** `promise`, or a rejection after `ms`. */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no reply within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The server does not know a script's SHA (after a restart or a failover): send its text. */
export const isNoScript = (error: unknown): boolean =>
  error instanceof Error && /^NOSCRIPT\b/.test(error.message);

/** Run `script` by its SHA, and by its text when the server does not know the SHA. */
export function runScript(
  driver: RedisDriver,
  script: Script,
  keys: string | readonly string[],
  args: string[],
): Promise<unknown> {
  return driver.send(script, keys, args).catch((error) => {
    if (!isNoScript(error)) throw error;
    return driver.send(script, keys, args, true);
  });
}

export function driverFor(client: unknown, library: ClientLibrary): RedisDriver {
  return library.startsWith('ioredis')
    ? ioredisDriver(client as IoredisLike, library)
    : nodeRedisDriver(client as NodeRedisLike, library);
}

function ioredisDriver(client: IoredisLike, library: ClientLibrary): RedisDriver {
  return {
    library,
    send(script, keys, args, byText) {
      const names = typeof keys === 'string' ? [keys] : keys;
      return byText
        ? client.eval(script.text, names.length, ...names, ...args)
        : client.evalsha(script.sha, names.length, ...names, ...args);
    },
    openSubscriber() {
      const connection = client.duplicate();
      // The subscriber is always cachelock's own connection: a waiter is kept alive by its poll
      // timer, so an idle subscriber must not keep the process alive (only its goodbye does).
      const hold = keepAlive(connection, library);
      let connectedBefore = false;
      let handler: (channel?: string, message?: string) => void = () => {};
      connection.on('message', (channel: string, message: string) => handler(channel, message));
      // Messages published while the connection was down are gone: wake everyone once it is back.
      connection.on('ready', () => {
        if (connectedBefore) handler();
        connectedBefore = true;
      });
      connection.on('error', () => {});
      return {
        subscribe: async (channel) => void (await connection.subscribe(channel)),
        unsubscribe: async (channel) => void (await connection.unsubscribe(channel)),
        listen: (h) => void (handler = h),
        close: async () => {
          const release = hold();
          // QUIT can wait forever on a connection that is reconnecting to a server that is
          // gone; give it a moment, then drop the socket.
          await withTimeout(connection.quit(), QUIT_MS).catch(() => {});
          connection.disconnect();
          release();
        },
      };
    },
    async quit() {
      await withTimeout(client.quit(), QUIT_MS).catch(() => {});
      client.disconnect();
    },
  };
}

function nodeRedisDriver(client: NodeRedisLike, library: ClientLibrary): RedisDriver {
  const cluster = library === 'node-redis-cluster';
  const command = (key: string, words: string[]) =>
    cluster ? client.sendCommand(key, false, words) : client.sendCommand(words);
  return {
    library,
    send(script, keys, args, byText) {
      const names = typeof keys === 'string' ? [keys] : keys;
      const count = String(names.length);
      return byText
        ? command(names[0]!, ['EVAL', script.text, count, ...names, ...args])
        : command(names[0]!, ['EVALSHA', script.sha, count, ...names, ...args]);
    },
    openSubscriber() {
      const connection = client.duplicate();
      const hold = keepAlive(connection, library);
      let handler: (channel?: string, message?: string) => void = () => {};
      const onMessage = (message: string, channel: string) => handler(channel, message);
      let connectedBefore = false;
      connection.on('ready', () => {
        if (connectedBefore) handler();
        connectedBefore = true;
      });
      connection.on('error', () => {});
      const opened = connection.connect();
      opened.catch(() => {});
      return {
        subscribe: async (channel) => {
          await opened;
          await connection.SUBSCRIBE(channel, onMessage);
        },
        unsubscribe: async (channel) => {
          await opened;
          await connection.UNSUBSCRIBE(channel, onMessage);
        },
        listen: (h) => void (handler = h),
        close: async () => {
          const release = hold();
          await opened.catch(() => {});
          await endNodeRedis(connection);
          release();
        },
      };
    },
    quit: () => endNodeRedis(client),
  };
}

async function endNodeRedis(client: NodeRedisLike): Promise<void> {
  if (!client.isOpen) return;
  try {
    const ending = client.close ? client.close() : client.quit?.();
    await withTimeout(Promise.resolve(ending), QUIT_MS);
  } catch {
    client.destroy?.();
    await client.disconnect?.().catch(() => {});
  }
}
