import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { newOwner } from 'cachelock';
import { memcachedStore } from 'cachelock/memcached';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemcachedServer } from '../support/memcached-server.js';
import { binaryOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('memcached', 'memcached');
const run = randomBytes(4).toString('hex');

/** CLOCK_MONOTONIC in seconds: the clock memcached reads for its own (`current_time`). */
const mono = () => Number(process.hrtime.bigint()) / 1e9;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const sleepUntil = (at: number) => sleep(Math.max(0, (at - mono()) * 1000));

/** `stats` over a socket of its own: memcached's clock as `uptime` (whole seconds). */
class Stats {
  private buffer = '';
  private waiting: ((uptime: number) => void) | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      this.buffer += chunk;
      const end = this.buffer.indexOf('END\r\n');
      if (end < 0) return;
      const text = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 5);
      this.waiting?.(Number(/STAT uptime (\d+)/.exec(text)?.[1]));
    });
  }

  static open(port: number): Promise<Stats> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => resolve(new Stats(socket)));
      socket.once('error', reject);
    });
  }

  uptime(): Promise<number> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write('stats\r\n');
    });
  }

  /**
   * Poll until memcached's clock reads other than `since` (by default, what it reads now): when
   * (CLOCK_MONOTONIC s) and what.
   */
  async tick(since?: number): Promise<{ at: number; uptime: number }> {
    const before = since ?? (await this.uptime());
    for (;;) {
      const sentAt = mono();
      const uptime = await this.uptime();
      if (uptime !== before) return { at: sentAt, uptime };
      await sleep(1);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

describe.runIf(installed)("memcached store: memcached's once-a-second clock", () => {
  let server: MemcachedServer;
  let stats: Stats;
  beforeAll(async () => {
    server = await MemcachedServer.start();
    stats = await Stats.open(server.port);
  });
  afterAll(async () => {
    stats?.close();
    if (server?.pid !== undefined) process.kill(server.pid, 'SIGCONT');
    await server?.kill();
  });

  const pause = async (until: number) => {
    process.kill(server.pid!, 'SIGSTOP');
    try {
      await sleepUntil(until);
    } finally {
      process.kill(server.pid!, 'SIGCONT');
    }
  };

  // Memcached reads the monotonic clock once a second, on a timer set a second after the last
  // reading, so each reading comes a little later in its second than the one before (about 3 ms
  // here under load) and, every few minutes, one lands past the next second: its clock goes up by
  // 2. An item whose expiry was counted from the reading before dies then, a second early. Here
  // memcached is held for a moment (as a loaded machine holds it) so that a reading crosses the
  // second while a 1 s lease is young; another owner must still be refused until it runs out.
  it('keeps a lease whole when its clock skips a second', async () => {
    const store = memcachedStore(server.url);
    try {
      let checked = false;
      for (let attempt = 0; attempt < 8 && !checked; attempt++) {
        // Put the reading late in its second, as drift does: hold memcached past a reading.
        const seen = await stats.tick();
        const lateIn = Math.floor(seen.at) + (seen.at % 1 < 0.7 ? 1.8 : 2.8);
        await pause(lateIn);
        const aligned = await stats.tick(seen.uptime);
        const phase = aligned.at % 1;
        if (phase < 0.6 || phase > 0.95) continue;
        // A lease taken 0.5 s before the next reading: memcached counts its expiry from the last.
        await sleepUntil(aligned.at + 0.5);
        const key = `cachelock:mc-clock:${run}:${attempt}`;
        const sentAt = performance.now();
        expect(await store.acquire(key, newOwner(), 1_000)).not.toBeNull();
        // Hold memcached across the next reading, 0.1 s before it to just past the second.
        await sleepUntil(aligned.at + 0.9);
        await pause(Math.floor(aligned.at) + 2.03);
        const skipped = await stats.tick(aligned.uptime);
        if (skipped.uptime !== aligned.uptime + 2) continue; // the timers came too late here
        const taken = await store.acquire(key, newOwner(), 1_000);
        if (performance.now() - sentAt >= 950) continue; // the lease was over anyway
        expect(taken, 'another owner took the key inside the first lease').toBeNull();
        checked = true;
      }
      expect(checked, "could not make memcached's clock skip a second inside a lease").toBe(true);
    } finally {
      await store.close?.();
    }
  }, 60_000);
});
