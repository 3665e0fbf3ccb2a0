import { flagValue, MemcachedError, type MetaConnection, type MetaReply } from './connection.js';
import { expirySeconds } from './lease.js';

/**
 * A lock's line of waiters, one item beside its lease: a line per place, `<expiresAtMs> <owner>`,
 * first come first, and after the owner, when the waiter's store has a bell (see
 * src/local/bells.ts) that a release on its machine can ring, `\t<claimMs>\t<bell>`: the claim
 * is how long a lease handed to the waiter lasts before it extends it (see `MemcachedStore`).
 * Earlier versions read the bell alone (`\t<bell>`), and such a place is still read here, with
 * no claim; they read and keep a place with a claim as one of an owner they do not know
 * (`<owner>\t<claimMs>`), so they still wait behind it and ring its bell. The line is
 * changed only under compare-and-swap, so two waiters joining at once cannot drop each other.
 * A place lasts `lineMs` from its waiter's last renewal, judged by the clock of whoever reads
 * the line (memcached only counts whole seconds): a client whose clock is far off misjudges
 * places, which costs fairness, never exclusion, as the lease decides who holds the key. The
 * item lives as long as its last place and goes when the line empties.
 */
export interface Place {
  owner: string;
  expiresAt: number;
  bell?: number;
  /** How long a lease handed to this place lasts (ms); only beside a bell. */
  claim?: number;
}

export interface LineState {
  places: Place[];
  /** The item's CAS, undefined when there is no line item. */
  cas: string | undefined;
}

const NUMBER = /^\d{1,15}$/;

// Past this many failed compare-and-swaps a waiter stops trying to join or leave for this
// attempt: one left without a place is told by its watch to try again (see `Watches.unplaced`).
const CAS_ATTEMPTS = 5;

/** The line in an `mg <line> v c` reply. */
export function readLine(reply: MetaReply): LineState {
  if (reply.status === 'EN') return { places: [], cas: undefined };
  if (reply.status !== 'VA') throw unexpected('get', reply);
  const places: Place[] = [];
  for (const entry of (reply.value ?? Buffer.alloc(0)).toString('utf8').split('\n')) {
    const space = entry.indexOf(' ');
    if (space < 0) continue;
    const expiresAt = Number(entry.slice(0, space));
    let owner = entry.slice(space + 1);
    let bell = 0;
    let claim = 0;
    let tab = owner.lastIndexOf('\t');
    if (tab >= 0 && NUMBER.test(owner.slice(tab + 1))) {
      bell = Number(owner.slice(tab + 1));
      owner = owner.slice(0, tab);
      tab = owner.lastIndexOf('\t');
      if (tab >= 0 && NUMBER.test(owner.slice(tab + 1))) {
        claim = Number(owner.slice(tab + 1));
        owner = owner.slice(0, tab);
      }
    }
    if (!Number.isFinite(expiresAt) || owner === '') continue;
    const place: Place = { owner, expiresAt };
    if (bell > 0) {
      place.bell = bell;
      if (claim > 0) place.claim = claim;
    }
    places.push(place);
  }
  return { places, cas: flagValue(reply, 'c') };
}

/** The first place that has not run out, if any. */
export function firstLive(line: LineState, now: number): Place | undefined {
  return line.places.find((place) => place.expiresAt > now);
}

/** The first place of another owner than `owner` that has not run out, if any. */
export function firstLiveBut(places: Place[], owner: string, now: number): Place | undefined {
  return places.find((place) => place.expiresAt > now && place.owner !== owner);
}

/**
 * Take a place at the end of the line for `lineMs`, or push the end of `owner`'s own place; a
 * place with more than half its term left, the same bell and the same claim is kept as it is
 * (waiters renew at least once a second), so that polling writes nothing. `line` is the state
 * read with the attempt; `bell` is the waiter's store's, if it has one, and `claim` how long a
 * lease handed to the place lasts. Resolves false when the line kept changing under every
 * compare-and-swap and the waiter has no live place in it (one it had may still stand).
 */
export async function joinLine(
  connection: MetaConnection,
  name: string,
  owner: string,
  lineMs: number,
  line: LineState,
  bell: number | undefined,
  claim: number,
): Promise<boolean> {
  // A place is one line of text, and a tab ends its owner: an owner with either cannot have one
  // (it polls).
  if (owner.includes('\n') || owner.includes('\t')) return true;
  let state = line;
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const now = Date.now();
    const mine = state.places.find((place) => place.owner === owner);
    if (
      mine !== undefined &&
      mine.expiresAt - now > lineMs / 2 &&
      mine.bell === bell &&
      (bell === undefined || mine.claim === claim)
    ) {
      return true;
    }
    const until = Math.ceil(now + lineMs);
    const places = state.places.filter((place) => place.expiresAt > now);
    const index = places.findIndex((place) => place.owner === owner);
    const place: Place =
      bell === undefined ? { owner, expiresAt: until } : { owner, expiresAt: until, bell, claim };
    if (index >= 0) places[index] = place;
    else places.push(place);
    if (await writeLine(connection, name, places, state.cas, now)) return true;
    state = await fetchLine(connection, name);
  }
  const now = Date.now();
  return state.places.some((place) => place.owner === owner && place.expiresAt > now);
}

/**
 * Leave the line (a waiter served, or giving up); places that ran out go too. Resolves whether
 * the place is gone; `attempts` bounds the compare-and-swaps (each failed one reads the line
 * again).
 */
export async function leaveLine(
  connection: MetaConnection,
  name: string,
  owner: string,
  line?: LineState,
  attempts = CAS_ATTEMPTS,
): Promise<boolean> {
  let state = line ?? (await fetchLine(connection, name));
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (state.cas === undefined || !state.places.some((place) => place.owner === owner)) {
      return true;
    }
    const now = Date.now();
    const places = state.places.filter((place) => place.owner !== owner && place.expiresAt > now);
    if (await writeLine(connection, name, places, state.cas, now)) return true;
    if (attempt + 1 < attempts) state = await fetchLine(connection, name);
  }
  return false;
}

export async function fetchLine(connection: MetaConnection, name: string): Promise<LineState> {
  const [reply] = await connection.send([{ line: `mg ${name} v c` }]);
  return readLine(reply!);
}

/**
 * Store `places` in place of the line read with `cas` (none: add a new item); an empty line is
 * deleted. Resolves false when another write came in between.
 */
async function writeLine(
  connection: MetaConnection,
  name: string,
  places: Place[],
  cas: string | undefined,
  now: number,
): Promise<boolean> {
  if (places.length === 0) {
    if (cas === undefined) return true;
    const [reply] = await connection.send([{ line: `md ${name} C${cas}` }]);
    if (reply!.status === 'HD') return true;
    if (reply!.status === 'EX' || reply!.status === 'NF') return false;
    throw unexpected('delete', reply!);
  }
  const data = Buffer.from(
    places.map((place) => `${place.expiresAt} ${place.owner}${placeTail(place)}`).join('\n'),
    'utf8',
  );
  const last = Math.max(...places.map((place) => place.expiresAt));
  const mode = cas === undefined ? 'ME' : `C${cas}`;
  const [reply] = await connection.send([
    { line: `ms ${name} ${data.length} T${expirySeconds(last - now)} ${mode}`, data },
  ]);
  if (reply!.status === 'HD') return true;
  if (reply!.status === 'NS' || reply!.status === 'EX' || reply!.status === 'NF') return false;
  throw unexpected('store', reply!);
}

/** What follows a place's owner: its claim and bell, or its bell alone, or nothing. */
function placeTail({ bell, claim }: Place): string {
  if (!bell) return '';
  return claim ? `\t${claim}\t${bell}` : `\t${bell}`;
}

function unexpected(operation: string, reply: MetaReply): MemcachedError {
  return new MemcachedError(
    `memcached gave an unexpected reply to ${operation} of a line: ${[reply.status, ...reply.flags].join(' ')}`,
  );
}
