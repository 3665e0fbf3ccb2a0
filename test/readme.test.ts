/**
 * Every example in README.md runs here, against the built package and the test servers, so the
 * guide cannot drift from the code: TypeScript blocks are type-checked and then run as scripts
 * that must exit by themselves; shell and crontab blocks run with their placeholders (hosts,
 * the user's own scripts) replaced by the test's; the CLI synopsis is checked against `--help`.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transform } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverOrSkip } from './support/reachable.js';

const root = fileURLToPath(new URL('../', import.meta.url));
const cli = join(root, 'dist/cli/main.js');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

interface Block {
  lang: string;
  code: string;
  line: number;
}

function blocks(markdown: string): Block[] {
  const found: Block[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^( *)```(\S*)\s*$/.exec(lines[i]!);
    if (open === null) continue;
    const start = i;
    const indent = open[1]!;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i] !== `${indent}\`\`\``; i++) {
      body.push(lines[i]!.slice(indent.length));
    }
    found.push({ lang: open[2]!, code: `${body.join('\n')}\n`, line: start + 1 });
  }
  return found;
}

const all = blocks(readme);
const typescript = all.filter((b) => b.lang === 'ts');
const shell = all.filter((b) => b.lang === 'sh');

/** The user's own things the README names, and what stands for them here. */
const placeholders: [RegExp, string][] = [
  [/\bnpx cachelock\b/g, `node ${cli}`],
  [/redis:\/\/cache:6379/g, 'redis://127.0.0.1:6379'],
  [/\.\/backup\.sh|\/usr\/local\/bin\/backup/g, 'true'],
  // A key of this run's own: `--hold-at-least` keeps a key for a while after its command ends.
  [/ (run|status|release) backup\b/g, ` $1 readme-backup-${process.pid}-${Date.now()}`],
  // `npm run demo` is `npm run build` and then the demo; the test command runs the build.
  [/^npm ci && npm run demo/m, 'bash examples/demo.sh'],
  // The test command itself is what runs this file.
  [/^npm test\b.*$/m, ': npm test'],
];

function substitute(code: string): string {
  return placeholders.reduce((text, [pattern, value]) => text.replace(pattern, value), code);
}

// Inside the package folder, so `import 'cachelock'` resolves to the package itself (dist).
const work = join(root, '.tmp', `readme-${process.pid}`);

/** This process's environment without what `npm test` adds (npm_config_local_prefix, ...), which
 * would point a child's npm at this package instead of the folder it runs in. */
function outsideNpm(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.toLowerCase().startsWith('npm_')),
  );
}

function run(
  file: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; outsideNpm?: boolean } = {},
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        cwd: options.cwd ?? work,
        env: { ...(options.outsideNpm ? outsideNpm() : process.env), ...options.env },
        timeout: options.timeoutMs ?? 20_000,
        killSignal: 'SIGKILL',
      },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
        resolve({ code, stdout, stderr, ms: performance.now() - started });
      },
    );
  });
}

describe('README examples', () => {
  let redis = false;
  let postgres = false;
  const state = mkdtempSync(join(tmpdir(), 'cachelock-readme-'));

  beforeAll(async () => {
    if (!existsSync(cli)) throw new Error('dist/ is missing: run `npm run build` first');
    redis = await serverOrSkip('Redis (README examples)', 6379);
    postgres = await serverOrSkip('PostgreSQL (README examples)', 5432);
    mkdirSync(work, { recursive: true });
  });
  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  });

  it('has the examples this test expects', () => {
    expect(typescript.length).toBeGreaterThanOrEqual(6);
    expect(shell.length).toBeGreaterThanOrEqual(3);
    expect(readme.trimEnd().split('\n').length).toBeLessThanOrEqual(350);
  });

  it("is the user's guide, in the order a user needs it, and points to the rest", () => {
    const headings = [...readme.matchAll(/^##+ (.+)$/gm)].map((match) => match[1]);
    const guide = [
      'Install',
      'Quick starts',
      'Choosing a backend',
      'The API in brief',
      'Guarantees and their limits',
      'The command line',
      'Compared with the alternatives',
    ];
    expect(headings.filter((heading) => guide.includes(heading!))).toEqual(guide);
    for (const api of ['Lock', 'Several keys, permits, readers and writers', 'once', 'Errors']) {
      expect(headings).toContain(api);
    }
    // Internals, benchmarks and development live in files of their own, which exist.
    const links = [...readme.matchAll(/\]\(([^)#:]+\.md)\)/g)].map((match) => match[1]!);
    for (const file of ['BENCHMARKS.md', 'CONTRIBUTING.md', 'docs/backends.md']) {
      expect(links).toContain(file);
    }
    for (const link of links) expect(existsSync(join(root, link)), link).toBe(true);
    // Each example that uses `await using` says what it needs.
    for (const block of typescript.filter((b) => b.code.includes('await using'))) {
      expect(block.code, `README.md:${block.line}`).toMatch(/TypeScript 5\.2\+ or Node\.js 24/);
    }
  });

  it('type-checks every TypeScript example', { timeout: 120_000 }, async () => {
    const dir = join(work, 'typecheck');
    mkdirSync(dir, { recursive: true });
    const files = typescript.map((block, i) => {
      const name = `line${block.line}.ts`;
      // Each block is a module of its own, as a user's script would be.
      writeFileSync(join(dir, name), `${block.code}\nexport {};\n`);
      return { name, i };
    });
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          lib: ['es2022', 'esnext.disposable'],
          types: ['node'],
          typeRoots: [join(root, 'node_modules/@types')],
          experimentalDecorators: true,
          emitDecoratorMetadata: true,
          noEmit: true,
          skipLibCheck: true,
        },
        files: files.map((f) => f.name),
      }),
    );
    const tsc = join(root, 'node_modules/typescript/bin/tsc');
    const result = await run(process.execPath, [tsc, '-p', dir], { cwd: dir, timeoutMs: 110_000 });
    expect(result.stdout + result.stderr).toBe('');
    expect(result.code).toBe(0);
  });

  for (const block of typescript) {
    it(`runs the example at README.md:${block.line} and exits by itself`, async (ctx) => {
      if (block.code.includes('redis://') && !redis) ctx.skip();
      if (block.code.includes('postgres://') && !postgres) ctx.skip();
      const decorators = /^\s*@[A-Z]\w*\(/m.test(block.code);
      const { code } = await transform(block.code, {
        loader: 'ts',
        format: 'esm',
        target: 'node20',
        tsconfigRaw: decorators ? { compilerOptions: { experimentalDecorators: true } } : {},
      });
      const file = join(work, `line${block.line}.mjs`);
      writeFileSync(file, code);
      const result = await run(process.execPath, [file], {
        env: { CACHELOCK_URL: '', CACHELOCK_DB: join(state, 'locks.sqlite') },
      });
      expect(result.stderr.replace(/.*ExperimentalWarning.*\n?|.*--trace-warnings.*\n?/g, '')).toBe(
        '',
      );
      expect(result.code).toBe(0);
    });
  }

  for (const block of shell) {
    it(`runs the shell example at README.md:${block.line}`, { timeout: 180_000 }, async (ctx) => {
      if (block.code.includes('npm pack')) {
        const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
        expect(block.code).toContain(`cachelock-${version}.tgz`);
        // In a fresh folder: the clone is of this repository's last commit, and its `npm ci`
        // borrows this checkout's node_modules (CI itself starts with `npm ci` on a fresh clone);
        // the tarball installs offline, and the client from this checkout's node_modules (no
        // network).
        const user = mkdtempSync(join(tmpdir(), 'cachelock-install-'));
        try {
          writeFileSync(join(user, 'package.json'), '{ "private": true }\n');
          const script = block.code
            .replace('<repository-url>', `--quiet ${root}`)
            .replace('npm ci &&', `ln -s ${join(root, 'node_modules')} node_modules &&`)
            .replace('npm pack)', 'npm pack --silent >/dev/null)')
            .replace(/npm install (\w+)/, `npm install ${join(root, 'node_modules')}/$1`)
            .replaceAll('npm install ', 'npm install --offline --no-audit --no-fund --silent ');
          const installed = await run('bash', ['-euo', 'pipefail', '-c', script], {
            cwd: user,
            timeoutMs: 170_000,
            outsideNpm: true,
          });
          expect(installed.stderr).not.toMatch(/npm error/);
          expect(installed).toMatchObject({ code: 0 });
          const loaded = await run(
            'node',
            ['-e', "require('cachelock'); import('cachelock/redis').then(() => console.log('ok'))"],
            { cwd: user, outsideNpm: true },
          );
          expect(loaded.stdout.trim()).toBe('ok');
        } finally {
          rmSync(user, { recursive: true, force: true });
        }
        return;
      }
      if (block.code.includes('redis://') && !redis) ctx.skip();
      const result = await run('bash', ['-euo', 'pipefail', '-c', substitute(block.code)], {
        cwd: root,
        env: { CACHELOCK_URL: '', CACHELOCK_DB: join(state, 'cli.sqlite') },
        timeoutMs: 55_000,
      });
      expect(result.stderr).not.toMatch(/Error|error:/);
      expect(result.code).toBe(0);
    });
  }

  it('runs the crontab line', async (ctx) => {
    const crontab = all.filter((b) => b.lang === 'crontab');
    expect(crontab).toHaveLength(1);
    if (!redis) ctx.skip();
    const command = crontab[0]!.code.trim().split(/\s+/).slice(5).join(' ');
    const result = await run(
      'bash',
      ['-c', substitute(command).replace(/^cachelock /, `node ${cli} `)],
      {
        cwd: root,
      },
    );
    expect(result.code).toBe(0);
  });

  it('names only options the CLI accepts in its synopsis', () => {
    const synopsis = all.find((b) => b.lang === '' && b.code.includes('cachelock run <key>'));
    expect(synopsis).toBeDefined();
    const help = execFileSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
    for (const option of synopsis!.code.match(/--[a-z-]+/g) ?? []) expect(help).toContain(option);
  });
});
