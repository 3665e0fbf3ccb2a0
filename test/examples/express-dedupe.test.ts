import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { builtOrSkip, serverOrSkip } from '../support/reachable.js';
import { type Started, startNode, stop } from './run.js';

const runs = (await serverOrSkip('Redis', 6379)) && builtOrSkip('example', ['index.js']);

describe.runIf(runs)('examples/express-dedupe: two servers on Redis', () => {
  const started: Started[] = [];
  afterAll(async () => {
    await Promise.all(started.map(stop));
  });

  async function server(): Promise<string> {
    const child = startNode('examples/express-dedupe/server.mjs', [], {
      CACHELOCK_URL: 'redis://127.0.0.1:6379',
      PORT: '0',
      WORK_MS: '600',
    });
    started.push(child);
    await child.waitFor(/listening on http:\/\/\S+/);
    return /listening on (http:\/\/\S+)/.exec(child.output())![1]!;
  }

  it('refuses a duplicate export of the same account, on the same or another server', async () => {
    const [one, two] = await Promise.all([server(), server()]);
    // An account of this run only: the shared Redis may serve other runs at the same time.
    const account = `acct-${randomBytes(4).toString('hex')}`;
    const post = (base: string, id = account) =>
      fetch(`${base}/accounts/${id}/export`, { method: 'POST' });

    const first = post(one);
    await new Promise((resolve) => setTimeout(resolve, 150));
    const [sameServer, otherServer, otherAccount] = await Promise.all([
      post(one),
      post(two),
      post(two, `${account}-b`),
    ]);
    expect(sameServer.status).toBe(409);
    expect(otherServer.status).toBe(409);
    expect(((await otherServer.json()) as { error: string }).error).toMatch(/already running/);
    expect(otherAccount.status).toBe(200);
    const done = await first;
    expect(done.status).toBe(200);
    expect(((await done.json()) as { accountId: string }).accountId).toBe(account);
    // Once the first export finished, the account can be exported again.
    expect((await post(two)).status).toBe(200);
  });
});
