import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { binaryOrSkip } from '../support/reachable.js';
import { assertBuilt, BIN, sq, start, tempDir, uniqueKey, until, untilFile } from './bin.js';
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
