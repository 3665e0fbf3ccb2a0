import { memoryStore } from 'cachelock';
import { runConformance } from 'cachelock/testing';
import { describe, it } from 'vitest';

// Each memory store is a backend of its own, shared by nothing.
runConformance({
  name: 'memory store: conformance',
  describe,
  it,
  makeStore: () => memoryStore(),
  sharedBackend: false,
});
