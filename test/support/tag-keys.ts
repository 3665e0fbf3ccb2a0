import type { LockStore } from 'cachelock';

/**
 * `store` with `{tag}` put before every key it is given, in every operation and capability, so
 * that all keys of a suite share one Redis Cluster slot (as a user's hash tags make them) and
 * the several-keys cases can run there. Every call still goes to the real store.
 */
export function tagKeys(store: LockStore, tag: string): LockStore {
  const t = (key: string) => `{${tag}}${key}`;
  const ts = (keys: readonly string[]) => keys.map(t);
  const caps = store.capabilities;
  const many = caps?.keys;
  return {
    kind: store.kind,
    atomic: store.atomic,
    acquire: (key, owner, ttlMs, options) => store.acquire(t(key), owner, ttlMs, options),
    release: (key, owner, keepMs) => store.release(t(key), owner, keepMs),
    extend: (key, owner, ttlMs) => store.extend(t(key), owner, ttlMs),
    inspect: (key) => store.inspect(t(key)),
    onRelease: store.onRelease && ((key, listener) => store.onRelease!(t(key), listener)),
    close: () => store.close?.() ?? Promise.resolve(),
    capabilities: {
      ...caps,
      keys: many && {
        acquire: (keys, owner, ttlMs) => many.acquire(ts(keys), owner, ttlMs),
        release: (keys, owner, keepMs) => many.release(ts(keys), owner, keepMs),
        extend: (keys, owner, ttlMs) => many.extend(ts(keys), owner, ttlMs),
      },
    },
  };
}
