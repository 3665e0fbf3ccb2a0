import 'reflect-metadata';
import KeyvRedis from '@keyv/redis';
import { CacheModule } from '@nestjs/cache-manager';
import { Test } from '@nestjs/testing';
import { configure, StoreError } from 'cachelock';
import { CachelockModule, type CachelockModuleOptions, CachelockService } from 'cachelock/nestjs';
import { afterEach, describe, expect, it } from 'vitest';
import { closedPort } from '../support/reachable.js';

const password = 'n3st-s3cret-pw';

async function start(url: string, options: CachelockModuleOptions) {
  const moduleRef = await Test.createTestingModule({
    imports: [
      CacheModule.register({ stores: [new KeyvRedis(url)], isGlobal: true }),
      CachelockModule.forRoot(options),
    ],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  const started = Date.now();
  // Before the wait was bounded, init never settled: a hang is a failure, not a test timeout.
  const outcome = await Promise.race([
    app.init().then(
      () => ({ ok: true as const }),
      (error: Error) => ({ ok: false as const, error }),
    ),
    new Promise<{ ok: 'hung' }>((resolve) => setTimeout(() => resolve({ ok: 'hung' }), 15_000)),
  ]);
  return { app, outcome, ms: Date.now() - started };
}

afterEach(() => {
  configure(null);
});

/** The bootstrap error names the place (password masked) and the cause, and never the password. */
function expectSaysWhereAndWhy(error: Error, port: number, boundMs: number): void {
  const message = error.message;
  expect(message).toContain(`redis://:***@127.0.0.1:${port}`);
  expect(message).toContain(`did not connect within ${boundMs} ms: connection refused`);
  expect(message).toContain('ECONNREFUSED');
  expect(message).not.toContain(password);
  expect(JSON.stringify(error, Object.getOwnPropertyNames(error))).not.toContain(password);
}

describe('a Nest app whose Keyv Redis store points at a server that is down', () => {
  it('fails to start within connectTimeout, saying where and why, without the password', async () => {
    const port = await closedPort();
    const { app, outcome, ms } = await start(`redis://:${password}@127.0.0.1:${port}`, {
      connectTimeout: '1s',
    });
    expect(outcome.ok).toBe(false);
    if (outcome.ok !== false) return;
    expect(ms).toBeLessThan(5_000);
    expectSaysWhereAndWhy(outcome.error, port, 1000);
    await app.close().catch(() => {});
  });

  it('without connectTimeout, fails to start within the default 5s, saying where and why', async () => {
    const port = await closedPort();
    const { app, outcome, ms } = await start(`redis://:${password}@127.0.0.1:${port}`, {});
    expect(outcome.ok).toBe(false);
    if (outcome.ok !== false) return;
    // The default bound is 5 s: well past 1 s (so not an immediate failure) and well before
    // the 15 s that counts as a hang.
    expect(ms).toBeGreaterThanOrEqual(4_000);
    expect(ms).toBeLessThan(12_000);
    expectSaysWhereAndWhy(outcome.error, port, 5000);
    await app.close().catch(() => {});
  });

  it("with onConnectError: 'fail-locks', starts and fails each lock with a StoreError", async () => {
    const port = await closedPort();
    const { app, outcome } = await start(`redis://127.0.0.1:${port}`, {
      connectTimeout: '500ms',
      onConnectError: 'fail-locks',
    });
    expect(outcome.ok).toBe(true);
    const lock = app.get(CachelockService).lock('job');
    const error = await lock.acquire().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreError);
    expect((error as StoreError).failure).toBe('refused');
    expect((error as Error).message).toContain(`redis://127.0.0.1:${port}`);
    expect((error as Error).message).toContain('connection refused');
    await app.close();
  });

  it('refuses an onConnectError it does not know, naming it', async () => {
    const port = await closedPort();
    const { app, outcome } = await start(`redis://127.0.0.1:${port}`, {
      onConnectError: 'ignore' as never,
    });
    expect(outcome.ok).toBe(false);
    if (outcome.ok === false) {
      expect(outcome.error.message).toContain(
        `onConnectError must be 'throw' or 'fail-locks', got "ignore"`,
      );
    }
    await app.close().catch(() => {});
  });
});
