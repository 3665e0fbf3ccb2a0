import type { LockStore } from 'cachelock';

/** `store` with its `acquire` calls counted: `tries()` says how many there were so far. */
export function countingTries(store: LockStore): { store: LockStore; tries: () => number } {
  let tries = 0;
  const counted = new Proxy(store, {
    get(target, name) {
      if (name === 'acquire') {
        return (...args: Parameters<LockStore['acquire']>) => {
          tries++;
          return target.acquire(...args);
        };
      }
      const value = Reflect.get(target, name, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { store: counted, tries: () => tries };
}
