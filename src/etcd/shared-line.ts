import type { SharedRequest } from 'cachelock';
import { encodeName } from './keys.js';
import type { Context } from './leases.js';
import { type KeyValue, type Operation, prefixEnd, type Txn } from './transport.js';

/**
 * The etcd keys of a semaphore or read/write lock, laid out as etcd's `concurrency` recipes
 * lay out a line: every holder and every waiter puts a key of its own, `<prefix><owner>`, on a
 * lease of its own, and the keys in create-revision order are the line. A contender holds when
 * everyone before it holds and the weights up to and including its own are within its limit;
 * the others wait, first come, first served. Each value says what its contender asked:
 * `cachelock:shared:<weight>:<limit>:<o|s>:<fence>` (`s` for a reader, which shares a fence).
 *
 * The prefixes are `<namespace>%S<name>/` (permits) and `<namespace>%R<name>/` (readers and
 * writers): an encoded lock name never holds a `%` that is not followed by `25` or `2F`, so no
 * lock's keys fall under them, nor theirs under a lock's. A read/write lock also keeps the last
 * write's fence in `<namespace>%W<name>`, on the lease of the last contender admitted, so that
 * it ends with the last term granted and leaves nothing behind.
 */

export type Space = 'permits' | 'rw';

const MARKS: Record<Space, string> = { permits: '%S', rw: '%R' };
const VALUE = /^cachelock:shared:(\d+):(\d+):([os]):(\d*)$/;
const FENCE = /^cachelock:(\d*)$/;

export interface SharedKeys {
  prefix: Buffer;
  mine: Buffer;
  /** Where a read/write lock keeps its last write's fence; undefined for permits. */
  fence: Buffer | undefined;
}

export function sharedKeys(
  namespace: string,
  space: Space,
  key: string,
  owner: string,
): SharedKeys {
  const name = encodeName(key);
  const prefix = Buffer.from(`${namespace}${MARKS[space]}${name}/`);
  return {
    prefix,
    mine: Buffer.concat([prefix, Buffer.from(owner)]),
    fence: space === 'rw' ? Buffer.from(`${namespace}%W${name}`) : undefined,
  };
}

/** One key of the line. A key cachelock did not write weighs everything and blocks the rest. */
export interface Contender {
  kv: KeyValue;
  owner: string;
  weight: number;
  limit: number;
  /** A reader: its fence is the last write's, kept in its value once it was admitted. */
  shares: boolean;
  fence: bigint | undefined;
}

export function contenderValue(request: SharedRequest, fence?: bigint): Buffer {
  const kind = request.shareFence ? 's' : 'o';
  return Buffer.from(
    `cachelock:shared:${request.weight}:${request.limit}:${kind}:${fence === undefined ? '' : fence}`,
  );
}

function contender(prefix: Buffer, kv: KeyValue): Contender {
  const match = VALUE.exec(kv.value.toString());
  if (match === null) {
    const all = Number.POSITIVE_INFINITY;
    return { kv, owner: '', weight: all, limit: all, shares: false, fence: undefined };
  }
  return {
    kv,
    owner: kv.key.subarray(prefix.length).toString(),
    weight: Number(match[1]),
    limit: Number(match[2]),
    shares: match[3] === 's',
    fence: match[4] === '' ? undefined : BigInt(match[4]!),
  };
}

/** The line and the last write's fence record, as one transaction read them. */
export interface View {
  line: Contender[];
  /** The record of the last write's fence (read/write locks), if there is one. */
  record: KeyValue | undefined;
  /** The store's revision when it was read. */
  revision: bigint;
}

/** Read the whole line, oldest first, and the fence record. */
export function readOps(keys: SharedKeys): Operation[] {
  const ops: Operation[] = [
    { range: { key: keys.prefix, rangeEnd: prefixEnd(keys.prefix), oldestFirst: true } },
  ];
  if (keys.fence !== undefined) ops.push({ range: { key: keys.fence } });
  return ops;
}

export function readTxn(keys: SharedKeys): Txn {
  return { compare: [], success: readOps(keys), failure: [] };
}

/** The view from a transaction's results, from `at` on (where `readOps` put them). */
export function viewOf(
  keys: SharedKeys,
  results: KeyValue[][],
  at: number,
  revision: bigint,
): View {
  return {
    line: (results[at] ?? []).map((kv) => contender(keys.prefix, kv)),
    record: keys.fence === undefined ? undefined : results[at + 1]?.[0],
    revision,
  };
}

export async function look(context: Context, keys: SharedKeys): Promise<View> {
  const read = await context.transport.txn(readTxn(keys));
  return viewOf(keys, read.results, 0, read.revision);
}

/** The fence a record keeps; a record written with a write's own key keeps it as its revision. */
export function recordFence(record: KeyValue | undefined): bigint | undefined {
  if (record === undefined) return undefined;
  const match = FENCE.exec(record.value.toString());
  if (match === null) return undefined;
  return match[1] === '' ? record.modRevision : BigInt(match[1]!);
}

export function recordValue(fence: bigint): Buffer {
  return Buffer.from(`cachelock:${fence}`);
}

/**
 * How many contenders hold, from the front of the line. `self` replaces what `owner` asked
 * (its value may be from an earlier request); absent from the line, it is judged as the next
 * to join (the result counts it at the end).
 */
export function holding(
  line: Contender[],
  self?: { owner: string; request: SharedRequest },
): number {
  let sum = 0;
  const judged = self !== undefined && !line.some((c) => c.owner === self.owner);
  const all = judged
    ? [...line, { owner: self.owner, weight: self.request.weight, limit: self.request.limit }]
    : line;
  for (const [i, c] of all.entries()) {
    const own = self !== undefined && c.owner === self.owner && c.owner !== '';
    const weight = own ? self.request.weight : c.weight;
    const limit = own ? self.request.limit : c.limit;
    sum += weight;
    if (sum > limit) return i;
  }
  return all.length;
}

/** Where `owner` stands in the line, or -1. */
export function placeOf(line: Contender[], owner: string): number {
  return line.findIndex((c) => c.owner === owner && owner !== '');
}

/**
 * The fence of an acquisition admitted at `index` (the line's length when it is not in it):
 * its own create revision, or for a reader the last write's, which every reader admitted
 * since keeps (a writer before it in the line cannot be: it would hold it back).
 */
export function sharedFence(view: View, index: number): bigint | undefined {
  for (let i = index - 1; i >= 0; i--) {
    const before = view.line[i]!;
    if (!before.shares) return before.owner === '' ? undefined : before.kv.createRevision;
    if (before.fence !== undefined) return before.fence;
  }
  return recordFence(view.record);
}

/** What a key of the line weighs, from its value (everything for a key cachelock did not write). */
export function weightOf(prefix: Buffer, kv: KeyValue): number {
  return contender(prefix, kv).weight;
}

/**
 * How much weight before `at` must still go before the contender there can be admitted: its
 * weight and everything before it must fit its limit, and only deletions before it lower that.
 * Deletions the watch saw after `view` was read count already; undefined when that is unknown.
 */
export function stillNeeded(
  context: Context,
  keys: SharedKeys,
  view: View,
  at: number,
  request: SharedRequest,
): number | undefined {
  const own = view.line[at];
  const recent = context.recent(keys.prefix);
  if (own === undefined || recent === undefined) return undefined;
  let needs = request.weight - request.limit;
  for (const c of view.line.slice(0, at)) needs += c.weight;
  const after = recent.deletions.filter((d) => d.revision > view.revision);
  // The oldest deletion kept may not be the first since the read.
  if (!recent.complete && after.length === recent.deletions.length) return undefined;
  for (const d of after) {
    if (d.previous === undefined) return undefined;
    if (d.previous.createRevision < own.kv.createRevision)
      needs -= weightOf(keys.prefix, d.previous);
  }
  return Number.isFinite(needs) ? needs : undefined;
}
