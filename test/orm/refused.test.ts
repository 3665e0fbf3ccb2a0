import 'reflect-metadata';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getPrismaClient } from '@prisma/client/runtime/client';
import Database from 'better-sqlite3';
import { configure, Lock, resolveStore } from 'cachelock';
import knex from 'knex';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { DataSource } from 'typeorm';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'cachelock-orm-refused-'));

describe('ORMs whose connection cannot serve locks are refused, saying what to pass', () => {
  const pool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' });
  const sqlite = new Database(join(dir, 'kysely.db'));

  afterAll(async () => {
    await pool.end();
    sqlite.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a PrismaClient, by its shape ($queryRaw, $executeRaw, $connect)', () => {
    // A real PrismaClient from @prisma/client's runtime. `prisma generate` cannot run here (the
    // CLI downloads its engines), so the class is built as generated code builds it, for a
    // schema without models, over an adapter that never connects.
    const PrismaClient = getPrismaClient({
      previewFeatures: [],
      clientVersion: 'test',
      engineVersion: 'test',
      activeProvider: 'postgresql',
      inlineSchema: '',
      runtimeDataModel: { models: {}, enums: {}, types: {} },
      parameterizationSchema: { strings: [], graph: 'AAAA' },
      compilerWasm: {
        getRuntime: async () => ({}),
        getQueryCompilerWasmModule: async () => ({}),
      },
    } as never) as unknown as new (
      options: object,
    ) => object;
    const adapter = {
      provider: 'postgres',
      adapterName: 'none',
      connect: async () => Promise.reject(new Error('not for this test')),
    };
    const prisma = new PrismaClient({ adapter });
    expect(() => new Lock('k', { cache: prisma })).toThrow(TypeError);
    expect(() => new Lock('k', { cache: prisma })).toThrow(
      /^cache: a PrismaClient runs raw SQL on a pool of its own .*pass a pg Pool .*postgres:\/\//,
    );
    expect(() => configure({ cache: prisma })).toThrow(/PrismaClient/);
  });

  it('Kysely, which keeps its pool private, on PostgreSQL and on SQLite', () => {
    for (const dialect of [
      new PostgresDialect({ pool }),
      new SqliteDialect({ database: sqlite }),
    ]) {
      const db = new Kysely<unknown>({ dialect });
      expect(() => new Lock('k', { cache: db })).toThrow(TypeError);
      expect(() => new Lock('k', { cache: db })).toThrow(
        /^cache: Kysely keeps its pool private.*the pg Pool of new PostgresDialect\(\{ pool \}\), the better-sqlite3 Database of new SqliteDialect\(\{ database \}\)/,
      );
    }
  });

  it('a knex transaction: the lock would join it', async () => {
    const db = knex({ client: 'better-sqlite3', connection: { filename: join(dir, 'knex.db') } });
    try {
      await db.transaction(async (trx) => {
        expect(() => new Lock('k', { cache: trx })).toThrow(
          /^cache: a knex transaction: .*pass the knex instance itself/,
        );
      });
    } finally {
      await db.destroy();
    }
  });

  it('a TypeORM DataSource not initialized yet: the lock fails until it is', async () => {
    const source = new DataSource({ type: 'better-sqlite3', database: join(dir, 'typeorm.db') });
    const lock = new Lock('k', { cache: source });
    await expect(lock.acquire()).rejects.toThrow(
      /^cache: the TypeORM DataSource is not initialized; await dataSource.initialize\(\)/,
    );
    await source.initialize();
    try {
      await lock.acquire();
      expect(lock.held).toBe(true);
      expect(await lock.release()).toBe(true);
    } finally {
      await source.destroy();
    }
  });

  it('knex on a driver without a backend', () => {
    // CockroachDB speaks PostgreSQL's protocol through pg, but has no LISTEN.
    const db = knex({ client: 'cockroachdb', connection: {} });
    expect(() => new Lock('k', { cache: db })).toThrow(
      /^cache: knex with the "cockroachdb" driver: cachelock runs on knex with pg, better-sqlite3, mysql2 or \(under MikroORM\) mariadb$/,
    );
    return db.destroy();
  });

  it('recognition happens where the lock is made, and the same store serves ORM and client', async () => {
    const { drizzle } = await import('drizzle-orm/node-postgres');
    const store = await resolveStore({ cache: drizzle(pool) });
    expect(store.kind).toBe('postgres');
    expect(await resolveStore({ cache: pool })).toBe(store);
  });
});
