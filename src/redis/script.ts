import { createHash } from 'node:crypto';

/** A Lua script with its SHA1, run by SHA with a fallback to its text. */
export interface Script {
  readonly name: string;
  readonly text: string;
  readonly sha: string;
}

export function script(name: string, text: string): Script {
  return { name, text, sha: createHash('sha1').update(text).digest('hex') };
}
