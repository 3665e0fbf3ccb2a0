import { inspect } from 'node:util';
import { redactUrl } from 'cachelock';
import { describe, expect, it } from 'vitest';
import { redactText, rememberSecret, safeError } from '../../src/secrets.js';

const PASSWORD = 's3cr3t-Pa55';
const deep = (value: unknown) => inspect(value, { depth: 20, showHidden: true });

describe('redactUrl', () => {
  it('hides the password of a URL and keeps the rest', () => {
    expect(redactUrl(`redis://user:${PASSWORD}@127.0.0.1:6379/0`)).toBe(
      'redis://user:***@127.0.0.1:6379/0',
    );
    expect(redactUrl(new URL(`rediss://:${PASSWORD}@cache.example:6380`))).toBe(
      'rediss://:***@cache.example:6380',
    );
    expect(redactUrl('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
  });

  it('hides secrets in the query', () => {
    const shown = redactUrl(
      `postgres://db.example/app?sslmode=require&password=${PASSWORD}&sentinelPassword=${PASSWORD}x&authToken=t0ken-Zz`,
    );
    expect(shown).toBe(
      'postgres://db.example/app?sslmode=require&password=***&sentinelPassword=***&authToken=***',
    );
  });

  it('hides the password of a URL that does not parse', () => {
    for (const bad of [
      `redis://user:${PASSWORD}@[bad`,
      `redis://user:${PASSWORD}@host:port`,
      `redis://user:p@ss/${PASSWORD}@host:6379`, // parses, with the password's tail as the path
      `memcached://:${PASSWORD}@ host`,
    ]) {
      const shown = redactUrl(bad);
      expect(shown).not.toContain(PASSWORD);
      expect(shown).toMatch(/^(redis|memcached):\/\/(user)?:\*\*\*@/);
    }
  });
});

describe('safeError', () => {
  it('returns the very error when it carries no secret', () => {
    const cause = new Error('connect ECONNREFUSED 127.0.0.1:1');
    const error = new Error('failed', { cause });
    expect(safeError(error)).toBe(error);
  });

  it('drops the AUTH and HELLO arguments a client attaches, and keeps the class', () => {
    class ReplyError extends Error {
      command: { name: string; args: unknown[] };
      constructor(name: string, args: unknown[]) {
        super('WRONGPASS invalid username-password pair or user is disabled.');
        this.command = { name, args };
      }
    }
    for (const [name, args] of [
      ['hello', ['3', 'AUTH', 'default', PASSWORD]],
      ['auth', [Buffer.from(PASSWORD)]],
      ['AUTH', ['user', PASSWORD]],
    ] as const) {
      const original = new ReplyError(name, [...args]);
      const safe = safeError(original);
      expect(safe).toBeInstanceOf(ReplyError);
      expect(safe).not.toBe(original);
      expect(safe.message).toBe(original.message);
      expect(safe.stack).toBe(original.stack);
      expect(safe.command.name).toBe(name);
      expect(safe.command.args).toEqual(args.map(() => '***'));
      expect(deep(safe)).not.toContain(PASSWORD);
      expect(deep(safe)).not.toContain(Buffer.from(PASSWORD).toString('hex').slice(0, 8));
      // The client's own error is left as it was.
      expect(original.command.args).toEqual(args);
    }
  });

  it('walks causes, AggregateError.errors, password-named properties and cycles', () => {
    const inner = new Error(`cannot reach redis://u:${PASSWORD}@10.0.0.1:6379`);
    const aggregate = new AggregateError(
      [new Error('first'), Object.assign(new Error('second'), { config: { password: PASSWORD } })],
      'all failed',
      { cause: inner },
    );
    const outer = new Error('outer', { cause: aggregate }) as Error & { self?: unknown };
    outer.self = outer;
    const safe = safeError(outer) as typeof outer;
    const shown = deep(safe);
    expect(shown).not.toContain(PASSWORD);
    expect(shown).toContain('redis://u:***@10.0.0.1:6379');
    expect(safe.self).toBe(safe);
    const safeAggregate = safe.cause as AggregateError;
    expect(safeAggregate).toBeInstanceOf(AggregateError);
    expect(safeAggregate.errors).toHaveLength(2);
    expect(safeAggregate.errors[0]).toBe(aggregate.errors[0]);
    expect(safeAggregate.errors[1].config.password).toBe('***');
    expect(outer.cause).toBe(aggregate);
  });

  it('scrubs a remembered password wherever a client wrote it', () => {
    rememberSecret('Zq9-remembered-pass');
    const error = new Error('AUTH Zq9-remembered-pass failed', {
      cause: { detail: 'tried Zq9-remembered-pass' },
    });
    const shown = deep(safeError(error));
    expect(shown).not.toContain('Zq9-remembered-pass');
    expect(redactText('nothing to hide here')).toBe('nothing to hide here');
  });

  it('takes anything a store may reject with', () => {
    expect(safeError(`redis://:${PASSWORD}@h:1 down`)).toBe('redis://:***@h:1 down');
    expect(safeError(42)).toBe(42);
    expect(safeError(undefined)).toBe(undefined);
    expect(deep(safeError({ password: PASSWORD }))).not.toContain(PASSWORD);
  });
});
