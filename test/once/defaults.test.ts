import { configure, memoryStore, once, setOnceDefaults } from 'cachelock';
import { afterEach, describe, expect, it } from 'vitest';

afterEach(() => {
  configure(null);
});

describe('setOnceDefaults', () => {
  class Job {
    readonly prefixes: string[] = [];
    constructor(readonly cache: ReturnType<typeof memoryStore>) {}
    async heldUnder() {
      const found: string[] = [];
      for (const key of ['x:job', 'y:job', 'cachelock:job', 'own:own', 'x:own']) {
        if ((await this.cache.inspect(key)) !== null) found.push(key);
      }
      return found;
    }
  }
  // What a method decorator makes: one wrapper shared by every instance, called with `this`.
  const work = once({ key: 'job' }, async function (this: Job) {
    this.prefixes.push(...(await this.heldUnder()));
  });
  const ownPrefix = once({ key: 'own', prefix: 'own:' }, async function (this: Job) {
    this.prefixes.push(...(await this.heldUnder()));
  });

  it("gives one instance's once methods their defaults, under the method's own options", async () => {
    const first = new Job(memoryStore());
    const second = new Job(memoryStore());
    setOnceDefaults(first, () => ({ cache: first.cache, prefix: 'x:' }));
    configure({ cache: second.cache });
    await work.call(first);
    await ownPrefix.call(first);
    await work.call(second);
    expect(first.prefixes).toEqual(['x:job', 'own:own']);
    expect(second.prefixes).toEqual(['cachelock:job']);

    setOnceDefaults(first, null);
    configure({ cache: first.cache });
    await work.call(first);
    expect(first.prefixes.at(-1)).toBe('cachelock:job');
  });

  it('names a bad argument', () => {
    expect(() => setOnceDefaults(null as never, () => ({}))).toThrow(
      /setOnceDefaults: instance must be an object, got null/,
    );
    expect(() => setOnceDefaults({}, {} as never)).toThrow(
      /setOnceDefaults: defaults must be a function that returns LockOptions, or null/,
    );
  });
});
