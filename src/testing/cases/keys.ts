import assert from 'node:assert/strict';
import type { ConformanceCase } from '../kit.js';
import { showKey } from '../kit.js';

const long = 'x'.repeat(10_000);

// Each entry is appended to one unique base key. Neighbours differ only in a character that a
// store might escape badly, normalise, trim, fold, hash or truncate, so any such collapse makes
// two keys collide while all are held at once.
const suffixes = [
  '',
  ' ',
  'a b',
  'a_b',
  'a\tb',
  'a\u00a0b',
  'a\nb',
  'a\r\nb',
  'a\rb',
  'key',
  'key ',
  ' key',
  'Key',
  'KEY',
  '{braces}',
  '{braces}x',
  '{}',
  "'single'",
  '"double"',
  '`back`',
  '\\',
  '\\\\',
  '\\n',
  '%',
  '_',
  '*',
  '?',
  '[ab]',
  '$1',
  '/../..',
  "'; DROP TABLE locks; --",
  '\u0001\u007f',
  'caf\u00e9',
  'cafe\u0301',
  'naïve-ключ-鍵',
  '🔒',
  '🔓',
  '👩‍👩‍👧',
  '\ud83d', // a lone surrogate: not valid UTF-16 text, but a JavaScript string all the same
  long,
  `${long}1`,
  `${long}2`,
  `1${long}`,
  `${'y'.repeat(249)}`,
  `${'y'.repeat(250)}`,
  `${'y'.repeat(251)}`,
];

export const keyCases: ConformanceCase[] = [
  {
    name: 'hostile keys work and keys differing only in such characters never collide',
    async run({ store, key, owner, longMs }) {
      const base = key('hostile');
      const held = suffixes.map((suffix) => ({ key: base + suffix, owner: owner() }));
      assert.equal(new Set(held.map((h) => h.key)).size, held.length);

      for (const h of held) {
        const acquired = await store.acquire(h.key, h.owner, longMs);
        assert.ok(acquired, `${showKey(h.key)} must be free: it collided with an earlier key`);
      }
      for (const h of held) {
        const info = await store.inspect(h.key);
        assert.equal(info?.owner, h.owner, `inspect ${showKey(h.key)} must report its own holder`);
        assert.equal(
          await store.acquire(h.key, owner(), longMs),
          null,
          `${showKey(h.key)} must be refused while held`,
        );
      }
      for (const h of held) {
        assert.equal(await store.release(h.key, h.owner), true, `release ${showKey(h.key)}`);
        assert.equal(await store.inspect(h.key), null, `${showKey(h.key)} is free after release`);
      }
    },
  },
];
