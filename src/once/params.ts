/**
 * Reads a function's parameter names from its source text, so that a key template can say
 * `{userId}` instead of `{0}`. Only the header of the function is scanned (up to `=>` or the
 * body's `{`), with a small tokenizer that knows strings, templates, comments and regexes, so
 * that defaults like `d = "a,b"` or `e = /[,)]/` do not split the list.
 */

/** What one position in the parameter list binds. */
export type Parameter =
  | { kind: 'name'; name: string; index: number }
  | { kind: 'rest'; name: string; index: number }
  /** `{ a, b }` or `[a, b]`: not nameable as a whole; `bindings` are the names inside. */
  | { kind: 'pattern'; bindings: string[]; index: number };

export interface ParameterList {
  parameters: Parameter[];
}

interface Token {
  type: 'name' | 'punct' | 'literal';
  text: string;
  /** Offset just after the token in the source. */
  end: number;
}

const NATIVE = /\{\s*\[native code\]\s*\}\s*$/;
const IDENTIFIER_START = /[\p{ID_Start}$_\\]/u;
const IDENTIFIER_PART = /[\p{ID_Continue}$\\]/u;
const PUNCTUATORS = ['...', '=>', '?.', '??', '**'];
// After these, a `/` starts a regex rather than a division.
const BEFORE_EXPRESSION = new Set([
  'return',
  'typeof',
  'instanceof',
  'in',
  'of',
  'new',
  'delete',
  'void',
  'throw',
  'case',
  'do',
  'else',
  'yield',
  'await',
]);

/**
 * The parameter list of `fn`, or `null` when its source is not readable (a native or bound
 * function, a class).
 */
export function readParameters(fn: Function): ParameterList | null {
  let source: string;
  try {
    source = Function.prototype.toString.call(fn);
  } catch {
    return null;
  }
  if (NATIVE.test(source)) return null;
  const header = readHeader(source, 0);
  if (header === null) return null;
  const inner = downlevelParameters(source, header.end);
  return { parameters: splitParameters(inner ?? header.parameters) };
}

/**
 * Async functions compiled for older targets by tsc (`__awaiter`) or esbuild (`__async`) move
 * the real parameter list to an inner generator and leave placeholders (`userId_1`, `_0`) on
 * the outer function, passing `arguments` on. Returns the inner list in that case.
 */
function downlevelParameters(source: string, bodyStart: number): Token[] | null {
  const tokens = tokenize(source, bodyStart);
  let token = tokens.next().value;
  if (token?.type === 'punct' && token.text === '{') token = tokens.next().value;
  // ES5 output first gathers a rest parameter: `var rest = []; for (...) { ... }`.
  if (token?.type === 'name' && token.text === 'var') {
    for (token = tokens.next().value; token && token.text !== 'for'; ) token = tokens.next().value;
    if (!skipGroup(tokens) || !skipGroup(tokens)) return null;
    token = tokens.next().value;
  }
  if (token?.type === 'name' && token.text === 'return') token = tokens.next().value;
  if (token?.type !== 'name' || !/^__(awaiter|async)$/.test(token.text)) return null;
  if (tokens.next().value?.text !== '(') return null;
  // The helper's arguments, split at top-level commas.
  const args: Token[][] = [[]];
  let depth = 0;
  for (const t of tokens) {
    if (t.type === 'punct') {
      if (depth === 0 && t.text === ')') break;
      if (depth === 0 && t.text === ',') {
        args.push([]);
        continue;
      }
      if (t.text === '(' || t.text === '[' || t.text === '{') depth++;
      else if (t.text === ')' || t.text === ']' || t.text === '}') depth--;
    }
    args[args.length - 1]!.push(t);
  }
  const passed = args[1]?.map((t) => t.text).join(' ');
  if (passed === undefined || passed === 'null' || passed === 'void 0' || passed === 'undefined') {
    return null;
  }
  const generator = args[args.length - 1]?.[0];
  if (generator?.type !== 'name' || generator.text !== 'function') return null;
  return readHeader(source, generator.end - generator.text.length)?.parameters ?? null;
}

/** Consume one balanced `( )` or `{ }` group; whether there was one. */
function skipGroup(tokens: Iterator<Token>): boolean {
  let depth = 0;
  for (let next = tokens.next(); !next.done; next = tokens.next()) {
    const text = next.value.type === 'punct' ? next.value.text : '';
    if (text === '(' || text === '[' || text === '{') depth++;
    else if (text === ')' || text === ']' || text === '}') {
      if (--depth === 0) return true;
    } else if (depth === 0) return false;
  }
  return false;
}

/**
 * The tokens of the parameter list (inside the last top-level `( )` of the header, or the single
 * arrow parameter) and the offset where the body starts.
 */
function readHeader(source: string, start: number): { parameters: Token[]; end: number } | null {
  const tokens: Token[] = [];
  let depth = 0;
  let arrow = false;
  let end = source.length;
  for (const token of tokenize(source, start)) {
    if (token.type === 'punct') {
      if (depth === 0 && (token.text === '=>' || token.text === '{')) {
        arrow = token.text === '=>';
        end = token.text === '=>' ? token.end : token.end - 1;
        break;
      }
      if (token.text === '(' || token.text === '[' || token.text === '{') depth++;
      else if (token.text === ')' || token.text === ']' || token.text === '}') depth--;
    }
    tokens.push(token);
  }
  if (tokens[0]?.type === 'name' && tokens[0].text === 'class') return null;
  const last = tokens[tokens.length - 1];
  if (last === undefined) return null;
  if (arrow && last.type === 'name') return { parameters: [last], end };
  if (last.type !== 'punct' || last.text !== ')') return null;
  // Walk back to the `(` that opens the last group.
  let level = 0;
  for (let i = tokens.length - 1; i >= 0; i--) {
    const token = tokens[i]!;
    if (token.type !== 'punct') continue;
    if (token.text === ')' || token.text === ']' || token.text === '}') level++;
    else if (token.text === '(' || token.text === '[' || token.text === '{') {
      level--;
      if (level === 0) return { parameters: tokens.slice(i + 1, tokens.length - 1), end };
    }
  }
  return null;
}

function splitParameters(tokens: Token[]): Parameter[] {
  const groups: Token[][] = [[]];
  let depth = 0;
  for (const token of tokens) {
    if (token.type === 'punct') {
      if (token.text === ',' && depth === 0) {
        groups.push([]);
        continue;
      }
      if (token.text === '(' || token.text === '[' || token.text === '{') depth++;
      else if (token.text === ')' || token.text === ']' || token.text === '}') depth--;
    }
    groups[groups.length - 1]!.push(token);
  }
  // A trailing comma leaves an empty last group.
  if (groups.length > 0 && groups[groups.length - 1]!.length === 0) groups.pop();
  return groups.map((group, index) => describeParameter(group, index));
}

function describeParameter(tokens: Token[], index: number): Parameter {
  const first = tokens[0];
  if (first?.type === 'punct' && first.text === '...') {
    const target = tokens[1];
    if (target?.type === 'name') return { kind: 'rest', name: target.text, index };
    return { kind: 'pattern', bindings: patternBindings(tokens, 1).bindings, index };
  }
  if (first?.type === 'name') return { kind: 'name', name: first.text, index };
  return { kind: 'pattern', bindings: patternBindings(tokens, 0).bindings, index };
}

/** The names a destructuring pattern binds, starting at `tokens[start]` (`{` or `[`). */
function patternBindings(tokens: Token[], start: number): { bindings: string[]; next: number } {
  const bindings: string[] = [];
  const open = tokens[start];
  if (open?.type !== 'punct' || (open.text !== '{' && open.text !== '[')) {
    return { bindings, next: start + 1 };
  }
  const close = open.text === '{' ? '}' : ']';
  let i = start + 1;
  const isPunct = (at: number, text: string) =>
    tokens[at]?.type === 'punct' && tokens[at]!.text === text;

  // One element's target: a name or a nested pattern, then an optional `= default`.
  const target = () => {
    const token = tokens[i];
    if (token?.type === 'name') {
      bindings.push(token.text);
      i++;
    } else if (isPunct(i, '{') || isPunct(i, '[')) {
      const inner = patternBindings(tokens, i);
      bindings.push(...inner.bindings);
      i = inner.next;
    }
    if (isPunct(i, '=')) i = skipExpression(tokens, i + 1);
  };

  while (i < tokens.length && !isPunct(i, close)) {
    if (isPunct(i, ',')) {
      i++;
      continue;
    }
    if (isPunct(i, '...')) {
      i++;
      target();
      continue;
    }
    if (close === ']') {
      target();
      continue;
    }
    // Object pattern: `key`, `key = d`, `key: target`, `'key': target`, `[expr]: target`.
    const key = tokens[i];
    if (isPunct(i, '[')) i = skipExpression(tokens, i + 1, ']') + 1;
    else i++;
    if (isPunct(i, ':')) {
      i++;
      target();
    } else {
      if (key?.type === 'name') bindings.push(key.text);
      if (isPunct(i, '=')) i = skipExpression(tokens, i + 1);
    }
  }
  return { bindings, next: i + 1 };
}

/** The index of the `,` or closing bracket that ends the expression starting at `i`. */
function skipExpression(tokens: Token[], i: number, end?: string): number {
  let depth = 0;
  for (; i < tokens.length; i++) {
    const token = tokens[i]!;
    if (token.type !== 'punct') continue;
    if (depth === 0 && (token.text === ',' || token.text === end)) return i;
    if (token.text === '(' || token.text === '[' || token.text === '{') depth++;
    else if (token.text === ')' || token.text === ']' || token.text === '}') {
      if (depth === 0) return i;
      depth--;
    }
  }
  return i;
}

/** Tokens of JavaScript source, without whitespace and comments. Strings, templates and regexes are one token each. */
function* tokenize(source: string, start = 0): Generator<Token> {
  let i = start;
  let previous: Token | undefined;
  const n = source.length;
  while (i < n) {
    const c = source[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '/' && source[i + 1] === '/') {
      const end = source.indexOf('\n', i);
      i = end === -1 ? n : end + 1;
      continue;
    }
    if (c === '/' && source[i + 1] === '*') {
      const end = source.indexOf('*/', i + 2);
      i = end === -1 ? n : end + 2;
      continue;
    }
    const from = i;
    let type: Token['type'];
    if (c === '"' || c === "'") {
      const end = skipString(source, i);
      type = 'literal';
      i = end;
    } else if (c === '`') {
      const end = skipTemplate(source, i);
      type = 'literal';
      i = end;
    } else if (c === '/' && regexAllowed(previous)) {
      const end = skipRegex(source, i);
      type = 'literal';
      i = end;
    } else if (IDENTIFIER_START.test(c) || c === '#') {
      let end = i + 1;
      while (end < n && IDENTIFIER_PART.test(source[end]!)) end++;
      type = 'name';
      i = end;
    } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(source[i + 1] ?? ''))) {
      let end = i + 1;
      while (end < n && /[0-9a-zA-Z_.]/.test(source[end]!)) end++;
      type = 'literal';
      i = end;
    } else {
      type = 'punct';
      i += (PUNCTUATORS.find((p) => source.startsWith(p, i)) ?? c).length;
    }
    const token: Token = { type, text: source.slice(from, i), end: i };
    previous = token;
    yield token;
  }
}

function regexAllowed(previous: Token | undefined): boolean {
  if (previous === undefined) return true;
  if (previous.type === 'literal') return false;
  if (previous.type === 'name') return BEFORE_EXPRESSION.has(previous.text);
  return previous.text !== ')' && previous.text !== ']' && previous.text !== '}';
}

function skipString(source: string, i: number): number {
  const quote = source[i];
  for (i++; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (c === quote) return i + 1;
  }
  return i;
}

function skipTemplate(source: string, i: number): number {
  for (i++; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (c === '`') return i + 1;
    else if (c === '$' && source[i + 1] === '{') i = skipBraces(source, i + 1) - 1;
  }
  return i;
}

/** From a `{`, the index after its matching `}`, skipping nested strings, templates and comments. */
function skipBraces(source: string, i: number): number {
  let depth = 0;
  for (const token of tokenize(source, i)) {
    if (token.type !== 'punct') continue;
    if (token.text === '{') depth++;
    else if (token.text === '}' && --depth === 0) return token.end;
  }
  return source.length;
}

function skipRegex(source: string, i: number): number {
  let inClass = false;
  for (i++; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (c === '[') inClass = true;
    else if (c === ']') inClass = false;
    else if (c === '/' && !inClass) {
      i++;
      while (i < source.length && /[a-z]/i.test(source[i]!)) i++;
      return i;
    } else if (c === '\n') return i;
  }
  return i;
}
