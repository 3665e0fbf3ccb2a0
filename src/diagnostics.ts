import {
  channel,
  subscribe as subscribeChannel,
  unsubscribe as unsubscribeChannel,
} from 'node:diagnostics_channel';
import { debuglog } from 'node:util';

/** What the `cachelock:*` diagnostics channels publish, as it applies to each. */
export interface LockEvent {
  key: string;
  owner: string;
  fence?: bigint | undefined;
  waitedMs?: number;
  heldMs?: number;
  error?: Error;
}

/** The event each channel publishes, by the channel's name without `cachelock:`. */
export interface LockEvents {
  /** The lock was granted, after `waitedMs`. */
  acquire: LockEvent & { waitedMs: number };
  /** The holder released it, after holding it `heldMs`. */
  release: LockEvent & { heldMs: number };
  /** The lease was extended. */
  extend: LockEvent;
  /** The lease was lost while held; `error` is the `LockLostError`. */
  lost: LockEvent & { error: Error };
  /** `acquire()` found the key held and is going to wait for it. */
  contended: LockEvent;
}

export type LockEventName = keyof LockEvents;

export const channels = {
  acquire: channel('cachelock:acquire'),
  release: channel('cachelock:release'),
  extend: channel('cachelock:extend'),
  lost: channel('cachelock:lost'),
  contended: channel('cachelock:contended'),
} satisfies Record<LockEventName, unknown>;

/**
 * Listen to the `cachelock:<name>` diagnostics channel with the event typed; returns the function
 * that stops listening. The same as `diagnostics_channel.subscribe('cachelock:<name>', ...)`.
 *
 * ```ts
 * subscribe('lost', (event) => log.warn({ key: event.key }, event.error.message));
 * ```
 */
export function subscribe<N extends LockEventName>(
  name: N,
  listener: (event: LockEvents[N]) => void,
): () => void {
  if (typeof name !== 'string' || !Object.hasOwn(channels, name)) {
    throw new TypeError(
      `subscribe: name must be one of ${Object.keys(channels).join(', ')}, got ${JSON.stringify(name)}`,
    );
  }
  if (typeof listener !== 'function') {
    throw new TypeError(`subscribe: listener must be a function, got ${typeof listener}`);
  }
  const channelName = `cachelock:${name}`;
  // Only cachelock publishes on its channels, and each publishes its own member of LockEvents.
  const onMessage = (message: unknown) => listener(message as LockEvents[N]);
  subscribeChannel(channelName, onMessage);
  return () => {
    unsubscribeChannel(channelName, onMessage);
  };
}

/** `NODE_DEBUG=cachelock` logging. */
export const debug = debuglog('cachelock');

/** `debug.enabled`, read once: NODE_DEBUG is read when the process starts, and the getter is not free. */
export const debugging = debug.enabled;
