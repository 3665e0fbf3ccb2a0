import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { binaryOrSkip } from '../support/reachable.js';
import {
  assertBuilt,
  BIN,
  cachelock,
  killAll,
  sq,
  start,
  tempDir,
  uniqueKey,
  until,
  untilFile,
} from './bin.js';
import { cliSuite } from './suite.js';

const CLEAR_LINE = '\r\x1b[2K';

// The default cache: the embedded SQLite file, here in a folder of its own.
cliSuite({
  name: 'the default SQLite file',
  args: [],
  env: { CACHELOCK_DB: join(tempDir(), 'locks.sqlite'), CACHELOCK_URL: '' },
});

// util-linux `script` gives the waiter a pseudo-terminal as stdout and stderr.
const hasScript = process.platform === 'linux' && (await binaryOrSkip('terminal', 'script'));

describe('the waiting line on a terminal', () => {
  it.runIf(hasScript)('is rewritten in place and cleared before the command runs', async () => {
    assertBuilt();
    const dir = tempDir();
    const env = { CACHELOCK_DB: join(dir, 'locks.sqlite'), CACHELOCK_URL: '' };
    const key = uniqueKey('tty');
    const ready = join(dir, 'ready');
    const go = join(dir, 'go');
    const holder = start(
      [
        'run',
        key,
        '--',
        'sh',
        '-c',
        `touch ${sq(ready)}; while [ ! -f ${sq(go)} ]; do sleep 0.02; done`,
      ],
      env,
    );
    await untilFile(ready);
    const waiter = spawn(
      'script',
      ['-qec', `${sq(process.execPath)} ${sq(BIN)} run ${key} --wait 1m -- echo ran`, '/dev/null'],
      { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let screen = '';
    waiter.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      screen += chunk;
    });
    const exited = new Promise<number | null>((resolve) => waiter.once('close', resolve));
    const redraw = `${CLEAR_LINE}cachelock: waiting for`;
    await until('two redraws of the waiting line', () => screen.split(redraw).length > 2);
    writeFileSync(go, '');
    expect(await exited).toBe(0);
    expect((await holder.done).code).toBe(0);
    expect(screen).toContain(`held by pid ${holder.child.pid}`);
    // One line, rewritten: no line break until it is cleared and the command speaks.
    const lastDraw = screen.lastIndexOf(redraw);
    expect(screen.slice(0, lastDraw)).not.toContain('\n');
    const rest = screen.slice(lastDraw + redraw.length);
    const cleared = rest.indexOf(CLEAR_LINE);
    expect(cleared).toBeGreaterThan(0);
    expect(rest.slice(0, cleared)).not.toContain('\n');
    expect(rest.slice(cleared + CLEAR_LINE.length)).toMatch(/^ran\r?\n/);
  });
});

describe('the SQLite file', () => {
  const marker = () => join(tempDir(), 'marker');
  /** `run` on the default file at CACHELOCK_DB or under XDG_STATE_HOME, which must not run. */
  const refusedRun = async (env: NodeJS.ProcessEnv, why: string | RegExp) => {
    const ran = marker();
    const result = await cachelock(['run', uniqueKey('path'), '--', 'touch', ran], {
      CACHELOCK_URL: '',
      CACHELOCK_DB: '',
      ...env,
    });
    expect(result.code).toBe(69);
    expect(result.stderr).toMatch(why);
    expect(existsSync(ran)).toBe(false);
  };
  const folder = (mode: number) => {
    const path = join(tempDir(), 'state');
    mkdirSync(path);
    chmodSync(path, mode);
    return path;
  };

  it('by default is refused in a folder group or others can write', async () => {
    const loose = folder(0o775);
    await refusedRun(
      { CACHELOCK_DB: join(loose, 'locks.sqlite') },
      `refusing ${loose}: group or others can write to it (mode 0775)`,
    );
    const state = tempDir();
    const made = join(state, 'cachelock');
    mkdirSync(made);
    chmodSync(made, 0o770);
    await refusedRun({ XDG_STATE_HOME: state }, `refusing ${made}: group or others can write`);
    chmodSync(made, 0o700);
    expect(
      (
        await cachelock(['status', 'k'], {
          CACHELOCK_URL: '',
          CACHELOCK_DB: '',
          XDG_STATE_HOME: state,
        })
      ).code,
    ).toBe(0);
  });

  it('by default is refused when others can read it, or when it is a symbolic link', async () => {
    const dir = folder(0o700);
    const path = join(dir, 'locks.sqlite');
    writeFileSync(path, '');
    chmodSync(path, 0o644);
    await refusedRun(
      { CACHELOCK_DB: path },
      `refusing ${path}: group or others can read or write it (mode 0644); chmod 600 it`,
    );
    chmodSync(path, 0o600);
    const link = join(folder(0o700), 'locks.sqlite');
    symlinkSync(path, link);
    await refusedRun({ CACHELOCK_DB: link }, `refusing ${link}: it is a symbolic link`);
  });

  it('by default is made with folders 0700 and a file 0600', async () => {
    const state = join(tempDir(), 'state');
    const result = await cachelock(['run', uniqueKey('made'), '--', 'true'], {
      CACHELOCK_URL: '',
      CACHELOCK_DB: '',
      XDG_STATE_HOME: state,
    });
    expect(result.code).toBe(0);
    expect(statSync(state).mode & 0o777).toBe(0o700);
    expect(statSync(join(state, 'cachelock')).mode & 0o777).toBe(0o700);
    expect(statSync(join(state, 'cachelock', 'locks.sqlite')).mode & 0o777).toBe(0o600);
  });

  it('given with --cache may be shared with the group on purpose', async () => {
    const shared = folder(0o2770);
    const result = await cachelock(
      [
        'run',
        uniqueKey('shared'),
        '--cache',
        `sqlite:${join(shared, 'locks.sqlite')}`,
        '--',
        'true',
      ],
      { CACHELOCK_URL: '' },
    );
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
  });

  it('under /proc ends quickly with an error naming the path', async () => {
    const started = performance.now();
    const proc = start(['run', uniqueKey('proc'), '--cache', 'sqlite:/proc/nope/x', '--', 'true']);
    // A guard for the old behaviour, which spun forever.
    const guard = setTimeout(() => killAll(proc), 10_000);
    const result = await proc.done.finally(() => clearTimeout(guard));
    expect(result.signal).toBeNull();
    expect(result.code).toBe(69);
    expect(result.stderr).toContain('cannot create the folder /proc/nope of /proc/nope/x');
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});
