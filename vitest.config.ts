import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = fileURLToPath(new URL('./src/', import.meta.url));

export default defineConfig({
  resolve: {
    alias: [
      { find: /^cachelock$/, replacement: `${src}index.ts` },
      { find: /^cachelock\/(.*)$/, replacement: `${src}$1/index.ts` },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Most files wait on servers and timers, not the CPU: two at once halve the suite's time on
    // a 2-core machine (the default there is one).
    maxWorkers: 2,
  },
});
