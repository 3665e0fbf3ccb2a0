import { constants } from 'node:os';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { formatDuration, knownSchemes, redactUrl, toMs } from 'cachelock';
import { defaultCache } from './cache.js';
import { UsageError } from './exit.js';

// node:util parseArgs: part of Node.js itself, so the command needs no dependency, and its
// strict mode already rejects unknown options and missing values. Subcommands and `--` are
// the only structure on top, handled here.

export interface Target {
  key: string;
  /** A cache URL: `--cache`, `CACHELOCK_URL` or the embedded SQLite file. */
  cache: string;
  prefix: string;
}

export interface RunRequest extends Target {
  command: 'run';
  ttlMs: number;
  waitMs: number;
  holdAtLeastMs: number;
  conflictExitCode: number;
  quiet: boolean;
  killAfterMs: number;
  lostSignal: NodeJS.Signals;
  /** `--permits N`: at most N commands at once on the key (a semaphore), instead of one. */
  permits: number | undefined;
  /** The command and its arguments, everything after `--`. */
  argv: [string, ...string[]];
}

export interface StatusRequest extends Target {
  command: 'status';
  json: boolean;
  /** `--permits N`: the semaphore of that many permits on the key, as `run --permits N` takes. */
  permits: number | undefined;
}

export interface ReleaseRequest extends Target {
  command: 'release';
}

export type Request =
  | RunRequest
  | StatusRequest
  | ReleaseRequest
  | { command: 'help' }
  | { command: 'version' };

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * The shortest `--ttl`. The library takes any lease of 1 ms or more, but a command's lease must
 * survive the pauses of a process that spawns children and polls the cache (GC, a slow disk or
 * network round trip): at 1s it is extended every 333 ms and outlives a pause of about 600 ms.
 * A lease refused at once is better than a command killed as soon as it starts.
 */
export const MIN_TTL_MS = 1_000;
/** The parts of parseArgs' tokens used here. */
type Token = {
  kind: 'positional' | 'option' | 'option-terminator';
  index: number;
  value?: unknown;
};

const shared: Options = {
  key: { type: 'string' },
  cache: { type: 'string' },
  prefix: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

const optionsOf: Record<'run' | 'status' | 'release', Options> = {
  run: {
    ...shared,
    ttl: { type: 'string' },
    wait: { type: 'string' },
    'hold-at-least': { type: 'string' },
    'conflict-exit-code': { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
    'kill-after': { type: 'string' },
    'lost-signal': { type: 'string' },
    permits: { type: 'string' },
  },
  status: { ...shared, json: { type: 'boolean' }, permits: { type: 'string' } },
  release: { ...shared, force: { type: 'boolean' } },
};

/** Read the command line (without `node` and the script). Throws `UsageError`. */
export function parseCommandLine(argv: string[], env: NodeJS.ProcessEnv = process.env): Request {
  const [first, ...rest] = argv;
  if (first === undefined) throw new UsageError('no subcommand given');
  if (first === '--help' || first === '-h' || first === 'help') return { command: 'help' };
  if (first === '--version') return { command: 'version' };
  if (first !== 'run' && first !== 'status' && first !== 'release') {
    if (first.startsWith('-')) throw new UsageError(`unknown option '${first}'`);
    throw new UsageError(
      `unknown subcommand ${JSON.stringify(first)}; the subcommands are run, status and release`,
    );
  }
  const args = joinKeyValue(rest);
  let parsed: { values: Record<string, unknown>; tokens: Token[] };
  try {
    parsed = parseArgs({
      args,
      options: optionsOf[first],
      strict: true,
      allowPositionals: true,
      tokens: true,
    });
  } catch (error) {
    throw new UsageError(`${first}: ${conciseParseError(error)}`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;

  if (values.help) return { command: 'help' };

  const terminator = parsed.tokens.find((token) => token.kind === 'option-terminator');
  const words = parsed.tokens
    .filter(
      (token) =>
        token.kind === 'positional' && (terminator === undefined || token.index < terminator.index),
    )
    .map((token) => String(token.value ?? ''));
  const after = terminator === undefined ? [] : args.slice(terminator.index + 1);
  if (first !== 'run' && after.length > 0) {
    // status and release run no command, so `--` only ends the options: `status -- -x`.
    if (words.length > 0 || typeof values.key === 'string' || after.length > 1) {
      throw new UsageError(`${first}: takes no command after --`);
    }
    words.push(after[0]!);
  }
  if (typeof values.key === 'string') {
    if (words.length > 0) {
      throw new UsageError(
        `${first}: the key is given twice, as --key ${JSON.stringify(values.key)} and as ${JSON.stringify(words[0])}`,
      );
    }
    words.push(values.key);
  }
  if (words.length === 0) throw new UsageError(`${first}: no key given`);
  const [key, ...extra] = words;
  if (key === '') throw new UsageError(`${first}: the key must not be empty`);
  if (extra.length > 0) {
    const hint = first === 'run' ? ' (put the command after --)' : '';
    throw new UsageError(`${first}: unexpected argument ${JSON.stringify(extra[0])}${hint}`);
  }

  const target: Target = {
    key: key!,
    cache: cacheUrl(values.cache as string | undefined, env),
    prefix: (values.prefix as string | undefined) ?? 'cachelock:',
  };

  if (first === 'status') {
    return {
      command: 'status',
      ...target,
      json: values.json === true,
      permits: permitsOption(values.permits),
    };
  }
  if (first === 'release') {
    if (values.force !== true) {
      throw new UsageError(
        'release: --force is required: it removes the lock whatever its owner, even one that is still running',
      );
    }
    return { command: 'release', ...target };
  }

  if (terminator === undefined) {
    throw new UsageError(
      'run: no command given; put it after --, as in: cachelock run nightly -- ./backup.sh',
    );
  }
  const command = after;
  if (command.length === 0 || command[0] === '') {
    throw new UsageError('run: no command given after --');
  }
  const ttlMs = duration('--ttl', values.ttl, '30s');
  if (ttlMs < MIN_TTL_MS) {
    throw new UsageError(
      `--ttl must be at least ${formatDuration(MIN_TTL_MS)}: the lease is extended every third of it, so a shorter one is lost to an ordinary pause of this process or the cache, and the command stopped; got ${JSON.stringify(values.ttl)}`,
    );
  }
  return {
    command: 'run',
    ...target,
    ttlMs,
    waitMs: duration('--wait', values.wait, '0', true),
    holdAtLeastMs: duration('--hold-at-least', values['hold-at-least'], '0'),
    conflictExitCode: exitCode('--conflict-exit-code', values['conflict-exit-code'], 75),
    quiet: values.quiet === true,
    killAfterMs: duration('--kill-after', values['kill-after'], '10s'),
    lostSignal: signalName('--lost-signal', values['lost-signal'] as string | undefined),
    permits: permitsOption(values.permits),
    argv: command as [string, ...string[]],
  };
}

/**
 * `--key -x` as `--key=-x`: parseArgs takes a value that begins with `-` only in the second
 * form, and a key (unlike the other options' values) may well begin with one. Only before `--`.
 */
function joinKeyValue(args: string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') return joined.concat(args.slice(i));
    if (arg === '--key' && i + 1 < args.length && args[i + 1] !== '--') {
      joined.push(`--key=${args[++i]}`);
    } else {
      joined.push(arg);
    }
  }
  return joined;
}

/** parseArgs messages, without its hint about positionals that does not apply here. */
function conciseParseError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const concise = message.replace(/\.? To specify a positional argument.*$/s, '');
  const unknown = /^Unknown option '(-[^']*)'/.exec(concise);
  // `run -x -- cmd` meant the key "-x" as often as an option.
  return unknown === null
    ? concise
    : `${concise}; a key that begins with "-" is given as --key=${unknown[1]}`;
}

function cacheUrl(given: string | undefined, env: NodeJS.ProcessEnv): string {
  const cache = defaultCache(given, env);
  const source = given !== undefined ? '--cache' : 'CACHELOCK_URL';
  let url: URL;
  try {
    url = new URL(cache);
  } catch {
    throw new UsageError(
      `${source} must be a URL such as redis://127.0.0.1:6379 or sqlite:/path/to/locks.sqlite, got ${JSON.stringify(redactUrl(cache))}`,
    );
  }
  if (!knownSchemes().includes(url.protocol)) {
    throw new UsageError(
      `${source}: unknown URL scheme "${url.protocol}"; known schemes: ${knownSchemes().join(', ')}`,
    );
  }
  if (url.protocol === 'memory:') {
    // Each cachelock process would have a store of its own: nothing would ever be excluded.
    throw new UsageError(
      `${source}: a memory: cache lives inside one process, so it cannot lock anything between commands; use a cache they share, such as sqlite:/path/to/locks.sqlite`,
    );
  }
  return cache;
}

/**
 * A duration with a unit. A bare number other than 0 is refused: the library reads numbers as
 * milliseconds and shell tools (sleep, timeout) read them as seconds, so either guess surprises.
 */
function duration(option: string, value: unknown, fallback: string, forever = false): number {
  const text = typeof value === 'string' ? value : fallback;
  if (/^\s*\d+(\.\d+)?\s*$/.test(text)) {
    if (Number(text) === 0) return 0;
    throw new UsageError(
      `${option} needs a unit, such as ${text.trim()}s or ${text.trim()}ms, got ${JSON.stringify(text)}`,
    );
  }
  try {
    return toMs(option, text, forever);
  } catch {
    const examples = `500ms, 30s, 1.5m, 2h or 1d${forever ? ', or forever' : ''}`;
    throw new UsageError(
      `${option} must be a duration such as ${examples}, got ${JSON.stringify(text)}`,
    );
  }
}

/** `--permits N`: a whole number >= 1, in decimal digits (no 1e3, 0x10 or 2.0). */
function permitsOption(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text)) || Number(text) < 1) {
    throw new UsageError(`--permits must be an integer >= 1, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function exitCode(option: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  const text = String(value);
  if (!/^\d+$/.test(text) || Number(text) > 255) {
    throw new UsageError(
      `${option} must be a whole number from 0 to 255, got ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

/** `TERM`, `SIGTERM`, `term` -> `SIGTERM`; refuses names this system does not know. */
function signalName(option: string, value: string | undefined): NodeJS.Signals {
  if (value === undefined) return 'SIGTERM';
  const upper = value.toUpperCase();
  const name = upper.startsWith('SIG') ? upper : `SIG${upper}`;
  if (!(name in constants.signals)) {
    throw new UsageError(
      `${option} must be a signal name such as TERM, INT or HUP, got ${JSON.stringify(value)}`,
    );
  }
  return name as NodeJS.Signals;
}
