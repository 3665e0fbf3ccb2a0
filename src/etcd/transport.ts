/**
 * What the store needs of etcd, whichever client carries it: the JSON gateway (`gateway.ts`)
 * or the user's `etcd3` client (`etcd3.ts`). Keys and values are bytes, revisions bigints and
 * lease IDs decimal strings (int64 does not fit a JavaScript number).
 */

export interface KeyValue {
  key: Buffer;
  value: Buffer;
  createRevision: bigint;
  modRevision: bigint;
  /** `'0'` when the key has no lease. */
  lease: string;
}

export type CompareTarget = 'CREATE' | 'MOD' | 'LEASE' | 'VERSION';
export type CompareResult = 'EQUAL' | 'GREATER' | 'LESS' | 'NOT_EQUAL';

export interface Compare {
  key: Buffer;
  /** Compare every key in [key, rangeEnd); an empty range compares as a missing key (0). */
  rangeEnd?: Buffer;
  target: CompareTarget;
  result: CompareResult;
  /** A revision, a version or a lease ID, as the target asks. */
  value: bigint | string;
}

export type Operation =
  | { put: { key: Buffer; value: Buffer; lease: string } }
  | {
      range: {
        key: Buffer;
        rangeEnd?: Buffer;
        limit?: number;
        oldestFirst?: boolean;
        newestFirst?: boolean;
        /** Only keys created at or before this revision. */
        maxCreateRevision?: bigint;
      };
    }
  | { delete: { key: Buffer } };

export interface Txn {
  compare: Compare[];
  success: Operation[];
  failure: Operation[];
}

export interface TxnResult {
  succeeded: boolean;
  /** The store's revision after the transaction (the create revision of a key it put). */
  revision: bigint;
  /** Per operation of the branch taken: the keys a range found, `[]` for a put or delete. */
  results: KeyValue[][];
}

export interface LeaseTtl {
  /** Seconds left, rounded down; -1 when the lease is gone. */
  ttl: number;
  /** The TTL the lease was granted (and a keep-alive renews it to). */
  granted: number;
}

/** A key's deletion, as a watch saw it. */
export interface Deletion {
  /** The store's revision of the deletion. */
  revision: bigint;
  /** The key as it was before (absent when etcd could not say). */
  previous?: KeyValue;
}

/** A watch on a prefix: `onReady` once it is active (again), `onDelete` for deletions in it. */
export interface WatchHandlers {
  onReady(): void;
  onDelete(deletion: Deletion): void;
  /** The watch broke; `onReady` follows once it is active again. */
  onBroken(): void;
}

/**
 * Ends a watch. `hold(false)` lets a watch nobody waits on stay open without keeping the
 * process alive, `hold(true)` makes it keep the process alive again (where the transport owns
 * the connection; a user's client is left as it is).
 */
export type StopWatch = (() => void) & { hold?(held: boolean): void };

export interface Transport {
  /** `host:port` of the endpoint in use, for messages. */
  readonly where: string;
  grant(ttlSeconds: number): Promise<{ id: string; ttl: number }>;
  /** Resolves false when the lease no longer exists (expired or revoked). */
  revoke(id: string): Promise<boolean>;
  /** One keep-alive: the TTL it renewed to, 0 or less when the lease is gone. */
  keepAlive(id: string): Promise<number>;
  timeToLive(id: string): Promise<LeaseTtl>;
  txn(txn: Txn): Promise<TxnResult>;
  /** Watch deletions under `prefix` until the returned function is called. */
  watch(prefix: Buffer, handlers: WatchHandlers): StopWatch;
  close(): Promise<void>;
}

/** The end of the range of every key that starts with `prefix`. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  // All 0xff: every key from the prefix on.
  return Buffer.from([0]);
}
