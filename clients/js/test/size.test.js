// rtevents.js ships as is, without a build: it must stay under 8 KB gzipped.

import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

test('rtevents.js is under 8192 bytes gzipped', () => {
  const src = readFileSync(new URL('../rtevents.js', import.meta.url));
  const size = gzipSync(src).length;
  assert.ok(size < 8192, `rtevents.js is ${size} bytes gzipped`);
});

test('rtevents.js sets globalThis.RtEvents and has no imports', async () => {
  const src = readFileSync(new URL('../rtevents.js', import.meta.url), 'utf8');
  assert.doesNotMatch(src, /^\s*import\s/m);
  const mod = await import('../rtevents.js');
  assert.equal(globalThis.RtEvents, mod.RtEvents);
  assert.equal(mod.default, mod.RtEvents);
});
