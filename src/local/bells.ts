import { randomInt } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, renameSync, rmdirSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Handoff } from 'cachelock';

/**
 * Wake-ups between the processes of one machine that share a store (one SQLite file, one set of
 * memcached servers), without a server of their own: each store that has a waiter listens on a
 * socket of its own (a Unix-domain socket in a per-user folder named after what the stores
 * share; a named pipe on Windows) whose number, its bell, rides in the waiter's place in line.
 * A release rings the bell of the first live place with the key's name, and the hand-off when
 * it handed the key to that place: a line `"<key>"`, or `["<key>","<owner>","<fence>",<claimMs>]`
 * (JSON). A bell that is gone (its process died, or it is on another machine) only refuses the
 * connection: the ring is lost and that waiter's polling finds the key, as it would without
 * bells. Stores reached under different users, or from another machine, just get no rings.
 */

/** Bells are whole numbers below 2^48: exact in a JavaScript number and in SQLite. */
const BELL_RANGE = 2 ** 48;
// A connection to a peer's bell is kept this long after its last ring, for the next ones.
const IDLE_MS = 10_000;

export class Bells {
  readonly #folder: string;
  readonly #onRing: (key: string, handoff?: Handoff) => void;
  #server: Server | undefined;
  #bell: number | undefined;
  #path: string | undefined;
  #closed = false;
  /** The folder is not safe to listen in: this store has no bell (its waiters poll). */
  #unusable = false;
  readonly #peers = new Map<number, Socket>();
  /** Per connection not yet made, what to call if it is refused (see `ring`). */
  readonly #unsent = new Map<Socket, ((dead: boolean) => void)[]>();
  /** The connections of peers ringing this bell, closed with it. */
  readonly #accepted = new Set<Socket>();

  /**
   * `shared` names what the stores share, as a file name: every store that names it alike (a
   * database by its device and inode, so that every path to it finds one folder) rings alike.
   */
  constructor(shared: string, onRing: (key: string, handoff?: Handoff) => void) {
    this.#folder = process.platform === 'win32' ? `cachelock-${shared}` : bellFolder(shared);
    this.#onRing = onRing;
  }

  /** This store's bell once it listens, else undefined (then its waiters only poll). */
  get bell(): number | undefined {
    return this.#bell;
  }

  /** Start listening, once; a failure leaves the store without bells. */
  open(): void {
    if (this.#server !== undefined || this.#closed || this.#unusable) return;
    if (process.platform !== 'win32') {
      let own: boolean;
      try {
        own = ownFolder(this.#folder);
      } catch {
        // The folder went away in between (another store closed its last bell): no bell now,
        // the next wait tries again.
        return;
      }
      if (!own) {
        this.#unusable = true;
        return;
      }
    }
    const bell = randomInt(1, BELL_RANGE);
    const path = this.#pathOf(bell);
    // A socket is bound (its file made) before it listens: in between, a peer's sweep would be
    // refused and delete the file of a live bell, whose process then hears no ring. So it
    // listens under a name no sweep reads, and takes its name once it listens.
    const windows = process.platform === 'win32';
    const binding = windows ? path : `${path}-new`;
    const server = createServer((socket) => this.#receive(socket));
    this.#server = server;
    server.on('error', () => {
      // Taken (a bell number drawn twice) or no folder: try no further, polling covers it.
      if (this.#server === server) this.#bell = undefined;
    });
    try {
      const ready = () => {
        if (this.#closed || this.#server !== server) return;
        if (this.#path === undefined && !windows) {
          try {
            renameSync(binding, path);
          } catch {
            // No bell this time (the store's waiters poll); the next wait tries again.
            unlinkQuietly(binding);
            this.#server = undefined;
            server.close();
            return;
          }
          leftAtExit.add(path);
          sweepStale(this.#folder, path);
        }
        this.#bell = bell;
        this.#path = path;
      };
      server.listen(binding, ready);
      server.unref();
      // A Unix-domain socket is bound by now; 'listening' only follows on the next tick.
      if (server.listening) ready();
    } catch {
      // No folder for bells: the store works without them.
    }
  }

  /**
   * Tell the store with `bell` that `key` was freed, or handed over; ours is told directly.
   * `lost` is called when the ring surely never reached it: `dead` when the bell's socket is
   * there and nobody listens (its process died, or closed the store; on Linux only), else (no such
   * socket in this store's folder: the bell's store rings in another, another user's or its
   * servers named otherwise) it may live. A ring on a connection that had been made may be lost
   * without a word.
   */
  ring(bell: number, key: string, handoff?: Handoff, lost?: (dead: boolean) => void): void {
    if (bell === this.#bell) {
      queueMicrotask(() => this.#onRing(key, handoff));
      return;
    }
    if (this.#closed) return;
    let peer = this.#peers.get(bell);
    if (peer === undefined || peer.destroyed) {
      const path = this.#pathOf(bell);
      peer = createConnection(path);
      const made = peer;
      this.#peers.set(bell, made);
      made.unref();
      made.setTimeout(IDLE_MS, () => made.destroy());
      made.once('connect', () => this.#unsent.delete(made));
      made.on('error', (error: NodeJS.ErrnoException) => {
        unlinkIfRefused(path, error);
        const unsent = this.#unsent.get(made);
        this.#unsent.delete(made);
        made.destroy();
        // Refused before it connected: nothing written on it was read.
        if (unsent !== undefined && (error.code === 'ECONNREFUSED' || error.code === 'ENOENT')) {
          // On macOS and the BSDs a live socket whose backlog is full refuses too.
          const dead = error.code === 'ECONNREFUSED' && process.platform === 'linux';
          for (const call of unsent) call(dead);
        }
      });
      made.on('close', () => {
        if (this.#peers.get(bell) === made) this.#peers.delete(bell);
      });
      // Replies are never sent: reading only notices the end.
      made.resume();
    }
    const told =
      handoff === undefined ? key : [key, handoff.owner, String(handoff.fence), handoff.ttlMs ?? 0];
    peer.write(`${JSON.stringify(told)}\n`);
    if (lost !== undefined && peer.connecting) {
      let unsent = this.#unsent.get(peer);
      if (unsent === undefined) this.#unsent.set(peer, (unsent = []));
      unsent.push(lost);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const peer of this.#peers.values()) peer.destroy();
    this.#peers.clear();
    this.#unsent.clear();
    // A peer's rings after this fail rather than land unread.
    for (const socket of this.#accepted) socket.destroy();
    this.#accepted.clear();
    this.#server?.close();
    this.#server = undefined;
    if (this.#path !== undefined && process.platform !== 'win32') {
      leftAtExit.delete(this.#path);
      unlinkQuietly(this.#path);
      // The file's folder goes with its last bell (removing a folder that is not empty fails).
      try {
        rmdirSync(this.#folder);
      } catch {
        // Another store's bell is still in it.
      }
    }
    this.#bell = undefined;
  }

  #pathOf(bell: number): string {
    const name = bell.toString(36);
    return process.platform === 'win32'
      ? `\\\\.\\pipe\\${this.#folder}-${name}`
      : join(this.#folder, `${name}.s`);
  }

  #receive(socket: Socket): void {
    let pending = '';
    this.#accepted.add(socket);
    socket.on('close', () => this.#accepted.delete(socket));
    // A releaser keeps its connection open for its next rings: that must not keep this
    // process alive once it waits for nothing.
    socket.unref();
    socket.setEncoding('utf8');
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: string) => {
      pending += chunk;
      for (let end = pending.indexOf('\n'); end >= 0; end = pending.indexOf('\n')) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 1);
        let told: unknown;
        try {
          told = JSON.parse(line);
        } catch {
          continue;
        }
        if (typeof told === 'string') this.#onRing(told);
        else if (Array.isArray(told) && typeof told[0] === 'string') {
          // A hand-off; one this version cannot read still wakes the key's waiters.
          this.#onRing(told[0], handoffOf(told));
        }
      }
      // Lines are short: a peer that sends a long one without an end is not a store.
      if (pending.length > 65_536) socket.destroy();
    });
  }
}

/** The hand-off in a ring's `[key, owner, fence, claimMs]`, or undefined for anything else. */
function handoffOf(told: unknown[]): Handoff | undefined {
  const [, owner, fence, ttlMs] = told;
  if (told.length !== 4 || typeof owner !== 'string') return undefined;
  if (typeof fence !== 'string' || !/^\d{1,30}$/.test(fence)) return undefined;
  if (typeof ttlMs !== 'number' || !(ttlMs > 0)) return undefined;
  return { owner, fence: BigInt(fence), ttlMs };
}

// The sockets of stores never closed go when the process exits normally; after a crash a
// socket file stays, and ringing it is only refused.
const leftAtExit = new Set<string>();
process.once('exit', () => {
  for (const path of leftAtExit) unlinkQuietly(path);
});

/** How many sockets one store checks when it opens its bell. */
const SWEEP_LIMIT = 64;
/**
 * A socket still under its listening name (`-new`) this long after it was made belongs to a
 * process that died between listening and taking its name, which takes a moment.
 */
const NEW_STALE_MS = 60_000;

/**
 * Delete the sockets of processes that died without closing (a refused connection means nobody
 * listens), a bounded number at a time, so that crashes do not pile files up in the folder.
 */
function sweepStale(folder: string, own: string): void {
  let names: string[];
  try {
    names = readdirSync(folder).filter((name) => name.endsWith('.s') || name.endsWith('.s-new'));
  } catch {
    return;
  }
  for (const name of names.slice(0, SWEEP_LIMIT)) {
    const path = join(folder, name);
    if (path === own) continue;
    if (name.endsWith('-new')) {
      // Not probed: a socket not yet listening refuses as a dead one does.
      try {
        const stats = lstatSync(path);
        if (stats.isSocket() && Date.now() - stats.mtimeMs > NEW_STALE_MS) unlinkQuietly(path);
      } catch {
        // Gone meanwhile.
      }
      continue;
    }
    const probe = createConnection(path);
    probe.unref();
    probe.on('connect', () => probe.destroy());
    probe.on('error', (error: NodeJS.ErrnoException) => {
      unlinkIfRefused(path, error);
      probe.destroy();
    });
  }
}

/**
 * A connection to a bell's socket was refused: nobody listens there, its process died without
 * closing (a socket takes its name only once it listens, see `open`), so the file goes. On Linux
 * only: on macOS and the BSDs a live socket whose backlog is full refuses too.
 */
function unlinkIfRefused(path: string, error: NodeJS.ErrnoException): void {
  if (error.code === 'ECONNREFUSED' && process.platform === 'linux') unlinkQuietly(path);
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}

/**
 * Make the per-user folder and the file's folder in it (0700), and accept them only if they are
 * this user's real folders, out of reach of everyone else: on a shared /tmp another user could
 * have made them first, to listen to rings (they carry key names) or to send them.
 */
function ownFolder(folder: string): boolean {
  const uid = process.getuid?.();
  for (const path of [dirname(folder), folder]) {
    try {
      mkdirSync(path, { mode: 0o700 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') return false;
    }
    const stats = lstatSync(path);
    if (!stats.isDirectory() || (uid !== undefined && stats.uid !== uid)) return false;
    if ((stats.mode & 0o077) !== 0) return false;
  }
  return true;
}

function bellFolder(shared: string): string {
  const user = process.getuid?.() ?? 'user';
  return join(tmpdir(), `cachelock-${user}`, shared);
}
