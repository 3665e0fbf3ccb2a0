/**
 * Key templates: `'sync-{userId}'`, `'report-{0}'`, `'user-{user.id}'`, `'{{literal}}'`.
 *
 * A template is parsed and checked against the function's parameter list once, when `once` is
 * applied; what it returns is a function that only reads arguments and joins text.
 *
 * Values: strings as they are; numbers, bigints and booleans as text; a `Date` as ISO text;
 * `null` and `undefined` (also met on the way along a path) as empty text. Objects, arrays,
 * functions and symbols are refused with a `TypeError` that asks for a path or a key function,
 * because their text (`[object Object]`) would put unrelated calls under one key.
 */
import { type Parameter, readParameters } from './params.js';

/** Builds the key for one call. Throws a `TypeError` when an argument cannot be used. */
export type KeyBuilder = (args: readonly unknown[]) => string;

type Part = string | ((args: readonly unknown[]) => string);

const PLACEHOLDER =
  /^\s*(\d+|[\p{ID_Start}$_][\p{ID_Continue}$]*)((?:\.[\p{ID_Continue}$]+)*)\s*$/u;

/**
 * Compile `template` for `fn`. Throws a `TypeError` (at once) for a malformed template or a
 * placeholder that names no parameter of `fn`.
 */
export function compileTemplate(template: string, fn: Function): KeyBuilder {
  const parts: Part[] = [];
  let text = '';
  let parameters: Parameter[] | null | undefined;
  const fail = (why: string): never => {
    throw new TypeError(`once: key template ${JSON.stringify(template)}: ${why}`);
  };

  for (let i = 0; i < template.length; i++) {
    const c = template[i];
    if (c === '{' && template[i + 1] === '{') {
      text += '{';
      i++;
    } else if (c === '}' && template[i + 1] === '}') {
      text += '}';
      i++;
    } else if (c === '}') {
      fail(`unbalanced "}" at position ${i}; write "}}" for a literal brace`);
    } else if (c === '{') {
      const close = template.indexOf('}', i + 1);
      const open = template.indexOf('{', i + 1);
      if (close === -1 || (open !== -1 && open < close)) {
        fail(`unbalanced "{" at position ${i}; write "{{" for a literal brace`);
      }
      const placeholder = template.slice(i, close + 1);
      const match = PLACEHOLDER.exec(template.slice(i + 1, close));
      if (!match) {
        fail(
          `${placeholder} is not a placeholder; use {name}, {0} or {name.path}, and "{{" / "}}" for literal braces`,
        );
      }
      const [, head, pathText] = match!;
      const path = pathText ? pathText.slice(1).split('.') : [];
      if (parameters === undefined) parameters = readParameters(fn)?.parameters ?? null;
      const read = reader(head!, parameters, fn, placeholder, fail);
      if (text !== '') parts.push(text);
      text = '';
      parts.push(formatter(read, path, placeholder));
      i = close;
    } else {
      text += c;
    }
  }
  if (text !== '') parts.push(text);
  return join(parts);
}

/** How to find a placeholder's argument in the call's arguments. */
function reader(
  head: string,
  parameters: Parameter[] | null,
  fn: Function,
  placeholder: string,
  fail: (why: string) => never,
): (args: readonly unknown[]) => unknown {
  if (/^\d+$/.test(head)) {
    const index = Number(head);
    return (args) => args[index];
  }
  const fnName = fn.name ? `"${fn.name}"` : 'the function';
  if (parameters === null) {
    return fail(
      `${placeholder} names a parameter, but the parameter names of ${fnName} cannot be read (a native or bound function); use a position such as {0}, or a key function`,
    );
  }
  for (const parameter of parameters) {
    if (parameter.kind === 'name' && parameter.name === head) {
      const index = parameter.index;
      return (args) => args[index];
    }
    if (parameter.kind === 'rest' && parameter.name === head) {
      const index = parameter.index;
      return (args) => args.slice(index);
    }
    if (parameter.kind === 'pattern' && parameter.bindings.includes(head)) {
      return fail(
        `${placeholder} names "${head}" inside the destructured parameter at position ${parameter.index}; a destructured parameter has no name, use its position: {${parameter.index}.${head}} (if that is its property path)`,
      );
    }
  }
  const names = parameters.flatMap((p) => (p.kind === 'pattern' ? [`{${p.index}}`] : [p.name]));
  return fail(
    `${placeholder} names no parameter of ${fnName}; its parameters are ${names.length > 0 ? names.join(', ') : '(none)'}`,
  );
}

function formatter(
  read: (args: readonly unknown[]) => unknown,
  path: string[],
  placeholder: string,
): (args: readonly unknown[]) => string {
  if (path.length === 0) return (args) => keyText(read(args), placeholder);
  return (args) => {
    let value = read(args);
    for (const property of path) {
      if (value === null || value === undefined) return '';
      value = (value as Record<string, unknown>)[property];
    }
    return keyText(value, placeholder);
  };
}

/** The text of one placeholder's value. */
export function keyText(value: unknown, placeholder: string): string {
  switch (typeof value) {
    case 'string':
      return value;
    case 'number':
    case 'bigint':
    case 'boolean':
      return String(value);
    case 'undefined':
      return '';
    case 'object':
      if (value === null) return '';
      if (value instanceof Date) {
        if (Number.isNaN(value.getTime())) {
          throw new TypeError(`once: key placeholder ${placeholder} is an invalid Date`);
        }
        return value.toISOString();
      }
      break;
  }
  const what = Array.isArray(value)
    ? 'an array'
    : typeof value === 'object'
      ? 'an object'
      : `a ${typeof value}`;
  throw new TypeError(
    `once: key placeholder ${placeholder} is ${what}, which has no stable text; use a path such as {${placeholder.slice(1, -1).trim()}.id} or a key function`,
  );
}

function join(parts: Part[]): KeyBuilder {
  if (parts.length === 1) {
    const only = parts[0]!;
    return typeof only === 'string' ? () => only : only;
  }
  if (parts.length === 2) {
    const [a, b] = parts as [Part, Part];
    if (typeof a === 'string' && typeof b !== 'string') return (args) => a + b(args);
    if (typeof a !== 'string' && typeof b === 'string') return (args) => a(args) + b;
  }
  if (parts.every((p) => typeof p === 'string')) {
    const constant = parts.join('');
    return () => constant;
  }
  return (args) => {
    let key = '';
    for (const part of parts) key += typeof part === 'string' ? part : part(args);
    return key;
  };
}
