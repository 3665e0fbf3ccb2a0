import { type LeaseInfo, type PlainCache, PlainCacheStore } from 'cachelock';
import type { KeyvLike } from './shapes.js';

type RawEntry = { value?: unknown; expires?: unknown } | undefined;

/**
 * The plain-cache adapter over a Keyv whose backend has no client cachelock can drive. Keyv has
 * no set-if-absent or compare-and-set, so this is exclusive only within one process (the adapter
 * warns once). Keyv does know when a value expires, so a value cachelock did not write is
 * reported with the time it has left.
 */
export class KeyvPlainStore extends PlainCacheStore {
  readonly #keyv: KeyvLike;

  constructor(keyv: KeyvLike) {
    super(keyv as unknown as PlainCache, { kind: 'keyv' });
    this.#keyv = keyv;
  }

  override async inspect(key: string): Promise<LeaseInfo | null> {
    const info = await super.inspect(key);
    if (info === null || info.owner !== '') return info;
    const entry = await this.#raw(key);
    if (entry === undefined) return null;
    return typeof entry.expires === 'number'
      ? { ...info, ttlMs: Math.max(0, entry.expires - Date.now()) }
      : info;
  }

  // Keyv 5 has getRaw; Keyv 4 returns the same entry from get(key, { raw: true }).
  #raw(key: string): Promise<RawEntry> {
    const keyv = this.#keyv as KeyvLike & {
      getRaw?: (key: string) => Promise<RawEntry>;
      get(key: string, options: { raw: true }): Promise<RawEntry>;
    };
    return typeof keyv.getRaw === 'function' ? keyv.getRaw(key) : keyv.get(key, { raw: true });
  }
}
