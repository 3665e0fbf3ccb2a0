import { type ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LINE_MS } from '../../src/wait.js';
import type { Backend, Deployment, Limit } from './backends.js';
import { check, type HistoryEvent, type Violation } from './checker.js';
import { type Arena, type NemesisName, nemeses, type Target } from './nemeses.js';

const workerPath = fileURLToPath(new URL('./worker.mjs', import.meta.url));
const packageRoot = fileURLToPath(new URL('../../', import.meta.url));
// Debian's faketime package puts it under the architecture's lib folder.
const libfaketime = ['/usr/lib', '/usr/lib64']
  .flatMap((lib) => {
    try {
      return readdirSync(lib).map((arch) => `${lib}/${arch}/faketime/libfaketime.so.1`);
    } catch {
      return [];
    }
  })
  .concat('/usr/lib/faketime/libfaketime.so.1')
  .find((path) => existsSync(path));

/** The permits of the semaphore workload. */
export const SEMAPHORE_PERMITS = 2;

export interface CaseOptions {
  backend: Backend;
  deployment: Deployment;
  nemesis: NemesisName;
  /** How long the nemesis acts; the run then goes on quietly for a lease and a poll. */
  durationMs: number;
  /** Worker processes. Default: the backend's, else 5. */
  workers?: number;
  /** How long a worker may take to exit once told to stop. Default 5 s. */
  exitMs?: number;
  /** What the workers take: one lock (default), a semaphore of 2 permits, a read/write lock. */
  workload?: 'lock' | 'semaphore' | 'rw';
}

export interface CaseResult {
  backend: string;
  nemesis: NemesisName;
  seconds: number;
  /** Acquisitions granted. */
  locks: number;
  /** Writes the resource accepted, and the ones it turned away for a lower fence. */
  writes: number;
  fencedOff: number;
  faults: number;
  /** What the suite fails on. */
  violations: Violation[];
  /** Violations within a documented limit of the backend under this nemesis (`limit`). */
  limited: Violation[];
  limit?: Limit;
  /** The whole history, for a closer look at a failure. */
  history: HistoryEvent[];
}

/** Whether the libfaketime the clock-step nemesis needs is installed. */
export const canStepClocks = () => libfaketime !== undefined;

/**
 * The resource held by the runner: a counter that a worker reads and then writes back plus one
 * inside its critical section. It turns away a write whose fence is lower than the highest it
 * has seen (a read counts as seen: the reader's fence is presented with it, as a fenced storage
 * checks the token on every access), and notes a write it accepted although another write
 * landed between the writer's read and its write.
 */
class Resource {
  value = 0;
  version = 0;
  highest: bigint | undefined;

  read(fence: bigint | undefined) {
    if (fence !== undefined && (this.highest === undefined || fence > this.highest)) {
      this.highest = fence;
    }
    return { value: this.value, version: this.version };
  }

  write(fence: bigint | undefined, value: number, version: number) {
    if (fence !== undefined && this.highest !== undefined && fence < this.highest) {
      return { accepted: false, stale: version !== this.version };
    }
    if (fence !== undefined) this.highest = fence;
    const stale = version !== this.version;
    this.value = value;
    this.version++;
    return { accepted: true, stale };
  }
}

interface Worker extends Target {
  child: ChildProcess;
  killed: boolean;
  output: string;
  exited: Promise<void>;
}

/** Run one backend under one nemesis and check its history. */
export async function runCase(options: CaseOptions): Promise<CaseResult> {
  const { backend, deployment } = options;
  const nemesis = nemeses[options.nemesis];
  const ttlMs = backend.ttlMs;
  const workload = options.workload ?? 'lock';
  const leaseMs = backend.leaseMs?.(ttlMs) ?? ttlMs;
  const pollMs = backend.push ? 1_000 : 200;
  const key = `nemesis:${randomBytes(6).toString('base64url')}`;
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-nemesis-'));
  const events: HistoryEvent[] = [];
  const resource = new Resource();
  const workers = new Map<number, Worker>();
  let nextId = 0;
  const started = performance.now();

  const spawn = async (): Promise<Worker> => {
    const id = ++nextId;
    const history = join(dir, `history-${id}.jsonl`);
    const env: NodeJS.ProcessEnv = { ...process.env };
    let clockFile: string | undefined;
    if (nemesis.clock) {
      clockFile = join(dir, `clock-${id}`);
      writeFileSync(clockFile, '+0');
      Object.assign(env, {
        LD_PRELOAD: libfaketime!,
        FAKETIME_TIMESTAMP_FILE: clockFile,
        FAKETIME_NO_CACHE: '1',
        // hrtime stays CLOCK_MONOTONIC, comparable with every other process.
        FAKETIME_DONT_FAKE_MONOTONIC: '1',
      });
    }
    const child = fork(
      workerPath,
      [
        JSON.stringify({
          worker: id,
          key,
          ttlMs,
          history,
          cache: deployment.cache,
          workload,
          permits: SEMAPHORE_PERMITS,
        }),
      ],
      { cwd: packageRoot, env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] },
    );
    const worker: Worker = {
      id,
      pid: child.pid ?? 0,
      state: 'starting',
      since: performance.now(),
      clockFile,
      child,
      killed: false,
      output: '',
      exited: new Promise((resolve) => {
        child.once('exit', (code, signal) => {
          events.push({
            type: 'exit',
            t: process.hrtime.bigint(),
            worker: id,
            code,
            signal,
            killed: worker.killed,
            output: worker.output,
          });
          workers.delete(id);
          resolve();
        });
      }),
    };
    child.stdout?.on('data', (chunk) => (worker.output += chunk));
    child.stderr?.on('data', (chunk) => (worker.output += chunk));
    child.on('error', () => {});
    workers.set(id, worker);
    const ready = new Promise<void>((resolve) => {
      child.on('message', (message: Record<string, string | number>) => {
        if (message.kind === 'ready') {
          resolve();
        } else if (message.kind === 'state') {
          worker.state = message.state as Target['state'];
          worker.since = performance.now();
        } else if (message.kind === 'read') {
          const fence = message.fence === undefined ? undefined : BigInt(message.fence);
          const read = resource.read(fence);
          events.push({
            type: 'read',
            t: process.hrtime.bigint(),
            worker: id,
            acquisition: Number(message.acquisition),
            version: read.version,
          });
          reply(child, { id: message.id, ...read });
        } else if (message.kind === 'write') {
          const fence = message.fence === undefined ? undefined : BigInt(message.fence);
          const verdict = resource.write(fence, Number(message.value), Number(message.version));
          events.push({
            type: 'write',
            t: process.hrtime.bigint(),
            worker: id,
            acquisition: Number(message.acquisition),
            fence,
            ...verdict,
          });
          reply(child, { id: message.id, ...verdict });
        }
      });
    });
    await Promise.race([ready, worker.exited]);
    return worker;
  };

  let running = true;
  const arena: Arena = {
    deployment,
    leaseMs,
    workers: () => [...workers.values()].filter((w) => !w.killed),
    async killAndReplace(target) {
      const worker = workers.get(target.id);
      if (worker === undefined) return;
      worker.killed = true;
      worker.child.kill('SIGKILL');
      await worker.exited;
      go(await spawn());
    },
    fault(name, target, start, tolerated) {
      const end = process.hrtime.bigint();
      events.push({ type: 'fault', t: start, end, nemesis: name, target, tolerated });
    },
    running: () => running,
  };
  const go = (worker: Worker) => {
    if (worker.child.connected) worker.child.send({ kind: 'go' });
  };

  try {
    const first = await Promise.all(
      Array.from({ length: options.workers ?? backend.workers ?? 5 }, spawn),
    );
    for (const worker of first) go(worker);
    const timer = setTimeout(() => (running = false), options.durationMs);
    try {
      await nemesis.run(arena);
    } finally {
      clearTimeout(timer);
      running = false;
    }
    // Quiet time after the last fault: long enough for a lost wake-up to show.
    await new Promise((resolve) => setTimeout(resolve, leaseMs + pollMs + 800));
    events.push({ type: 'stop', t: process.hrtime.bigint() });
    await stopAll(workers, events, options.exitMs ?? 5_000);
    for (const id of Array.from({ length: nextId }, (_, i) => i + 1)) {
      events.push(...readHistory(join(dir, `history-${id}.jsonl`)));
    }
  } finally {
    for (const worker of workers.values()) worker.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }

  const limit = backend.limits?.[options.nemesis];
  const found = check(events, {
    leaseMs,
    pollMs,
    lineMs: LINE_MS,
    fences: backend.fences,
    workload,
    permits: SEMAPHORE_PERMITS,
  });
  const writes = events.filter((e) => e.type === 'write');
  return {
    backend: workload === 'lock' ? backend.name : `${backend.name} ${workload}`,
    nemesis: options.nemesis,
    seconds: (performance.now() - started) / 1_000,
    locks: events.filter((e) => e.type === 'granted').length,
    writes: writes.filter((e) => e.accepted).length,
    fencedOff: writes.filter((e) => !e.accepted).length,
    faults: events.filter((e) => e.type === 'fault').length,
    violations: found.filter((v) => !limit?.kinds.includes(v.kind)),
    limited: found.filter((v) => limit?.kinds.includes(v.kind)),
    limit,
    history: events,
  };
}

function reply(child: ChildProcess, message: object): void {
  // A worker killed meanwhile has no channel left; its history ends where it died.
  if (child.connected) child.send({ kind: 'reply', ...message }, () => {});
}

/** Tell every worker to stop; one that has not exited by itself within `exitMs` is killed. */
async function stopAll(
  workers: Map<number, Worker>,
  events: HistoryEvent[],
  exitMs: number,
): Promise<void> {
  const live = [...workers.values()];
  for (const worker of live) {
    try {
      process.kill(worker.pid, 'SIGCONT'); // a paused one could not hear it
    } catch {
      // It exited meanwhile.
    }
    if (worker.child.connected) worker.child.send({ kind: 'stop' }, () => {});
  }
  await Promise.all(
    live.map(async (worker) => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), exitMs);
      });
      const hung = await Promise.race([worker.exited.then(() => false), late]);
      clearTimeout(timer);
      if (hung) {
        events.push({
          type: 'hung',
          t: process.hrtime.bigint(),
          worker: worker.id,
          waitedMs: exitMs,
        });
        worker.killed = true;
        worker.child.kill('SIGKILL');
        await worker.exited;
      }
    }),
  );
}

function readHistory(file: string): HistoryEvent[] {
  if (!existsSync(file)) return [];
  const events: HistoryEvent[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line === '') continue;
    let raw: Record<string, unknown>;
    try {
      raw = JSON.parse(line);
    } catch {
      continue; // the last line of a worker killed while writing it
    }
    const event = { ...raw, t: BigInt(raw.t as string) } as Record<string, unknown>;
    if (typeof raw.fence === 'string') event.fence = BigInt(raw.fence);
    events.push(event as unknown as HistoryEvent);
  }
  return events;
}

/** The summary table: operations, faults and violations per backend and nemesis. */
export function summary(results: CaseResult[]): string {
  const count = (violations: Violation[]) =>
    violations.length === 0
      ? '0'
      : `${violations.length} (${[...new Set(violations.map((v) => v.kind))].join(', ')})`;
  const rows = results.map((r) => [
    r.backend,
    r.nemesis,
    r.seconds.toFixed(1),
    String(r.locks),
    `${r.writes}/${r.fencedOff}`,
    String(r.faults),
    count(r.violations),
    r.limit === undefined ? '' : count(r.limited),
  ]);
  const header = [
    'backend',
    'nemesis',
    's',
    'locks',
    'writes ok/fenced off',
    'faults',
    'violations',
    'within a documented limit',
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** A case's violations, a few per kind, for a failure message or the long-run report. */
export function describeViolations(result: CaseResult, perKind = 3): string {
  const lines: string[] = [];
  const list = (violations: Violation[], note: string) => {
    const byKind = new Map<string, Violation[]>();
    for (const v of violations) byKind.set(v.kind, [...(byKind.get(v.kind) ?? []), v]);
    for (const [kind, all] of byKind) {
      for (const v of all.slice(0, perKind)) lines.push(`  ${kind}${note}: ${v.text}`);
      if (all.length > perKind) lines.push(`  ... ${all.length} ${kind} violations in all`);
    }
  };
  list(result.violations, '');
  if (result.limit !== undefined && result.limited.length > 0) {
    lines.push(`  within a documented limit (${result.limit.why}):`);
    list(result.limited, ' (limit)');
  }
  const shown = result.violations.find((v) => v.span !== undefined);
  if (shown?.span !== undefined) {
    lines.push(`  the history around the first ${shown.kind}:`, ...excerpt(result, shown.span));
  }
  return `${result.backend} / ${result.nemesis}:\n${lines.join('\n')}`;
}

/**
 * The events of `span` (and a little before it), a line each, at most `limit` of them: enough
 * to read who did what in a failure's output, where the whole history is not kept.
 */
function excerpt(result: CaseResult, span: { from: bigint; to: bigint }, limit = 80): string[] {
  const sorted = [...result.history].sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
  const origin = sorted[0]?.t ?? 0n;
  const from = span.from - 20_000_000n;
  const inside = sorted.filter((e) => e.t >= from && e.t <= span.to + 1_000_000n);
  const shown =
    inside.length > limit ? [...inside.slice(0, limit / 2), ...inside.slice(-limit / 2)] : inside;
  return shown.map((e) => {
    const { type, t, ...rest } = e;
    const fields = Object.entries(rest)
      .filter(([name]) => name !== 'output')
      .map(
        ([name, value]) =>
          `${name}=${typeof value === 'bigint' && name === 'end' ? `+${(Number(value - origin) / 1e6).toFixed(1)}ms` : String(value)}`,
      );
    return `    +${(Number(t - origin) / 1e6).toFixed(1)}ms ${type} ${fields.join(' ')}`;
  });
}

/**
 * Write a case's whole history to `file`, one event a line in time order, times in ms from
 * the first event: what to read when a violation's one line is not enough.
 */
export function writeHistory(result: CaseResult, file: string): void {
  const sorted = [...result.history].sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
  const origin = sorted[0]?.t ?? 0n;
  const ms = (t: bigint) => Number(t - origin) / 1e6;
  const lines = sorted.map((e) =>
    JSON.stringify(
      { ...e, t: ms(e.t), ...(e.type === 'fault' ? { end: ms(e.end) } : {}) },
      (_, v) => (typeof v === 'bigint' ? String(v) : v),
    ),
  );
  writeFileSync(file, `${lines.join('\n')}\n`);
}
