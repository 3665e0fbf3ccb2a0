import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

// The nemesis suite runs after the other tests, one file and one case at a time: its liveness
// bound (a lease, a poll and 200 ms) would otherwise measure CPU starvation on a small machine.
export default defineConfig({
  resolve: base.resolve,
  test: {
    include: ['test/nemesis/**/*.nemesis.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
