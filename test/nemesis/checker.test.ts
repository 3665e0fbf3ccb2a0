import { describe, expect, it } from 'vitest';
import { check, type HistoryEvent } from './checker.js';

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
const kinds = (events: HistoryEvent[], opts = options) => check(events, opts).map((v) => v.kind);

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
