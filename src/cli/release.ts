import { resolveStore, StoreError } from 'cachelock';
import type { ReleaseRequest } from './args.js';
import { Exit } from './exit.js';
import { describeHolder } from './holder.js';

// A holder can change between inspect and release (the old one released, a new one took it):
// try again a few times rather than report a lock as removed when it is not.
const ATTEMPTS = 5;

/**
 * `cachelock release --force`: remove the key whatever its owner. The LockStore contract
 * releases only for a named owner, so this asks who holds it and releases as that owner.
 */
export async function forceRelease(request: ReleaseRequest): Promise<number> {
  const { key } = request;
  const store = await resolveStore({ cache: request.cache, prefix: request.prefix });
  const storeKey = request.prefix + key;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    let holder: Awaited<ReturnType<typeof store.inspect>>;
    let removed: boolean;
    try {
      holder = await store.inspect(storeKey);
      if (holder === null) {
        process.stdout.write(`${JSON.stringify(key)} was not held\n`);
        return Exit.ok;
      }
      removed = await store.release(storeKey, holder.owner);
    } catch (error) {
      throw new StoreError(key, 'release', error);
    }
    if (removed) {
      process.stdout.write(
        `released ${JSON.stringify(key)}, which was held by ${describeHolder(holder)}\n`,
      );
      return Exit.ok;
    }
  }
  process.stderr.write(
    `cachelock: ${JSON.stringify(key)} changed hands ${ATTEMPTS} times while being released; try again\n`,
  );
  return Exit.conflict;
}
