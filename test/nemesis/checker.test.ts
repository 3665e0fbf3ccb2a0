import { describe, expect, it } from 'vitest';
import { type CheckOptions, check, type HistoryEvent } from './checker.js';

// Hand-made histories, times in ms (the checker reads ns).
const t = (ms: number) => BigInt(Math.round(ms * 1e6));
const options = { leaseMs: 600, pollMs: 200, fences: true };

/** An acquisition: granted at `from` with `fence`, good checks at `from` and `to`, released at `to`. */
function section(worker: number, from: number, to: number, fence?: number): HistoryEvent[] {
  const acquisition = from;
  const f = fence === undefined ? undefined : BigInt(fence);
  return [
    { type: 'granted', t: t(from), worker, acquisition, fence: f },
    { type: 'check', t: t(from), worker, acquisition, held: true, aborted: false },
    { type: 'check', t: t(to - 1), worker, acquisition, held: true, aborted: false },
    {
      type: 'write',
      t: t(to - 1),
      worker,
      acquisition,
      fence: f,
      accepted: true,
      stale: false,
    },
    { type: 'released', t: t(to), worker, acquisition, ok: true },
  ];
}

const stop = (ms: number): HistoryEvent => ({ type: 'stop', t: t(ms) });
const kinds = (events: HistoryEvent[], opts: CheckOptions = options) =>
  check(events, opts).map((v) => v.kind);

describe('nemesis checker', () => {
  it('passes a clean history: one holder at a time, rising fences, the key never idle long', () => {
    const history = [
      ...section(1, 0, 100, 1),
      ...section(2, 101, 300, 2),
      ...section(1, 305, 700, 5),
      stop(800),
    ];
    expect(check(history, options)).toEqual([]);
  });

  it('finds two workers that both believed they held the key', () => {
    const history = [...section(1, 0, 100, 1), ...section(2, 50, 200, 2), stop(250)];
    const violations = check(history, options);
    expect(violations.map((v) => v.kind)).toEqual(['overlap']);
    expect(violations[0]!.text).toMatch(
      /worker 1 \(fence 1\).*worker 2 \(fence 2\).*50\.0 ms together/,
    );
  });

  it('ends a belief at the last check that saw held and not aborted', () => {
    // Worker 1 was paused past its lease: its later checks say it no longer holds the key, and
    // its release says so too. Worker 2 took the key meanwhile: no overlap.
    const history: HistoryEvent[] = [
      { type: 'granted', t: t(0), worker: 1, acquisition: 1, fence: 1n },
      { type: 'check', t: t(1), worker: 1, acquisition: 1, held: true, aborted: false },
      ...section(2, 700, 900, 2),
      { type: 'check', t: t(950), worker: 1, acquisition: 1, held: false, aborted: false },
      { type: 'check', t: t(960), worker: 1, acquisition: 1, held: true, aborted: true },
      { type: 'released', t: t(970), worker: 1, acquisition: 1, ok: false },
      stop(1_000),
    ];
    expect(check(history, options)).toEqual([]);
    // The same history with a late check that still believed is an overlap.
    history.push({
      type: 'check',
      t: t(800),
      worker: 1,
      acquisition: 1,
      held: true,
      aborted: false,
    });
    expect(kinds(history)).toEqual(['overlap']);
  });

  it('finds a fence that goes backwards or repeats, in real-time order', () => {
    const backwards = [...section(1, 0, 100, 5), ...section(2, 200, 300, 3), stop(400)];
    expect(kinds(backwards)).toEqual(['fence']);
    expect(check(backwards, options)[0]!.text).toMatch(/fence 3.*went backwards/);
    const repeated = [...section(1, 0, 100, 5), ...section(2, 200, 300, 5), stop(400)];
    expect(check(repeated, options)[0]!.text).toMatch(/repeated/);
    // Where the backend promises no fences, they are not held to it.
    expect(kinds(backwards, { ...options, fences: false })).toEqual([]);
  });

  it('finds a stale write that the resource accepted', () => {
    const history: HistoryEvent[] = [
      ...section(1, 0, 100, 1),
      { type: 'write', t: t(99), worker: 1, acquisition: 0, accepted: true, stale: true },
      // Turned away: that is the resource doing its job.
      { type: 'write', t: t(99), worker: 1, acquisition: 0, accepted: false, stale: true },
      stop(200),
    ];
    expect(kinds(history)).toEqual(['stale write']);
  });

  it("spans a stale write from the writer's read to its write, for the excerpt of a failure", () => {
    const history: HistoryEvent[] = [
      ...section(1, 0, 100),
      { type: 'read', t: t(10), worker: 1, acquisition: 0, version: 0 },
      { type: 'write', t: t(99), worker: 1, acquisition: 0, accepted: true, stale: true },
      stop(200),
    ];
    const [violation] = check(history, { ...options, fences: false });
    expect(violation?.kind).toBe('stale write');
    expect(violation?.span).toEqual({ from: t(10), to: t(99) });
    expect(violation?.text).toContain('after its read at +0.010s');
  });

  it('finds a lost wake-up: nobody held the key for longer than a lease, a poll and 200 ms', () => {
    const history = [...section(1, 0, 100, 1), ...section(2, 1_200, 1_300, 2), stop(1_400)];
    const violations = check(history, options);
    expect(violations.map((v) => v.kind)).toEqual(['liveness']);
    expect(violations[0]!.text).toMatch(/1100 ms; the bound is 1000 ms/);
    // A fault until 500 ms counts the idle time from its end instead: 700 ms, within bounds.
    const fault: HistoryEvent = {
      type: 'fault',
      t: t(50),
      end: t(500),
      nemesis: 'pause-holder',
      target: 'worker 1',
    };
    expect(kinds([...history, fault])).toEqual([]);
    // Unless the backend promises to keep granting through that fault.
    expect(kinds([...history, { ...fault, tolerated: true }])).toEqual(['liveness']);
    // Nobody took the key again before the run stopped.
    expect(kinds([...section(1, 0, 100, 1), stop(1_500)])).toEqual(['liveness']);
  });

  it('lets a free key wait for the place of a worker killed in line, for lineMs', () => {
    const kill = (worker: number, ms: number): HistoryEvent[] => [
      {
        type: 'fault',
        t: t(ms - 1),
        end: t(ms + 100),
        nemesis: 'kill-holder',
        target: `worker ${worker}`,
      },
      { type: 'exit', t: t(ms), worker, code: null, signal: 'SIGKILL', killed: true, output: '' },
    ];
    const waiting: HistoryEvent = { type: 'requested', t: t(150), worker: 3, acquisition: 1 };
    // Worker 3 asked and was killed before its grant: its place may keep the key 3 s.
    const history = [
      ...section(1, 0, 100, 1),
      waiting,
      ...kill(3, 200),
      ...section(2, 3_900, 4_000, 2),
      stop(4_100),
    ];
    expect(kinds(history)).toEqual(['liveness']);
    expect(kinds(history, { ...options, lineMs: 3_000 })).toEqual([]);
    // Killed holding the key (granted after it asked), it leaves no place: the bound stands.
    const holding: HistoryEvent[] = [
      waiting,
      { type: 'granted', t: t(160), worker: 3, acquisition: 1, fence: 2n },
      { type: 'check', t: t(170), worker: 3, acquisition: 1, held: true, aborted: false },
      ...kill(3, 200),
      ...section(2, 3_900, 4_000, 3),
      stop(4_100),
    ];
    expect(kinds([...section(1, 0, 100, 1), ...holding], { ...options, lineMs: 3_000 })).toEqual([
      'liveness',
    ]);
  });

  it('finds a crash and a worker that did not exit by itself, but not a worker it killed', () => {
    const exit = (worker: number, code: number | null, killed: boolean): HistoryEvent => ({
      type: 'exit',
      t: t(150),
      worker,
      code,
      signal: code === null ? 'SIGKILL' : null,
      killed,
      output: code === 1 ? 'Error: boom\n    at worker.mjs:1' : '',
    });
    const history: HistoryEvent[] = [
      ...section(1, 0, 100, 1),
      exit(1, 1, false),
      exit(2, null, true),
      exit(3, 0, false),
      { type: 'hung', t: t(5_100), worker: 4, waitedMs: 5_000 },
      stop(200),
    ];
    const violations = check(history, options);
    expect(violations.map((v) => v.kind)).toEqual(['crash', 'hang']);
    expect(violations[0]!.text).toMatch(/worker 1 exited with 1.*Error: boom/);
  });
});

/** A permit or side: requested at `asked`, then as `section`, with a role for read/write. */
function permit(
  worker: number,
  asked: number,
  from: number,
  to: number,
  fence?: number,
  role?: 'reader' | 'writer',
): HistoryEvent[] {
  const [granted, ...rest] = section(worker, from, to, fence);
  return [
    { type: 'requested', t: t(asked), worker, acquisition: from },
    { ...(granted as Extract<HistoryEvent, { type: 'granted' }>), role },
    // Shared holders do not write; only the lock events matter here.
    ...rest.filter((e) => e.type !== 'write'),
  ];
}

describe('nemesis checker: a semaphore of 2 permits', () => {
  const semaphore = { ...options, workload: 'semaphore' as const, permits: 2 };

  it('passes two holders at once, fences rising in real-time order', () => {
    const history = [
      ...permit(1, 0, 0, 300, 1),
      ...permit(2, 0, 10, 200, 2),
      ...permit(3, 50, 200, 500, 3),
      // Requested before 3 was granted: concurrent, so either fence order is fine.
      ...permit(4, 150, 300, 600, 4),
      stop(650),
    ];
    expect(check(history, semaphore)).toEqual([]);
  });

  it('finds a third holder while two believe they hold permits', () => {
    const history = [
      ...permit(1, 0, 0, 300, 1),
      ...permit(2, 0, 10, 300, 2),
      ...permit(3, 20, 100, 200, 3),
      stop(350),
    ];
    const found = check(history, semaphore);
    expect(found.map((v) => v.kind)).toEqual(['too many holders']);
    expect(found[0]!.text).toMatch(/3 workers believed they held one of 2 permits/);
    // The same history is fine with 3 permits.
    expect(kinds(history, { ...semaphore, permits: 3 })).toEqual([]);
  });

  it('counts a holder seen held at one instant only (a killed holder) while it is inside', () => {
    const killed: HistoryEvent[] = [
      { type: 'requested', t: t(0), worker: 9, acquisition: 1 },
      { type: 'granted', t: t(50), worker: 9, acquisition: 1, fence: 10n },
      { type: 'check', t: t(50), worker: 9, acquisition: 1, held: true, aborted: false },
    ];
    const history = [...permit(1, 0, 0, 100, 1), ...permit(2, 0, 10, 100, 2), ...killed];
    expect(kinds([...history, stop(150)], semaphore)).toContain('too many holders');
    // Alone it does not stay inside for ever: later holders are not counted with it.
    const later = [...killed, ...permit(1, 60, 100, 200, 11), ...permit(2, 60, 110, 200, 12)];
    expect(kinds([...later, stop(250)], semaphore)).toEqual([]);
  });

  it('finds a repeated fence, and a fence lower than one granted before it was requested', () => {
    const repeated = [...permit(1, 0, 0, 100, 5), ...permit(2, 0, 10, 100, 5), stop(150)];
    expect(check(repeated, semaphore).map((v) => v.text)).toEqual([
      expect.stringMatching(/both granted fence 5/),
    ]);
    const backwards = [...permit(1, 0, 0, 100, 7), ...permit(2, 50, 100, 200, 6), stop(250)];
    const found = check(backwards, semaphore);
    expect(found.map((v) => v.kind)).toEqual(['fence']);
    expect(found[0]!.text).toMatch(/requested at .* after worker 1 \(fence 7\) was granted/);
  });
});

describe('nemesis checker: readers and writers', () => {
  const rw = { ...options, workload: 'rw' as const };

  it('passes readers together and writers alone; readers share the last write fence', () => {
    const history = [
      ...permit(1, 0, 0, 100, 1, 'writer'),
      ...permit(2, 0, 101, 300, 1, 'reader'),
      ...permit(3, 0, 150, 250, 1, 'reader'),
      ...permit(4, 120, 301, 400, 2, 'writer'),
      stop(450),
    ];
    expect(check(history, rw)).toEqual([]);
  });

  it('finds a writer with a reader, and a writer with a writer', () => {
    const withReader = [
      ...permit(1, 0, 0, 200, 1, 'writer'),
      ...permit(2, 0, 100, 300, 1, 'reader'),
      stop(350),
    ];
    const found = check(withReader, rw);
    expect(found.map((v) => v.kind)).toEqual(['writer with others']);
    expect(found[0]!.text).toMatch(/writer worker 1 .* while reader worker 2/);
    const twoWriters = [
      ...permit(1, 0, 0, 200, 1, 'writer'),
      ...permit(2, 0, 100, 300, 2, 'writer'),
      stop(350),
    ];
    expect(kinds(twoWriters, rw)).toEqual(['writer with others']);
  });

  it("judges only writers' fences", () => {
    const history = [
      ...permit(1, 0, 0, 100, 3, 'writer'),
      ...permit(2, 101, 110, 200, 2, 'writer'),
      stop(250),
    ];
    expect(kinds(history, rw)).toEqual(['fence']);
  });
});
