import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runWorkers } from './exclusion.js';

const workerPath = fileURLToPath(new URL('./semaphore-worker.mjs', import.meta.url));

export interface SemaphoreEvent {
  process: number;
  section: number;
  event: 'enter' | 'leave';
  /** CLOCK_MONOTONIC nanoseconds. */
  at: bigint;
}

export interface SemaphoreResult {
  /** The most sections inside at once, replaying every process's log in time order. */
  most: number;
  /** Sections entered and left. */
  entered: number;
  left: number;
  expectedSections: number;
}

/** Replay the logs in time order: how many were inside at most (a leave at the same instant first). */
export function mostInside(events: readonly SemaphoreEvent[]): number {
  const ordered = [...events].sort((a, b) =>
    a.at === b.at ? (a.event === 'leave' ? -1 : 1) : a.at < b.at ? -1 : 1,
  );
  let inside = 0;
  let most = 0;
  for (const event of ordered) {
    inside += event.event === 'enter' ? 1 : -1;
    most = Math.max(most, inside);
  }
  return most;
}

/** `processes` OS processes share a semaphore of `permits` on `cache`, each logging its sections. */
export async function runSemaphore(options: {
  cache: string;
  permits: number;
  processes?: number;
  sectionsPerProcess?: number;
  holdMs?: number;
  timeoutMs?: number;
}): Promise<SemaphoreResult> {
  const processes = options.processes ?? 8;
  const sections = options.sectionsPerProcess ?? 8;
  const key = `semaphore:${randomBytes(6).toString('base64url')}`;
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-semaphore-'));
  try {
    await runWorkers(
      processes,
      options.timeoutMs ?? 120_000,
      (index) => ({
        cache: options.cache,
        key,
        permits: options.permits,
        sections,
        holdMs: options.holdMs ?? 20,
        dir,
        index,
      }),
      workerPath,
    );
    const events: SemaphoreEvent[] = [];
    for (const file of readdirSync(dir).filter((name) => name.startsWith('events-'))) {
      for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
        if (line === '') continue;
        const raw = JSON.parse(line);
        events.push({ ...raw, at: BigInt(raw.at) });
      }
    }
    return {
      most: mostInside(events),
      entered: events.filter((e) => e.event === 'enter').length,
      left: events.filter((e) => e.event === 'leave').length,
      expectedSections: processes * sections,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
