import { Lock, Semaphore } from 'cachelock';
import type { StatusRequest } from './args.js';
import { Exit } from './exit.js';
import { describeHolder, holderJson, holdersJson } from './holder.js';

/** `cachelock status`: who holds the key, or that it is free. Exits 0 either way. */
export async function status(request: StatusRequest): Promise<number> {
  const options = { cache: request.cache, prefix: request.prefix };
  if (request.permits !== undefined) return semaphoreStatus(request, request.permits, options);
  const holder = await Lock.inspect(request.key, options);
  if (request.json) {
    process.stdout.write(`${JSON.stringify(holderJson(request.key, holder))}\n`);
  } else if (holder === null) {
    process.stdout.write(`${JSON.stringify(request.key)} is free\n`);
  } else {
    process.stdout.write(`${JSON.stringify(request.key)} is held by ${describeHolder(holder)}\n`);
  }
  return Exit.ok;
}

/** `status <key> --permits N`: the semaphore `run <key> --permits N` uses, and its holders. */
async function semaphoreStatus(
  request: StatusRequest,
  permits: number,
  options: { cache: string; prefix: string },
): Promise<number> {
  const { holders } = await Semaphore.inspect(request.key, options);
  if (request.json) {
    process.stdout.write(`${JSON.stringify(holdersJson(request.key, permits, holders))}\n`);
    return Exit.ok;
  }
  const free = Math.max(0, permits - holders.length);
  let text = `${JSON.stringify(request.key)}: ${holders.length} of ${permits} permits held, ${free} free`;
  for (const holder of holders) text += `\n  ${describeHolder(holder)}`;
  process.stdout.write(`${text}\n`);
  return Exit.ok;
}
