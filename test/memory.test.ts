import { memoryStore } from 'cachelock';
import { runConformance } from 'cachelock/testing';
import { describe, it } from 'vitest';

runConformance({ name: 'memory store: conformance', describe, it, makeStore: () => memoryStore() });
