import { defineConfig } from 'tsup';
import pkg from './package.json' with { type: 'json' };

const backends = [
  'redis',
  'redlock',
  'postgres',
  'sqlite',
  'memcached',
  'keyv',
  'nestjs',
  'testing',
];
const library = {
  index: 'src/index.ts',
  ...Object.fromEntries(backends.map((name) => [`${name}/index`, `src/${name}/index.ts`])),
};

export default defineConfig({
  entry: { ...library, 'cli/main': 'src/cli/main.ts' },
  format: ['esm', 'cjs'],
  dts: { entry: library },
  clean: true,
  target: 'node20',
  platform: 'node',
  sourcemap: true,
  splitting: false,
  // `import.meta.url` in the CommonJS build (cachelock/nestjs resolves @nestjs/core with it).
  shims: true,
  // Entry points reach each other through the package's own name, so that the core, its
  // errors and its registry exist once however many entry points are loaded.
  // Client libraries are optional peers: never bundled, loaded from the user's node_modules.
  external: [
    /^cachelock(\/.*)?$/,
    ...Object.keys(pkg.peerDependencies),
    /^@redis\//,
    /^@keyv\//,
    /^@nestjs\//,
    'reflect-metadata',
    'rxjs',
  ],
});
