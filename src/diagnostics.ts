import { channel } from 'node:diagnostics_channel';
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

export const channels = {
  acquire: channel('cachelock:acquire'),
  release: channel('cachelock:release'),
  extend: channel('cachelock:extend'),
  lost: channel('cachelock:lost'),
  contended: channel('cachelock:contended'),
};

/** `NODE_DEBUG=cachelock` logging. */
export const debug = debuglog('cachelock');
