import type { Acquired, SharedRequest } from 'cachelock';
import {
  type Context,
  cacheKey,
  effective,
  LEASE_GONE,
  type Lease,
  leaseSeconds,
  type Mine,
  retire,
  revokeLater,
  txnOnLease,
} from './leases.js';
import {
  type Contender,
  contenderValue,
  holding,
  look,
  placeOf,
  readOps,
  recordValue,
  type SharedKeys,
  type Space,
  sharedFence,
  sharedKeys,
  stillNeeded,
  type View,
  viewOf,
} from './shared-line.js';
import { type Compare, type Operation, prefixEnd, type TxnResult } from './transport.js';

// A try that keeps finding newcomers in the line between its read and its write gives up,
// refused as if held: others are getting in meanwhile.
const MAX_ROUNDS = 16;

/**
 * Take a permit, a read or the write. A waiter (`lineMs`) puts its key in the line at once and
 * stays there, on a lease of `lineMs` renewed by its attempts; once everyone before it holds
 * and its weight fits, it confirms by moving its key onto a lease of `ttlMs` (its create
 * revision, so its place and fence, stay). A try does not queue: it puts its key only if the
 * line, read just before, has no newcomer (no key created since), and only when that line
 * admits it, so it never stands in anyone's way. Each write's fence is its create revision; a
 * reader's is the last write's.
 */
export async function acquireShared(
  context: Context,
  space: Space,
  key: string,
  owner: string,
  ttlMs: number,
  request: SharedRequest,
): Promise<Acquired | null> {
  const keys = sharedKeys(context.namespace, space, key, owner);
  const id = cacheKey(keys.mine);
  const seconds = leaseSeconds(ttlMs);
  const known = context.mine.get(id);
  const { lineMs } = request;
  if (known?.waiting) known.triedAt = performance.now();

  if (known?.waiting && lineMs !== undefined) {
    // While the watch has seen no deletion since our last look, nobody before us left, so we
    // still wait; a place renewed within a third of its lease needs nothing either.
    const deletions = context.deletions(keys.prefix);
    if (
      deletions !== undefined &&
      deletions === known.seen &&
      performance.now() - known.renewedAt < (known.granted * 1000) / 3
    ) {
      return null;
    }
    known.seen = deletions;
    const view = await look(context, keys);
    const at = placeOf(view.line, owner);
    const own = view.line[at];
    if (own === undefined || own.kv.lease !== known.lease) {
      // Our place lapsed (the process stalled past lineMs): join again.
      context.mine.delete(id);
    } else if (holding(view.line, { owner, request }) > at) {
      return confirm(context, keys, view, at, seconds, request);
    } else {
      known.needs = stillNeeded(context, keys, view, at, request);
      const sentAt = performance.now();
      if ((await context.transport.keepAlive(known.lease)) > 0) {
        known.renewedAt = sentAt;
        return null;
      }
      context.mine.delete(id);
    }
  }
  if (lineMs !== undefined) return join(context, keys, owner, seconds, request, lineMs);
  return tryTake(context, keys, owner, seconds, request);
}

async function tryTake(
  context: Context,
  keys: SharedKeys,
  owner: string,
  seconds: number,
  request: SharedRequest,
): Promise<Acquired | null> {
  const { transport } = context;
  // No look yet: first assume an empty line (and no write yet), the common uncontended case.
  let view: View | undefined;
  for (let round = 0; round < MAX_ROUNDS; round++) {
    let fence: bigint | undefined;
    if (view !== undefined) {
      const at = placeOf(view.line, owner);
      const admitted = holding(view.line, { owner, request });
      // Ours already (a retry, or asking again): refresh it; in line: not our turn yet.
      if (at >= 0) return admitted > at ? confirm(context, keys, view, at, seconds, request) : null;
      if (admitted <= view.line.length) return null;
      if (request.shareFence) fence = sharedFence(view, view.line.length);
    }
    const range = { key: keys.prefix, rangeEnd: prefixEnd(keys.prefix) };
    const compare: Compare[] = [
      view === undefined
        ? { ...range, target: 'CREATE', result: 'EQUAL', value: 0n }
        : { ...range, target: 'CREATE', result: 'LESS', value: view.revision + 1n },
    ];
    const takenAt = performance.now();
    const taken = await context.pool.take(context, seconds);
    const lease = taken.lease;
    const success: Operation[] = [
      { put: { key: keys.mine, value: contenderValue(request, fence), lease: lease.id } },
    ];
    if (keys.fence !== undefined) {
      const record = view?.record;
      // A reader's fence must still be the last write's: no write since the look.
      if (request.shareFence) {
        compare.push(
          record === undefined
            ? { key: keys.fence, target: 'CREATE', result: 'EQUAL', value: 0n }
            : { key: keys.fence, target: 'MOD', result: 'EQUAL', value: record.modRevision },
        );
      }
      // A write records its fence (this transaction's revision: the record's own); a reader
      // carries the record on its lease, so that it lasts as long as the newest term.
      if (!request.shareFence) {
        success.push({
          put: { key: keys.fence, value: Buffer.from('cachelock:'), lease: lease.id },
        });
      } else if (fence !== undefined) {
        success.push({ put: { key: keys.fence, value: recordValue(fence), lease: lease.id } });
      }
    }
    let outcome: 'kept' | 'spare' | 'revoke' | 'dropped' = 'revoke';
    try {
      const result = await txnOnLease(
        transport,
        { compare, success, failure: readOps(keys) },
        taken.renewed,
      );
      if (result === 'dropped' || result === 'revoke') {
        // The spare had expired or its renewal went unanswered: what went on it goes with it.
        outcome = result;
        if (result === 'revoke') return null;
        continue;
      }
      if (result.succeeded) {
        outcome = 'kept';
        const createRevision = result.revision;
        remember(context, keys, lease, seconds, takenAt, createRevision, false);
        const granted = request.shareFence ? fence : createRevision;
        return granted === undefined ? {} : { fence: granted };
      }
      outcome = 'spare';
      view = viewOf(keys, result.results, 0, result.revision);
    } finally {
      if (outcome === 'spare') context.pool.give(context, lease, seconds, takenAt);
      else if (outcome === 'revoke') revokeLater(context, lease.id);
    }
  }
  return null;
}

/**
 * A waiter's first attempt, in one transaction: put our key at the end of the line if it is not
 * there yet, and read the line. The line lease is the acquisition's own when it is no longer
 * than lineMs (then a confirm is one renewal), else a lease of lineMs. A spare with two thirds
 * of its TTL ahead goes in line as it is, as for a lock's line (see `acquire.ts`).
 */
async function join(
  context: Context,
  keys: SharedKeys,
  owner: string,
  seconds: number,
  request: SharedRequest,
  lineMs: number,
  renew = false,
): Promise<Acquired | null> {
  const { transport } = context;
  const id = cacheKey(keys.mine);
  const asked = Math.min(seconds, leaseSeconds(lineMs));
  const triedAt = performance.now();
  // The watch's count before this look: the next attempt reads again only if it moved.
  const seen = context.deletions(keys.prefix);
  const { lease, renewedAt } = await context.pool.takeLasting(
    context,
    asked,
    renew ? Number.POSITIVE_INFINITY : (asked * 2000) / 3,
  );
  let outcome: 'kept' | 'spare' | 'revoke' | 'dropped' = 'revoke';
  try {
    let result: TxnResult;
    try {
      result = await transport.txn({
        compare: [{ key: keys.mine, target: 'CREATE', result: 'EQUAL', value: 0n }],
        success: [
          { put: { key: keys.mine, value: contenderValue(request), lease: lease.id } },
          ...readOps(keys),
        ],
        failure: readOps(keys),
      });
    } catch (error) {
      // The spare ran out after all: nothing went on it.
      if (renew || !LEASE_GONE.test(String((error as Error).message))) throw error;
      outcome = 'dropped';
      return await join(context, keys, owner, seconds, request, lineMs, true);
    }
    const view = viewOf(keys, result.results, result.succeeded ? 1 : 0, result.revision);
    const at = placeOf(view.line, owner);
    const own = view.line[at];
    if (result.succeeded) {
      outcome = 'kept';
      remember(
        context,
        keys,
        lease,
        asked,
        renewedAt,
        own?.kv.createRevision ?? result.revision,
        true,
      );
      const known = context.mine.get(id)!;
      known.seen = seen;
      known.triedAt = triedAt;
    } else {
      // Our key is there already (an earlier attempt whose reply was lost): this lease stays
      // unused, and our place is renewed where it is.
      outcome = 'spare';
      if (own === undefined) return null;
      if (holding(view.line, { owner, request }) <= at) {
        const sentAt = performance.now();
        if ((await transport.keepAlive(own.kv.lease)) > 0) {
          context.mine.set(id, {
            lease: own.kv.lease,
            granted: 0,
            asked: 0,
            renewedAt: sentAt,
            createRevision: own.kv.createRevision,
            waiting: true,
            needs: stillNeeded(context, keys, view, at, request),
          });
        }
        return null;
      }
    }
    if (own === undefined) return null;
    if (holding(view.line, { owner, request }) <= at) {
      const mine = context.mine.get(id);
      if (mine !== undefined) mine.needs = stillNeeded(context, keys, view, at, request);
      return null;
    }
    return await confirm(context, keys, view, at, seconds, request);
  } finally {
    if (outcome === 'spare') context.pool.give(context, lease, asked, renewedAt);
    else if (outcome === 'revoke') revokeLater(context, lease.id);
  }
}

function remember(
  context: Context,
  keys: SharedKeys,
  lease: Lease,
  asked: number,
  renewedAt: number,
  createRevision: bigint,
  waiting: boolean,
): void {
  context.mine.set(cacheKey(keys.mine), {
    lease: lease.id,
    granted: lease.ttl,
    asked,
    renewedAt,
    createRevision,
    waiting,
  });
}

/**
 * Our key at `at` is admitted (or held already): hold it for `seconds`, keeping its create
 * revision, with what we ask now in its value. Its lease is renewed when it has the TTL asked
 * for, else the key moves onto a new one. A write records its fence; a reader takes the record
 * onto its own lease.
 */
async function confirm(
  context: Context,
  keys: SharedKeys,
  view: View,
  at: number,
  seconds: number,
  request: SharedRequest,
): Promise<Acquired | null> {
  const owner = view.line[at]!.owner;
  const held = holdInLine(context, keys, view, at, seconds, request);
  if (held !== undefined) return held;
  for (let round = 0; ; round++) {
    const confirmed = await confirmOnce(context, keys, view, at, seconds, request);
    if (confirmed !== RECORDED) return confirmed;
    if (round + 1 >= MAX_CONFIRMS) {
      // Still admitted as far as we know: the next attempt reads, whatever the watch saw.
      const known = context.mine.get(cacheKey(keys.mine));
      if (known !== undefined) known.seen = undefined;
      return null;
    }
    // Readers admitted beside us record the same fence again as they confirm: look again
    // now rather than at the next poll, which the watch (no deletion since) would let pass.
    view = await look(context, keys);
    at = placeOf(view.line, owner);
    if (at < 0) {
      context.mine.delete(cacheKey(keys.mine));
      return null;
    }
    if (holding(view.line, { owner, request }) <= at) return null;
  }
}

/**
 * A permit admitted while waiting, for a lease that extends itself: held on its line lease as it
 * is, with no write, for what is left of that lease counted from this attempt. Admission lasts
 * while the key does (those before it only leave), and its first extension moves it onto a
 * lease of the ttl. Undefined where it must confirm (a fence record to write, no room left).
 */
function holdInLine(
  context: Context,
  keys: SharedKeys,
  view: View,
  at: number,
  seconds: number,
  request: SharedRequest,
): Acquired | undefined {
  if (!request.mayShorten || keys.fence !== undefined || request.shareFence) return undefined;
  const own = view.line[at]!;
  const known = context.mine.get(cacheKey(keys.mine));
  if (!known?.waiting || known.lease !== own.kv.lease || known.triedAt === undefined) {
    return undefined;
  }
  const claimMs = known.renewedAt + known.granted * 1000 - known.triedAt;
  if (claimMs < (known.granted * 1000) / 2) return undefined;
  known.waiting = false;
  const fence = own.kv.createRevision;
  return claimMs < seconds * 1000 ? { fence, ttlMs: claimMs } : { fence };
}

/** The fence record changed since the look: look again. */
const RECORDED = Symbol('recorded');
// Rounds of look and confirm before leaving it to the next attempt.
const MAX_CONFIRMS = 4;

async function confirmOnce(
  context: Context,
  keys: SharedKeys,
  view: View,
  at: number,
  seconds: number,
  request: SharedRequest,
): Promise<Acquired | null | typeof RECORDED> {
  const own: Contender = view.line[at]!;
  const id = cacheKey(keys.mine);
  const known = context.mine.get(id);
  const createRevision = own.kv.createRevision;
  const fence = request.shareFence ? (own.fence ?? sharedFence(view, at)) : createRevision;
  const reuse =
    known !== undefined &&
    known.lease === own.kv.lease &&
    known.granted === effective(context, seconds);
  const takenAt = performance.now();
  let lease: Lease;
  let renewed: Promise<boolean>;
  if (reuse) {
    lease = { id: own.kv.lease, ttl: known.granted };
    renewed = context.transport.keepAlive(own.kv.lease).then(
      (ttl) => ttl > 0,
      () => false,
    );
  } else {
    ({ lease, renewed } = await context.pool.take(context, seconds));
  }
  const compare: Compare[] = [
    { key: keys.mine, target: 'CREATE', result: 'EQUAL', value: createRevision },
  ];
  const success: Operation[] = [
    {
      put: {
        key: keys.mine,
        value: contenderValue(request, request.shareFence ? fence : undefined),
        lease: lease.id,
      },
    },
  ];
  let record = false;
  if (keys.fence !== undefined && fence !== undefined) {
    if (request.shareFence) {
      // The fence read must still be the last write's.
      compare.push(
        view.record === undefined
          ? { key: keys.fence, target: 'CREATE', result: 'EQUAL', value: 0n }
          : { key: keys.fence, target: 'MOD', result: 'EQUAL', value: view.record.modRevision },
      );
    }
    success.push({ put: { key: keys.fence, value: recordValue(fence), lease: lease.id } });
    record = true;
  }
  let confirmed = false;
  try {
    const [moved, alive] = await Promise.all([
      context.transport.txn({ compare, success, failure: [{ range: { key: keys.mine } }] }),
      renewed,
    ]);
    if (!moved.succeeded) {
      if (moved.results[0]?.[0] === undefined) {
        context.mine.delete(id);
        return null;
      }
      // The record changed since our look: another reader recorded the fence again, or a
      // write was recorded (it cannot hold beside us, so it has gone). Look again.
      return RECORDED;
    }
    if (!alive) {
      // Our key went with a lease that had run out.
      context.mine.delete(id);
      return null;
    }
    confirmed = true;
    if (!reuse && own.kv.lease !== lease.id) {
      // The record, if it was on the old lease, moved with us (or was not there).
      const carried = view.record?.lease === own.kv.lease && !record;
      if (!carried) retire(context, own.kv.lease, known);
    }
    const mine: Mine = {
      lease: lease.id,
      granted: lease.ttl,
      asked: reuse ? known.asked : seconds,
      renewedAt: reuse ? takenAt : takenAt,
      createRevision,
      waiting: false,
    };
    context.mine.set(id, mine);
    return fence === undefined ? {} : { fence };
  } finally {
    if (!confirmed && !reuse) revokeLater(context, lease.id);
  }
}
