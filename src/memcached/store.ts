import { createHash } from 'node:crypto';
import type { Acquired, AcquireOptions, LeaseInfo, LockStore } from 'cachelock';
import { Bells } from '../local/bells.js';
import { flagValue, MemcachedError, type MetaConnection, type MetaReply } from './connection.js';
import { memcachedKeys } from './keys.js';
import { decodeLease, encodeLease, expirySeconds, type LeaseValue } from './lease.js';
import { fetchLine, firstLive, joinLine, type LineState, leaveLine, readLine } from './line.js';
import { Watches } from './watch.js';

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
  private readonly connections: MetaConnection[];
  private readonly written = new Map<string, Written>();
  /** The places of holders still being taken out of their lines, by `<line>\n<owner>`. */
  private readonly leaving = new Map<string, Promise<void>>();
  /** Per line item, when this store last saw someone in it (ms since the epoch). */
  private readonly lined = new Map<string, number>();
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
          if (lineMs !== undefined) await this.join(connection, lineName, owner, lineMs, line);
          return null;
        }
        this.remember(name, { owner, cas, fence: undefined });
        if (line.places.some((place) => place.owner === owner)) {
          // Not awaited: the key is ours, so the place only holds back others a moment longer.
          // The release waits for it, so that the waiter it wakes does not find this place
          // first (the leave takes more than one round trip when others join meanwhile). A
          // failure leaves the place to run out.
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
        this.watches.served(lineName, owner);
        return {};
      }
      if (added!.status !== 'NS') throw unexpected('add', added!);
      if (current!.status === 'EN') continue; // released between the add and the read
      if (current!.status !== 'VA') throw unexpected('get', current!);
      // A value that is not a lease of ours (another program's) is held by an unknown owner.
      const holder = decodeLease(current!.value);
      if (holder?.owner !== owner) {
        if (lineMs !== undefined) await this.join(connection, lineName, owner, lineMs, line);
        return null;
      }
      // The owner already holds it (a retry after a lost reply): refresh it, keep what it had.
      const cas = flagValue(current!, 'c');
      if (cas === undefined) throw unexpected('get', current!);
      lease.fence = holder.fence;
      const stored = await this.compareAndSet(connection, name, cas, lease, seconds);
      if (stored === undefined) continue;
      this.remember(name, { owner, cas: stored, fence: lease.fence });
      return lease.fence === undefined ? {} : { fence: lease.fence };
    }
    // The key kept changing hands under the tries: a waiter still takes its place.
    if (lineMs !== undefined) {
      await this.join(connection, lineName, owner, lineMs, await fetchLine(connection, lineName));
    }
    return null;
  }

  async release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    const { lease, line } = memcachedKeys(key);
    const connection = this.connectionFor(lease);
    if (owner === UNKNOWN_OWNER) return this.releaseUnknown(connection, lease);
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
        const next = state.places.find((place) => place.expiresAt > now && place.owner !== owner);
        if (next?.bell !== undefined) this.bellsOf().ring(next.bell, key);
        return 'done';
      }
      if (reply!.status === 'EX' || reply!.status === 'NF') return 'changed';
      throw unexpected('delete', reply!);
    }).finally(() => {
      if (this.written.get(lease)?.owner === owner) this.written.delete(lease);
    });
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
  onRelease(key: string, listener: () => void): () => void {
    const { lease, line } = memcachedKeys(key);
    return this.watches.listen(lease, line, listener);
  }

  /** Remember whether `lineName` had anyone in it; returns `line`. */
  private note(lineName: string, line: LineState): LineState {
    if (line.places.length === 0) this.lined.delete(lineName);
    else {
      if (this.lined.size >= MAX_REMEMBERED) this.lined.clear();
      this.lined.set(lineName, Date.now());
    }
    return line;
  }

  private async join(
    connection: MetaConnection,
    lineName: string,
    owner: string,
    lineMs: number,
    line: ReturnType<typeof readLine>,
  ): Promise<void> {
    // Noted before the write, so that the watch starts even if the reply is slow.
    this.watches.waiting(lineName, owner);
    const bells = this.bellsOf();
    bells.open();
    await joinLine(connection, lineName, owner, lineMs, line, bells.bell);
  }

  /** This store's bells, made on first use; named after its servers. */
  private bellsOf(): Bells {
    if (this.bells === undefined) {
      const servers = this.connections.map((c) => c.address).sort();
      const shared = createHash('sha256').update(servers.join(' ')).digest('hex').slice(0, 16);
      this.bells = new Bells(`memcached-${shared}`, (key) =>
        this.watches.rung(memcachedKeys(key).line),
      );
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
