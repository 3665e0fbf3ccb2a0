import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  cachelock,
  killAll,
  type Running,
  read,
  sq,
  start,
  tempDir,
  uniqueKey,
  until,
  untilFile,
} from './bin.js';

export interface CacheUnderTest {
  name: string;
  /** Arguments that choose the cache (empty for the default). */
  args: string[];
  /** Environment for each run (CACHELOCK_DB for the default). */
  env: NodeJS.ProcessEnv;
}

/**
 * The behaviour of `cachelock run`, `status` and `release --force` on one cache, run through
 * the built bin in child processes. Every test uses its own keys and folder.
 */
export function cliSuite(cache: CacheUnderTest): void {
  describe(`cachelock CLI on ${cache.name}`, () => {
    const running: Running[] = [];
    let dir: string;

    beforeAll(assertBuilt);
    afterEach(async () => {
      // A failed test must not leave holders behind.
      for (const proc of running.splice(0)) {
        killAll(proc);
        await proc.done.catch(() => undefined);
      }
    });

    const fresh = () => (dir = tempDir());
    const path = (name: string) => join(dir, name);
    const run = (key: string, options: string[], command: string) =>
      cachelock(['run', key, ...cache.args, ...options, '--', 'sh', '-c', command], cache.env);
    const runInBackground = (key: string, options: string[], command: string) => {
      const proc = start(
        ['run', key, ...cache.args, ...options, '--', 'sh', '-c', command],
        cache.env,
      );
      running.push(proc);
      return proc;
    };
    const other = (...args: string[]) => cachelock([...args, ...cache.args], cache.env);
    /** A command that says it started, then holds the lock until the test creates `go`. */
    const holding = (name = 'holder') =>
      // Written aside and renamed, so the test never reads it before the fence is in it.
      `echo "$CACHELOCK_FENCE" > ${sq(path(`${name}.tmp`))}; ` +
      `mv ${sq(path(`${name}.tmp`))} ${sq(path(`${name}.started`))}; ` +
      `echo ${name}-start >> ${sq(path('log'))}; ` +
      `while [ ! -f ${sq(path('go'))} ]; do sleep 0.02; done; ` +
      `echo ${name}-end >> ${sq(path('log'))}`;
    const go = () => writeFileSync(path('go'), '');

    it('runs the command with CACHELOCK_KEY and CACHELOCK_FENCE and exits with its status', async () => {
      fresh();
      const key = uniqueKey('status');
      const command = `echo "$CACHELOCK_KEY" > ${sq(path('key'))}; echo "$CACHELOCK_FENCE" >> ${sq(path('fences'))}; exit 7`;
      const first = await run(key, [], command);
      expect(first.code).toBe(7);
      expect(first.stderr).toBe('');
      expect(read(path('key')).trim()).toBe(key);
      const second = await run(key, [], command);
      expect(second.code).toBe(7);
      const fences = read(path('fences')).trim().split('\n');
      expect(fences).toHaveLength(2);
      // Every backend here has fencing tokens; they grow with each acquisition.
      expect(fences[0]).toMatch(/^\d+$/);
      expect(BigInt(fences[1]!)).toBeGreaterThan(BigInt(fences[0]!));
    });

    it('exits 128+N when the command is killed by signal N', async () => {
      fresh();
      const key = uniqueKey('signal');
      expect((await run(key, [], 'kill -TERM $$')).code).toBe(143);
      expect((await run(key, [], 'kill -KILL $$')).code).toBe(137);
      expect((await run(key, [], 'exit 0')).code).toBe(0);
    });

    it('refuses a held lock with the conflict code, without running the command', async () => {
      fresh();
      const key = uniqueKey('conflict');
      const holder = runInBackground(key, [], holding());
      await untilFile(path('holder.started'), holder);
      const marker = path('marker');

      const refused = await run(key, [], `touch ${sq(marker)}`);
      expect(refused.code).toBe(75);
      expect(refused.stderr).toContain(`pid ${holder.child.pid}`);
      expect(refused.stderr).toContain('not running');
      // The conflict message (the core's LockedError) and status print durations alike.
      const oneStyle = /held by pid \d+ on \S+ for (\d+\.\d|\d+)s more/;
      expect(refused.stderr).toMatch(oneStyle);
      expect(refused.stderr).not.toMatch(/\d ms\b/);
      const status = await other('status', key);
      expect(status.stdout).toMatch(oneStyle);

      const custom = await run(
        key,
        ['--conflict-exit-code', '3', '--quiet'],
        `touch ${sq(marker)}`,
      );
      expect(custom.code).toBe(3);
      expect(custom.stderr).toBe('');

      const timedOut = await run(key, ['--wait', '300ms'], `touch ${sq(marker)}`);
      expect(timedOut.code).toBe(75);
      expect(existsSync(marker)).toBe(false);

      go();
      expect((await holder.done).code).toBe(0);
    });

    it('with --wait, runs the command right after the holder ends, saying who holds it meanwhile', async () => {
      fresh();
      const key = uniqueKey('wait');
      const holder = runInBackground(key, [], holding());
      await untilFile(path('holder.started'), holder);
      const waiter = runInBackground(key, ['--wait', 'forever'], holding('waiter'));
      // stderr is a pipe here, so the waiting line is a plain line.
      await until('the waiting line', () => waiter.stderr().includes('waiting for'));
      expect(waiter.stderr()).toContain(`held by pid ${holder.child.pid}`);
      expect(existsSync(path('waiter.started'))).toBe(false);
      go();
      expect((await holder.done).code).toBe(0);
      expect((await waiter.done).code).toBe(0);
      expect(read(path('log')).trim().split('\n')).toEqual([
        'holder-start',
        'holder-end',
        'waiter-start',
        'waiter-end',
      ]);
      expect(BigInt(read(path('waiter.started')).trim())).toBeGreaterThan(
        BigInt(read(path('holder.started')).trim()),
      );
    });

    it('SIGINT while waiting ends the wait with 130 and never runs the command', async () => {
      fresh();
      const key = uniqueKey('interrupt');
      const holder = runInBackground(key, [], holding());
      await untilFile(path('holder.started'), holder);
      const marker = path('marker');
      const waiter = runInBackground(key, ['--wait', 'forever'], `touch ${sq(marker)}`);
      await until('the waiting line', () => waiter.stderr().includes('waiting for'));
      waiter.child.kill('SIGINT');
      const result = await waiter.done;
      expect(result.code).toBe(130);
      expect(result.stderr).toContain('SIGINT while waiting');
      go();
      expect((await holder.done).code).toBe(0);
      expect(existsSync(marker)).toBe(false);
    });

    it.each(['SIGTERM', 'SIGINT', 'SIGHUP'] as const)(
      'passes %s sent to cachelock on to the command',
      async (signal) => {
        fresh();
        const key = uniqueKey('forward');
        const caught = path('caught');
        const ready = path('ready');
        const name = signal.slice(3);
        const command = runInBackground(
          key,
          [],
          `trap 'echo ${name} > ${sq(caught)}; exit 5' ${name}; touch ${sq(ready)}; while :; do sleep 0.02; done`,
        );
        await untilFile(ready, command);
        command.child.kill(signal);
        const result = await command.done;
        expect(result.stderr).toBe('');
        expect(read(caught).trim()).toBe(name);
        expect(result.code).toBe(5);
        // The lock was released: the key is free again.
        const after = await other('status', key);
        expect(after.stderr).toBe('');
        expect(after.stdout).toContain('is free');
      },
    );

    it('status and release --force against a held lock; the holder loses its lease and stops', async () => {
      fresh();
      const key = uniqueKey('force');
      const stopped = path('stopped');
      const ready = path('ready');
      const holder = runInBackground(
        key,
        ['--ttl', '1s'],
        // Written aside and renamed, so the test never reads the file before its fence is in it.
        `trap 'echo stopped > ${sq(stopped)}; exit 0' TERM; echo "$CACHELOCK_FENCE" > ${sq(`${ready}.tmp`)}; mv ${sq(`${ready}.tmp`)} ${sq(ready)}; while :; do sleep 0.02; done`,
      );
      await untilFile(ready, holder);
      const fence = read(ready).trim();

      const text = await other('status', key);
      expect(text.code).toBe(0);
      expect(text.stdout).toContain(`is held by pid ${holder.child.pid}`);
      expect(text.stdout).toContain(`fence ${fence}`);

      const json = await other('status', key, '--json');
      expect(json.code).toBe(0);
      const held = JSON.parse(json.stdout);
      expect(held).toMatchObject({ key, held: true, pid: holder.child.pid, fence });
      expect(held.ttlMs).toBeGreaterThan(0);
      expect(held.ttlMs).toBeLessThanOrEqual(1_000);

      const released = await other('release', key, '--force');
      expect(released.code).toBe(0);
      expect(released.stdout).toContain(`released ${JSON.stringify(key)}`);
      expect(released.stdout).toContain(`pid ${holder.child.pid}`);

      const result = await holder.done;
      expect(result.code).toBe(70);
      expect(result.stderr).toContain('was lost');
      expect(read(stopped).trim()).toBe('stopped');

      const free = await other('status', key, '--json');
      expect(JSON.parse(free.stdout)).toEqual({ key, held: false });
      const again = await other('release', key, '--force');
      expect(again.code).toBe(0);
      expect(again.stdout).toContain('was not held');
    });

    it('release --force from another process stops the command within about a second, exit 70', async () => {
      fresh();
      const key = uniqueKey('forced');
      const ready = path('ready');
      // The default ttl of 30s: the next extension is 10s away, so the watchdog cannot be what
      // notices. The command traps nothing.
      const holder = runInBackground(key, [], `touch ${sq(ready)}; exec sleep 30`);
      await untilFile(ready, holder);
      expect((await other('release', key, '--force')).code).toBe(0);
      const released = performance.now();
      const result = await holder.done;
      const stoppedAfterMs = performance.now() - released;
      expect(result.code).toBe(70);
      expect(result.stderr).toContain('was lost');
      expect(result.stderr).toContain('stopping');
      expect(stoppedAfterMs).toBeLessThan(1_500);
    });

    it.runIf(process.platform === 'linux')(
      'a command that ends by itself before the forced release is noticed exits with its own status',
      async () => {
        fresh();
        const key = uniqueKey('ended');
        const ready = path('ready');
        const holder = runInBackground(
          key,
          [],
          `echo $$ > ${sq(`${ready}.tmp`)}; mv ${sq(`${ready}.tmp`)} ${sq(ready)}; ` +
            `while [ ! -f ${sq(path('go'))} ]; do sleep 0.02; done; exit 3`,
        );
        await untilFile(ready, holder);
        const commandPid = Number(read(ready).trim());
        // cachelock is held still, so the command surely ends before cachelock can look.
        holder.child.kill('SIGSTOP');
        try {
          expect((await other('release', key, '--force')).code).toBe(0);
          go();
          await until('the command to end', () => ended(commandPid));
        } finally {
          holder.child.kill('SIGCONT');
        }
        const result = await holder.done;
        expect(result.code).toBe(3);
        expect(result.stderr).toContain('lost');
        expect(result.stderr).not.toContain('stopping');
      },
    );

    it('a command that ignores SIGTERM after a lost lease gets SIGKILL after --kill-after', async () => {
      fresh();
      const key = uniqueKey('kill');
      const ready = path('ready');
      const holder = runInBackground(
        key,
        ['--ttl', '1s', '--kill-after', '300ms', '--lost-signal', 'HUP'],
        `trap 'echo HUP >> ${sq(path('got'))}' HUP; trap '' TERM; touch ${sq(ready)}; while :; do sleep 0.02; done`,
      );
      await untilFile(ready, holder);
      expect((await other('release', key, '--force')).code).toBe(0);
      const result = await holder.done;
      expect(result.code).toBe(70);
      expect(result.stderr).toContain('SIGKILL');
      expect(read(path('got')).trim()).toBe('HUP');
    });

    it('--permits 2 runs two commands at once and refuses a third with the conflict code', async () => {
      fresh();
      const key = uniqueKey('permits');
      const first = runInBackground(key, ['--permits', '2'], holding('first'));
      const second = runInBackground(key, ['--permits', '2'], holding('second'));
      await untilFile(path('first.started'), first);
      await untilFile(path('second.started'), second);
      // Each permit has its own fence.
      const fences = [path('first.started'), path('second.started')].map((f) => read(f).trim());
      expect(new Set(fences).size).toBe(2);

      const marker = path('marker');
      const refused = await run(key, ['--permits', '2'], `touch ${sq(marker)}`);
      expect(refused.code).toBe(75);
      expect(refused.stderr).toContain('not running');
      expect(existsSync(marker)).toBe(false);
      // A plain lock of the same name is another lock.
      expect((await run(key, [], 'true')).code).toBe(0);

      const status = await other('status', key, '--permits', '2');
      expect(status.code).toBe(0);
      expect(status.stdout).toContain(`"${key}": 2 of 2 permits held, 0 free`);
      expect(status.stdout).toContain(`pid ${first.child.pid}`);
      expect(status.stdout).toContain(`pid ${second.child.pid}`);
      const json = JSON.parse((await other('status', key, '--permits', '3', '--json')).stdout);
      expect(json).toMatchObject({ key, permits: 3, free: 1 });
      expect(json.holders.map((h: { pid: number }) => h.pid).sort()).toEqual(
        [first.child.pid, second.child.pid].sort(),
      );
      // The same key without --permits is the plain lock, free here.
      expect((await other('status', key)).stdout).toContain('is free');

      go();
      expect((await first.done).code).toBe(0);
      expect((await second.done).code).toBe(0);
      expect((await other('status', key, '--permits', '2')).stdout).toContain(
        '0 of 2 permits held, 2 free',
      );
      expect((await run(key, ['--permits', '2'], `touch ${sq(marker)}`)).code).toBe(0);
      expect(existsSync(marker)).toBe(true);
    });

    it('--permits 1 --wait: the waiter says who holds the permit and runs when it is back', async () => {
      fresh();
      const key = uniqueKey('permitwait');
      const holder = runInBackground(key, ['--permits', '1'], holding());
      await untilFile(path('holder.started'), holder);
      const waiter = runInBackground(
        key,
        ['--permits', '1', '--wait', 'forever'],
        holding('waiter'),
      );
      await until('the waiting line', () => waiter.stderr().includes('waiting for'));
      expect(waiter.stderr()).toContain(`its permit held by pid ${holder.child.pid}`);
      expect(existsSync(path('waiter.started'))).toBe(false);
      go();
      expect((await holder.done).code).toBe(0);
      expect((await waiter.done).code).toBe(0);
      expect(read(path('log')).trim().split('\n')).toEqual([
        'holder-start',
        'holder-end',
        'waiter-start',
        'waiter-end',
      ]);
    });

    it('--hold-at-least keeps the key after a quick command', async () => {
      fresh();
      const key = uniqueKey('hold');
      expect((await run(key, ['--hold-at-least', '1m'], 'true')).code).toBe(0);
      const marker = path('marker');
      const again = await run(key, [], `touch ${sq(marker)}`);
      expect(again.code).toBe(75);
      expect(existsSync(marker)).toBe(false);
      expect((await other('release', key, '--force')).code).toBe(0);
      expect((await run(key, [], `touch ${sq(marker)}`)).code).toBe(0);
      expect(existsSync(marker)).toBe(true);
    });
  });
}

/** Whether process `pid` has ended: gone, or a zombie its parent has not reaped yet. */
function ended(pid: number): boolean {
  try {
    // The state follows the parenthesised name: `123 (sh) Z ...`.
    return /\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}
