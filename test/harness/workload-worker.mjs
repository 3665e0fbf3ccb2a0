// One process of the workload harness (see workloads.ts): a semaphore, readers and writers, or
// transfers under locks on several keys, through the BUILT package's public API, as a user's
// process would (`npm run build` first).
import { appendFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const config = JSON.parse(process.argv[2]);
const { cache, workload, key, permits, sections, holdMs, dir, index, accounts } = config;
const cachelock = await import('cachelock');
if (config.register === 'redlock') {
  const { storeFromUrl } = await import('cachelock/redlock');
  cachelock.registerScheme('redlock', storeFromUrl);
}
const options = { cache, ttl: '10s', wait: '30s' };

if (process.send) {
  await new Promise((resolve) => {
    process.once('message', resolve);
    process.send('ready');
  });
  process.disconnect();
}

const log = join(dir, `events-${index}.jsonl`);
// CLOCK_MONOTONIC: one clock for every process on the machine, so logs of processes compare.
const record = (event) =>
  appendFileSync(
    log,
    `${JSON.stringify({ process: index, at: String(process.hrtime.bigint()), ...event })}\n`,
  );
const mustRelease = async (lease, section) => {
  if (!(await lease.release())) throw new Error(`section ${section}: the lease was lost`);
};

if (workload === 'semaphore') {
  const semaphore = new cachelock.Semaphore(key, { ...options, permits });
  for (let section = 0; section < sections; section++) {
    const permit = await semaphore.acquire();
    // Inside the lease on both ends: entered after the grant, left before the release.
    record({ section, event: 'enter', fence: permit.fence?.toString() });
    await sleep(holdMs);
    record({ section, event: 'leave' });
    await mustRelease(permit, section);
  }
} else if (workload === 'rw') {
  // Who is inside is a marker file each: a writer finds no other marker, a reader no writer's.
  const inside = join(dir, 'inside');
  const rw = new cachelock.ReadWriteLock(key, options);
  const check = (mine, writer, section, when) => {
    const others = readdirSync(inside).filter((name) => name !== mine);
    const bad = writer ? others : others.filter((name) => name.startsWith('w-'));
    if (bad.length > 0) record({ section, event: 'violation', role: mine, when, saw: bad });
  };
  for (let section = 0; section < sections; section++) {
    const writer = Math.random() < 0.3;
    const permit = writer ? await rw.write() : await rw.read();
    const mine = `${writer ? 'w' : 'r'}-${index}-${section}`;
    writeFileSync(join(inside, mine), '');
    record({ section, event: 'enter', role: writer ? 'writer' : 'reader' });
    check(mine, writer, section, 'enter');
    await sleep(holdMs);
    check(mine, writer, section, 'leave');
    record({ section, event: 'leave', role: writer ? 'writer' : 'reader' });
    rmSync(join(inside, mine));
    await mustRelease(permit, section);
  }
} else if (workload === 'transfer') {
  const file = (account) => join(dir, `account-${account}`);
  const balance = (account) => Number(readFileSync(file(account), 'utf8'));
  const lockKey = (account) => `${key}:${account}`;
  for (let section = 0; section < sections; section++) {
    if (section % 5 === 4) {
      // An audit holds every account (in a shuffled order) and sums them: the total never moves.
      const all = [...Array(accounts).keys()].sort(() => Math.random() - 0.5);
      const lock = await cachelock.Lock.acquire(all.map(lockKey), options);
      const total = all.reduce((sum, account) => sum + balance(account), 0);
      record({ section, event: 'audit', total });
      await mustRelease(lock, section);
      continue;
    }
    const from = Math.floor(Math.random() * accounts);
    let to = Math.floor(Math.random() * (accounts - 1));
    if (to >= from) to++;
    // Either order: a transfer a->b meets b->a, and must not deadlock with it.
    const lock = await cachelock.Lock.acquire([lockKey(from), lockKey(to)], options);
    const amount = 1 + Math.floor(Math.random() * 10);
    const a = balance(from);
    const b = balance(to);
    await sleep(holdMs);
    writeFileSync(file(from), String(a - amount));
    writeFileSync(file(to), String(b + amount));
    record({ section, event: 'transfer', from, to, amount });
    await mustRelease(lock, section);
  }
} else {
  throw new Error(`unknown workload ${workload}`);
}
await cachelock.closeAll();
