// runConformance under node:test, against the BUILT package: `node --test` on this file.
// CONFORMANCE_BROKEN=1 runs it against a store whose release ignores the owner, which must fail.
import { describe, it } from 'node:test';
import { memoryStore } from 'cachelock';
import { runConformance } from 'cachelock/testing';

function releasingAnyOwner(store) {
  return Object.assign(Object.create(store), {
    kind: store.kind,
    atomic: store.atomic,
    async release(key, _owner, keepMs) {
      const holder = await store.inspect(key);
      return holder ? store.release(key, holder.owner, keepMs) : false;
    },
  });
}

const broken = process.env.CONFORMANCE_BROKEN === '1';
runConformance({
  name: broken ? 'memory store, broken release, under node:test' : 'memory store under node:test',
  describe,
  it,
  makeStore: () => (broken ? releasingAnyOwner(memoryStore()) : memoryStore()),
  // Each memory store is a backend of its own.
  sharedBackend: false,
});
