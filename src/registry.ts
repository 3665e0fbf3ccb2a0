import { redactUrl } from './secrets.js';
import type { LockStore } from './store.js';

/**
 * What a backend entry point exports for the core to reach it by URL scheme or by client:
 * `cachelock/redis`, `cachelock/postgres`, ... each export these two functions.
 */
export interface BackendModule {
  /** Open a store for a URL. The store owns the client it opens; `close()` ends it. */
  storeFromUrl(url: URL): LockStore | Promise<LockStore>;
  /** Wrap a client the user made. The store does not end the user's client on `close()`. */
  storeFromClient(client: unknown): LockStore | Promise<LockStore>;
}

export type UrlFactory = (url: URL) => LockStore | Promise<LockStore>;

const schemes = new Map<string, UrlFactory>();

// Entry points the core loads only when one of their schemes is used, so that the core never
// imports a client library and a user installs only the one they use.
const builtinSchemes: Record<string, string> = {
  'redis:': 'cachelock/redis',
  'rediss:': 'cachelock/redis',
  'valkey:': 'cachelock/redis',
  'valkeys:': 'cachelock/redis',
  'postgres:': 'cachelock/postgres',
  'postgresql:': 'cachelock/postgres',
  'mysql:': 'cachelock/mysql',
  'mariadb:': 'cachelock/mysql',
  'memcached:': 'cachelock/memcached',
  'sqlite:': 'cachelock/sqlite',
  'etcd:': 'cachelock/etcd',
  'etcds:': 'cachelock/etcd',
};

/**
 * Make `scheme` (with or without the colon: `'etcd'`, `'etcd:'`) open stores through `factory`.
 * Replaces an earlier registration of the same scheme.
 */
export function registerScheme(scheme: string, factory: UrlFactory): void {
  if (typeof scheme !== 'string' || !/^[a-z][a-z0-9+.-]*:?$/i.test(scheme)) {
    throw new TypeError(
      `registerScheme: scheme must be a URL scheme such as 'etcd', got ${JSON.stringify(scheme)}`,
    );
  }
  if (typeof factory !== 'function') {
    throw new TypeError('registerScheme: factory must be a function (url: URL) => LockStore');
  }
  schemes.set(normalise(scheme), factory);
}

function normalise(scheme: string): string {
  const lower = scheme.toLowerCase();
  return lower.endsWith(':') ? lower : `${lower}:`;
}

/** Every scheme a URL may use, for error messages and the CLI's help. */
export function knownSchemes(): string[] {
  return [...new Set(['memory:', ...Object.keys(builtinSchemes), ...schemes.keys()])].sort();
}

/** The factory for a URL's scheme, loading its entry point if it is a built-in one. */
export async function factoryFor(option: string, url: URL): Promise<UrlFactory> {
  const registered = schemes.get(url.protocol);
  if (registered) return registered;
  const entry = builtinSchemes[url.protocol];
  if (entry === undefined) {
    throw new TypeError(
      `${option}: unknown URL scheme "${url.protocol}" in ${JSON.stringify(redactUrl(url))}; known schemes: ${knownSchemes().join(', ')}`,
    );
  }
  const backend = await loadBackend(entry);
  return (u) => backend.storeFromUrl(u);
}

/** Load a backend entry point by its package path, with a message that says what to install. */
export async function loadBackend(entry: string): Promise<BackendModule> {
  try {
    return (await import(entry)) as BackendModule;
  } catch (error) {
    throw new Error(`cachelock could not load ${entry}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}
