/**
 * `node --import` value that makes `ioredis` unresolvable in a child process, so that
 * `redis://` opens a node-redis client there, as in a project that installed only `redis`.
 */
export const WITHOUT_IOREDIS = `data:text/javascript,${encodeURIComponent(`
import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(
  "export async function resolve(s, c, n) { if (s === 'ioredis') { const e = new Error('Cannot find package ioredis'); e.code = 'ERR_MODULE_NOT_FOUND'; throw e; } return n(s, c); }"
));
`)}`;
