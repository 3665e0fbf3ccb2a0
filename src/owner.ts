import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

// One random part per process, then a counter: unique across processes and cheap per lock.
// Host and pid ride along so that `inspect` can say who holds a lock.
let processPart = '';
let counter = 0;

function prefix(): string {
  if (processPart === '') {
    processPart = `${hostname()}:${process.pid}:${randomBytes(6).toString('base64url')}:`;
  }
  return processPart;
}

/** A fresh owner string: `host:pid:random:counter`. */
export function newOwner(): string {
  return prefix() + (++counter).toString(36);
}

/** The holder an owner string names, for humans. */
export interface OwnerParts {
  host: string | undefined;
  pid: number | undefined;
}

export function parseOwner(owner: string): OwnerParts {
  const parts = owner.split(':');
  if (parts.length < 4) return { host: undefined, pid: undefined };
  const pid = Number(parts[parts.length - 3]);
  return {
    host: parts.slice(0, parts.length - 3).join(':') || undefined,
    pid: Number.isInteger(pid) ? pid : undefined,
  };
}

/** `pid 123 on web-1`, or the raw owner when it is not one of ours. */
export function describeOwner(owner: string): string {
  // A store reports '' for a value under the key that cachelock did not write.
  if (owner === '') return 'an unknown owner';
  const { host, pid } = parseOwner(owner);
  if (host === undefined || pid === undefined) return JSON.stringify(owner);
  return `pid ${pid} on ${host}`;
}
