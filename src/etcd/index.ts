import type {
  Acquired,
  AcquireOptions,
  Handoff,
  LeaseInfo,
  LockStore,
  StoreCapabilities,
} from 'cachelock';
import { acquire } from './acquire.js';
import { type Etcd3Like, Etcd3Transport, isEtcd3 } from './etcd3.js';
import { extend } from './extend.js';
import { type Endpoint, GatewayTransport } from './gateway.js';
import { inspect } from './inspect.js';
import { type Context, LeasePool } from './leases.js';
import { manyKeys } from './many.js';
import { release } from './release.js';
import { sharedLeases } from './shared.js';
import type { Transport } from './transport.js';
import { Wakeups } from './wakeups.js';

export { EtcdError } from './gateway.js';
export { encodeName, lockPrefix } from './keys.js';
export { leaseSeconds } from './leases.js';

export interface EtcdStoreOptions {
  /** Put every lock's keys under this prefix (say `'app/'`). Default `''`. */
  namespace?: string;
  /** How long one request to etcd may take, in ms. Default 5000. */
  timeoutMs?: number;
  /** Push wake-ups with watches. Default `true`; `false` makes waiters poll. */
  watch?: boolean;
}

/** The JSON gateway, when no client is given: each endpoint a URL such as `http://host:2379`. */
export interface EtcdGatewayOptions extends EtcdStoreOptions {
  endpoints: readonly string[];
  username?: string;
  password?: string;
}

const DEFAULT_TIMEOUT_MS = 5_000;
const DEFAULT_PORT = 2379;

/**
 * Locks on an etcd v3 cluster, laid out as etcd's own `concurrency.Mutex`: an etcd lease per
 * acquisition, acquisition by one transaction on the lock's prefix, the key's create revision
 * as the fence, watches as wake-ups, waiters served in create-revision order. Expiry is judged
 * by the etcd leader's clock. Several keys go in one transaction; permits and readers/writers
 * are a weighted line of keys under a prefix of their own.
 */
export class EtcdStore implements LockStore {
  readonly kind = 'etcd';
  readonly atomic = true;
  /**
   * A waiter that a watch finds first in line holds on its line lease from then on, for what
   * is left of that lease counted from its last attempt (see `Wakeups`).
   */
  readonly handoffGrants = true;
  onRelease?: (key: string, listener: (handoff?: Handoff) => void) => () => void;
  readonly #context: Context;
  readonly #wakeups: Wakeups | undefined;
  readonly #ownsTransport: boolean;
  #closed = false;
  readonly capabilities: StoreCapabilities;

  constructor(transport: Transport, options: EtcdStoreOptions = {}, ownsTransport = false) {
    const namespace = options.namespace ?? '';
    if (typeof namespace !== 'string') {
      throw new TypeError(`etcdStore: namespace must be a string, got ${typeof namespace}`);
    }
    this.#context = {
      transport,
      namespace,
      mine: new Map(),
      sets: new Map(),
      floor: { seconds: 0 },
      pool: new LeasePool(),
      deletions: (prefix) => this.#wakeups?.deletions(prefix),
      recent: (prefix) => this.#wakeups?.recent(prefix),
      behind: (prefix, mine) => this.#wakeups?.behind(prefix, mine) ?? false,
    };
    this.#ownsTransport = ownsTransport;
    if (options.watch !== false) {
      const wakeups = new Wakeups(this.#context);
      this.#wakeups = wakeups;
      this.onRelease = (key, listener) => wakeups.subscribe(key, listener);
    }
    const open = () => this.#open();
    this.capabilities = {
      keys: manyKeys(open),
      permits: sharedLeases('permits', open, this.#wakeups),
      readersWriters: sharedLeases('rw', open, this.#wakeups),
    };
  }

  #open(): Context {
    if (this.#closed) throw new Error('cachelock/etcd: the store is closed');
    return this.#context;
  }

  async acquire(
    key: string,
    owner: string,
    ttlMs: number,
    options?: AcquireOptions,
  ): Promise<Acquired | null> {
    return acquire(this.#open(), key, owner, ttlMs, options?.lineMs, options?.mayShorten);
  }

  async release(key: string, owner: string, keepMs?: number): Promise<boolean> {
    return release(this.#open(), key, owner, keepMs);
  }

  async extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    return extend(this.#open(), key, owner, ttlMs);
  }

  async inspect(key: string): Promise<LeaseInfo | null> {
    return inspect(this.#open(), key);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeups?.close();
    await this.#context.pool.close(this.#context);
    if (this.#ownsTransport) await this.#context.transport.close();
  }
}

/**
 * A store on a user's `etcd3` client (an `Etcd3` or a namespace of one), which `close()` leaves
 * open; or, given `{ endpoints }`, on etcd's JSON gateway with Node's own `fetch`, which needs
 * no client library.
 */
export function etcdStore(
  client: Etcd3Like | EtcdGatewayOptions,
  options: EtcdStoreOptions = {},
): EtcdStore {
  if (isEtcd3(client)) {
    return new EtcdStore(new Etcd3Transport(client, timeoutOf(options)), options);
  }
  const given = client as EtcdGatewayOptions;
  if (typeof given !== 'object' || given === null || !Array.isArray(given.endpoints)) {
    throw new TypeError(
      'etcdStore: expected an etcd3 client (Etcd3) or { endpoints: ["http://host:2379", ...] }',
    );
  }
  const merged = { ...given, ...options };
  const urls = given.endpoints.map((text) => {
    try {
      return new URL(text);
    } catch {
      throw new TypeError(
        `etcdStore: endpoints must be URLs such as http://127.0.0.1:2379, got ${JSON.stringify(text)}`,
      );
    }
  });
  const protocol = urls[0]?.protocol === 'https:' ? 'https:' : 'http:';
  const endpoints = urls.map((url) => endpointOf('endpoints', url.host));
  return new EtcdStore(
    new GatewayTransport({
      endpoints,
      protocol,
      username: merged.username,
      password: merged.password,
      timeoutMs: timeoutOf(merged),
    }),
    merged,
    true,
  );
}

function timeoutOf(options: EtcdStoreOptions): number {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0) || !Number.isFinite(timeoutMs)) {
    throw new RangeError(
      `etcdStore: timeoutMs must be a positive number of ms, got ${String(timeoutMs)}`,
    );
  }
  return timeoutMs;
}

/** `host:port` (port defaults to 2379; IPv6 in brackets) as an endpoint. */
function endpointOf(option: string, text: string): Endpoint {
  let url: URL;
  try {
    url = new URL(`http://${text}`);
  } catch {
    throw new TypeError(`etcd: ${option} must be host:port, got ${JSON.stringify(text)}`);
  }
  if (url.hostname === '' || url.pathname !== '/' || url.search !== '' || url.username !== '') {
    throw new TypeError(`etcd: ${option} must be host:port, got ${JSON.stringify(text)}`);
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return { host, port: url.port === '' ? DEFAULT_PORT : Number(url.port) };
}

/**
 * `etcd://[user:password@]host:2379?endpoint=host2:2379&endpoint=host3:2379` (`etcds://` for
 * TLS): the store talks to the JSON gateway of those members, moving on to the next when one
 * fails. `namespace`, `timeout` (ms) and `watch=false` in the query string are its options.
 */
export function storeFromUrl(url: URL): LockStore {
  const endpoints = [endpointOf('the etcd URL host', url.host)];
  const options: EtcdStoreOptions = {};
  for (const [name, value] of url.searchParams) {
    if (name === 'endpoint') endpoints.push(endpointOf('endpoint', value));
    else if (name === 'namespace') options.namespace = value;
    else if (name === 'watch') options.watch = value !== 'false' && value !== '0';
    else if (name === 'timeout') {
      const ms = Number(value);
      if (!(ms > 0) || !Number.isFinite(ms)) {
        throw new RangeError(
          `etcd: timeout must be a positive number of ms, got ${JSON.stringify(value)}`,
        );
      }
      options.timeoutMs = ms;
    } else {
      throw new TypeError(
        `etcd: unknown URL parameter ${JSON.stringify(name)} (known: endpoint, namespace, timeout, watch)`,
      );
    }
  }
  return new EtcdStore(
    new GatewayTransport({
      endpoints,
      protocol: url.protocol === 'etcds:' ? 'https:' : 'http:',
      username: url.username === '' ? undefined : decodeURIComponent(url.username),
      password: url.password === '' ? undefined : decodeURIComponent(url.password),
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    }),
    options,
    true,
  );
}

/** For the core's client recognition: wrap the user's `etcd3` client. */
export function storeFromClient(client: unknown): LockStore {
  return etcdStore(client as Etcd3Like);
}
