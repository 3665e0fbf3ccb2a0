// An Express route that refuses a request while the same account's export is still running,
// in this process or in any other sharing the cache.
//
//   npm run build && CACHELOCK_URL=redis://127.0.0.1:6379 node examples/express-dedupe/server.mjs
//   curl -X POST localhost:3000/accounts/42/export & curl -X POST localhost:3000/accounts/42/export
//
// The second request gets 409 while the first runs. Without CACHELOCK_URL the locks live in
// this process's memory. PORT (default 3000, 0 for any free port) and WORK_MS (how long an
// export takes, default 2000) are optional.
import { setTimeout as sleep } from 'node:timers/promises';
import { LockedError, once } from 'cachelock';
import express from 'express';

const workMs = Number(process.env.WORK_MS ?? 2000);

// One export per account at a time; a second call while one runs rejects with LockedError.
const exportAccount = once(
  { key: 'export-{accountId}', throwIfLocked: true, ttl: '30s' },
  async (accountId) => {
    await sleep(workMs);
    return { accountId, exportedAt: new Date().toISOString(), pid: process.pid };
  },
);

const app = express();

app.post('/accounts/:accountId/export', async (req, res, next) => {
  try {
    res.json(await exportAccount(req.params.accountId));
  } catch (error) {
    if (!(error instanceof LockedError)) return next(error);
    res.status(409).json({ error: 'an export of this account is already running' });
  }
});

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
