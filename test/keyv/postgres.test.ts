import { randomBytes } from 'node:crypto';
import KeyvPostgres from '@keyv/postgres';
import { closeAll, Lock, LockedError } from 'cachelock';
import { keyvStore } from 'cachelock/keyv';
import { runConformance } from 'cachelock/testing';
import Keyv from 'keyv';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';

const reachable = await serverOrSkip('PostgreSQL', 5432);
const uri = 'postgres://postgres@127.0.0.1:5432/test';
const run = randomBytes(4).toString('hex');
// Keyv's own values go to a table of this run; the leases to cachelock's table, under this
// run's namespace.
const table = `keyv_cl_${run}`;

describe.runIf(reachable)('keyv + @keyv/postgres on the shared PostgreSQL', () => {
  const keyvs: Keyv[] = [];
  const postgresKeyv = (namespace = `cl-test-${run}`) => {
    const keyv = new Keyv({ store: new KeyvPostgres({ uri, table }), namespace });
    keyvs.push(keyv);
    return keyv;
  };

  afterAll(async () => {
    await closeAll();
    const pool = new pg.Pool({ connectionString: uri });
    await pool.query(`DROP TABLE IF EXISTS ${table}`);
    await pool.end();
    // @keyv/postgres shares one pool among its adapters; ending it once ends it for all.
    await keyvs[0]?.disconnect();
  });

  it('unwraps to the PostgreSQL store: atomic and fenced', async () => {
    const keyv = postgresKeyv();
    const store = await keyvStore(keyv);
    expect(store.kind).toBe('keyv+postgres');
    expect(store.atomic).toBe(true);
    const lock = await Lock.acquire('report', { cache: keyv });
    expect(typeof lock.fence).toBe('bigint');
    await expect(Lock.acquire('report', { cache: postgresKeyv() })).rejects.toBeInstanceOf(
      LockedError,
    );
    const holder = await Lock.inspect('report', { cache: store });
    expect(holder?.owner).toBe((await Lock.inspect('report', { cache: keyv }))?.owner);
    expect(holder?.pid).toBe(process.pid);
    await lock.release();
    await store.close?.();
  });

  runConformance({
    name: 'conformance through keyvStore',
    describe,
    it,
    makeStore: () => keyvStore(postgresKeyv()),
  });
});
