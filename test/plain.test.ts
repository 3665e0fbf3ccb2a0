import { type PlainCache, plainCacheStore } from 'cachelock';
import { runConformance } from 'cachelock/testing';
import { describe, it } from 'vitest';

/** The seed's kind of custom cache: a Map of expiring entries with get, set, delete and add. */
function mapCache(): Required<PlainCache> {
  const entries = new Map<string, { value: string; expiresAt: number }>();
  const live = (key: string) => {
    const entry = entries.get(key);
    if (entry && entry.expiresAt <= Date.now()) entries.delete(key);
    return entries.get(key);
  };
  return {
    get: async (key) => live(key)?.value,
    set: async (key, value, ttlMs) => {
      entries.set(key, { value, expiresAt: Date.now() + ttlMs });
    },
    delete: async (key) => entries.delete(key),
    // Check and set in one synchronous step: atomic for everyone sharing this Map.
    add: async (key, value, ttlMs) => {
      if (live(key)) return false;
      entries.set(key, { value, expiresAt: Date.now() + ttlMs });
      return true;
    },
  };
}

// The stores of one run share one cache, as processes share a cache server.
const shared = mapCache();
runConformance({
  name: 'plain-cache adapter over a Map cache with add: conformance',
  describe,
  it,
  makeStore: () => plainCacheStore(shared),
});

// Without add the adapter warns once per cache (CACHELOCK_NON_ATOMIC) and must still be correct
// within one process; one cache for all cases keeps that warning to one line.
const { add: _add, ...withoutAdd } = mapCache();
runConformance({
  name: 'plain-cache adapter over a Map cache without add: conformance',
  describe,
  it,
  makeStore: () => plainCacheStore(withoutAdd),
});
