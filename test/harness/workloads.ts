import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runWorkers } from './exclusion.js';

const workerPath = fileURLToPath(new URL('./workload-worker.mjs', import.meta.url));

/** One line of a worker's log. `at` is CLOCK_MONOTONIC nanoseconds. */
export interface WorkloadEvent {
  process: number;
  section: number;
  event: 'enter' | 'leave' | 'violation' | 'audit' | 'transfer';
  at: bigint;
  role?: 'reader' | 'writer';
  total?: number;
  saw?: string[];
}

export interface WorkloadOptions {
  cache: string;
  workload: 'semaphore' | 'rw' | 'transfer';
  processes?: number;
  sectionsPerProcess?: number;
  holdMs?: number;
  /** Semaphore: the permits. */
  permits?: number;
  /** Transfers: how many accounts, each starting at 100. */
  accounts?: number;
  /** A scheme the workers register before use (`redlock`). */
  register?: 'redlock';
  /** Kill the processes and fail after this long: a deadlock fails here. */
  timeoutMs?: number;
}

export interface WorkloadResult {
  events: WorkloadEvent[];
  expectedSections: number;
  /** Transfers: the balances at the end. */
  balances: number[];
  durationMs: number;
}

export async function runWorkload(options: WorkloadOptions): Promise<WorkloadResult> {
  const processes = options.processes ?? 8;
  const sections = options.sectionsPerProcess ?? 6;
  const accounts = options.accounts ?? 10;
  const key = `${options.workload}:${randomBytes(6).toString('base64url')}`;
  const dir = mkdtempSync(join(tmpdir(), `cachelock-${options.workload}-`));
  const started = performance.now();
  try {
    mkdirSync(join(dir, 'inside'));
    for (let account = 0; account < accounts; account++) {
      writeFileSync(join(dir, `account-${account}`), '100');
    }
    await runWorkers(
      processes,
      options.timeoutMs ?? 60_000,
      (index) => ({
        cache: options.cache,
        workload: options.workload,
        key,
        permits: options.permits,
        sections,
        holdMs: options.holdMs ?? 10,
        dir,
        index,
        accounts,
        register: options.register,
      }),
      workerPath,
    );
    const events: WorkloadEvent[] = [];
    for (const file of readdirSync(dir).filter((name) => name.startsWith('events-'))) {
      for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
        if (line === '') continue;
        const raw = JSON.parse(line);
        events.push({ ...raw, at: BigInt(raw.at) });
      }
    }
    events.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
    const balances = Array.from({ length: accounts }, (_, account) =>
      Number(readFileSync(join(dir, `account-${account}`), 'utf8')),
    );
    return {
      events,
      expectedSections: processes * sections,
      balances,
      durationMs: performance.now() - started,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Replay enter/leave in time order (a leave at the same instant first): the most inside at once,
 * and the moments a writer was inside with anyone else.
 */
export function replay(events: readonly WorkloadEvent[]): {
  most: number;
  writerWithOthers: number;
} {
  const ordered = events
    .filter((e) => e.event === 'enter' || e.event === 'leave')
    .sort((a, b) => (a.at === b.at ? (a.event === 'leave' ? -1 : 1) : a.at < b.at ? -1 : 1));
  let inside = 0;
  let writers = 0;
  let most = 0;
  let writerWithOthers = 0;
  for (const e of ordered) {
    const step = e.event === 'enter' ? 1 : -1;
    inside += step;
    if (e.role === 'writer') writers += step;
    most = Math.max(most, inside);
    if (e.event === 'enter' && writers > 0 && inside > 1) writerWithOthers++;
  }
  return { most, writerWithOthers };
}
