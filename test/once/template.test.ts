import { transformSync } from 'esbuild';
import ts from 'typescript';
import { describe, expect, test } from 'vitest';
import { readParameters } from '../../src/once/params.js';
import { compileTemplate } from '../../src/once/template.js';

// The test file itself is transformed before it runs (comments dropped, parens added), so the
// shapes under test are built from source text at run time, exactly as written here.
function fromSource(source: string): Function {
  return new Function(`return (${source});`)();
}

function names(fn: Function): string[] | null {
  const list = readParameters(fn);
  if (list === null) return null;
  return list.parameters.map((p) =>
    p.kind === 'name' ? p.name : p.kind === 'rest' ? `...${p.name}` : `{${p.bindings.join(',')}}`,
  );
}

describe('readParameters', () => {
  test.each([
    ['function f(a, b) {}', ['a', 'b']],
    ['function () {}', []],
    ['async function f(a, b) { return a }', ['a', 'b']],
    ['function* g(a, b) {}', ['a', 'b']],
    ['async function* g(a) {}', ['a']],
    ['(a, b) => a + b', ['a', 'b']],
    ['a => a', ['a']],
    ['async a => a', ['a']],
    ['async (a, b) => a', ['a', 'b']],
    ['async => 1', ['async']],
    ['(a, b,) => 1', ['a', 'b']],
    ['({ m(a, b) { return a } }).m', ['a', 'b']],
    ['({ async m(a) {} }).m', ['a']],
    ['({ *m(a) {} }).m', ['a']],
    ['({ async *m(a) {} }).m', ['a']],
    ['({ ["x" + (1, 2)](a) {} }).x2', ['a']],
    ['({ "quoted (name)"(a) {} })["quoted (name)"]', ['a']],
    ['class { m(a, b) {} }.prototype.m', ['a', 'b']],
    ['class { static async m(a) {} }.m', ['a']],
    ['(function (a = 1, b = { x: 1 }, c = (1, 2), d = "a,b") {})', ['a', 'b', 'c', 'd']],
    [
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the source of a template literal
      "function (e = 'x)', f = /[,)]/g, g = `t${ { y: 1 }.y },(`, h = 1 / 2) {}",
      ['e', 'f', 'g', 'h'],
    ],
    ['function (a = () => { return 1 }, b) {}', ['a', 'b']],
    ['(a = (x) => x, b = {}) => a', ['a', 'b']],
    ['function (a, ...rest) {}', ['a', '...rest']],
    ['(...args) => args', ['...args']],
    ['function ({ a, b: [c, d = 2], ...e }, [f, , { g }], h) {}', ['{a,c,d,e}', '{f,g}', 'h']],
    ['({ a = x }, ...[b, c]) => 1', ['{a}', '{b,c}']],
    ['function (a /* , fake */, // b,\n c) {}', ['a', 'c']],
    ['function (/* (x */ a) {}', ['a']],
    ['function f(a, b) { /* ) */ }', ['a', 'b']],
    ['function (ünïcode, $dollar, _under) {}', ['ünïcode', '$dollar', '_under']],
  ])('%s', (source, expected) => {
    expect(names(fromSource(source))).toEqual(expected);
  });

  test('getters are read like methods', () => {
    const getter = Object.getOwnPropertyDescriptor(
      fromSource('class { get size() { return 1 } }').prototype,
      'size',
    )!.get!;
    expect(names(getter)).toEqual([]);
  });

  test('new Function', () => {
    expect(names(new Function('a', 'b = 2', 'return a'))).toEqual(['a', 'b']);
  });

  test('native, bound and class have no names', () => {
    expect(readParameters(Math.max)).toBeNull();
    expect(readParameters(((a: number) => a).bind(null))).toBeNull();
    expect(readParameters(fromSource('class A { constructor(a) {} }'))).toBeNull();
  });

  // Downlevel async functions keep the real list on an inner generator (`__awaiter`, `__async`).
  const typed = `
    export class Jobs {
      async sync(userId: string, day: Date = new Date(), ...tags: string[]) { return userId; }
      async plain(a: string, b: number) { return a; }
    }
    export async function run(job: { id: string }, attempt = 1) { return job; }
    export const arrow = async (x: string, y = 2) => x;
  `;

  function load(code: string): Record<string, any> {
    const module = { exports: {} as Record<string, any> };
    new Function('exports', 'module', 'require', code)(module.exports, module, () => ({}));
    return module.exports;
  }

  test.each([
    ['ES5', ts.ScriptTarget.ES5],
    ['ES2015', ts.ScriptTarget.ES2015],
    ['ES2017', ts.ScriptTarget.ES2017],
  ])('tsc output for %s keeps names', (_, target) => {
    const { outputText } = ts.transpileModule(typed, {
      compilerOptions: { target, module: ts.ModuleKind.CommonJS },
    });
    const compiled = load(outputText);
    // ES5 has no rest parameters: tsc moves them into the body, so that one name is gone.
    expect(names(compiled.Jobs.prototype.sync)).toEqual(
      target === ts.ScriptTarget.ES5 ? ['userId', 'day'] : ['userId', 'day', '...tags'],
    );
    expect(names(compiled.Jobs.prototype.plain)).toEqual(['a', 'b']);
    expect(names(compiled.run)).toEqual(['job', 'attempt']);
    expect(names(compiled.arrow)).toEqual(['x', 'y']);
  });

  test.each(['es2015', 'es2017', 'es2022'])('esbuild output for %s keeps names', (target) => {
    const { code } = transformSync(
      `${typed}\nexport const destructured = async (userId: string, { id }: { id: string }, n = 1) => userId;`,
      { loader: 'ts', target, format: 'cjs' },
    );
    const compiled = load(code);
    expect(names(compiled.Jobs.prototype.sync)).toEqual(['userId', 'day', '...tags']);
    expect(names(compiled.Jobs.prototype.plain)).toEqual(['a', 'b']);
    expect(names(compiled.run)).toEqual(['job', 'attempt']);
    expect(names(compiled.arrow)).toEqual(['x', 'y']);
    expect(names(compiled.destructured)).toEqual(['userId', '{id}', 'n']);
  });
});

describe('compileTemplate', () => {
  const sync = fromSource('function (userId, day, user, ...tags) {}');

  test.each<[string, unknown[], string]>([
    ['sync-{userId}', ['u1'], 'sync-u1'],
    ['{userId}', ['u1'], 'u1'],
    ['sync', ['u1'], 'sync'],
    ['{0}:{1}', ['a', 'b'], 'a:b'],
    ['{userId}-{day}', ['u1', new Date('2024-05-01T00:00:00Z')], 'u1-2024-05-01T00:00:00.000Z'],
    ['n={userId}', [42], 'n=42'],
    ['n={userId}', [42n], 'n=42'],
    ['n={userId}', [false], 'n=false'],
    ['n={userId}', [null], 'n='],
    ['n={userId}', [undefined], 'n='],
    ['n={userId}', [], 'n='],
    ['{user.id}/{user.org.name}', [0, 0, { id: 7, org: { name: 'acme' } }], '7/acme'],
    ['{user.org.name}', [0, 0, { org: null }], ''],
    ['{2.id}', [0, 0, { id: 'x' }], 'x'],
    ['{userId.length}', ['abcd'], '4'],
    ['{tags.0}-{tags.length}', [0, 0, 0, 'red', 'blue'], 'red-2'],
    ['{{literal}} {userId} }}{{', ['u'], '{literal} u }{'],
    ['{ userId }', ['u'], 'u'],
  ])('%s (case %#)', (template, args, expected) => {
    expect(compileTemplate(template, sync)(args)).toBe(expected);
  });

  test.each<[string, Function, RegExp]>([
    ['sync-{userid}', sync, /\{userid\} names no parameter.*userId, day, user, tags/],
    ['sync-{userId', sync, /unbalanced "\{" at position 5/],
    ['sync-{a{b}', sync, /unbalanced "\{"/],
    ['sync-}', sync, /unbalanced "\}" at position 5/],
    ['sync-{}', sync, /\{\} is not a placeholder/],
    ['sync-{a-b}', sync, /\{a-b\} is not a placeholder/],
    ['sync-{user..id}', sync, /is not a placeholder/],
    ['{a}', fromSource('function ({ a }, b) {}'), /destructured parameter at position 0.*\{0\.a\}/],
    ['{b}', fromSource('([a, b]) => 1'), /destructured parameter at position 0/],
    ['{x}', Math.max, /cannot be read.*\{0\}/],
    ['{x}', fromSource('(a) => a').bind(null), /cannot be read/],
    ['{x}', fromSource('() => 1'), /names no parameter.*\(none\)/],
  ])('%s is refused when applied', (template, fn, message) => {
    expect(() => compileTemplate(template, fn)).toThrow(TypeError);
    expect(() => compileTemplate(template, fn)).toThrow(message);
  });

  test('positional placeholders work where names cannot be read', () => {
    expect(compileTemplate('m-{0}-{1.id}', Math.max)([3, { id: 4 }])).toBe('m-3-4');
  });

  test.each<[string, unknown, RegExp]>([
    ['{userId}', { id: 1 }, /\{userId\} is an object.*\{userId\.id\} or a key function/],
    ['{userId}', ['a'], /is an array/],
    ['{userId}', () => 1, /is a function/],
    ['{userId}', Symbol('s'), /is a symbol/],
    ['{userId}', new Date(Number.NaN), /invalid Date/],
    ['{user.org}', undefined, /\{user\.org\} is an object/],
  ])('%s refuses %s when called', (template, value, message) => {
    const build = compileTemplate(template, sync);
    const args = template.startsWith('{user.') ? [0, 0, { org: { name: 'acme' } }] : [value];
    expect(() => build(args)).toThrow(TypeError);
    expect(() => build(args)).toThrow(message);
  });
});
