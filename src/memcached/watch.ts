import { hostname } from 'node:os';
import { type Handoff, parseOwner } from 'cachelock';
import type { MetaConnection } from './connection.js';
import { decodeLease } from './lease.js';
import { firstLive, readLine } from './line.js';

// The first in line polls back to back (one round trip after another) for this long after the
// key last changed hands, then every millisecond or more, up to FIRST_MAX_MS while the hold goes
// on; the second in line every millisecond (it is next); the one at position p (0 first) every
// p milliseconds, at most OTHERS_MS: a line of short holds moves up a place every hold or so,
// and a waiter that slept OTHERS_MS through its turn kept the free key waiting for it.
const SPIN_MS = 3;
const FIRST_MAX_MS = 20;
const SECOND_MS = 1;
const OTHERS_MS = 25;
// A failure to poll (the server away) pauses the watch; the core's own polling goes on.
const FAILED_MS = 200;
// Told that the key is free, a waiter tries at once; if the key stays free, tell it again after
// this long (its attempt may have met a place that has since run out).
const RETELL_MS = 50;
// A key found handed to a waiter of this store is told to it (a try confirms it) once it has
// been so this long with no ring: the ring of a hand-off on this machine comes well before.
const UNRUNG_MS = 20;
// Once a release has rung this store's bell for the key, every place polls this seldom while the
// holder is on this machine: its release rings the first place's bell, and the poll is left to
// find leases that ran out and rings that never came. A holder elsewhere (its owner names
// another host) is polled for on the schedule above, and so is the key after a poll found it
// free before a ring came, until the next ring.
const BELLED_MS = 50;
// Lines remembered as rung, at most; past it the memory starts afresh (polls are fast again).
const MAX_BELLED = 10_000;
// A waiter left without a place is told to try again after a random wait below 1 ms, doubled
// per such tell in a row up to this.
const UNPLACED_MAX_MS = 32;

/**
 * The short polls behind `MemcachedStore.onRelease`: one watch per key with listeners, which
 * polls only while an owner of this store has a place in the key's line.
 */
export class Watches {
  readonly #connectionFor: (name: string) => MetaConnection;
  /** Per line item, this store's owners that have a place in it. */
  readonly #owners = new Map<string, Set<string>>();
  readonly #watches = new Map<string, Watch>();
  /** The lines whose last wake-up came from a ring (see BELLED_MS), kept across waits. */
  readonly #belled = new Set<string>();
  /** Per line item, this store's waiting owners whose last join found no place. */
  readonly #unplaced = new Map<string, Set<string>>();
  #closed = false;

  constructor(connectionFor: (name: string) => MetaConnection) {
    this.#connectionFor = connectionFor;
  }

  /** `owner` joins the line `line`: its key's watch polls from now on. */
  waiting(line: string, owner: string): void {
    let owners = this.#owners.get(line);
    if (owners === undefined) this.#owners.set(line, (owners = new Set()));
    owners.add(owner);
    this.#dropUnplaced(line, owner);
    this.#watches.get(line)?.kick();
  }

  /** `owner` waits in `line` without a place (its join gave up): its watch tells it to try. */
  unplaced(line: string, owner: string): void {
    if (!this.#owners.get(line)?.has(owner)) return;
    let owners = this.#unplaced.get(line);
    if (owners === undefined) this.#unplaced.set(line, (owners = new Set()));
    owners.add(owner);
    this.#watches.get(line)?.kick();
  }

  /** Whether an owner of this store waits in `line` without a place; the mark goes. */
  takeUnplaced(line: string): boolean {
    return this.#unplaced.delete(line);
  }

  #dropUnplaced(line: string, owner: string): void {
    const owners = this.#unplaced.get(line);
    if (owners?.delete(owner) && owners.size === 0) this.#unplaced.delete(line);
  }

  /** `owner` left the line or was served; whether it was in it. */
  served(line: string, owner: string): boolean {
    this.#dropUnplaced(line, owner);
    const owners = this.#owners.get(line);
    if (owners === undefined || !owners.delete(owner)) return false;
    if (owners.size === 0) this.#owners.delete(line);
    return true;
  }

  /** Whether `owner` waits in the line `line`. */
  isWaiting(line: string, owner: string): boolean {
    return this.#owners.get(line)?.has(owner) === true;
  }

  ownersIn(line: string): Set<string> | undefined {
    return this.#owners.get(line);
  }

  /**
   * A release rang this store's bell for the key of line `line`: its listeners try now, or with
   * `handoff` are told who was handed the key.
   */
  rung(line: string, handoff?: Handoff): void {
    if (this.#belled.size >= MAX_BELLED) this.#belled.clear();
    this.#belled.add(line);
    this.#watches.get(line)?.rung(handoff);
  }

  /** Whether anyone listens for the key of line `line`. */
  hasListeners(line: string): boolean {
    return (this.#watches.get(line)?.listeners.size ?? 0) > 0;
  }

  /** Whether rings wake the waiters of `line` (see BELLED_MS). */
  isBelled(line: string): boolean {
    return this.#belled.has(line);
  }

  /** A poll found `line`'s key free before a ring came: poll on the fast schedule again. */
  unbell(line: string): void {
    this.#belled.delete(line);
  }

  listen(lease: string, line: string, listener: (handoff?: Handoff) => void): () => void {
    let watch = this.#watches.get(line);
    if (watch === undefined) {
      watch = new Watch(this, this.#connectionFor(lease), lease, line);
      this.#watches.set(line, watch);
    }
    const call = (handoff?: Handoff) => listener(handoff);
    watch.listeners.add(call);
    // A running watch polls again now: a new listener hears at once of a key that was freed
    // for it before it listened (the store's replaysWakeups), as a new watch's first poll tells.
    if (!this.#closed) watch.start();
    const stopping = watch;
    return () => {
      stopping.listeners.delete(call);
      if (stopping.listeners.size === 0) {
        stopping.kick();
        if (this.#watches.get(line) === stopping) this.#watches.delete(line);
      }
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.#closed = true;
    for (const watch of this.#watches.values()) watch.kick();
    this.#watches.clear();
    this.#owners.clear();
    this.#belled.clear();
    this.#unplaced.clear();
  }
}

class Watch {
  readonly listeners = new Set<(handoff?: Handoff) => void>();
  #running = false;
  #wake: (() => void) | undefined;
  /** When a ring last told the listeners, on `performance.now()`. */
  #rungAt = Number.NEGATIVE_INFINITY;
  /** Tells in a row to try again for want of a place (see UNPLACED_MAX_MS). */
  #unplacedTells = 0;

  constructor(
    private readonly watches: Watches,
    private readonly connection: MetaConnection,
    private readonly lease: string,
    private readonly line: string,
  ) {}

  /** End a pause at once: an owner joined the line, or the last listener left. */
  kick(): void {
    this.#wake?.();
  }

  /** A ring said the key is free, or handed over: tell the listeners, so a poll need not. */
  rung(handoff?: Handoff): void {
    this.#rungAt = performance.now();
    for (const listener of [...this.listeners]) listener(handoff);
  }

  start(): void {
    if (this.#running) {
      this.kick();
      return;
    }
    this.#running = true;
    this.#run()
      .catch(() => {})
      .finally(() => {
        this.#running = false;
      });
  }

  async #run(): Promise<void> {
    let wasFree = false;
    let firstOwner: string | undefined;
    let changedAt = performance.now();
    let toldAt = Number.NEGATIVE_INFINITY;
    // The first poll of the watch, or the first since an owner joined the line.
    let firstPoll = true;
    // Since when the key has been this store's waiter `mineHolder`'s (see UNRUNG_MS).
    let mineHolder: string | undefined;
    let mineSince = 0;
    while (this.listeners.size > 0 && !this.watches.closed) {
      const owners = this.watches.ownersIn(this.line);
      if (owners === undefined) {
        await this.#pause(Number.POSITIVE_INFINITY);
        changedAt = performance.now();
        firstPoll = true;
        continue;
      }
      let free: boolean;
      let position: number;
      let first: string | undefined;
      let local = false;
      let holder: string | undefined;
      try {
        const [lease, waiting] = await this.connection.send([
          { line: `mg ${this.lease} v` },
          { line: `mg ${this.line} v` },
        ]);
        free = lease!.status === 'EN';
        holder = free ? undefined : decodeLease(lease!.value)?.owner;
        local = isLocal(holder);
        const live = readLine(waiting!);
        const now = Date.now();
        first = firstLive(live, now)?.owner;
        position = live.places
          .filter((place) => place.expiresAt > now)
          .findIndex((place) => owners.has(place.owner));
      } catch {
        await this.#pause(FAILED_MS);
        continue;
      }
      const now = performance.now();
      if (free !== wasFree || first !== firstOwner) changedAt = now;
      const rung = now - this.#rungAt < RETELL_MS;
      // A waiter whose join gave up tries again now, not at its own next poll.
      if (position >= 0) this.#unplacedTells = 0;
      if (this.watches.takeUnplaced(this.line)) {
        const limit = Math.min(UNPLACED_MAX_MS, 2 ** this.#unplacedTells++);
        await this.#pause(Math.random() * limit);
        toldAt = performance.now();
        for (const listener of [...this.listeners]) listener();
      }
      if (free && (first === undefined || position === 0) && !rung) {
        // Found by a later poll, not told by a ring: the holder may be on another machine. (The
        // first poll of a wait finds a key freed before this waiter's place was written, which
        // no release could ring for.)
        if (!firstPoll) this.watches.unbell(this.line);
        if (!wasFree || now - toldAt >= RETELL_MS) {
          toldAt = now;
          for (const listener of [...this.listeners]) listener();
        }
      }
      // Handed to a waiter of this store, and no ring came (it comes well within UNRUNG_MS):
      // the waiter confirms with a try.
      const mine = holder !== undefined && owners.has(holder) ? holder : undefined;
      if (mine === undefined || mine !== mineHolder) mineSince = now;
      mineHolder = mine;
      if (
        mine !== undefined &&
        !rung &&
        now - mineSince >= UNRUNG_MS &&
        now - toldAt >= RETELL_MS
      ) {
        toldAt = now;
        for (const listener of [...this.listeners]) listener({ owner: mine });
      }
      wasFree = free;
      firstOwner = first;
      const since = now - changedAt;
      // Few polls only while a holder on this machine, which rings, has the key.
      const delay =
        local && this.watches.isBelled(this.line)
          ? BELLED_MS
          : position === 0
            ? since < SPIN_MS
              ? 0
              : Math.min(FIRST_MAX_MS, Math.max(1, since / 20))
            : position < 0
              ? OTHERS_MS
              : Math.min(OTHERS_MS, position * SECOND_MS);
      firstPoll = await this.#pause(delay);
    }
  }

  /** Resolves true when a kick ended the pause, false when it ran out. */
  #pause(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let immediate: NodeJS.Immediate | undefined;
      const done = (kicked: boolean) => {
        if (timer !== undefined) clearTimeout(timer);
        if (immediate !== undefined) clearImmediate(immediate);
        this.#wake = undefined;
        resolve(kicked);
      };
      this.#wake = () => done(true);
      if (ms === 0) immediate = setImmediate(() => done(false));
      else if (ms !== Number.POSITIVE_INFINITY) {
        timer = setTimeout(() => done(false), ms);
        // A watch must not keep the process alive: the waiter it serves has its own timers.
        timer.unref();
      }
    });
  }
}

const thisHost = hostname();

/** Whether `owner` was made on this machine, so that its release rings bells here. */
export function isLocal(owner: string | undefined): boolean {
  return owner !== undefined && parseOwner(owner).host === thisHost;
}
