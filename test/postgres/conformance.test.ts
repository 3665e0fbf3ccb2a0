import { randomBytes } from 'node:crypto';
import { postgresStore, storeFromUrl } from 'cachelock/postgres';
import { runConformance } from 'cachelock/testing';
import pg from 'pg';
import { afterAll, describe, it } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';

// The shared server: a table unique to this run, dropped at the end.
const reachable = await serverOrSkip('PostgreSQL', 5432);
const url = 'postgres://postgres@127.0.0.1:5432/test';
const table = `cachelock_conformance_${randomBytes(4).toString('hex')}`;

describe.runIf(reachable)('postgres store on the shared server', () => {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  pool.on('error', () => {});

  afterAll(async () => {
    await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_shared"`);
    await pool.end();
  });

  runConformance({
    name: 'on a Pool',
    describe,
    it,
    makeStore: () => postgresStore(pool, { table }),
  });
  runConformance({
    name: 'on a postgres:// URL (the store owns its pool)',
    describe,
    it,
    makeStore: () => storeFromUrl(new URL(`${url}?table=${table}`)),
  });
  runConformance({
    name: 'on a Pool, without LISTEN (polling)',
    describe,
    it,
    makeStore: () => postgresStore(pool, { table, listen: false }),
  });
});
