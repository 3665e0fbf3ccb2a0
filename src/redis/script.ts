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

/**
 * Lua text for the owner in a lease value `<fence>:<owner>`; fences are digits, so the first
 * colon separates them whatever the owner contains. Inlined rather than a Lua function, which
 * the server would build anew on every call.
 */
export const ownerOf = (value: string) =>
  `string.sub(${value}, string.find(${value}, ':', 1, true) + 1)`;
