import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as cachelock from 'cachelock';
import ts from 'typescript';
import { beforeAll, describe, expect, test, vi } from 'vitest';

// Both decorator protocols are exercised for real: the fixtures are compiled by the TypeScript
// compiler (with and without experimentalDecorators), and the emitted code is run here.

const root = fileURLToPath(new URL('../../', import.meta.url));

/** The parts of reflect-metadata that NestJS and tsc's `__metadata` use, kept in WeakMaps. */
function installReflectMetadata(): void {
  const store = new WeakMap<object, Map<unknown, Map<unknown, unknown>>>();
  const table = (target: object, property: unknown, create: boolean) => {
    let byProperty = store.get(target);
    if (!byProperty && create) store.set(target, (byProperty = new Map()));
    let entries = byProperty?.get(property);
    if (!entries && create && byProperty) byProperty.set(property, (entries = new Map()));
    return entries;
  };
  const reflect = Reflect as any;
  reflect.defineMetadata = (key: unknown, value: unknown, target: object, property?: unknown) => {
    table(target, property, true)!.set(key, value);
  };
  reflect.getOwnMetadata = (key: unknown, target: object, property?: unknown) =>
    table(target, property, false)?.get(key);
  reflect.getOwnMetadataKeys = (target: object, property?: unknown) => [
    ...(table(target, property, false)?.keys() ?? []),
  ];
  reflect.getMetadata = (key: unknown, target: object, property?: unknown): unknown => {
    for (let at: object | null = target; at !== null; at = Object.getPrototypeOf(at)) {
      const entries = table(at, property, false);
      if (entries?.has(key)) return entries.get(key);
    }
    return undefined;
  };
  reflect.metadata = (key: unknown, value: unknown) => (target: object, property?: unknown) =>
    reflect.defineMetadata(key, value, target, property);
}

const experimentalOptions: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.CommonJS,
  experimentalDecorators: true,
  emitDecoratorMetadata: true,
};
const standardOptions: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.CommonJS,
};

/** Compile `source` with tsc's emitter and run it as a CommonJS module that can import cachelock. */
function load(source: string, options: ts.CompilerOptions): Record<string, any> {
  const { outputText } = ts.transpileModule(source, { compilerOptions: options });
  const module = { exports: {} as Record<string, any> };
  const require = (id: string) => {
    if (id === 'cachelock') return cachelock;
    throw new Error(`fixture may import only cachelock, not ${id}`);
  };
  new Function('exports', 'require', 'module', outputText)(module.exports, require, module);
  return module.exports;
}

/** Type errors in `source`, checked against the real sources of cachelock. */
function typeErrors(source: string, options: ts.CompilerOptions): string[] {
  const fixture = `${root}test/once/__fixture__.ts`;
  const compilerOptions: ts.CompilerOptions = {
    ...options,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts', 'lib.esnext.decorators.d.ts'],
    types: ['node'],
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    paths: { cachelock: [`${root}src/index.ts`] },
  };
  const host = ts.createCompilerHost(compilerOptions);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, language, ...rest) =>
    name === fixture
      ? ts.createSourceFile(name, source, language)
      : getSourceFile(name, language, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === fixture || fileExists(name);
  const program = ts.createProgram([fixture], compilerOptions, host);
  const file = program.getSourceFile(fixture)!;
  return [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)].map(
    (d) => {
      const { line } = file.getLineAndCharacterOfPosition(d.start ?? 0);
      return `line ${line + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    },
  );
}

const experimentalFixture = `
import { currentLock, once } from 'cachelock';

const SetMetadata =
  (key: string, value: unknown) =>
  (_target: object, _property: string | symbol, descriptor: PropertyDescriptor) => {
    (Reflect as any).defineMetadata(key, value, descriptor.value);
  };
const Tag =
  (value: string) => (_target: object, _property: string | symbol, descriptor: PropertyDescriptor) => {
    descriptor.value.tag = value;
  };

export class Reports {
  calls: string[] = [];
  constructor(readonly name: string) {}

  @SetMetadata('applied-after', 'outer')
  @once({ key: 'report-{run}-{day}', onLocked: (_run: string, day: string) => 'skipped ' + day })
  @SetMetadata('applied-before', 'cron')
  @Tag('tagged')
  async build(run: string, day: string, gate: Promise<void>): Promise<string> {
    this.calls.push(day);
    await gate;
    return this.name + ' built ' + day + ' under ' + currentLock()?.key;
  }

  @once({ key: (run: string) => 'tick-' + run, throwIfLocked: true })
  tick(run: string): void {
    this.calls.push('tick ' + run);
  }

  @once({ key: 'static-{0}' })
  static async create(run: string): Promise<string> {
    return this.name + ' ' + run;
  }
}
`;

const standardFixture = `
import { currentLock, once } from 'cachelock';

function tag(value: string) {
  return (method: Function, context: ClassMethodDecoratorContext) => {
    (method as any).tag = value;
    (context.metadata as any).tagged = value;
  };
}

export class Reports {
  calls: string[] = [];
  constructor(readonly name: string) {}

  @once({ key: 'report-{run}-{day}', onLocked: (_run: string, day: string) => 'skipped ' + day })
  @tag('inner')
  async build(run: string, day: string, gate: Promise<void>): Promise<string> {
    this.calls.push(day);
    await gate;
    return this.name + ' built ' + day + ' under ' + currentLock()?.key;
  }

  @once({ key: (run: string) => 'tick-' + run, throwIfLocked: true })
  tick(run: string): void {
    this.calls.push('tick ' + run);
  }

  @once({ key: 'static-{0}' })
  static async create(run: string): Promise<string> {
    return this.name + ' ' + run;
  }
}
`;

beforeAll(() => {
  installReflectMetadata();
  // Node 20 has no Symbol.metadata yet; tsc's emit uses it when present, as TypeScript advises.
  (Symbol as any).metadata ??= Symbol('Symbol.metadata');
});

describe.each([
  ['experimentalDecorators', experimentalFixture, experimentalOptions],
  ['standard decorators', standardFixture, standardOptions],
])('@once with %s', (_, source, options) => {
  let Reports: any;
  beforeAll(() => {
    ({ Reports } = load(source, options));
  });

  test('the fixture type-checks', () => {
    expect(typeErrors(source, options)).toEqual([]);
  });

  test('concurrent calls: one runs with this kept, the other gets onLocked', async () => {
    const run = randomUUID();
    const reports = new Reports('weekly');
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const first = reports.build(run, 'mon', gate);
    await vi.waitFor(() => expect(reports.calls).toEqual(['mon']));
    expect(await reports.build(run, 'mon', gate)).toBe('skipped mon');
    expect(await Reports.prototype.build.isLocked(run, 'mon')).toBe(true);
    // Another day is another key.
    const other = reports.build(run, 'tue', gate);
    open();
    expect(await first).toBe(`weekly built mon under report-${run}-mon`);
    expect(await other).toBe(`weekly built tue under report-${run}-tue`);
    expect(reports.calls).toEqual(['mon', 'tue']);
    expect(await Reports.prototype.build.isLocked(run, 'mon')).toBe(false);
  });

  test('keyFor, name and length are on the decorated method', () => {
    const build = Reports.prototype.build;
    expect(build.keyFor('r', 'mon')).toBe('report-r-mon');
    expect(build.name).toBe('build');
    expect(build.length).toBe(3);
  });

  test('a method that returns nothing, with a key function and throwIfLocked', async () => {
    const run = randomUUID();
    const reports = new Reports('x');
    const holder = await cachelock.Lock.acquire(`tick-${run}`);
    await expect(reports.tick(run)).rejects.toBeInstanceOf(cachelock.LockedError);
    await holder.release();
    await expect(reports.tick(run)).resolves.toBeUndefined();
    expect(reports.calls).toEqual([`tick ${run}`]);
  });

  test('a static method keeps its this', async () => {
    expect(await Reports.create('r1')).toBe('Reports r1');
  });

  test('a property another decorator put on the method is kept', () => {
    expect(Reports.prototype.build.tag).toBe(options.experimentalDecorators ? 'tagged' : 'inner');
  });
});

describe('metadata', () => {
  test('experimentalDecorators: reflect-metadata on the method is copied to the wrapper', () => {
    const { Reports } = load(experimentalFixture, experimentalOptions);
    const reflect = Reflect as any;
    const build = Reports.prototype.build;
    expect(reflect.getMetadata('applied-before', build)).toBe('cron');
    expect(reflect.getMetadata('applied-after', build)).toBe('outer');
    // emitDecoratorMetadata keys design types by class and name; they stay where they were.
    expect(reflect.getMetadata('design:paramtypes', Reports.prototype, 'build')).toEqual([
      String,
      String,
      Promise,
    ]);
    expect(reflect.getMetadata('design:returntype', Reports.prototype, 'build')).toBe(Promise);
  });

  test('standard decorators: the class metadata object is kept', () => {
    const { Reports } = load(standardFixture, standardOptions);
    expect(Reports[(Symbol as any).metadata]).toMatchObject({ tagged: 'inner' });
  });
});

describe('@once refuses what it cannot decorate, when the class is defined', () => {
  test.each([
    ['experimentalDecorators', experimentalOptions],
    ['standard decorators', standardOptions],
  ])('%s', (_, options) => {
    const define = (member: string) => () =>
      load(`import { once } from 'cachelock';\nexport class Jobs { ${member} }`, options);
    expect(define(`@once({ key: 'job-{nope}' }) async run(day: string) {}`)).toThrow(
      /\{nope\} names no parameter of "run"; its parameters are day/,
    );
    expect(define(`@once({ key: 'job', throwIfLock: true }) async run() {}`)).toThrow(
      /throwIfLock is not an option/,
    );
    expect(define(`@once({ key: 'job' }) get size() { return 1; }`)).toThrow(
      /once decorates methods only/,
    );
    expect(define(`@once({ key: 'job-{day}' }) async run({ day }: { day: string }) {}`)).toThrow(
      /destructured parameter at position 0/,
    );
  });

  test('a method that returns a value synchronously is a type error in both protocols', () => {
    const source = `
      import { once } from 'cachelock';
      export class Jobs {
        // @ts-expect-error: the decorated method returns a promise, so it must not claim a number
        @once({ key: 'job' })
        run(): number { return 1; }
      }
    `;
    expect(typeErrors(source, experimentalOptions)).toEqual([]);
    expect(typeErrors(source, standardOptions)).toEqual([]);
  });
});
