/**
 * Keeps passwords out of everything cachelock shows: a URL is redacted wherever a message
 * quotes it, and a store's error is copied with whatever could carry a secret scrubbed before
 * it becomes the cause of a `LockError` (and so of debug lines and diagnostics events).
 */

const HIDDEN = '***';

// `user:password@` after `scheme://`, written as loosely as a malformed URL may be: the
// password runs to the last `@` of the word, since an unencoded `@` or `/` is what often makes
// the URL malformed in the first place.
const USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s:@/?#"'<>]*):([^\s"'<>]*)@/gi;
// `password=...` in a query string or a `key=value` connection string.
const SECRET_NAME = /pass|pwd|secret|token|auth|credential|api[-_]?key|access[-_]?key/i;
const PARAMETER = /(^|[?&;\s])([^=&#\s"'<>?;]+)=([^&#\s"'<>;]*)/g;
// Properties of an error (or of what it carries) that hold a secret by their name alone.
const SECRET_PROPERTY =
  /^(password|passwd|pass|pwd|secret|token|auth|authorization|credentials?|sentinelPassword)$/i;
// Client commands whose arguments carry a password: ioredis attaches the failed command to its
// ReplyError, and a WRONGPASS comes from AUTH or from HELLO ... AUTH user password.
const AUTH_COMMAND = /^(auth|hello)$/i;

// Passwords cachelock was given in URLs and clients, scrubbed from any text a client library
// writes (a message that quotes its connection string in its own way). Shorter ones would
// mangle ordinary words; the structural rules above still cover them.
const known = new Set<string>();
const SHORTEST_KNOWN = 4;

/** Scrub `secret` (a password from a URL or a client's options) from every error shown. */
export function rememberSecret(secret: unknown): void {
  if (typeof secret !== 'string' || secret.length < SHORTEST_KNOWN) return;
  known.add(secret);
  const encoded = encodeURIComponent(secret);
  if (encoded !== secret) known.add(encoded);
}

/** Remember the password of a URL and of its secret-looking query parameters. */
export function rememberUrlSecrets(url: URL): void {
  if (url.password) {
    rememberSecret(url.password);
    rememberSecret(safeDecode(url.password));
  }
  for (const [name, value] of url.searchParams) if (SECRET_NAME.test(name)) rememberSecret(value);
}

/**
 * Remember the passwords a client was configured with, where clients commonly keep them
 * (ioredis and node-redis `options`, pg `connectionParameters`/`options`, mysql2 `config`, memjs
 * `servers`).
 */
export function rememberClientSecrets(client: object): void {
  const c = client as Record<string, any>;
  const mysql2 = [
    c.config?.connectionConfig,
    c.pool?.config?.connectionConfig,
    c.connection?.config,
  ];
  for (const holder of [c.options, c.connectionParameters, c.config, c._options, ...mysql2]) {
    if (typeof holder !== 'object' || holder === null) continue;
    rememberSecret(holder.password);
    rememberSecret(holder.sentinelPassword);
    for (const url of [holder.url, holder.connectionString]) {
      if (typeof url !== 'string') continue;
      try {
        rememberUrlSecrets(new URL(url));
      } catch {}
    }
  }
  if (Array.isArray(c.servers)) for (const server of c.servers) rememberSecret(server?.password);
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Text with credentials hidden: `user:***@` in URLs, `password=***`, and known passwords. */
export function redactText(text: string): string {
  let out = text.replace(USERINFO, (_, scheme, user) => `${scheme}${user}:${HIDDEN}@`);
  out = out.replace(PARAMETER, (whole, before, name, value) =>
    value !== '' && SECRET_NAME.test(name) ? `${before}${name}=${HIDDEN}` : whole,
  );
  for (const secret of known) if (out.includes(secret)) out = out.split(secret).join(HIDDEN);
  return out;
}

/**
 * A URL fit for a message: its password and secret query parameters hidden. Takes what the
 * user gave, even a string that is not a valid URL.
 */
export function redactUrl(given: string | URL): string {
  let url: URL;
  try {
    url = given instanceof URL ? given : new URL(given);
  } catch {
    return redactText(String(given));
  }
  if (!url.password) return redactText(url.href);
  const copy = new URL(url.href);
  copy.password = HIDDEN;
  return redactText(copy.href);
}

// Deeper than any error a client builds; past it a value is replaced, not searched.
const MAX_DEPTH = 32;
// How many objects one scrub looks at, so that an error holding a whole client stays cheap.
const MAX_OBJECTS = 5_000;

/**
 * `error` with no secret left however deeply it is inspected: the same error when it carries
 * none, else a copy (same prototype, so `instanceof` still holds) whose message, stack and
 * other text are redacted, whose password-named properties and AUTH/HELLO command arguments are
 * hidden, and whose causes, `errors` (AggregateError) and other properties are scrubbed alike.
 */
export function safeError<T>(error: T): T {
  return new Scrub().copy(error, 0) as T;
}

class Scrub {
  readonly #needs = new Map<object, boolean>();
  readonly #copies = new Map<object, unknown>();
  #objects = 0;

  copy(value: unknown, depth: number): unknown {
    if (typeof value === 'string') return redactText(value);
    if (typeof value !== 'object' || value === null) return value;
    if (!this.#check(value, depth)) return value;
    const done = this.#copies.get(value);
    if (done !== undefined) return done;
    if (depth > MAX_DEPTH || this.#objects > MAX_OBJECTS) return '[Object]';
    if (value instanceof URL) return new URL(redactUrl(value));
    const target = blank(value);
    this.#copies.set(value, target);
    const command = isAuthCommand(value);
    for (const name of Reflect.ownKeys(value)) {
      if (Array.isArray(value) && name === 'length') continue;
      const child = read(value, name);
      let safe: unknown;
      if (command && name === 'args' && Array.isArray(child)) safe = child.map(() => HIDDEN);
      else if (isSecretProperty(name, child)) safe = HIDDEN;
      else safe = this.copy(child, depth + 1);
      const enumerable = Object.getOwnPropertyDescriptor(value, name)?.enumerable ?? true;
      Object.defineProperty(target, name, {
        value: safe,
        enumerable,
        writable: true,
        configurable: true,
      });
    }
    return target;
  }

  /** Whether `value` carries anything to hide (an object under way counts as yes: a cycle). */
  #check(value: unknown, depth: number): boolean {
    if (typeof value === 'string') return redactText(value) !== value;
    if (typeof value !== 'object' || value === null) return false;
    if (ArrayBuffer.isView(value) || value instanceof Date || value instanceof RegExp) return false;
    const seen = this.#needs.get(value);
    if (seen !== undefined) return seen;
    if (value instanceof URL) return redactUrl(value) !== value.href;
    if (depth > MAX_DEPTH || ++this.#objects > MAX_OBJECTS) return true;
    this.#needs.set(value, true);
    const command = isAuthCommand(value);
    let needs = false;
    for (const name of Reflect.ownKeys(value)) {
      const child = read(value, name);
      if (
        (command && name === 'args') ||
        isSecretProperty(name, child) ||
        this.#check(child, depth + 1)
      ) {
        needs = true;
        break;
      }
    }
    this.#needs.set(value, needs);
    return needs;
  }
}

function read(value: object, name: string | symbol): unknown {
  try {
    return (value as Record<string | symbol, unknown>)[name];
  } catch {
    return undefined;
  }
}

function isSecretProperty(name: string | symbol, value: unknown): boolean {
  return (
    typeof name === 'string' &&
    SECRET_PROPERTY.test(name) &&
    ((typeof value === 'string' && value !== '') || ArrayBuffer.isView(value))
  );
}

function isAuthCommand(value: object): boolean {
  const command = value as { name?: unknown; args?: unknown };
  return typeof command.name === 'string' && AUTH_COMMAND.test(command.name) && 'args' in command;
}

/** An empty object of the same kind: a real Error (so it prints as one), an array, or else. */
function blank(value: object): object {
  const prototype = Object.getPrototypeOf(value) as object | null;
  if (value instanceof Error) {
    const error = new Error();
    Reflect.deleteProperty(error, 'stack');
    Object.setPrototypeOf(error, prototype);
    return error;
  }
  if (Array.isArray(value)) return [];
  return Object.create(prototype) as object;
}
