import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const workerPath = fileURLToPath(new URL('./worker.mjs', import.meta.url));
const packageRoot = fileURLToPath(new URL('../../', import.meta.url));

export interface ExclusionOptions {
  /** The `cache` URL every process passes to `new Lock(key, { cache })`. */
  cache: string;
  /** Child processes. Default 8. */
  processes?: number;
  /** Critical sections each process runs. Default 10. */
  sectionsPerProcess?: number;
  /** How many keys the sections spread over. Default 2. */
  keys?: number;
  /** How long a section sleeps between reading and writing its counter. Default 5 ms. */
  holdMs?: number;
  /** The lease. Default `'10s'`, far longer than a section, so expiry never excuses an overlap. */
  ttl?: string | number;
  /** `'unlocked'` skips the lock: only for proving that the checker catches violations. */
  mode?: 'lock' | 'unlocked';
  /** Kill the processes and fail after this long. Default 120 s. */
  timeoutMs?: number;
}

/** One critical section, as a worker recorded it. Times are CLOCK_MONOTONIC nanoseconds. */
export interface Section {
  process: number;
  section: number;
  key: string;
  enter: bigint;
  exit: bigint;
  fence?: bigint;
  /** Whether `release()` said the lease was still held at the end of the section. */
  released: boolean;
}

export interface Overlap {
  key: string;
  first: Section;
  second: Section;
}

export interface KeyTally {
  key: string;
  sections: number;
  counter: number;
}

export interface ExclusionVerdict {
  /** Pairs of sections of one key that ran at the same time. */
  overlaps: Overlap[];
  /** Keys whose counter is not the number of sections that incremented it. */
  lostUpdates: KeyTally[];
  /** Sections of one key whose fences do not rise in the order the sections ran. */
  fenceInversions: Overlap[];
  /** Sections whose lease was gone by the time they released. */
  lostLeases: Section[];
}

export interface ExclusionResult extends ExclusionVerdict {
  sections: number;
  expectedSections: number;
  perKey: KeyTally[];
  durationMs: number;
}

/** Judge recorded sections and final counters; pure, so it can be tested on made-up data. */
export function checkExclusion(
  sections: Section[],
  counters: Map<string, number>,
): ExclusionVerdict {
  const overlaps: Overlap[] = [];
  const fenceInversions: Overlap[] = [];
  const byKey = new Map<string, Section[]>();
  for (const section of sections) {
    const list = byKey.get(section.key) ?? [];
    list.push(section);
    byKey.set(section.key, list);
  }
  for (const [key, list] of byKey) {
    list.sort((a, b) => (a.enter < b.enter ? -1 : a.enter > b.enter ? 1 : 0));
    // The section that ends last so far: any later entry before its exit overlaps it.
    let latest: Section | undefined;
    for (const [i, section] of list.entries()) {
      if (latest && section.enter <= latest.exit)
        overlaps.push({ key, first: latest, second: section });
      if (!latest || section.exit > latest.exit) latest = section;
      const previous = list[i - 1];
      if (
        previous?.fence !== undefined &&
        section.fence !== undefined &&
        section.fence <= previous.fence
      ) {
        fenceInversions.push({ key, first: previous, second: section });
      }
    }
  }
  const lostUpdates: KeyTally[] = [];
  for (const key of new Set([...byKey.keys(), ...counters.keys()])) {
    const tally = { key, sections: byKey.get(key)?.length ?? 0, counter: counters.get(key) ?? 0 };
    if (tally.counter !== tally.sections) lostUpdates.push(tally);
  }
  return {
    overlaps,
    lostUpdates,
    fenceInversions,
    lostLeases: sections.filter((section) => !section.released),
  };
}

/** Throw an error that says what went wrong, unless the run was a clean exclusion. */
export function assertExclusive(result: ExclusionResult): void {
  const problems: string[] = [];
  if (result.sections !== result.expectedSections) {
    problems.push(`${result.sections} of ${result.expectedSections} sections were recorded`);
  }
  for (const { key, first, second } of result.overlaps.slice(0, 5)) {
    problems.push(
      `overlap on ${key}: process ${second.process} entered ${(first.exit - second.enter) / 1000n} us before process ${first.process} left`,
    );
  }
  if (result.overlaps.length > 5) problems.push(`... ${result.overlaps.length} overlaps in all`);
  for (const { key, sections, counter } of result.lostUpdates) {
    problems.push(`lost update on ${key}: ${sections} sections, counter ${counter}`);
  }
  for (const { key, first, second } of result.fenceInversions.slice(0, 5)) {
    problems.push(`fence ${second.fence} on ${key} ran after fence ${first.fence}`);
  }
  if (result.lostLeases.length > 0) {
    problems.push(`${result.lostLeases.length} sections lost their lease before release`);
  }
  if (problems.length > 0) throw new Error(`exclusion violated:\n  ${problems.join('\n  ')}`);
}

/**
 * Run `processes` Node processes that each take one of `keys` keys through `cache` for
 * `sectionsPerProcess` read-sleep-write sections on a counter file per key, and judge the
 * recorded sections. The verdict is in the result; `assertExclusive(result)` turns it into a
 * failure.
 */
export async function runExclusion(options: ExclusionOptions): Promise<ExclusionResult> {
  const processes = options.processes ?? 8;
  const sections = options.sectionsPerProcess ?? 10;
  const mode = options.mode ?? 'lock';
  const run = randomBytes(6).toString('base64url');
  const keys = Array.from({ length: options.keys ?? 2 }, (_, i) => `exclusion:${run}:${i}`);
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-exclusion-'));
  const started = performance.now();
  try {
    for (const slot of keys.keys()) writeFileSync(join(dir, `counter-${slot}`), '0');
    await runWorkers(processes, options.timeoutMs ?? 120_000, (index) => ({
      cache: options.cache,
      keys,
      sections,
      holdMs: options.holdMs ?? 5,
      ttl: options.ttl ?? '10s',
      dir,
      mode,
      index,
      processes,
    }));
    const recorded = readSections(dir);
    const counters = new Map(
      keys.map((key, slot) => [key, Number(readFileSync(join(dir, `counter-${slot}`), 'utf8'))]),
    );
    const verdict = checkExclusion(recorded, counters);
    return {
      ...verdict,
      sections: recorded.length,
      expectedSections: processes * sections,
      perKey: keys.map((key) => ({
        key,
        sections: recorded.filter((s) => s.key === key).length,
        counter: counters.get(key) ?? 0,
      })),
      durationMs: performance.now() - started,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function readSections(dir: string): Section[] {
  const sections: Section[] = [];
  for (const file of readdirSync(dir).filter((name) => name.startsWith('events-'))) {
    for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
      if (line === '') continue;
      const raw = JSON.parse(line);
      sections.push({
        ...raw,
        enter: BigInt(raw.enter),
        exit: BigInt(raw.exit),
        fence: raw.fence === undefined ? undefined : BigInt(raw.fence),
      });
    }
  }
  return sections;
}

/**
 * Fork the workers, start them together once all are ready, and wait for all to exit cleanly.
 * The first worker to fail stops the others (they may be waiting for the start), and its output
 * is the error.
 */
export async function runWorkers(
  count: number,
  timeoutMs: number,
  config: (index: number) => object,
  worker = workerPath,
): Promise<void> {
  const children = Array.from({ length: count }, (_, index) =>
    fork(worker, [JSON.stringify(config(index))], {
      cwd: packageRoot,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    }),
  );
  const output = children.map(() => '');
  let failure: string | undefined;
  const stopAll = () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  };
  const exits = children.map((child, i) => {
    child.stdout?.on('data', (chunk) => (output[i] += chunk));
    child.stderr?.on('data', (chunk) => (output[i] += chunk));
    return new Promise<void>((resolve) => {
      // A worker that could not start, or died before the start signal reached it.
      child.once('error', (error) => {
        failure ??= `process ${i}: ${error.message}`;
        stopAll();
        resolve();
      });
      child.once('exit', (code, signal) => {
        if (code !== 0 && failure === undefined) {
          failure = `process ${i} exited with ${code ?? signal}:\n${output[i]!.trim()}`;
          stopAll();
        }
        resolve();
      });
    });
  });
  let ready = 0;
  for (const child of children) {
    child.once('message', () => {
      if (++ready === count) for (const c of children) c.send('go');
    });
  }
  const timer = setTimeout(() => {
    failure ??= `exclusion workers did not finish within ${timeoutMs} ms`;
    stopAll();
  }, timeoutMs);
  try {
    await Promise.all(exits);
  } finally {
    clearTimeout(timer);
    stopAll();
  }
  if (failure !== undefined) throw new Error(`exclusion run failed: ${failure}`);
}
