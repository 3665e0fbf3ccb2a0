import type {
  Compare,
  KeyValue,
  LeaseTtl,
  Operation,
  Transport,
  Txn,
  TxnResult,
  WatchHandlers,
} from './transport.js';

/**
 * The store over a user's `etcd3` client (an `Etcd3` or one of its namespaces). Only the
 * client's raw gRPC calls are used, with the namespace's prefix added to every key here, and
 * its watch builder, which adds the prefix itself and resubscribes after a disconnection.
 */

interface Stream {
  write(message: unknown): unknown;
  end(): unknown;
  on(event: string, handler: (value: any) => void): Stream;
}

interface Watcher {
  on(event: string, handler: (value: any, previous?: any) => void): Watcher;
  cancel(): Promise<void>;
}

interface WatchBuilder {
  create(): Promise<Watcher>;
  withPreviousKV?(): WatchBuilder;
}

/** The members of `etcd3`'s `Etcd3` (and `Namespace`) this store uses. */
export interface Etcd3Like {
  readonly prefix: Buffer;
  readonly kv: { txn(request: unknown, options?: unknown): Promise<any> };
  readonly leaseClient: {
    leaseGrant(request: unknown, options?: unknown): Promise<any>;
    leaseRevoke(request: unknown, options?: unknown): Promise<any>;
    leaseTimeToLive(request: unknown, options?: unknown): Promise<any>;
    leaseKeepAlive(options?: unknown): Promise<Stream>;
  };
  watch(): {
    prefix(value: Buffer): { only(...operations: string[]): WatchBuilder };
  };
  lease(ttl: number, options?: unknown): unknown;
}

/** An `Etcd3` client or namespace: recognised by shape, without importing etcd3. */
export function isEtcd3(value: unknown): value is Etcd3Like {
  const c = value as Partial<Etcd3Like> | null;
  return (
    typeof c === 'object' &&
    c !== null &&
    Buffer.isBuffer(c.prefix) &&
    typeof c.kv?.txn === 'function' &&
    typeof c.leaseClient?.leaseGrant === 'function' &&
    typeof c.watch === 'function'
  );
}

// How soon a watch that etcd canceled is made again.
const WATCH_RETRY_MS = 250;
const TARGETS = { CREATE: 'Create', MOD: 'Mod', LEASE: 'Lease', VERSION: 'Version' } as const;
const RESULTS = { EQUAL: 'Equal', GREATER: 'Greater', LESS: 'Less', NOT_EQUAL: 'NotEqual' };
const FIELDS = {
  CREATE: 'create_revision',
  MOD: 'mod_revision',
  LEASE: 'lease',
  VERSION: 'version',
} as const;

export class Etcd3Transport implements Transport {
  readonly #client: Etcd3Like;
  readonly #timeoutMs: number;
  readonly #watchers = new Set<Promise<Watcher | undefined>>();

  constructor(client: Etcd3Like, timeoutMs: number) {
    this.#client = client;
    this.#timeoutMs = timeoutMs;
  }

  get where(): string {
    const hosts = (this.#client as { options?: { hosts?: string | string[] } }).options?.hosts;
    const first = Array.isArray(hosts) ? hosts[0] : hosts;
    if (typeof first !== 'string') return 'etcd3 client';
    try {
      return new URL(first.includes('://') ? first : `http://${first}`).host;
    } catch {
      return 'etcd3 client';
    }
  }

  #options(): { deadline: Date } {
    return { deadline: new Date(Date.now() + this.#timeoutMs) };
  }

  #key(key: Buffer): Buffer {
    return this.#client.prefix.length === 0 ? key : Buffer.concat([this.#client.prefix, key]);
  }

  async grant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const reply = await this.#client.leaseClient.leaseGrant({ TTL: ttlSeconds }, this.#options());
    return { id: String(reply.ID), ttl: Number(reply.TTL) };
  }

  async revoke(id: string): Promise<boolean> {
    try {
      await this.#client.leaseClient.leaseRevoke({ ID: id }, this.#options());
      return true;
    } catch (error) {
      if (/lease not found/i.test(String((error as Error).message))) return false;
      throw error;
    }
  }

  async keepAlive(id: string): Promise<number> {
    const stream = await this.#client.leaseClient.leaseKeepAlive(this.#options());
    return new Promise<number>((resolve, reject) => {
      stream.on('data', (reply) => {
        resolve(Number(reply.TTL ?? 0));
        stream.end();
      });
      stream.on('error', reject);
      stream.on('end', () =>
        reject(new Error('etcd: the keep-alive stream ended without a reply')),
      );
      stream.write({ ID: id });
    });
  }

  async timeToLive(id: string): Promise<LeaseTtl> {
    const reply = await this.#client.leaseClient.leaseTimeToLive({ ID: id }, this.#options());
    return { ttl: Number(reply.TTL ?? -1), granted: Number(reply.grantedTTL ?? 0) };
  }

  async txn(txn: Txn): Promise<TxnResult> {
    const reply = await this.#client.kv.txn(
      {
        compare: txn.compare.map((c) => this.#compare(c)),
        success: txn.success.map((op) => this.#operation(op)),
        failure: txn.failure.map((op) => this.#operation(op)),
      },
      this.#options(),
    );
    const strip = this.#client.prefix.length;
    return {
      succeeded: reply.succeeded === true,
      revision: BigInt(reply.header?.revision ?? 0),
      results: (reply.responses ?? []).map((r: any) =>
        (r.response_range?.kvs ?? []).map((kv: any) => keyValueOf(kv, strip)),
      ),
    };
  }

  #compare(c: Compare): unknown {
    const compare: Record<string, unknown> = {
      key: this.#key(c.key),
      target: TARGETS[c.target],
      result: RESULTS[c.result],
      [FIELDS[c.target]]: String(c.value),
    };
    if (c.rangeEnd !== undefined) compare.range_end = this.#key(c.rangeEnd);
    return compare;
  }

  #operation(op: Operation): unknown {
    if ('put' in op) {
      return {
        request_put: { key: this.#key(op.put.key), value: op.put.value, lease: op.put.lease },
      };
    }
    if ('delete' in op) return { request_delete_range: { key: this.#key(op.delete.key) } };
    const { key, rangeEnd, limit, oldestFirst, newestFirst, maxCreateRevision } = op.range;
    const range: Record<string, unknown> = { key: this.#key(key) };
    if (rangeEnd !== undefined) range.range_end = this.#key(rangeEnd);
    if (limit !== undefined) range.limit = limit;
    if (oldestFirst || newestFirst) {
      range.sort_order = oldestFirst ? 'Ascend' : 'Descend';
      range.sort_target = 'Create';
    }
    if (maxCreateRevision !== undefined) range.max_create_revision = String(maxCreateRevision);
    return { request_range: range };
  }

  watch(prefix: Buffer, handlers: WatchHandlers): () => void {
    let stopped = false;
    let current: Promise<Watcher | undefined> | undefined;
    const start = (): void => {
      const builder = this.#client.watch().prefix(prefix).only('delete');
      const pending = (builder.withPreviousKV?.() ?? builder).create().then(
        (watcher) => {
          if (stopped) {
            void watcher.cancel().catch(() => {});
            return undefined;
          }
          watcher.on('connected', () => handlers.onReady());
          watcher.on('disconnected', () => handlers.onBroken());
          // etcd3 has unprefixed the keys of its namespace already.
          watcher.on('delete', (kv: any, previous?: any) =>
            handlers.onDelete({
              revision: BigInt(kv?.mod_revision ?? 0),
              ...(previous === undefined ? {} : { previous: keyValueOf(previous, 0) }),
            }),
          );
          // etcd canceled the watch (the revision it resumes from was compacted while the
          // client was away): the client drops it for good, so watch afresh from now.
          // The client has dropped it already: cancelling it again would ask etcd about a
          // watch the client no longer knows, whose answer it cannot place.
          watcher.on('error', () => {
            if (stopped || current !== pending) return;
            handlers.onBroken();
            this.#watchers.delete(pending);
            current = undefined;
            setTimeout(() => {
              if (!stopped && current === undefined) start();
            }, WATCH_RETRY_MS).unref();
          });
          // create() resolves once etcd confirmed the watch.
          handlers.onReady();
          return watcher;
        },
        () => undefined,
      );
      current = pending;
      this.#watchers.add(pending);
    };
    start();
    return () => {
      stopped = true;
      const pending = current;
      if (pending === undefined) return;
      this.#watchers.delete(pending);
      void pending.then((watcher) => watcher?.cancel().catch(() => {}));
    };
  }

  async close(): Promise<void> {
    const watchers = await Promise.all(this.#watchers);
    this.#watchers.clear();
    await Promise.all(watchers.map((watcher) => watcher?.cancel().catch(() => {})));
  }
}

/** A key-value from the client, without the namespace's first `strip` bytes. */
function keyValueOf(kv: any, strip: number): KeyValue {
  return {
    key: Buffer.from(kv.key).subarray(strip),
    value: Buffer.from(kv.value ?? []),
    createRevision: BigInt(kv.create_revision ?? 0),
    modRevision: BigInt(kv.mod_revision ?? 0),
    lease: String(kv.lease ?? '0'),
  };
}
