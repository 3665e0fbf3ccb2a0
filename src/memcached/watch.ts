import type { MetaConnection } from './connection.js';
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

/**
 * The short polls behind `MemcachedStore.onRelease`: one watch per key with listeners, which
 * polls only while an owner of this store has a place in the key's line.
 */
export class Watches {
  readonly #connectionFor: (name: string) => MetaConnection;
  /** Per line item, this store's owners that have a place in it. */
  readonly #owners = new Map<string, Set<string>>();
  readonly #watches = new Map<string, Watch>();
  #closed = false;

  constructor(connectionFor: (name: string) => MetaConnection) {
    this.#connectionFor = connectionFor;
  }

  /** `owner` joins the line `line`: its key's watch polls from now on. */
  waiting(line: string, owner: string): void {
    let owners = this.#owners.get(line);
    if (owners === undefined) this.#owners.set(line, (owners = new Set()));
    owners.add(owner);
    this.#watches.get(line)?.kick();
  }

  /** `owner` left the line or was served; whether it was in it. */
  served(line: string, owner: string): boolean {
    const owners = this.#owners.get(line);
    if (owners === undefined || !owners.delete(owner)) return false;
    if (owners.size === 0) this.#owners.delete(line);
    return true;
  }

  ownersIn(line: string): Set<string> | undefined {
    return this.#owners.get(line);
  }

  listen(lease: string, line: string, listener: () => void): () => void {
    let watch = this.#watches.get(line);
    if (watch === undefined) {
      watch = new Watch(this, this.#connectionFor(lease), lease, line);
      this.#watches.set(line, watch);
    }
    const call = () => listener();
    watch.listeners.add(call);
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
  }
}

class Watch {
  readonly listeners = new Set<() => void>();
  #running = false;
  #wake: (() => void) | undefined;

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

  start(): void {
    if (this.#running) return;
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
    while (this.listeners.size > 0 && !this.watches.closed) {
      const owners = this.watches.ownersIn(this.line);
      if (owners === undefined) {
        await this.#pause(Number.POSITIVE_INFINITY);
        changedAt = performance.now();
        continue;
      }
      let free: boolean;
      let position: number;
      let first: string | undefined;
      try {
        const [lease, waiting] = await this.connection.send([
          { line: `mg ${this.lease}` },
          { line: `mg ${this.line} v` },
        ]);
        free = lease!.status === 'EN';
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
      if (free && (first === undefined || position === 0)) {
        if (!wasFree || now - toldAt >= RETELL_MS) {
          toldAt = now;
          for (const listener of [...this.listeners]) listener();
        }
      }
      wasFree = free;
      firstOwner = first;
      const since = now - changedAt;
      const delay =
        position === 0
          ? since < SPIN_MS
            ? 0
            : Math.min(FIRST_MAX_MS, Math.max(1, since / 20))
          : position < 0
            ? OTHERS_MS
            : Math.min(OTHERS_MS, position * SECOND_MS);
      await this.#pause(delay);
    }
  }

  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let immediate: NodeJS.Immediate | undefined;
      const done = () => {
        if (timer !== undefined) clearTimeout(timer);
        if (immediate !== undefined) clearImmediate(immediate);
        this.#wake = undefined;
        resolve();
      };
      this.#wake = done;
      if (ms === 0) immediate = setImmediate(done);
      else if (ms !== Number.POSITIVE_INFINITY) {
        timer = setTimeout(done, ms);
        // A watch must not keep the process alive: the waiter it serves has its own timers.
        timer.unref();
      }
    });
  }
}
