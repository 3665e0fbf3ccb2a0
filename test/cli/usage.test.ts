import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { closedPort } from '../support/reachable.js';
import { assertBuilt, BIN, cachelock, sq, tempDir, uniqueKey } from './bin.js';

const manifest = JSON.parse(
  readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
) as { version: string };

beforeAll(assertBuilt);

describe('cachelock --version and --help', () => {
  it('--version prints the package version', async () => {
    const result = await cachelock(['--version'], {}, BIN);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe(manifest.version);
  });

  it('--help documents every option and the exit codes', async () => {
    const result = await cachelock(['--help']);
    expect(result.code).toBe(0);
    for (const option of [
      '--cache',
      '--ttl',
      '--wait',
      '--hold-at-least',
      '--conflict-exit-code',
      '--quiet',
      '--kill-after',
      '--lost-signal',
      '--prefix',
      '--permits',
      '--json',
      '--force',
      'CACHELOCK_URL',
      'CACHELOCK_DB',
      'CACHELOCK_FENCE',
    ]) {
      expect(result.stdout).toContain(option);
    }
    for (const code of ['64', '69', '70', '75', '128+N']) expect(result.stdout).toContain(code);
    expect((await cachelock(['run', '--help'])).stdout).toBe(result.stdout);
  });
});

describe('bad use never runs the command', () => {
  const dir = tempDir();
  const marker = join(dir, 'marker');
  const env = { CACHELOCK_DB: join(dir, 'locks.sqlite'), CACHELOCK_URL: '' };
  const command = ['sh', '-c', `touch ${sq(marker)}`];
  let nowhere: number;

  beforeAll(async () => {
    nowhere = await closedPort();
  });

  const usage: [string, (key: string) => string[], NodeJS.ProcessEnv?][] = [
    ['no subcommand', () => []],
    ['an unknown subcommand', (key) => ['lock', key, '--', ...command]],
    ['no -- before the command', (key) => ['run', key, ...command]],
    ['-- with nothing after it', (key) => ['run', key, '--']],
    ['no key', () => ['run', '--', ...command]],
    ['an unknown option', (key) => ['run', key, '--bogus', '--', ...command]],
    ['an option without its value', (key) => ['run', key, '--ttl']],
    ['a bad duration', (key) => ['run', key, '--ttl', '10 parsecs', '--', ...command]],
    ['a duration without a unit', (key) => ['run', key, '--wait', '10', '--', ...command]],
    ['a zero lease', (key) => ['run', key, '--ttl', '0', '--', ...command]],
    ['a lease too short to keep', (key) => ['run', key, '--ttl', '10ms', '--', ...command]],
    ['a key that begins with - given as <key>', () => ['run', '-x', '--', ...command]],
    ['a bad exit code', (key) => ['run', key, '--conflict-exit-code', '300', '--', ...command]],
    ['an unknown signal', (key) => ['run', key, '--lost-signal', 'NOPE', '--', ...command]],
    ['an unknown URL scheme', (key) => ['run', key, '--cache', 'foo://x', '--', ...command]],
    ['a memory: cache', (key) => ['run', key, '--cache', 'memory:', '--', ...command]],
    ['a cache that is no URL', (key) => ['run', key, '--cache', 'not a url', '--', ...command]],
    [
      'an unknown scheme in CACHELOCK_URL',
      (key) => ['run', key, '--', ...command],
      { CACHELOCK_URL: 'mongodb://127.0.0.1:27017' },
    ],
    ['release without --force', (key) => ['release', key]],
    ['status with a command', (key) => ['status', key, '--', ...command]],
    ['a run option given to status', (key) => ['status', key, '--ttl', '1s']],
    ['--permits 0', (key) => ['run', key, '--permits', '0', '--', ...command]],
    ['--permits that is no integer', (key) => ['run', key, '--permits', '1.5', '--', ...command]],
    ['--permits that is a word', (key) => ['run', key, '--permits', 'two', '--', ...command]],
    ['--permits without its value', (key) => ['run', key, '--permits']],
    ['status --permits 0', (key) => ['status', key, '--permits', '0']],
    ['--permits given to release', (key) => ['release', key, '--force', '--permits', '2']],
  ];

  it.each(['0', '-1', '1.5', 'two', '1e3', ''])(
    '--permits %j exits 64 naming the option and the value',
    async (value) => {
      const result = await cachelock(
        ['run', uniqueKey('usage'), `--permits=${value}`, '--', ...command],
        env,
      );
      expect(result.code).toBe(64);
      expect(result.stderr).toContain(
        `--permits must be an integer >= 1, got ${JSON.stringify(value)}`,
      );
      expect(existsSync(marker)).toBe(false);
    },
  );

  it.each(usage)('%s exits 64 with the usage line', async (_, args, extraEnv) => {
    const result = await cachelock(args(uniqueKey('usage')), { ...env, ...extraEnv });
    expect(result.code).toBe(64);
    expect(result.stderr).toMatch(/^cachelock: .+\nUsage:\n {2}cachelock run <key>/);
    expect(result.stdout).toBe('');
    expect(existsSync(marker)).toBe(false);
  });

  it.each([
    [
      'run',
      (key: string) => ['run', key, '--cache', `redis://127.0.0.1:${nowhere}`, '--', ...command],
    ],
    ['status', (key: string) => ['status', key, '--cache', `redis://127.0.0.1:${nowhere}`]],
    [
      'release',
      (key: string) => ['release', key, '--force', '--cache', `redis://127.0.0.1:${nowhere}`],
    ],
    [
      'run on PostgreSQL',
      (key: string) => [
        'run',
        key,
        '--cache',
        `postgres://postgres@127.0.0.1:${nowhere}/test`,
        '--',
        ...command,
      ],
    ],
  ])('%s on an unreachable cache exits 69', async (_, args) => {
    const result = await cachelock(args(uniqueKey('down')), env);
    expect(result.code).toBe(69);
    expect(result.stderr).toContain(`127.0.0.1:${nowhere}`);
    expect(result.stderr).toContain('unavailable');
    expect(existsSync(marker)).toBe(false);
  });

  it('a SQLite file that cannot be created exits 69', async () => {
    const notAFolder = join(dir, 'file');
    writeFileSync(notAFolder, '');
    const result = await cachelock(['run', uniqueKey('file'), '--', ...command], {
      ...env,
      CACHELOCK_DB: join(notAFolder, 'locks.sqlite'),
    });
    expect(result.code).toBe(69);
    expect(existsSync(marker)).toBe(false);
  });

  it('names --ttl and the value of a lease too short to keep', async () => {
    const result = await cachelock(
      ['run', uniqueKey('short'), '--ttl', '10ms', '--', ...command],
      env,
    );
    expect(result.code).toBe(64);
    expect(result.stderr).toMatch(/^cachelock: --ttl must be at least 1s: .*; got "10ms"\n/);
  });

  it('takes a key that begins with "-" as --key -k, and status finds it after --', async () => {
    const key = `-${uniqueKey('dash')}`;
    const result = await cachelock(
      ['run', '--key', key, '--', 'sh', '-c', 'printf %s "$CACHELOCK_KEY"'],
      env,
    );
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(key);
    const held = await cachelock(
      ['run', `--key=${key}`, '--hold-at-least', '1m', '--', 'true'],
      env,
    );
    expect(held.code).toBe(0);
    const status = await cachelock(['status', '--', key], env);
    expect(status.stdout).toContain(`${JSON.stringify(key)} is held by pid`);
    expect((await cachelock(['release', '--force', '--key', key], env)).code).toBe(0);
    expect((await cachelock(['status', '--', key], env)).stdout).toContain('is free');
  });

  it('a command that does not exist exits 127 and frees the lock', async () => {
    const key = uniqueKey('missing');
    const result = await cachelock(['run', key, '--', join(dir, 'no-such-command')], env);
    expect(result.code).toBe(127);
    expect(result.stderr).toContain('command not found');
    expect((await cachelock(['status', key], env)).stdout).toContain('is free');
  });
});

describe('the default cache', () => {
  const key = uniqueKey('default');
  const status = (env: NodeJS.ProcessEnv) => cachelock(['status', key, '--json'], env);
  const hold = (env: NodeJS.ProcessEnv) =>
    cachelock(['run', key, '--hold-at-least', '1m', '--', 'true'], env);

  it('is $XDG_STATE_HOME/cachelock/locks.sqlite without CACHELOCK_DB', async () => {
    const state = tempDir();
    const env = { CACHELOCK_DB: '', CACHELOCK_URL: '', XDG_STATE_HOME: state };
    expect((await hold(env)).code).toBe(0);
    expect(existsSync(join(state, 'cachelock', 'locks.sqlite'))).toBe(true);
    expect(JSON.parse((await status(env)).stdout).held).toBe(true);
  });

  it('is ~/.local/state/cachelock/locks.sqlite without XDG_STATE_HOME', async () => {
    const home = tempDir();
    const env = { CACHELOCK_DB: '', CACHELOCK_URL: '', XDG_STATE_HOME: '', HOME: home };
    expect((await hold(env)).code).toBe(0);
    expect(existsSync(join(home, '.local', 'state', 'cachelock', 'locks.sqlite'))).toBe(true);
  });

  it('gives way to CACHELOCK_URL, and --cache wins over both', async () => {
    const dir = tempDir();
    const env = {
      CACHELOCK_DB: join(dir, 'db.sqlite'),
      CACHELOCK_URL: `sqlite:${join(dir, 'url.sqlite')}`,
    };
    expect((await hold(env)).code).toBe(0);
    expect(existsSync(join(dir, 'url.sqlite'))).toBe(true);
    expect(existsSync(join(dir, 'db.sqlite'))).toBe(false);
    const flag = await cachelock(
      ['status', key, '--json', '--cache', `sqlite:${join(dir, 'flag.sqlite')}`],
      env,
    );
    expect(JSON.parse(flag.stdout).held).toBe(false);
    expect(JSON.parse((await status(env)).stdout).held).toBe(true);
  });
});
