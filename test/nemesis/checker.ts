/**
 * The nemesis suite's checker: reads a run's history and says what went wrong. Pure, so that
 * it can be tested on hand-made histories. Every time is CLOCK_MONOTONIC nanoseconds
 * (`process.hrtime.bigint()`), one clock for every process on the machine.
 */

/** One line of the history. Workers write the lock events; the runner writes the rest. */
export type HistoryEvent =
  /** The worker asked for the lease at `t` (before `granted`, for real-time order). */
  | { type: 'requested'; t: bigint; worker: number; acquisition: number }
  | {
      type: 'granted';
      t: bigint;
      worker: number;
      acquisition: number;
      fence?: bigint;
      /** Of a read/write workload: which side was granted. */
      role?: 'reader' | 'writer';
    }
  /** The worker read `lock.held` and `lock.signal.aborted` at `t`. */
  | {
      type: 'check';
      t: bigint;
      worker: number;
      acquisition: number;
      held: boolean;
      aborted: boolean;
    }
  /** The lock's signal aborted. */
  | { type: 'lost'; t: bigint; worker: number; acquisition: number; reason: string }
  /** `release()` was called at `t`; `ok` is what it resolved to (`null`: it rejected). */
  | { type: 'released'; t: bigint; worker: number; acquisition: number; ok: boolean | null }
  /** The resource answered a worker's read with the value's `version`. */
  | { type: 'read'; t: bigint; worker: number; acquisition: number; version: number }
  /** The resource's verdict on a write; `stale`: another write landed since the writer read. */
  | {
      type: 'write';
      t: bigint;
      worker: number;
      acquisition: number;
      fence?: bigint;
      accepted: boolean;
      stale: boolean;
    }
  /**
   * A nemesis acted from `t` to `end` (the same moment for a kill). `tolerated`: the backend
   * promises to keep granting through it (a Redlock majority stays up), so it excuses no idle key.
   */
  | {
      type: 'fault';
      t: bigint;
      end: bigint;
      nemesis: string;
      target: string;
      tolerated?: boolean;
    }
  /** A worker exited; `killed`: the runner killed it on purpose. */
  | {
      type: 'exit';
      t: bigint;
      worker: number;
      code: number | null;
      signal: string | null;
      killed: boolean;
      output: string;
    }
  /** A worker was still running this long after it was told to stop, and was killed. */
  | { type: 'hung'; t: bigint; worker: number; waitedMs: number }
  /** The runner told the workers to stop taking the lock. */
  | { type: 'stop'; t: bigint };

export interface CheckOptions {
  /** The lease as the store keeps it (Memcached rounds it up to whole seconds). */
  leaseMs: number;
  /** The longest a waiter sleeps between polls: 1 s with push wake-ups, 200 ms without. */
  pollMs: number;
  /** Whether the backend promises fences that only rise. */
  fences: boolean;
  /**
   * How long a waiter's place in a store's line outlives its last try (3 s, LINE_MS in
   * src/wait.ts): a waiter killed in line may keep the key for itself that long.
   */
  lineMs?: number;
  /**
   * What the workers take: one lock (default), a semaphore of `permits`, or a read/write lock.
   */
  workload?: 'lock' | 'semaphore' | 'rw';
  /** Of a semaphore workload: how many may believe they hold it at once. */
  permits?: number;
}

export type ViolationKind =
  | 'overlap'
  | 'too many holders'
  | 'writer with others'
  | 'fence'
  | 'stale write'
  | 'liveness'
  | 'crash'
  | 'hang';

export interface Violation {
  kind: ViolationKind;
  text: string;
  /** The stretch of the history that shows it, where one can be told (CLOCK_MONOTONIC ns). */
  span?: { from: bigint; to: bigint };
}

/** One acquisition as the history shows it. */
interface Acquisition {
  worker: number;
  acquisition: number;
  grantedAt: bigint;
  /** When the worker asked for it, where the history says. */
  requestedAt?: bigint;
  fence?: bigint;
  role?: 'reader' | 'writer';
  /** From the first to the last moment the worker believed it held the key. */
  belief?: { from: bigint; to: bigint };
  /** When the key stopped being held by this acquisition, as far as the history shows. */
  endedAt?: bigint;
}

const ms = (ns: bigint) => Number(ns) / 1e6;

export function check(events: HistoryEvent[], options: CheckOptions): Violation[] {
  const sorted = [...events].sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
  const origin = sorted[0]?.t ?? 0n;
  const at = (t: bigint) => `+${(ms(t - origin) / 1000).toFixed(3)}s`;
  const acquisitions = collect(sorted);
  const describe = (a: Acquisition) =>
    `worker ${a.worker}${a.fence === undefined ? '' : ` (fence ${a.fence})`}`;
  const violations: Violation[] = [];
  // When each acquisition read the resource: a stale write's story starts there.
  const reads = new Map<string, bigint>();
  for (const e of sorted) if (e.type === 'read') reads.set(`${e.worker}/${e.acquisition}`, e.t);
  const workload = options.workload ?? 'lock';
  if (workload !== 'lock') {
    violations.push(...shared(acquisitions, options, at, describe));
    for (const e of sorted) violations.push(...sideEffects(e, at, reads));
    violations.push(...liveness(sorted, acquisitions, options, at));
    return violations;
  }

  // Two workers that believed they held the key at once. A check is a point in time, so an
  // interval runs from the first to the last check that saw held && !aborted; two intervals
  // that only touch do not overlap.
  const believed = acquisitions
    .filter((a) => a.belief !== undefined)
    .sort((a, b) => (a.belief!.from < b.belief!.from ? -1 : 1));
  let latest: Acquisition | undefined;
  for (const a of believed) {
    if (latest !== undefined && a.belief!.from < latest.belief!.to) {
      violations.push({
        kind: 'overlap',
        text: `${describe(latest)} believed it held the key until ${at(latest.belief!.to)}, but ${describe(a)} believed so from ${at(a.belief!.from)} (${ms(latest.belief!.to - a.belief!.from).toFixed(1)} ms together)`,
        span: { from: latest.belief!.from, to: latest.belief!.to },
      });
    }
    if (latest === undefined || a.belief!.to > latest.belief!.to) latest = a;
  }

  // Fences in the order the holders believed they held the key (not in fence order, which would
  // hide exactly what this looks for).
  if (options.fences) {
    let highest: Acquisition | undefined;
    for (const a of believed) {
      if (a.fence === undefined) continue;
      if (highest !== undefined && a.fence <= highest.fence!) {
        violations.push({
          kind: 'fence',
          text: `${describe(a)} was granted at ${at(a.belief!.from)}, after ${describe(highest)} at ${at(highest.belief!.from)}: the fence ${a.fence === highest.fence ? 'repeated' : 'went backwards'}`,
        });
      }
      if (highest === undefined || a.fence > highest.fence!) highest = a;
    }
  }

  for (const e of sorted) violations.push(...sideEffects(e, at, reads));

  violations.push(...liveness(sorted, acquisitions, options, at));
  return violations;
}

/** Stale writes, crashes and hangs: the same in every workload. */
function sideEffects(
  e: HistoryEvent,
  at: (t: bigint) => string,
  reads: Map<string, bigint>,
): Violation[] {
  const violations: Violation[] = [];
  if (e.type === 'write' && e.accepted && e.stale) {
    const read = reads.get(`${e.worker}/${e.acquisition}`);
    violations.push({
      kind: 'stale write',
      text: `the resource accepted a write by worker ${e.worker}${e.fence === undefined ? ' (no fence)' : ` (fence ${e.fence})`} at ${at(e.t)} although another write landed after its read${read === undefined ? '' : ` at ${at(read)}`}`,
      span: { from: read ?? e.t, to: e.t },
    });
  }
  if (e.type === 'exit' && !e.killed && (e.code !== 0 || e.signal !== null)) {
    violations.push({
      kind: 'crash',
      text: `worker ${e.worker} exited with ${e.code ?? e.signal} at ${at(e.t)}: ${e.output.trim().split('\n').slice(-6).join(' | ')}`,
    });
  }
  if (e.type === 'hung') {
    violations.push({
      kind: 'hang',
      text: `worker ${e.worker} did not exit within ${e.waitedMs} ms of being told to stop`,
    });
  }
  return violations;
}

/**
 * A semaphore's or a read/write lock's history: never more than `permits` believed holders at
 * once (a semaphore), never a writer with anyone else (read/write), and fences unique and
 * rising in real-time order: an acquisition granted before another was requested has the lower
 * fence (concurrent requests may be granted in either order). Readers share the last write's
 * fence, so only writers' fences are judged there.
 */
function shared(
  acquisitions: Acquisition[],
  options: CheckOptions,
  at: (t: bigint) => string,
  describe: (a: Acquisition) => string,
): Violation[] {
  const violations: Violation[] = [];
  const believed = acquisitions
    .filter((a) => a.belief !== undefined)
    .sort((a, b) => (a.belief!.from < b.belief!.from ? -1 : 1));

  if (options.workload === 'semaphore') {
    const permits = options.permits ?? 1;
    // Sweep the belief intervals; intervals that only touch do not overlap (ends first). A
    // belief of one instant (one check) ends after the starts of that instant, or never would.
    const edges = believed.flatMap((a) => [
      { t: a.belief!.from, order: 1, step: 1, a },
      { t: a.belief!.to, order: a.belief!.from === a.belief!.to ? 2 : 0, step: -1, a },
    ]);
    edges.sort((x, y) => (x.t === y.t ? x.order - y.order : x.t < y.t ? -1 : 1));
    const inside = new Set<Acquisition>();
    let reported = false;
    for (const edge of edges) {
      if (edge.step === -1) {
        inside.delete(edge.a);
        if (inside.size <= permits) reported = false;
        continue;
      }
      inside.add(edge.a);
      if (inside.size > permits && !reported) {
        reported = true;
        violations.push({
          kind: 'too many holders',
          text: `${inside.size} workers believed they held one of ${permits} permits at ${at(edge.t)}: ${[...inside].map(describe).join(', ')}`,
        });
      }
    }
  } else {
    for (const w of believed.filter((a) => a.role === 'writer')) {
      for (const other of believed) {
        if (other === w) continue;
        if (other.belief!.from < w.belief!.to && w.belief!.from < other.belief!.to) {
          if (other.role === 'writer' && other.belief!.from < w.belief!.from) continue;
          violations.push({
            kind: 'writer with others',
            text: `writer ${describe(w)} believed it held the key from ${at(w.belief!.from)} to ${at(w.belief!.to)}, while ${other.role ?? 'holder'} ${describe(other)} did from ${at(other.belief!.from)} to ${at(other.belief!.to)}`,
          });
        }
      }
    }
  }

  if (options.fences) {
    const fenced = acquisitions.filter(
      (a) => a.fence !== undefined && (options.workload !== 'rw' || a.role === 'writer'),
    );
    const seen = new Map<bigint, Acquisition>();
    for (const a of fenced) {
      const before = seen.get(a.fence!);
      if (before !== undefined) {
        violations.push({
          kind: 'fence',
          text: `${describe(a)} and ${describe(before)} were both granted fence ${a.fence}`,
        });
      } else seen.set(a.fence!, a);
    }
    for (const a of fenced) {
      for (const b of fenced) {
        if (a.fence! >= b.fence! && a !== b && b.requestedAt !== undefined) {
          if (a.grantedAt < b.requestedAt && a.fence !== b.fence) {
            violations.push({
              kind: 'fence',
              text: `${describe(b)} was requested at ${at(b.requestedAt)}, after ${describe(a)} was granted at ${at(a.grantedAt)}, with a lower fence`,
            });
          }
        }
      }
    }
  }
  return violations;
}

/** When each worker that was killed while it waited for the key (asked, not granted) died. */
function killedWaiting(sorted: HistoryEvent[]): bigint[] {
  const waiting = new Map<number, boolean>();
  const kills: bigint[] = [];
  for (const e of sorted) {
    if (e.type === 'requested') waiting.set(e.worker, true);
    else if (e.type === 'granted') waiting.set(e.worker, false);
    else if (e.type === 'exit' && e.killed && waiting.get(e.worker) === true) kills.push(e.t);
  }
  return kills;
}

/**
 * A lost wake-up: nobody held the key for longer than a lease, a poll and 200 ms, counted from
 * whichever is later, the moment the last holder let go or the end of the last fault. A worker
 * killed while it waited leaves its place in the store's line: while that place is first, a free
 * key waits for it, so the kill counts as a fault for `lineMs` after it. (A worker killed just
 * after its store heard a hand-off holds the key for its claim, a lease at most: within that.)
 */
function liveness(
  sorted: HistoryEvent[],
  acquisitions: Acquisition[],
  options: CheckOptions,
  at: (t: bigint) => string,
): Violation[] {
  const boundMs = options.leaseMs + options.pollMs + 200;
  const faults: { t: bigint; end: bigint }[] = sorted.filter(
    (e): e is Extract<HistoryEvent, { type: 'fault' }> => e.type === 'fault' && !e.tolerated,
  );
  if (options.lineMs !== undefined) {
    const lineNs = BigInt(Math.round(options.lineMs * 1e6));
    for (const t of killedWaiting(sorted)) faults.push({ t, end: t + lineNs });
    faults.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
  }
  const stop = sorted.find((e) => e.type === 'stop')?.t;
  const spans = acquisitions
    .map((a) => ({ from: a.grantedAt, to: a.endedAt! }))
    .sort((a, b) => (a.from < b.from ? -1 : 1));
  const violations: Violation[] = [];
  const gap = (from: bigint, to: bigint, what: string) => {
    let start = from;
    for (const f of faults) if (f.t < to && f.end > start) start = f.end;
    if (start >= to) return;
    const idleMs = ms(to - start);
    if (idleMs > boundMs) {
      violations.push({
        kind: 'liveness',
        text: `nobody held the key from ${at(start)} ${what} (${idleMs.toFixed(0)} ms; the bound is ${boundMs} ms)`,
      });
    }
  };
  let coveredTo: bigint | undefined;
  for (const span of spans) {
    if (stop !== undefined && span.from > stop) break;
    if (coveredTo !== undefined && span.from > coveredTo) {
      gap(coveredTo, span.from, `until ${at(span.from)}`);
    }
    if (coveredTo === undefined || span.to > coveredTo) coveredTo = span.to;
  }
  if (stop !== undefined && coveredTo !== undefined && coveredTo < stop) {
    gap(coveredTo, stop, 'until the run stopped');
  }
  if (stop !== undefined && spans.length === 0) {
    violations.push({ kind: 'liveness', text: 'no worker was ever granted the key' });
  }
  return violations;
}

function collect(sorted: HistoryEvent[]): Acquisition[] {
  const byId = new Map<string, Acquisition>();
  const id = (worker: number, acquisition: number) => `${worker}/${acquisition}`;
  const lastSeen = new Map<string, bigint>();
  const requested = new Map<string, bigint>();
  for (const e of sorted) {
    if (!('acquisition' in e) || e.type === 'write' || e.type === 'read') continue;
    const key = id(e.worker, e.acquisition);
    if (e.type === 'requested') {
      requested.set(key, e.t);
      continue;
    }
    if (e.type === 'granted') {
      byId.set(key, {
        worker: e.worker,
        acquisition: e.acquisition,
        grantedAt: e.t,
        requestedAt: requested.get(key),
        fence: e.fence,
        role: e.role,
      });
      continue;
    }
    const a = byId.get(key);
    if (a === undefined) continue;
    lastSeen.set(key, e.t);
    const believes =
      (e.type === 'check' && e.held && !e.aborted) || (e.type === 'released' && e.ok === true);
    if (believes) {
      a.belief = { from: a.belief?.from ?? e.t, to: e.t };
    }
  }
  // The key stopped being held at the release or the loss, else at the last sign of the holder
  // (a killed worker leaves no release).
  for (const e of sorted) {
    if (e.type !== 'released' && e.type !== 'lost') continue;
    const a = byId.get(id(e.worker, e.acquisition));
    if (a !== undefined) a.endedAt ??= e.t;
  }
  for (const [key, a] of byId) a.endedAt ??= lastSeen.get(key) ?? a.grantedAt;
  return [...byId.values()];
}
