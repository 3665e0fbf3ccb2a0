import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeHasSqlite } from '../support/node-sqlite.js';
import { assertBuilt, cachelock } from './bin.js';

const packageRoot = fileURLToPath(new URL('../../', import.meta.url));

// What `npm i cachelock` leaves in a project: the package and none of its optional peers.
describe('the CLI installed without better-sqlite3', () => {
  let project: string;
  let bin: string;
  let marker: string;

  beforeAll(() => {
    assertBuilt();
    project = mkdtempSync(join(tmpdir(), 'cachelock-no-driver-'));
    const installed = join(project, 'node_modules', 'cachelock');
    cpSync(join(packageRoot, 'dist'), join(installed, 'dist'), { recursive: true });
    cpSync(join(packageRoot, 'package.json'), join(installed, 'package.json'));
    bin = join(installed, 'dist', 'cli', 'main.js');
    marker = join(project, 'ran');
  });

  afterAll(() => rmSync(project, { recursive: true, force: true }));

  // Node.js 22.13+ has node:sqlite; this flag takes it away, as Node.js 20 is without it.
  const withoutNodeSqlite = nodeHasSqlite()
    ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --no-experimental-sqlite` }
    : {};

  it('exits 69 where Node.js has no node:sqlite, naming both remedies and this Node.js', async () => {
    const result = await cachelock(
      [
        'run',
        'job',
        '--',
        process.execPath,
        '-e',
        `require('fs').writeFileSync(${JSON.stringify(marker)}, '')`,
      ],
      { ...withoutNodeSqlite, CACHELOCK_DB: join(project, 'locks.sqlite'), CACHELOCK_URL: '' },
      bin,
    );
    expect(result.code, result.stderr).toBe(69);
    expect(result.stderr).toContain('node:sqlite (Node.js >= 22.13');
    expect(result.stderr).toContain('npm install better-sqlite3');
    expect(result.stderr).toContain(`this is Node.js ${process.version}`);
    expect(existsSync(marker)).toBe(false);
  });

  it.runIf(nodeHasSqlite())('runs the command on node:sqlite alone', async () => {
    const result = await cachelock(
      [
        'run',
        'job',
        '--',
        process.execPath,
        '-e',
        `require('fs').writeFileSync(${JSON.stringify(marker)}, '')`,
      ],
      { CACHELOCK_DB: join(project, 'locks.sqlite'), CACHELOCK_URL: '' },
      bin,
    );
    expect(result.code, result.stderr).toBe(0);
    expect(existsSync(marker)).toBe(true);
  });
});
