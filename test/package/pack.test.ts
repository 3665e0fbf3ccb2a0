// The published package as users get it: `npm pack` of the built dist, installed from the
// tarball into consumer projects (ESM, CommonJS, TypeScript under each moduleResolution), plus
// publint and arethetypeswrong over the tarball. `npm test` builds first.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = (name: string) => join(root, 'node_modules', '.bin', name);
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string;
  exports: Record<string, unknown>;
};

/**
 * The gzipped tarball may not grow past this without a reason (it was 462 kB with source maps,
 * 177 kB without; 274 kB with the MySQL and etcd entry points, about 40 kB of code each in ESM
 * and CommonJS, and several keys, permits and readers/writers; 307 kB with etcd's permits and
 * readers/writers and the SQLite and Memcached lines and wake-ups; 333 kB with MySQL's wake-ups
 * for permits and readers/writers, etcd's hand-offs and spare leases, MikroORM 7 and the
 * rewritten waiter; 350 kB with the Memcached bells and their clean-ups, and the changelog
 * that says so; 361 kB with the Memcached hand-off, a waiter's lost place told to try again and
 * SQLite's stepwise BEGIN; 362 kB with the single-connection MySQL retry and the changelog of
 * these).
 */
const PACKED_BUDGET = 372_000;
/** Nor the files in it, unpacked (1.32 MB, then 1.38 MB). */
const UNPACKED_BUDGET = 1_460_000;

/** One value export per entry point, to prove its types are the real ones and not `any`. */
const probe: Record<string, string> = {
  cachelock: 'Lock',
  'cachelock/redis': 'redisStore',
  'cachelock/redlock': 'redlockStore',
  'cachelock/postgres': 'postgresStore',
  'cachelock/mysql': 'mysqlStore',
  'cachelock/etcd': 'etcdStore',
  'cachelock/sqlite': 'sqliteStore',
  'cachelock/memcached': 'memcachedStore',
  'cachelock/keyv': 'keyvStore',
  'cachelock/nestjs': 'CachelockModule',
  'cachelock/testing': 'runConformance',
};
const entries = Object.keys(manifest.exports)
  .filter((path) => path !== './package.json')
  .map((path) => (path === '.' ? 'cachelock' : `cachelock/${path.slice(2)}`));

interface Packed {
  filename: string;
  size: number;
  unpackedSize: number;
  files: Array<{ path: string; size: number }>;
}

// Inside the repository (and git-ignored), so that the consumers find the client libraries and
// TypeScript in its node_modules; each has a package.json, so `cachelock` is never the repo's own.
const work = join(root, '.tmp');
let dir: string;
let packed: Packed;
let consumer: string;

beforeAll(async () => {
  if (!existsSync(join(root, 'dist', 'index.js'))) {
    throw new Error('dist is missing: run `npm run build` first (npm test does)');
  }
  mkdirSync(work, { recursive: true });
  dir = mkdtempSync(join(work, 'pack-'));
  // The dist as built (a prepack build here would pull it from under other tests).
  const pack = ['pack', '--json', '--ignore-scripts', '--pack-destination', dir];
  const { stdout } = await run('npm', pack, {
    cwd: root,
  });
  packed = (JSON.parse(stdout) as Packed[])[0]!;
  consumer = join(dir, 'consumer');
  mkdirSync(consumer);
  writeFileSync(
    join(consumer, 'package.json'),
    JSON.stringify({ name: 'consumer', private: true, version: '0.0.0' }),
  );
  await run(
    'npm',
    ['install', join(dir, packed.filename), '--offline', '--no-audit', '--no-fund', '--no-save'],
    { cwd: consumer },
  );
}, 120_000);

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe('the tarball', () => {
  it('holds the entry points, their types, the bin and the docs, and nothing else', () => {
    const expected = [
      'package.json',
      'README.md',
      'CHANGELOG.md',
      'LICENSE',
      'dist/cli/main.js',
      ...entries.flatMap((entry) => {
        const base = entry === 'cachelock' ? 'dist/index' : `dist/${entry.slice(10)}/index`;
        return ['.js', '.cjs', '.d.ts', '.d.cts'].map((ext) => base + ext);
      }),
    ];
    expect(packed.files.map((file) => file.path).sort()).toEqual(expected.sort());
  });

  it(`stays within ${PACKED_BUDGET} bytes packed and ${UNPACKED_BUDGET} unpacked`, () => {
    expect(packed.size).toBeLessThanOrEqual(PACKED_BUDGET);
    expect(packed.unpackedSize).toBeLessThanOrEqual(UNPACKED_BUDGET);
  });

  it('passes publint (strict)', async () => {
    const result = await run(bin('publint'), ['run', '--strict', join(dir, packed.filename)]);
    expect(result.stdout).toContain('All good');
  }, 60_000);

  it('passes arethetypeswrong for node10, node16 (CJS and ESM) and bundler', async () => {
    // Exits non-zero on any problem, which rejects here with its report.
    const result = await run(bin('attw'), [join(dir, packed.filename), '--format', 'ascii']);
    expect(result.stdout).toContain('No problems found');
  }, 60_000);
});

describe('a consumer project that installed the tarball', () => {
  const imports = (style: 'import' | 'require') =>
    entries
      .map((entry, i) => {
        const name = probe[entry];
        if (name === undefined) throw new Error(`add an export of ${entry} to probe`);
        return style === 'import'
          ? `import { ${name} as e${i} } from '${entry}';`
          : `const { ${name}: e${i} } = require('${entry}');`;
      })
      .join('\n');
  const checks = entries.map((_, i) => `if (typeof e${i} !== 'function') throw e${i};`).join('\n');

  it('imports every entry point from ESM and requires it from CommonJS', async () => {
    writeFileSync(join(consumer, 'esm.mjs'), `${imports('import')}\n${checks}\nconsole.log('ok');`);
    writeFileSync(
      join(consumer, 'cjs.cjs'),
      `${imports('require')}\n${checks}\nconsole.log('ok');`,
    );
    for (const file of ['esm.mjs', 'cjs.cjs']) {
      const { stdout } = await run(process.execPath, [file], { cwd: consumer });
      expect(stdout.trim(), file).toBe('ok');
    }
  }, 60_000);

  it('runs the bin npm linked', async () => {
    const { stdout } = await run(join(consumer, 'node_modules', '.bin', 'cachelock'), [
      '--version',
    ]);
    expect(stdout.trim()).toBe(manifest.version);
  });

  // A typed use of each entry point's probe: `any` would make the @ts-expect-error unused.
  const typed = entries
    .map((_, i) => `// @ts-expect-error: not a number\nexport const n${i}: number = e${i};`)
    .join('\n');
  const lockEvent = `
import { subscribe } from 'cachelock';
export const stop = subscribe('lost', (event) => event.error.message.length + event.key.length);
`;

  it.each([
    // What `module: commonjs` implies, as in a stock NestJS 10 project.
    { resolution: 'node10', module: 'commonjs', files: { 'index.ts': 'import' } },
    {
      resolution: 'node16',
      module: 'node16',
      files: { 'index.mts': 'import', 'index.cts': 'import' },
    },
    {
      resolution: 'nodenext',
      module: 'nodenext',
      files: { 'index.mts': 'import', 'index.cts': 'import' },
    },
    { resolution: 'bundler', module: 'esnext', files: { 'index.ts': 'import' } },
  ] as const)(
    'type-checks an import of every entry point under moduleResolution $resolution',
    async ({ resolution, module, files }) => {
      const project = join(consumer, resolution);
      mkdirSync(project);
      for (const file of Object.keys(files)) {
        writeFileSync(join(project, file), `${imports('import')}\n${typed}\n${lockEvent}`);
      }
      writeFileSync(
        join(project, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            module,
            moduleResolution: resolution,
            target: 'es2022',
            lib: ['es2022'],
            types: ['node'],
            strict: true,
            noEmit: true,
            esModuleInterop: true,
            skipLibCheck: true,
            // Resolve types the way a consumer does: node_modules/cachelock, not this repo's paths.
            typeRoots: [join(root, 'node_modules', '@types')],
          },
          files: Object.keys(files),
        }),
      );
      const result = await run(bin('tsc'), ['-p', project]).catch(
        (error: { stdout: string }) => error,
      );
      expect(result.stdout).toBe('');
    },
    120_000,
  );
});
