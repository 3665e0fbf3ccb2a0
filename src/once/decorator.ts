/**
 * `once(options)` as a method decorator, for both protocols TypeScript users meet:
 * standard (TC39) decorators, `(method, context) => replacement`, and `experimentalDecorators`
 * (NestJS, Angular), `(target, propertyKey, descriptor) => descriptor`.
 */

/** Makes the replacement for one method. */
export type MethodWrapper = (method: Function, methodName: string) => Function;

/** `once(options)` used as a decorator. The decorated method must return a promise or nothing. */
export interface OnceDecorator {
  /** Standard (TC39) decorators. */
  // biome-ignore lint/suspicious/noConfusingVoidType: a method that returns nothing may be decorated
  <This, A extends any[], R extends PromiseLike<unknown> | void>(
    method: (this: This, ...args: A) => R,
    context: ClassMethodDecoratorContext<This, (this: This, ...args: A) => R>,
  ): (this: This, ...args: A) => R;
  /** `experimentalDecorators` (NestJS). */
  // biome-ignore lint/suspicious/noConfusingVoidType: a method that returns nothing may be decorated
  <T extends (...args: any[]) => PromiseLike<unknown> | void>(
    target: object,
    propertyKey: string | symbol,
    descriptor: TypedPropertyDescriptor<T>,
  ): TypedPropertyDescriptor<T>;
}

interface DecoratorContext {
  kind: string;
  name: string | symbol;
}

/** A decorator that tells the two protocols apart by their arguments. */
export function methodDecorator(wrap: MethodWrapper): OnceDecorator {
  return function onceDecorator(...applied: unknown[]): unknown {
    const [first, second, third] = applied;
    if (applied.length === 2 && isContext(second)) {
      if (second.kind !== 'method' || typeof first !== 'function') {
        throw new TypeError(
          `once decorates methods only, not the ${second.kind} ${String(second.name)}; wrap a function with once(options, fn) instead`,
        );
      }
      const replacement = wrap(first, String(second.name));
      keepMetadata(first, replacement);
      return replacement;
    }
    const name = typeof second === 'string' || typeof second === 'symbol' ? String(second) : '?';
    if (isDescriptor(third) && typeof third.value === 'function') {
      const method = third.value as Function;
      const replacement = wrap(method, name);
      keepMetadata(method, replacement);
      third.value = replacement;
      return third;
    }
    throw new TypeError(
      `once decorates methods only, not ${isDescriptor(third) ? 'the accessor' : 'the property'} ${name}; wrap a function with once(options, fn) instead`,
    );
  } as OnceDecorator;
}

function isContext(value: unknown): value is DecoratorContext {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as DecoratorContext).kind === 'string' &&
    'name' in value
  );
}

function isDescriptor(value: unknown): value is PropertyDescriptor {
  return typeof value === 'object' && value !== null;
}

interface MetadataReflect {
  getOwnMetadataKeys?: (target: object) => unknown[];
  getOwnMetadata?: (key: unknown, target: object) => unknown;
  defineMetadata?: (key: unknown, value: unknown, target: object) => void;
}

// Our own members and what every function has; everything else another decorator may have put there.
const OWN = new Set<PropertyKey>([
  'length',
  'name',
  'prototype',
  'arguments',
  'caller',
  'isLocked',
  'keyFor',
]);

/**
 * Carry over what decorators applied before this one attached to the method: reflect-metadata
 * entries keyed by the function object (NestJS `SetMetadata`, `@Cron`) and plain properties.
 * reflect-metadata is used only when the application loaded it; cachelock does not import it.
 */
export function keepMetadata(from: Function, to: Function): void {
  const reflect = Reflect as unknown as MetadataReflect;
  if (
    typeof reflect.getOwnMetadataKeys === 'function' &&
    typeof reflect.getOwnMetadata === 'function' &&
    typeof reflect.defineMetadata === 'function'
  ) {
    for (const key of reflect.getOwnMetadataKeys(from)) {
      reflect.defineMetadata(key, reflect.getOwnMetadata(key, from), to);
    }
  }
  for (const key of Reflect.ownKeys(from)) {
    if (OWN.has(key) || Object.hasOwn(to, key)) continue;
    Object.defineProperty(to, key, Object.getOwnPropertyDescriptor(from, key)!);
  }
}
