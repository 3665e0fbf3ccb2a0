import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runWorkers } from './exclusion.js';

const workerPath = fileURLToPath(new URL('./fairness-worker.mjs', import.meta.url));

export interface FairnessResult {
  /** Sections each process ran. */
  sections: number[];
  /** The longest wait of any acquisition, ms. */
  worstWaitMs: number;
  /** Acquisitions that waited longer than `holdMs` times this many processes, times 10. */
  longWaits: number;
}

/**
 * `processes` OS processes take one key on `cache` in a loop for `durationMs`, each holding it
 * `holdMs` and pausing 0-2 ms between sections; served first come, first served, nobody waits
 * for more than the others' turns.
 */
export async function runFairness(options: {
  cache: string;
  processes?: number;
  durationMs?: number;
  holdMs?: number;
}): Promise<FairnessResult> {
  const processes = options.processes ?? 5;
  const holdMs = options.holdMs ?? 10;
  const durationMs = options.durationMs ?? 4_000;
  const key = `fairness:${randomBytes(6).toString('base64url')}`;
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-fairness-'));
  try {
    await runWorkers(
      processes,
      durationMs + 60_000,
      (index) => ({ cache: options.cache, key, durationMs, holdMs, dir, index }),
      workerPath,
    );
    const waits = readdirSync(dir)
      .filter((name) => name.startsWith('waits-'))
      .map((name) => JSON.parse(readFileSync(join(dir, name), 'utf8')) as number[]);
    const all = waits.flat();
    return {
      sections: waits.map((one) => one.length),
      worstWaitMs: Math.max(...all),
      longWaits: all.filter((ms) => ms > holdMs * processes * 10).length,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
