import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtOrSkip } from '../support/reachable.js';

const run = promisify(execFile);
const packageRoot = fileURLToPath(new URL('../../', import.meta.url));
const built = builtOrSkip('cachelock/nestjs without NestJS', [
  'nestjs/index.js',
  'nestjs/index.cjs',
]);

// An app that installed cachelock (and keyv, which the module's cache support uses) but not
// NestJS: the package as npm lays it out, with no @nestjs anywhere up the tree.
describe.runIf(built)('cachelock/nestjs in a project without NestJS', () => {
  let project: string;

  beforeAll(() => {
    project = mkdtempSync(join(tmpdir(), 'cachelock-no-nest-'));
    const modules = join(project, 'node_modules');
    const installed = join(modules, 'cachelock');
    cpSync(join(packageRoot, 'dist'), join(installed, 'dist'), { recursive: true });
    cpSync(join(packageRoot, 'package.json'), join(installed, 'package.json'));
    symlinkSync(join(packageRoot, 'node_modules', 'keyv'), join(modules, 'keyv'));
    writeFileSync(join(project, 'package.json'), '{"name":"app","private":true}');
  });

  afterAll(() => rmSync(project, { recursive: true, force: true }));

  async function load(code: string, type: 'commonjs' | 'module') {
    const flag = type === 'module' ? '--input-type=module' : '--input-type=commonjs';
    try {
      await run(process.execPath, [flag, '-e', code], {
        cwd: project,
        env: { ...process.env, NODE_PATH: '' },
      });
      return { code: 0, stderr: '' };
    } catch (error) {
      const failed = error as { code: number; stderr: string };
      return { code: failed.code, stderr: failed.stderr };
    }
  }

  const message = 'cachelock/nestjs needs NestJS: npm install @nestjs/core @nestjs/common';

  it('require() names what to install', async () => {
    const result = await load("require('cachelock/nestjs')", 'commonjs');
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(message);
    expect(result.stderr).not.toMatch(/^Error: Cannot find module/m);
  });

  it('import names what to install', async () => {
    const result = await load("await import('cachelock/nestjs')", 'module');
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(message);
  });

  it('the other entry points still load', async () => {
    const result = await load(
      "const { Lock } = require('cachelock'); if (typeof Lock !== 'function') process.exit(3)",
      'commonjs',
    );
    expect(result).toEqual({ code: 0, stderr: '' });
  });
});
