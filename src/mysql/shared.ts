import type { Acquired, LeaseInfo, SharedRequest } from 'cachelock';
import { micros, NOW_US } from './clock.js';
import type { Db } from './connection.js';
import type { Wakeups } from './listener.js';
import {
  keyLabel,
  ownerBytes,
  rowLockName,
  type SharedSpace,
  sharedKeyId,
  type TableName,
} from './names.js';

const KEY = 0;
const LEASE = 1;
const PLACE = 2;

// Lock the key's row, creating it if missing: every operation on the key starts here, so they
// run one at a time and each sees what the ones before committed.
const lockSql = (t: TableName) => `
  INSERT INTO ${t.shared.sql} (id, owner, kind, weight, seq, fence, expires_us, \`key\`)
  VALUES (?, '', ${KEY}, 0, 0, NULL, 0, CONVERT(? USING utf8mb4))
  ON DUPLICATE KEY UPDATE seq = seq`;
const lockExistingSql = (t: TableName) => `
  SELECT 1 FROM ${t.shared.sql} WHERE id = ? AND owner = '' FOR UPDATE`;
const readSql = (t: TableName) => `
  SELECT owner, kind, weight, CAST(seq AS CHAR) AS seq, CAST(fence AS CHAR) AS fence,
         CAST(expires_us AS CHAR) AS expires_us, CAST(${NOW_US} AS CHAR) AS now_us
  FROM ${t.shared.sql} WHERE id = ? FOR UPDATE`;
const purgeSql = (t: TableName) => `
  DELETE FROM ${t.shared.sql} WHERE id = ? AND kind <> ${KEY} AND expires_us <= ?`;
const refreshSql = (t: TableName) => `
  UPDATE ${t.shared.sql} SET expires_us = ${NOW_US} + ? WHERE id = ? AND owner = ?`;
const placeSql = (t: TableName) => `
  INSERT INTO ${t.shared.sql} (id, owner, kind, weight, seq, fence, expires_us, \`key\`)
  VALUES (?, ?, ${PLACE}, 0, ?, NULL, ${NOW_US} + ?, CONVERT(? USING utf8mb4))`;
const leaseSql = (t: TableName) => `
  REPLACE INTO ${t.shared.sql} (id, owner, kind, weight, seq, fence, expires_us, \`key\`)
  VALUES (?, ?, ${LEASE}, ?, ?, ?, ${NOW_US} + ?, CONVERT(? USING utf8mb4))`;
// The key row outlives every term granted on the key; `seq` and `fence` only rise.
const keyRowSql = (t: TableName) => `
  UPDATE ${t.shared.sql}
  SET seq = GREATEST(seq, ?), fence = COALESCE(?, fence),
      expires_us = GREATEST(expires_us, ${NOW_US} + ?)
  WHERE id = ? AND owner = ''`;
const mineSql = (t: TableName) => `
  SELECT kind, expires_us > ${NOW_US} AS live FROM ${t.shared.sql}
  WHERE id = ? AND owner = ? AND owner <> ''`;
const leaveSql = (t: TableName) => `
  DELETE FROM ${t.shared.sql} WHERE id = ? AND owner = ? AND owner <> ''`;
const keepSql = (t: TableName) => `
  UPDATE ${t.shared.sql}
  SET expires_us = LEAST(expires_us, ${NOW_US} + ?) + 0 * LAST_INSERT_ID(1)
  WHERE id = ? AND owner = ? AND kind = ${LEASE} AND expires_us > ${NOW_US}`;
const leaveLineSql = (t: TableName) => `
  DELETE FROM ${t.shared.sql} WHERE id = ? AND owner = ? AND kind = ${PLACE}`;
const tidySql = (t: TableName) => `
  DELETE FROM ${t.shared.sql} WHERE id = ? AND kind <> ${KEY} AND expires_us <= ${NOW_US}`;
const othersSql = (t: TableName) => `
  SELECT COUNT(*) AS n FROM ${t.shared.sql} WHERE id = ? AND kind <> ${KEY}`;
// The last release of a semaphore's key deletes its row (once the clock has passed its numbers;
// else it is marked expired for a sweep); a read/write lock's row keeps the last writer's fence
// until its term runs out.
const dropKeySql = (t: TableName, always: boolean) => `
  DELETE FROM ${t.shared.sql}
  WHERE id = ? AND owner = '' AND seq < ${NOW_US} ${always ? '' : `AND expires_us <= ${NOW_US}`}`;
const expireKeySql = (t: TableName) => `
  UPDATE ${t.shared.sql} SET expires_us = LEAST(expires_us, ${NOW_US}) WHERE id = ? AND owner = ''`;
const extendSql = (t: TableName) => `
  UPDATE ${t.shared.sql}
  SET expires_us = ${NOW_US} + ? + 0 * LAST_INSERT_ID(1)
  WHERE id = ? AND owner = ? AND kind = ${LEASE} AND expires_us > ${NOW_US}`;
const inspectSql = (t: TableName) => `
  SELECT owner, CAST(fence AS CHAR) AS fence, CAST(expires_us - ${NOW_US} AS CHAR) AS ttl_us
  FROM ${t.shared.sql}
  WHERE id = ? AND kind = ${LEASE} AND expires_us > ${NOW_US}
  ORDER BY seq`;
const sweepSql = (t: TableName) => `
  DELETE FROM ${t.shared.sql}
  WHERE expires_us < ${NOW_US} AND (kind <> ${KEY} OR seq < ${NOW_US})
  ORDER BY expires_us
  LIMIT ?`;

interface Row {
  owner: Buffer | string;
  kind: number | string;
  weight: number | string;
  seq: string;
  fence: string | null;
  expires_us: string;
  now_us: string;
}

const bytes = (owner: Buffer | string): Buffer =>
  Buffer.isBuffer(owner) ? owner : Buffer.from(String(owner), 'utf8');

/** The most bells a refused waiter waits on at once; past them it also polls with back-off. */
const MAX_BELLS = 4;

interface LiveRow {
  owner: Buffer;
  kind: number;
  weight: number;
  seq: bigint;
  fence?: bigint;
}

/**
 * What a refused acquisition waits for: the place just ahead of it (no one passes it, so
 * nothing else matters until it goes), else the leases. Each release then wakes the head of the
 * line only, and each grant the next in line, rather than every waiter at once.
 */
function blockers(live: LiveRow[], who: Buffer, mine: LiveRow | undefined, full: boolean) {
  let ahead: LiveRow | undefined;
  const leases: LiveRow[] = [];
  for (const row of live) {
    if (row.owner.equals(who)) continue;
    if (row.kind === LEASE) leases.push(row);
    else if (
      (mine === undefined || row.seq < mine.seq) &&
      (ahead === undefined || row.seq > ahead.seq)
    ) {
      ahead = row;
    }
  }
  if (ahead !== undefined) return { rows: [ahead], partial: false };
  // The oldest leases first: with like holds, they end first.
  const rows = full ? leases.sort((a, b) => (a.seq < b.seq ? -1 : 1)) : [];
  return { rows: rows.slice(0, MAX_BELLS), partial: rows.length > MAX_BELLS };
}

/**
 * Weighted leases in the shared table, one namespace per `space`. Each call is one transaction
 * that first locks the key's row (see schema.ts), so two pools or processes acquiring the same
 * key are judged one after the other and the limit cannot be passed.
 */
export class MysqlShared {
  readonly #db: Db;
  readonly #space: SharedSpace;
  readonly #run: <T>(operation: () => Promise<T>) => Promise<T>;
  readonly #table: TableName;
  readonly #wakeups: Wakeups | undefined;
  readonly #sql;
  /** Push wake-ups, through a bell (a named lock) per lease and per place in line. */
  readonly onRelease?: (key: string, listener: () => void) => () => void;

  constructor(
    db: Db,
    table: TableName,
    space: SharedSpace,
    run: <T>(operation: () => Promise<T>) => Promise<T>,
    wakeups?: Wakeups,
  ) {
    this.#db = db;
    this.#space = space;
    this.#run = run;
    this.#table = table;
    this.#wakeups = wakeups;
    if (wakeups !== undefined) {
      this.onRelease = (key, listener) =>
        wakeups.listen(this.#group(sharedKeyId(space, key)), () => listener());
    }
    this.#sql = {
      lock: lockSql(table),
      lockExisting: lockExistingSql(table),
      read: readSql(table),
      purge: purgeSql(table),
      refresh: refreshSql(table),
      place: placeSql(table),
      lease: leaseSql(table),
      keyRow: keyRowSql(table),
      mine: mineSql(table),
      leave: leaveSql(table),
      keep: keepSql(table),
      leaveLine: leaveLineSql(table),
      tidy: tidySql(table),
      others: othersSql(table),
      dropKey: dropKeySql(table, space === 'permits'),
      expireKey: expireKeySql(table),
      extend: extendSql(table),
      inspect: inspectSql(table),
    };
  }

  #group(id: Buffer): string {
    return `shared:${id.toString('base64url')}`;
  }

  #bell(id: Buffer, row: 'lease' | 'place', owner: Buffer): string {
    return rowLockName(this.#table, id, row, owner);
  }

  acquire(key: string, owner: string, ttlMs: number, request: SharedRequest) {
    const id = sharedKeyId(this.#space, key);
    const who = ownerBytes(owner);
    const label = keyLabel(key);
    const s = this.#sql;
    // What the wake-ups hear once the transaction committed (a deadlock victim runs it again).
    let after: (() => void) | undefined;
    return this.#run(() =>
      this.#db.transact(async (q): Promise<Acquired | null> => {
        after = undefined;
        await q.change(s.lock, [id, label]);
        const rows = (await q.select(s.read, [id])) as unknown as Row[];
        const now = BigInt(rows[0]!.now_us);
        let keySeq = 0n;
        let lastFence: bigint | undefined;
        let expired = false;
        const live: LiveRow[] = [];
        for (const row of rows) {
          const kind = Number(row.kind);
          if (kind === KEY) {
            keySeq = BigInt(row.seq);
            if (row.fence !== null) lastFence = BigInt(row.fence);
          } else if (BigInt(row.expires_us) <= now) {
            expired = true;
          } else {
            live.push({
              owner: bytes(row.owner),
              kind,
              weight: Number(row.weight),
              seq: BigInt(row.seq),
              ...(row.fence === null ? {} : { fence: BigInt(row.fence) }),
            });
          }
        }
        if (expired) await q.change(s.purge, [id, String(now)]);
        const mine = live.find((row) => row.owner.equals(who));
        const us = micros(ttlMs);
        if (mine?.kind === LEASE) {
          // The holder asking again (a retry after a lost reply): same lease, same fence.
          await q.change(s.refresh, [us, id, who]);
          await q.change(s.keyRow, [0, null, us, id]);
          after = () => this.#wakeups?.held(this.#bell(id, 'lease', who), owner, ttlMs);
          return mine.fence === undefined ? {} : { fence: mine.fence };
        }
        const next = now > keySeq ? now : keySeq + 1n;
        const ahead = live.some(
          (row) =>
            row.kind === PLACE &&
            !row.owner.equals(who) &&
            (mine === undefined || row.seq < mine.seq),
        );
        const used = live.reduce((sum, row) => (row.kind === LEASE ? sum + row.weight : sum), 0);
        const full = used + request.weight > request.limit;
        if (ahead || full) {
          const { lineMs } = request;
          if (lineMs !== undefined) {
            const lineUs = micros(lineMs);
            // Renewing keeps the place; a newcomer goes to the back.
            if (mine !== undefined) await q.change(s.refresh, [lineUs, id, who]);
            else await q.change(s.place, [id, who, String(next), lineUs, label]);
            await q.change(s.keyRow, [String(next), null, lineUs, id]);
          }
          const blocked = blockers(live, who, mine, full);
          after = () => {
            const wakeups = this.#wakeups;
            if (wakeups === undefined) return;
            if (lineMs !== undefined) wakeups.held(this.#bell(id, 'place', who), owner, lineMs);
            wakeups.blockedBy(
              this.#group(id),
              blocked.rows.map((row) =>
                this.#bell(id, row.kind === LEASE ? 'lease' : 'place', row.owner),
              ),
              blocked.partial,
            );
          };
          return null;
        }
        const fence = request.shareFence ? lastFence : next;
        await q.change(s.lease, [
          id,
          who,
          request.weight,
          String(next),
          fence === undefined ? null : String(fence),
          us,
          label,
        ]);
        const unshared = request.shareFence ? null : String(next);
        await q.change(s.keyRow, [String(next), unshared, us, id]);
        // The lease's bell first, then the place's: those behind wake to find it held.
        after = () => {
          this.#wakeups?.held(this.#bell(id, 'lease', who), owner, ttlMs);
          if (mine !== undefined) this.#wakeups?.let(this.#bell(id, 'place', who), owner);
        };
        return fence === undefined ? {} : { fence };
      }),
    ).then((result) => {
      after?.();
      return result;
    });
  }

  release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    const id = sharedKeyId(this.#space, key);
    const who = ownerBytes(owner);
    const s = this.#sql;
    const wakeups = this.#wakeups;
    // An owner that may have lost its lease or place holds no bell, whatever the outcome.
    const ring = (kept: boolean) => {
      if (wakeups === undefined) return;
      const lease = this.#bell(id, 'lease', who);
      if (kept) wakeups.held(lease, owner, keepMs);
      else wakeups.let(lease, owner);
      wakeups.let(this.#bell(id, 'place', who), owner);
    };
    const released = this.#run(() =>
      this.#db.transact(async (q) => {
        await q.select(s.lockExisting, [id]);
        if (keepMs > 0) {
          const kept = (await q.change(s.keep, [micros(keepMs), id, who])).insertId === 1n;
          await q.change(s.leaveLine, [id, who]);
          return kept;
        }
        const [row] = (await q.select(s.mine, [id, who])) as { kind: unknown; live: unknown }[];
        if (row === undefined) return false;
        await q.change(s.leave, [id, who]);
        // The bells ring while this transaction still holds the key's row: a waiter woken now
        // waits for that row lock in its acquisition, and then sees the release committed.
        ring(false);
        await q.change(s.tidy, [id]);
        const [left] = (await q.select(s.others, [id])) as { n: unknown }[];
        if (Number(left?.n) === 0 && (await q.change(s.dropKey, [id])).affectedRows === 0) {
          if (this.#space === 'permits') await q.change(s.expireKey, [id]);
        }
        return Number(row.kind) === LEASE && Number(row.live) === 1;
      }),
    );
    if (wakeups === undefined) return released;
    return released.then(
      (kept) => {
        ring(keepMs > 0 && kept);
        return kept;
      },
      (error) => {
        ring(false);
        throw error;
      },
    );
  }

  extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    const id = sharedKeyId(this.#space, key);
    const who = ownerBytes(owner);
    const s = this.#sql;
    const us = micros(ttlMs);
    return this.#run(() =>
      this.#db.transact(async (q) => {
        await q.select(s.lockExisting, [id]);
        if ((await q.change(s.extend, [us, id, who])).insertId !== 1n) return false;
        await q.change(s.keyRow, [0, null, us, id]);
        return true;
      }),
    ).then((extended) => {
      const lease = this.#bell(id, 'lease', who);
      if (extended) this.#wakeups?.held(lease, owner, ttlMs);
      else this.#wakeups?.let(lease, owner);
      return extended;
    });
  }

  inspect(key: string): Promise<LeaseInfo[]> {
    const id = sharedKeyId(this.#space, key);
    return this.#run(async () => {
      const rows = (await this.#db.select(this.#sql.inspect, [id])) as {
        owner: Buffer | string;
        fence: string | null;
        ttl_us: string;
      }[];
      return rows.map((row) => ({
        owner: bytes(row.owner).toString('utf8'),
        ttlMs: Number(row.ttl_us) / 1000,
        ...(row.fence === null ? {} : { fence: BigInt(row.fence) }),
      }));
    });
  }
}

/** Delete up to `limit` rows of the shared table whose terms ran out; resolves how many. */
export function prepareSharedSweep(db: Db, table: TableName) {
  const sql = sweepSql(table);
  return async (limit: number): Promise<number> => (await db.change(sql, [limit])).affectedRows;
}
