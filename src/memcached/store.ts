import { createHash } from 'node:crypto';
import {
  type Acquired,
  type AcquireOptions,
  type Handoff,
  type LeaseInfo,
  type LockStore,
  Refusals,
} from 'cachelock';
import { Bells } from '../local/bells.js';
import { flagValue, MemcachedError, type MetaConnection, type MetaReply } from './connection.js';
import { memcachedKeys } from './keys.js';
import { decodeLease, encodeLease, expirySeconds, type LeaseValue } from './lease.js';
import {
  fetchLine,
  firstLive,
  firstLiveBut,
  joinLine,
  type LineState,
  leaveLine,
  type Place,
  readLine,
} from './line.js';
import { isLocal, Watches } from './watch.js';

/** The item this store last wrote for a key: release and extend compare against its CAS. */
interface Written {
  owner: string;
  cas: string;
  fence: bigint | undefined;
}

// A CAS compare fails when another write came in between; the item is then read again, a few
// times at most, so that a store never loops on a key that keeps changing.
const CAS_ATTEMPTS = 3;
// Remembered writes are a shortcut, not state: past this many the oldest are forgotten.
const MAX_REMEMBERED = 10_000;
// How long after seeing a key's line a first try still looks before it adds (a place's term).
const LINED_MS = 3_000;

/**
 * The owner `inspect` reports for a value under a lock's key that cachelock did not write (a
 * program sharing the cache stored it): the key is held by someone unknown. `release` with this
 * owner (what `cachelock release --force` does) deletes that value and nothing else.
 */
export const UNKNOWN_OWNER = '';

/**
 * A `LockStore` on memcached. Acquire is an `add`; release and extend are compare-and-swap on the
 * item's CAS value, so they act only on the item the owner wrote. Expiry is memcached's own, in
 * whole seconds (see `expirySeconds`).
 *
 * A release hands the key to the first waiter in line, if on this machine and known from a read
 * of the line (`handOff`): one round trip and a ring, where a free and the waiter's add cost two.
 *
 * It gives no fence. Nothing in memcached survives an eviction and a restart but the clocks:
 * memcached's own counts whole seconds and starts afresh, a second or two off, at each restart,
 * and the clients' clocks differ from one machine to the next. A count anchored to either could
 * go backwards after a restart, and a fence that may go backwards is worse than none.
 */
export class MemcachedStore implements LockStore {
  readonly kind = 'memcached';
  readonly atomic = true;
  /**
   * A new listener is told at once, by its watch's first poll, of a key that was freed for it
   * before it listened: a waiter whose first try joined the line need not try again.
   */
  readonly replaysWakeups = true;
  /**
   * A ring that names a waiter of this store as handed the key is its grant, unless it was sent
   * before that waiter's last refused `acquire` was answered: the rings go between processes of
   * one machine, which share its monotonic clock, so a hand-off sent after the refusal's reply
   * was written after the read that refused it.
   */
  readonly handoffGrants = true;
  private readonly connections: MetaConnection[];
  private readonly written = new Map<string, Written>();
  /** The places of holders still being taken out of their lines, by `<line>\n<owner>`. */
  private readonly leaving = new Map<string, Promise<void>>();
  /** Per line item, when this store last saw someone in it (ms since the epoch). */
  private readonly lined = new Map<string, number>();
  /** Per line item with someone in it, the places as this store last read them. */
  private readonly seen = new Map<string, Place[]>();
  /** Each waiter's last refusal, on the machine's monotonic clock (ns): see `handoffGrants`. */
  private readonly refusedAt = new Refusals();
  /**
   * The owners released here, by `<line>\n<owner>` (done, or given up): a hand-off to one (its
   * place outlived it, or it gave up meanwhile) is released too. An owner that joins the line
   * again or takes the key (a lock on several keys keeps its owner) is taken off.
   */
  private readonly ended = new Set<string>();
  /** Bells a ring could not find (another folder: another user, or the servers named alike). */
  private readonly unreachable = new Set<number>();
  /** The owners of this store waiting in lines, and the short polls that watch for them. */
  private readonly watches: Watches;
  /**
   * Wake-ups from releases in other processes of this machine that use the same servers: made
   * when this store first waits or releases, listening only once it waits.
   */
  private bells: Bells | undefined;

  constructor(connections: MetaConnection[]) {
    if (connections.length === 0) throw new TypeError('memcachedStore: no memcached server given');
    this.connections = connections;
    this.watches = new Watches((name) => this.connectionFor(name));
  }

  async acquire(
    key: string,
    owner: string,
    ttlMs: number,
    options?: AcquireOptions,
  ): Promise<Acquired | null> {
    const answered = { at: 0n };
    const acquired = await this.tryAcquire(key, owner, ttlMs, options, answered);
    if (acquired === null) this.refusedAt.refused(owner, answered.at);
    else this.refusedAt.forget(owner);
    return acquired;
  }

  /** `acquire`; `answered.at` is when the last reply that read the key came (see `refusedAt`). */
  private async tryAcquire(
    key: string,
    owner: string,
    ttlMs: number,
    options: AcquireOptions | undefined,
    answered: { at: bigint },
  ): Promise<Acquired | null> {
    const { lease: name, line: lineName } = memcachedKeys(key);
    const connection = this.connectionFor(name);
    const lineMs = options?.lineMs;
    // A first try on a key that had waiters a moment ago looks before it adds: an add it would
    // have to undo could take the key from under the waiter whose turn it is, for a moment.
    if (lineMs === undefined && (this.lined.get(lineName) ?? 0) > Date.now() - LINED_MS) {
      const [current, waiting] = await connection.send([
        { line: `mg ${name} v` },
        { line: `mg ${lineName} v c` },
      ]);
      answered.at = process.hrtime.bigint();
      const first = firstLive(this.note(lineName, readLine(waiting!)), Date.now());
      if (current!.status === 'VA' && decodeLease(current!.value)?.owner !== owner) return null;
      if (first !== undefined && first.owner !== owner) return null;
    }
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const lease: LeaseValue = { owner, expiresAt: Date.now() + ttlMs, fence: undefined };
      const data = encodeLease(lease);
      const seconds = expirySeconds(ttlMs);
      // One round trip: add the lease, read the holder in case the add fails, and read the line
      // of waiters. Nothing else is written for a key nobody waits for, so once the item expires
      // or is deleted the key leaves nothing behind.
      const [added, current, waiting] = await connection.send([
        { line: `ms ${name} ${data.length} T${seconds} ME c`, data },
        { line: `mg ${name} v c` },
        { line: `mg ${lineName} v c` },
      ]);
      // On the machine's monotonic clock, after the reply: a hand-off sent later than this was
      // written after these reads.
      answered.at = process.hrtime.bigint();
      const line = this.note(lineName, readLine(waiting!));
      const first = firstLive(line, Date.now());
      if (added!.status === 'HD') {
        const cas = flagValue(added!, 'c');
        if (cas === undefined) throw unexpected('add', added!);
        if (first !== undefined && first.owner !== owner) {
          // Free, but another waiter came first: give the key back for its turn, and wait.
          const [undone] = await connection.send([{ line: `md ${name} C${cas}` }]);
          if (undone!.status !== 'HD' && undone!.status !== 'EX' && undone!.status !== 'NF') {
            throw unexpected('delete', undone!);
          }
          // The waiter whose turn it is may have tried while this add stood, and been refused:
          // it is told the key is free again.
          if (undone!.status === 'HD' && first.bell !== undefined) {
            this.bellsOf().ring(first.bell, key);
          }
          if (lineMs !== undefined) {
            await this.join(connection, lineName, owner, lineMs, line, ttlMs);
          }
          return null;
        }
        this.remember(name, { owner, cas, fence: undefined });
        this.taken(connection, lineName, owner, line);
        return {};
      }
      if (added!.status !== 'NS') throw unexpected('add', added!);
      if (current!.status === 'EN') continue; // released between the add and the read
      if (current!.status !== 'VA') throw unexpected('get', current!);
      // A value that is not a lease of ours (another program's) is held by an unknown owner.
      const holder = decodeLease(current!.value);
      if (holder?.owner !== owner) {
        if (lineMs !== undefined) {
          await this.join(connection, lineName, owner, lineMs, line, ttlMs);
        }
        return null;
      }
      // The owner already holds it (a retry after a lost reply): refresh it, keep what it had.
      const cas = flagValue(current!, 'c');
      if (cas === undefined) throw unexpected('get', current!);
      lease.fence = holder.fence;
      const stored = await this.compareAndSet(connection, name, cas, lease, seconds);
      if (stored === undefined) continue;
      this.remember(name, { owner, cas: stored, fence: lease.fence });
      // A hand-off taken up this way leaves the waiter's place behind, as a new lease does.
      this.taken(connection, lineName, owner, line);
      return lease.fence === undefined ? {} : { fence: lease.fence };
    }
    // The key kept changing hands under the tries: a waiter still takes its place.
    if (lineMs !== undefined) {
      const line = await fetchLine(connection, lineName);
      await this.join(connection, lineName, owner, lineMs, line, ttlMs);
    }
    return null;
  }

  async release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    const { lease, line } = memcachedKeys(key);
    const connection = this.connectionFor(lease);
    if (owner === UNKNOWN_OWNER) return this.releaseUnknown(connection, lease);
    this.refusedAt.forget(owner);
    if (this.ended.size >= MAX_REMEMBERED) this.ended.clear();
    this.ended.add(`${line}\n${owner}`);
    // A waiter giving up leaves the line (a holder has no place: taking the key removed it).
    if (this.watches.served(line, owner)) await leaveLine(connection, line, owner);
    const leaving = this.leaving.get(`${line}\n${owner}`);
    if (leaving !== undefined) await leaving;
    return this.whileOwned(connection, lease, owner, async (written) => {
      if (keepMs > 0) {
        const value = { owner, expiresAt: Date.now() + keepMs, fence: written.fence };
        const seconds = expirySeconds(keepMs);
        const stored = await this.compareAndSet(connection, lease, written.cas, value, seconds);
        return stored === undefined ? 'changed' : 'done';
      }
      const next = this.nextToHandOff(line, owner);
      if (next !== undefined) return this.handOff(connection, key, owner, written, next);
      // The line is read in the delete's round trip: its first waiter (not this owner) is rung,
      // if its store has a bell on this machine. This owner's own place, still there if its
      // leave failed, goes first: the waiter rung would find it ahead of itself.
      const [reply, waiting] = await connection.send([
        { line: `md ${lease} C${written.cas}` },
        { line: `mg ${line} v c` },
      ]);
      if (reply!.status === 'HD') {
        const state = readLine(waiting!);
        const now = Date.now();
        // One try with the line just read, so that a busy line does not hold up the ring; if
        // it fails the leave goes on meanwhile (the rung waiter may give the key back to the
        // place once, and its watch finds the key free when the place is gone).
        if (state.places.some((place) => place.owner === owner && place.expiresAt > now)) {
          const left = await leaveLine(connection, line, owner, state, 1).catch(() => false);
          if (!left) void leaveLine(connection, line, owner).catch(() => {});
        }
        this.note(line, state);
        const next = firstLiveBut(state.places, owner, now);
        if (next?.bell !== undefined) this.bellsOf().ring(next.bell, key);
        return 'done';
      }
      if (reply!.status === 'EX' || reply!.status === 'NF') return 'changed';
      throw unexpected('delete', reply!);
    }).finally(() => {
      if (this.written.get(lease)?.owner === owner) this.written.delete(lease);
    });
  }

  /**
   * The waiter a release by `owner` hands the key to: the first live place in the line as this
   * store last read it, if its store has a bell on this machine (so that the ring reaches it) and
   * its place a claim.
   */
  private nextToHandOff(line: string, owner: string): Place | undefined {
    const places = this.seen.get(line);
    if (places === undefined) return undefined;
    const now = Date.now();
    const next = firstLiveBut(places, owner, now);
    if (next?.bell === undefined || next.claim === undefined || !isLocal(next.owner)) {
      return undefined;
    }
    return this.unreachable.has(next.bell) ? undefined : next;
  }

  /**
   * Release by writing `next`'s lease for its claim under `owner`'s CAS, reading the line in the
   * same round trip: if `next` is still first its bell is rung with the hand-off, else the lease
   * is deleted under its own CAS and the first place rung. (A waiter giving up leaves the line
   * before it releases: this read finds its place gone, or its release finds the lease its own.)
   */
  private async handOff(
    connection: MetaConnection,
    key: string,
    owner: string,
    written: Written,
    next: Place,
  ): Promise<'done' | 'changed'> {
    const { lease, line } = memcachedKeys(key);
    const claim = next.claim!;
    const data = encodeLease({
      owner: next.owner,
      expiresAt: Date.now() + claim,
      fence: undefined,
    });
    const sentAt = process.hrtime.bigint();
    const [handed, waiting] = await connection.send([
      { line: `ms ${lease} ${data.length} T${expirySeconds(claim)} C${written.cas} c`, data },
      { line: `mg ${line} v c` },
    ]);
    if (handed!.status === 'EX' || handed!.status === 'NF') return 'changed';
    const cas = handed!.status === 'HD' ? flagValue(handed!, 'c') : undefined;
    if (cas === undefined) throw unexpected('hand-off', handed!);
    const state = this.note(line, readLine(waiting!));
    const now = Date.now();
    if (state.places.some((place) => place.owner === owner && place.expiresAt > now)) {
      void leaveLine(connection, line, owner, state).catch(() => {});
    }
    const first = firstLiveBut(state.places, owner, now);
    if (first?.owner === next.owner) {
      const handoff = { owner: next.owner, fence: sentAt, ttlMs: claim };
      this.bellsOf().ring(next.bell!, key, handoff, (dead) => {
        if (!dead) {
          if (this.unreachable.size >= MAX_REMEMBERED) this.unreachable.clear();
          this.unreachable.add(next.bell!);
        }
        void this.takeBack(connection, key, cas, next.owner, dead).catch(() => {});
      });
      return 'done';
    }
    const [undone] = await connection.send([{ line: `md ${lease} C${cas}` }]);
    if (undone!.status === 'HD') {
      if (first?.bell !== undefined) this.bellsOf().ring(first.bell, key);
    } else if (undone!.status !== 'EX' && undone!.status !== 'NF') {
      // EX: the waiter took it up meanwhile (its poll found it its own); NF: it gave it up.
      throw unexpected('delete', undone!);
    }
    return 'done';
  }

  /**
   * A hand-off's ring found nobody at the bell: the lease goes under its CAS (unless the waiter
   * took it up, its poll having found it); if the waiter is `dead`, its place too, and the next
   * is rung. With no socket at all (its store rings in another folder) its poll finds the key.
   */
  private async takeBack(
    connection: MetaConnection,
    key: string,
    cas: string,
    owner: string,
    dead: boolean,
  ): Promise<void> {
    const { lease, line } = memcachedKeys(key);
    const [undone, waiting] = await connection.send([
      { line: `md ${lease} C${cas}` },
      { line: `mg ${line} v c` },
    ]);
    if (undone!.status !== 'HD' || !dead) return;
    const state = this.note(line, readLine(waiting!));
    await leaveLine(connection, line, owner, state);
    const now = Date.now();
    const next = firstLiveBut(state.places, owner, now);
    if (next?.bell !== undefined) this.bellsOf().ring(next.bell, key);
  }

  /**
   * A ring for `key`: freed, or handed to `handoff.owner`. A hand-off to a waiter that listens,
   * sent after its last refusal, is its grant; then, while it holds, the lease's CAS and the
   * line are read and its place taken out. Any other is news (the waiter confirms with a try;
   * one not yet listening is told by its watch's first poll). One to an owner released here
   * is released, so that it does not keep the key for its claim.
   */
  private heard(key: string, handoff: Handoff | undefined): void {
    const { lease, line } = memcachedKeys(key);
    if (handoff === undefined) {
      this.watches.rung(line);
      return;
    }
    const { owner, ttlMs } = handoff;
    if (this.ended.has(`${line}\n${owner}`) && this.written.get(lease)?.owner !== owner) {
      // Handed to an owner released here (it gave up meanwhile, or was done and its place
      // outlived it): nobody would take the key up, so it goes on to the next in line.
      void this.release(key, owner).catch(() => {});
      return;
    }
    if (!this.watches.hasListeners(line)) return;
    const checked = this.refusedAt.checked(handoff);
    if (checked?.ttlMs === undefined || !this.watches.served(line, owner)) {
      this.watches.rung(line, { owner });
      return;
    }
    this.refusedAt.forget(owner);
    const connection = this.connectionFor(lease);
    const id = `${line}\n${owner}`;
    const settling = (async () => {
      // After the waiter has been told (below) and has gone on: this is off its path.
      await new Promise((resolve) => setImmediate(resolve));
      const [current, waiting] = await connection.send([
        { line: `mg ${lease} v c` },
        { line: `mg ${line} v c` },
      ]);
      const state = this.note(line, readLine(waiting!));
      const cas = flagValue(current!, 'c');
      // A grant the waiter did not hold on (it came too late) may have been lost to another
      // since, and the waiter be in line again: its place stays.
      if (current!.status !== 'VA' || cas === undefined) return;
      if (decodeLease(current!.value)?.owner !== owner) return;
      this.remember(lease, { owner, cas, fence: undefined });
      // Not awaited by the release, which reads the line again and leaves a place still there.
      if (state.places.some((place) => place.owner === owner)) {
        void leaveLine(connection, line, owner, state).catch(() => {});
      }
    })().catch(() => {});
    this.leaving.set(id, settling);
    void settling.then(() => {
      if (this.leaving.get(id) === settling) this.leaving.delete(id);
    });
    this.watches.rung(line, { owner, ttlMs });
  }

  async extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    const { lease } = memcachedKeys(key);
    const connection = this.connectionFor(lease);
    return this.whileOwned(connection, lease, owner, async (written) => {
      const value = { owner, expiresAt: Date.now() + ttlMs, fence: written.fence };
      const seconds = expirySeconds(ttlMs);
      const stored = await this.compareAndSet(connection, lease, written.cas, value, seconds);
      if (stored === undefined) return 'changed';
      this.remember(lease, { owner, cas: stored, fence: written.fence });
      return 'done';
    });
  }

  async inspect(key: string): Promise<LeaseInfo | null> {
    const { lease } = memcachedKeys(key);
    const [reply] = await this.connectionFor(lease).send([{ line: `mg ${lease} v t` }]);
    if (reply!.status === 'EN') return null;
    if (reply!.status !== 'VA') throw unexpected('get', reply!);
    const secondsLeft = Number(flagValue(reply!, 't') ?? -1);
    const bound = secondsLeft >= 0 ? secondsLeft * 1000 : Number.POSITIVE_INFINITY;
    const holder = decodeLease(reply!.value);
    // Not an item this library wrote, yet it blocks the key: held, by an unknown owner.
    if (!holder) {
      return { owner: UNKNOWN_OWNER, ttlMs: Number.isFinite(bound) ? bound : 0 };
    }
    const ttlMs = Math.max(0, Math.min(holder.expiresAt - Date.now(), bound));
    return holder.fence === undefined
      ? { owner: holder.owner, ttlMs }
      : { owner: holder.owner, ttlMs, fence: holder.fence };
  }

  /**
   * Wake-ups for `key` by short polls, only while an owner of this store waits in its line: the
   * first in line watches the lease, back to back for a moment after each change and then every
   * few milliseconds, and hears that the key is free; the others watch the line, less often,
   * until their turn comes. Memcached cannot push, so this is as prompt as it gets without
   * every waiter hammering the server.
   */
  onRelease(key: string, listener: (handoff?: Handoff) => void): () => void {
    const { lease, line } = memcachedKeys(key);
    return this.watches.listen(lease, line, listener);
  }

  /**
   * `owner` took the key: its place in the line read with the attempt goes, and its watch stops.
   * Not awaited: the key is ours, so the place only holds back others a moment longer. The
   * release waits for it, so that the waiter it wakes does not find this place first (the leave
   * takes more than one round trip when others join meanwhile). A failure leaves the place to
   * run out.
   */
  private taken(connection: MetaConnection, lineName: string, owner: string, line: LineState) {
    this.watches.served(lineName, owner);
    this.ended.delete(`${lineName}\n${owner}`);
    if (!line.places.some((place) => place.owner === owner)) return;
    const id = `${lineName}\n${owner}`;
    const leaving = leaveLine(connection, lineName, owner, line).then(
      () => {},
      () => {},
    );
    this.leaving.set(id, leaving);
    void leaving.then(() => {
      if (this.leaving.get(id) === leaving) this.leaving.delete(id);
    });
  }

  /** Remember whether `lineName` had anyone in it, and who; returns `line`. */
  private note(lineName: string, line: LineState): LineState {
    if (line.places.length === 0) {
      this.lined.delete(lineName);
      this.seen.delete(lineName);
    } else {
      if (this.lined.size >= MAX_REMEMBERED) this.lined.clear();
      if (this.seen.size >= MAX_REMEMBERED) this.seen.clear();
      this.lined.set(lineName, Date.now());
      this.seen.set(lineName, line.places);
    }
    return line;
  }

  private async join(
    connection: MetaConnection,
    lineName: string,
    owner: string,
    lineMs: number,
    line: ReturnType<typeof readLine>,
    ttlMs: number,
  ): Promise<void> {
    // Noted before the write, so that the watch starts even if the reply is slow.
    this.watches.waiting(lineName, owner);
    this.ended.delete(`${lineName}\n${owner}`);
    const bells = this.bellsOf();
    bells.open();
    // A lease handed to the place lasts the ttl, at most the place's own term.
    const claim = Math.max(1, Math.ceil(Math.min(lineMs, ttlMs)));
    if (!(await joinLine(connection, lineName, owner, lineMs, line, bells.bell, claim))) {
      // No place: no release would hand it the key or ring it, and others would pass it until
      // its next poll. Its watch tells it to try (and join) again.
      this.watches.unplaced(lineName, owner);
    }
  }

  /** This store's bells, made on first use; named after its servers. */
  private bellsOf(): Bells {
    if (this.bells === undefined) {
      const servers = this.connections.map((c) => c.address).sort();
      const shared = createHash('sha256').update(servers.join(' ')).digest('hex').slice(0, 16);
      this.bells = new Bells(`memcached-${shared}`, (key, handoff) => this.heard(key, handoff));
    }
    return this.bells;
  }

  async close(): Promise<void> {
    this.bells?.close();
    this.watches.close();
    for (const connection of this.connections) connection.close();
    this.written.clear();
  }

  /**
   * Run `change` against the item `owner` wrote, compared by CAS. The CAS comes from this
   * store's last write, else from reading the item (and checking its owner); when the compare
   * fails the item is read again. Resolves whether `owner` held the key until `change` acted.
   */
  private async whileOwned(
    connection: MetaConnection,
    lease: string,
    owner: string,
    change: (written: Written) => Promise<'done' | 'changed'>,
  ): Promise<boolean> {
    let written = this.written.get(lease);
    if (written?.owner !== owner) written = undefined;
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      if (written === undefined) {
        const [reply] = await connection.send([{ line: `mg ${lease} v c` }]);
        if (reply!.status === 'EN') return false;
        if (reply!.status !== 'VA') throw unexpected('get', reply!);
        const holder = decodeLease(reply!.value);
        const cas = flagValue(reply!, 'c');
        if (holder?.owner !== owner || cas === undefined) return false;
        written = { owner, cas, fence: holder.fence };
      }
      if ((await change(written)) === 'done') return true;
      this.written.delete(lease);
      written = undefined;
    }
    throw new MemcachedError(`the lease item ${lease} kept changing under compare-and-swap`);
  }

  /**
   * A forced release of a value cachelock did not write: deleted under the CAS it was read with,
   * so that a lease written in between is left alone.
   */
  private async releaseUnknown(connection: MetaConnection, lease: string): Promise<boolean> {
    const [reply] = await connection.send([{ line: `mg ${lease} v c` }]);
    if (reply!.status === 'EN') return false;
    if (reply!.status !== 'VA') throw unexpected('get', reply!);
    if (decodeLease(reply!.value) !== undefined) return false;
    const cas = flagValue(reply!, 'c');
    if (cas === undefined) throw unexpected('get', reply!);
    const [deleted] = await connection.send([{ line: `md ${lease} C${cas}` }]);
    if (deleted!.status === 'HD') return true;
    if (deleted!.status === 'EX' || deleted!.status === 'NF') return false;
    throw unexpected('delete', deleted!);
  }

  /** Store `lease` if the item still has `cas`; resolves the new CAS, or undefined if it changed. */
  private async compareAndSet(
    connection: MetaConnection,
    key: string,
    cas: string,
    lease: LeaseValue,
    seconds: number,
  ): Promise<string | undefined> {
    const data = encodeLease(lease);
    const [reply] = await connection.send([
      { line: `ms ${key} ${data.length} T${seconds} C${cas} c`, data },
    ]);
    if (reply!.status === 'EX' || reply!.status === 'NF') return undefined;
    const stored = reply!.status === 'HD' ? flagValue(reply!, 'c') : undefined;
    if (stored === undefined) throw unexpected('compare-and-set', reply!);
    return stored;
  }

  private remember(lease: string, written: Written): void {
    this.written.delete(lease);
    this.written.set(lease, written);
    if (this.written.size > MAX_REMEMBERED) {
      const oldest = this.written.keys().next().value;
      if (oldest !== undefined) this.written.delete(oldest);
    }
  }

  /** The server for a key: one server per key, chosen by an FNV-1a hash of its memcached key. */
  private connectionFor(key: string): MetaConnection {
    if (this.connections.length === 1) return this.connections[0]!;
    let hash = 0x811c9dc5;
    for (let i = 0; i < key.length; i++) {
      hash ^= key.charCodeAt(i);
      hash = Math.imul(hash, 0x01000193) >>> 0;
    }
    return this.connections[hash % this.connections.length]!;
  }
}

function unexpected(operation: string, reply: MetaReply): MemcachedError {
  return new MemcachedError(
    `memcached gave an unexpected reply to ${operation}: ${[reply.status, ...reply.flags].join(' ')}`,
  );
}
