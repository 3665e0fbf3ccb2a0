import { defineConfig, type Options } from 'tsup';
import pkg from './package.json' with { type: 'json' };

const backends = [
  'redis',
  'redlock',
  'postgres',
  'mysql',
  'sqlite',
  'memcached',
  'etcd',
  'keyv',
  'nestjs',
  'testing',
];
const library = {
  index: 'src/index.ts',
  ...Object.fromEntries(backends.map((name) => [`${name}/index`, `src/${name}/index.ts`])),
};

const common: Options = {
  target: 'node20',
  platform: 'node',
  // No source maps: the output is unminified and readable as it is, and maps would either carry
  // the whole source again (most of the tarball) or point at files that are not published.
  sourcemap: false,
  splitting: false,
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
};

// Two builds that run side by side: each cleans only its own files.
export default defineConfig([
  {
    ...common,
    entry: library,
    format: ['esm', 'cjs'],
    dts: { entry: library },
    clean: ['!cli/**'],
  },
  // The bin runs as an ES module (package.json "bin", "type": "module"); nothing requires it.
  {
    ...common,
    entry: { main: 'src/cli/main.ts' },
    outDir: 'dist/cli',
    format: ['esm'],
    clean: true,
  },
]);
