import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { Bells } from '../../src/local/bells.js';
import { deadSocket } from '../support/dead-socket.js';

describe.runIf(process.platform === 'linux')('bells between the processes of one machine', () => {
  it('a bell that opens removes sockets left dead, under their name or still under -new', async () => {
    const shared = `test-${randomBytes(6).toString('hex')}`;
    const folder = join(tmpdir(), `cachelock-${process.getuid?.() ?? 'user'}`, shared);
    mkdirSync(folder, { recursive: true, mode: 0o700 });
    const dead = join(folder, 'dead.s');
    // Killed between listening and taking its name: long ago, and a moment ago.
    const oldNew = join(folder, 'old.s-new');
    const freshNew = join(folder, 'fresh.s-new');
    for (const path of [dead, oldNew, freshNew]) await deadSocket(path);
    const longAgo = new Date(Date.now() - 5 * 60_000);
    utimesSync(oldNew, longAgo, longAgo);

    const bells = new Bells(shared, () => {});
    bells.open();
    try {
      await vi.waitFor(() => expect(bells.bell).toBeDefined());
      await vi.waitFor(() => {
        expect(existsSync(dead)).toBe(false);
        expect(existsSync(oldNew)).toBe(false);
      });
      // One that may still be on its way to its name is left alone.
      expect(existsSync(freshNew)).toBe(true);
    } finally {
      bells.close();
      rmSync(folder, { recursive: true, force: true });
    }
  });
});
