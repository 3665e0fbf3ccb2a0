import { describe, expect, it } from 'vitest';
import { parseCommandLine } from '../../src/cli/args.js';
import { UsageError } from '../../src/cli/exit.js';

const env = { CACHELOCK_URL: 'sqlite:/tmp/cachelock-args-test.sqlite' };
const parse = (...argv: string[]) => parseCommandLine(argv, env);
const keyOf = (...argv: string[]) => (parse(...argv) as { key: string }).key;

describe('a key that begins with "-"', () => {
  it('is given with --key=-x or --key -x, before the command', () => {
    expect(keyOf('run', '--key=-x', '--', 'true')).toBe('-x');
    expect(keyOf('run', '--key', '-x', '--ttl', '5s', '--', 'true')).toBe('-x');
    expect(keyOf('run', '--quiet', '--key', '--nightly', '--', 'true')).toBe('--nightly');
    const request = parse('run', '--key', '-x', '--', 'echo', '--key', '-y');
    expect(request).toMatchObject({ key: '-x', argv: ['echo', '--key', '-y'] });
  });

  it('status and release also take it after --', () => {
    expect(keyOf('status', '--', '-x')).toBe('-x');
    expect(keyOf('status', '--key', '-x', '--json')).toBe('-x');
    expect(keyOf('release', '--force', '--', '-x')).toBe('-x');
    expect(keyOf('release', '--force', '--key=-x')).toBe('-x');
  });

  it('an ordinary key still works as before, and --key takes one too', () => {
    expect(keyOf('run', 'nightly', '--', 'true')).toBe('nightly');
    expect(keyOf('run', '--key', 'nightly', '--', 'true')).toBe('nightly');
    expect(keyOf('status', 'nightly')).toBe('nightly');
  });

  it.each([
    [
      ['run', '-x', '--', 'true'],
      /Unknown option '-x'; a key that begins with "-" is given as --key=-x/,
    ],
    [['run', 'a', '--key', 'b', '--', 'true'], /the key is given twice, as --key "b" and as "a"/],
    [['status', 'a', '--', '-x'], /status: takes no command after --/],
    [['status', '--', '-x', '-y'], /status: takes no command after --/],
    [['run', '--key'], /--key/],
    [['run', '--key=', '--', 'true'], /the key must not be empty/],
  ])('%j is a usage error', (argv, message) => {
    expect(() => parse(...argv)).toThrow(UsageError);
    expect(() => parse(...argv)).toThrow(message);
  });
});

describe('--ttl', () => {
  it.each(['10ms', '999ms', '0.5s'])('refuses %s, naming --ttl, the floor and the value', (ttl) => {
    expect(() => parse('run', 'k', '--ttl', ttl, '--', 'true')).toThrow(
      new RegExp(`^--ttl must be at least 1s: .+; got "${ttl.replace('.', '\\.')}"$`),
    );
  });

  it('takes 1s and more', () => {
    expect(parse('run', 'k', '--ttl', '1s', '--', 'true')).toMatchObject({ ttlMs: 1_000 });
    expect(parse('run', 'k', '--', 'true')).toMatchObject({ ttlMs: 30_000 });
  });
});

describe('--permits', () => {
  it('is a whole number >= 1 for run and status, absent by default', () => {
    expect(parse('run', 'k', '--permits', '3', '--', 'true')).toMatchObject({ permits: 3 });
    expect(parse('run', 'k', '--', 'true')).toMatchObject({ permits: undefined });
    expect(parse('status', 'k', '--permits', '1')).toMatchObject({ permits: 1 });
    expect(parse('status', 'k')).toMatchObject({ permits: undefined });
  });

  it.each(['0', '-2', '2.0', '1e3', '0x10', ' 2', 'many', '99999999999999999999'])(
    'refuses %j, naming the option and the value',
    (value) => {
      const attempt = () => parse('run', 'k', `--permits=${value}`, '--', 'true');
      expect(attempt).toThrow(UsageError);
      expect(attempt).toThrow(`--permits must be an integer >= 1, got ${JSON.stringify(value)}`);
    },
  );
});
