// PostgreSQL: cachelock against the floor (the store's own statements issued raw through pg, no
// library) and session advisory locks, then 4 processes contending on one key. Runs on a
// throwaway cluster (initdb + pg_ctl on a free port; as the postgres user when run as root), or
// on BENCH_PG_URL if set. Needs the built package (npm run build). BENCH_ONLY=uncontended or
// BENCH_ONLY=contended runs one section; BENCH_COMPARE=dist/postgres/other.js adds another build's
// cachelock/postgres entry (a copy kept inside dist, so that it finds the same core) to the
// 4-process rounds.
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Lock } from 'cachelock';
import { postgresStore } from 'cachelock/postgres';
import pg from 'pg';
import { cachelockWithLock, contendedTable, isWorker, workerMain } from './contention.mjs';
import { COMPARE, COMPARED, fmt, interleave, perCall, table, wanted } from './lib.mjs';
import { startPostgres } from './servers.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const PAIRS = Number(process.env.BENCH_PAIRS ?? 1_000);
const TTL = 10_000;
const TABLE = 'cachelock_bench';
const contenders = [
  'cachelock (LISTEN/NOTIFY)',
  ...(COMPARE ? [COMPARED] : []),
  'cachelock, listen: false (polling)',
  'pg_advisory_lock (session, blocking)',
];

async function main() {
  const server = process.env.BENCH_PG_URL ? undefined : await startPostgres();
  const url = process.env.BENCH_PG_URL ?? server.url;
  try {
    const pool = new pg.Pool({ connectionString: url, max: 4 });
    const { rows } = await pool.query('SHOW server_version');
    await pool.query(`DROP TABLE IF EXISTS ${TABLE}`);
    await pool.end();
    console.log(
      `PostgreSQL ${rows[0].server_version} (${server ? 'throwaway cluster, default settings' : 'BENCH_PG_URL'}), pg ${pgVersion()}, ${ROUNDS} rounds interleaved, medians\n`,
    );
    if (wanted('uncontended')) await uncontended(url);
    if (wanted('contended')) await contended(url);
  } finally {
    server?.stop();
  }
}

function pgVersion() {
  return JSON.parse(readFileSync(new URL('../node_modules/pg/package.json', import.meta.url)))
    .version;
}

/** Count the queries a pool is asked for: the round trips of each operation. */
function counted(pool) {
  const query = pool.query.bind(pool);
  pool.queries = 0;
  pool.query = (...args) => {
    pool.queries++;
    return query(...args);
  };
  return pool;
}

// The store's acquire and release statements (src/postgres/acquire.ts, release.ts), raw.
const ACQUIRE = `WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock($5::bigint)
    WHERE NOT EXISTS (SELECT 1 FROM ${TABLE}
      WHERE id = $1::bytea AND owner <> $3::text AND expires_at > clock_timestamp()))
  INSERT INTO ${TABLE} AS lease (id, key, owner, expires_at)
  SELECT $1::bytea, $2::text, $3::text, clock_timestamp() + $4::float8 * interval '1 millisecond'
  FROM gate
  ON CONFLICT (id) DO UPDATE SET key = excluded.key, owner = excluded.owner,
    expires_at = excluded.expires_at,
    fence = CASE WHEN lease.owner = excluded.owner AND lease.expires_at > clock_timestamp()
                 THEN lease.fence ELSE excluded.fence END
  WHERE lease.expires_at <= clock_timestamp() OR lease.owner = excluded.owner
  RETURNING fence::text AS fence`;
const LINE = `${TABLE}_line`;
const RELEASE = `WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock($5::bigint)),
  locked AS MATERIALIZED (SELECT lease.owner, lease.expires_at > clock_timestamp() AS held
    FROM ${TABLE} AS lease, gate WHERE lease.id = $1::bytea FOR UPDATE OF lease),
  mine AS MATERIALIZED (SELECT held FROM locked WHERE owner = $2::text),
  gone AS (DELETE FROM ${LINE} AS place USING gate WHERE place.id = $1::bytea
    AND (place.owner = $2::text OR place.expires_at <= clock_timestamp())),
  next AS (DELETE FROM ${LINE} AS place USING gate
    WHERE place.id = $1::bytea AND place.expires_at > clock_timestamp() AND place.owner = (
      SELECT owner FROM ${LINE} WHERE id = $1::bytea AND owner <> $2::text
        AND expires_at > clock_timestamp() AND EXISTS (SELECT 1 FROM mine)
      ORDER BY seq LIMIT 1)
    RETURNING place.owner, place.claim_ms),
  handed AS (UPDATE ${TABLE} AS lease SET owner = next.owner,
      expires_at = clock_timestamp() + next.claim_ms * interval '1 millisecond',
      fence = nextval(pg_get_serial_sequence('${TABLE}', 'fence'))
    FROM next, gate WHERE lease.id = $1::bytea
    RETURNING lease.fence, lease.owner, next.claim_ms),
  freed AS (DELETE FROM ${TABLE} AS lease USING gate WHERE lease.id = $1::bytea
    AND EXISTS (SELECT 1 FROM mine) AND NOT EXISTS (SELECT 1 FROM next))
  SELECT mine.held, handed.fence::text AS fence, handed.claim_ms, handed.owner AS next,
    CASE WHEN mine.held IS NOT NULL THEN pg_notify($3::text, CASE
      WHEN handed.owner IS NULL THEN $4::text
      ELSE concat_ws(' ', $4::text, handed.fence, handed.claim_ms, handed.owner) END) END,
    CASE WHEN handed.owner IS NULL THEN set_config('synchronous_commit', 'off', true) END
  FROM (SELECT) AS one LEFT JOIN mine ON true LEFT JOIN handed ON true`;

async function uncontended(url) {
  const pool = counted(new pg.Pool({ connectionString: url, max: 1 }));
  const advisory = new pg.Client(url);
  await advisory.connect();
  const store = postgresStore(pool, { table: TABLE });
  const { createHash } = await import('node:crypto');
  let n = 0;
  const cases = [
    {
      name: 'floor (the same SQL, raw)',
      pair: async (key) => {
        const id = createHash('sha256').update(key, 'utf16le').digest();
        const owner = `floor:${++n}`;
        const taken = await pool.query({
          name: 'floor_acquire',
          text: ACQUIRE,
          values: [id, key, owner, TTL, id.readBigInt64BE(0).toString()],
        });
        if (taken.rows.length !== 1) throw new Error('held');
        await pool.query({
          name: 'floor_release',
          text: RELEASE,
          values: [
            id,
            owner,
            `cachelock:${TABLE}`,
            id.toString('base64url'),
            id.readBigInt64BE(0).toString(),
          ],
        });
      },
    },
    {
      name: 'cachelock',
      pair: async (key) => {
        const lock = new Lock(key, { cache: store, ttl: TTL });
        await lock.acquire();
        await lock.release();
      },
    },
    {
      name: 'pg_try_advisory_lock + unlock (session, no lease, no fence)',
      pair: async (key) => {
        const k = hashKey(key);
        const { rows } = await advisory.query('SELECT pg_try_advisory_lock($1) AS ok', [k]);
        if (!rows[0].ok) throw new Error('held');
        await advisory.query('SELECT pg_advisory_unlock($1)', [k]);
      },
    },
  ];
  await store.inspect('create the table');
  // Warm up, then count the round trips of one pair.
  for (const c of cases) for (let i = 0; i < 100; i++) await c.pair(`warm:${i}`);
  const trips = new Map();
  for (const c of cases.slice(0, 2)) {
    pool.queries = 0;
    for (let i = 0; i < 100; i++) await c.pair(`count:${i}`);
    trips.set(c.name, fmt(pool.queries / 100, 2));
  }
  trips.set(cases[2].name, '2.00');
  let run = 0;
  const results = await interleave(cases, ROUNDS, (c) => {
    const key = `uncontended:${++run}`;
    return perCall(() => c.pair(key), PAIRS);
  });
  const floorUs = results.get(cases[0].name);
  console.log('### Uncontended acquire+release, one connection\n');
  console.log(
    table(
      ['library', 'us per acquire+release', 'vs floor', 'round trips'],
      cases.map((c) => [
        c.name,
        fmt(results.get(c.name), 1),
        `${fmt(results.get(c.name) / floorUs)}x`,
        trips.get(c.name),
      ]),
    ),
  );
  console.log(
    '\n(acquire commits durably, so the disk flush of its commit is most of the time; releases\n' +
      'commit with synchronous_commit off; advisory locks write nothing and give no lease or fence)\n',
  );
  await store.close();
  await pool.end();
  await advisory.end();
}

function hashKey(key) {
  let h = 0;
  for (const ch of key) h = (Math.imul(h, 31) + ch.codePointAt(0)) | 0;
  return h;
}

async function contended(url) {
  await contendedTable({
    script: fileURLToPath(import.meta.url),
    contenders,
    rounds: ROUNDS,
    configFor: (library, run) => ({ library, url, key: `contended:${run}` }),
  });
}

async function makeLock({ library, url, key }) {
  let withLock;
  let close;
  if (library.startsWith('cachelock')) {
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    const make =
      library === COMPARED
        ? (await import(pathToFileURL(COMPARE).href)).postgresStore
        : postgresStore;
    const store = make(pool, { table: TABLE, listen: !library.includes('listen: false') });
    await store.inspect(key);
    withLock = cachelockWithLock(Lock, key, { cache: store, ttl: TTL });
    close = async () => {
      await store.close();
      await pool.end();
    };
  } else {
    const client = new pg.Client(url);
    await client.connect();
    const k = hashKey(key);
    withLock = async (fn) => {
      await client.query('SELECT pg_advisory_lock($1)', [k]);
      try {
        await fn();
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [k]);
      }
    };
    close = () => client.end();
  }
  return { withLock, close };
}

// Last, so that every constant above is initialised before a top-level await runs.
if (isWorker()) await workerMain(makeLock);
else await main();
