import { Lock } from 'cachelock';
import type { StatusRequest } from './args.js';
import { Exit } from './exit.js';
import { describeHolder, holderJson } from './holder.js';

/** `cachelock status`: who holds the key, or that it is free. Exits 0 either way. */
export async function status(request: StatusRequest): Promise<number> {
  const holder = await Lock.inspect(request.key, {
    cache: request.cache,
    prefix: request.prefix,
  });
  if (request.json) {
    process.stdout.write(`${JSON.stringify(holderJson(request.key, holder))}\n`);
  } else if (holder === null) {
    process.stdout.write(`${JSON.stringify(request.key)} is free\n`);
  } else {
    process.stdout.write(`${JSON.stringify(request.key)} is held by ${describeHolder(holder)}\n`);
  }
  return Exit.ok;
}
