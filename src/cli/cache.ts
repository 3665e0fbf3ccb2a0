import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { redactUrl } from 'cachelock';

/**
 * The cache the command uses: `--cache`, else `CACHELOCK_URL`, else the embedded SQLite file,
 * so that two terminals on one machine contend with no server and no configuration. That file
 * is private: nobody else may read, change or replace it, so it must not be a link either.
 */
export function defaultCache(
  given: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string {
  if (given !== undefined) return given;
  if (env.CACHELOCK_URL) return env.CACHELOCK_URL;
  return `sqlite:${pathToFileURL(defaultDatabase(env)).pathname}?private`;
}

/** `$CACHELOCK_DB`, else `$XDG_STATE_HOME/cachelock/locks.sqlite`, else under ~/.local/state. */
export function defaultDatabase(env: NodeJS.ProcessEnv = process.env): string {
  if (env.CACHELOCK_DB) return resolve(env.CACHELOCK_DB);
  // The XDG spec says to ignore a relative XDG_STATE_HOME.
  const xdg = env.XDG_STATE_HOME;
  const state = xdg?.startsWith('/') ? xdg : join(homedir(), '.local', 'state');
  return join(state, 'cachelock', 'locks.sqlite');
}

/** A cache URL with its password hidden, for messages. */
export function showCache(cache: string): string {
  return redactUrl(cache);
}
