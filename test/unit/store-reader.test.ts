// openReader: an object read in order into the caller's memory, by the local store's own reader and by the
// fallback over get() that any store gets; both read the same bytes, and a missing object is named.

import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { ErrorCodes } from '../../src/formats/errors.js';
import { LocalStore } from '../../src/stores/local.js';
import { openReader, type Store } from '../../src/stores/store.js';
import { prng, randomBytes } from '../helpers/bytes.js';

/** The same store without openReader, so that openReader() falls back to get(). */
function withoutReader(store: LocalStore): Store {
  return {
    location: store.location,
    capabilities: store.capabilities,
    put: (name, body, options) => store.put(name, body, options),
    putIfAbsent: (name, body) => store.putIfAbsent(name, body),
    get: (name, options) => store.get(name, options),
    stat: (name) => store.stat(name),
    list: (prefix) => store.list(prefix),
    delete: (name) => store.delete(name),
    isEmpty: () => store.isEmpty(),
    cleanup: () => store.cleanup(),
  };
}

t.test('an object read into caller memory in odd sizes, by the local reader and by the stream fallback', async (t) => {
  const root = mkdtempSync(join(os.tmpdir(), 'blanket-reader-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const local = new LocalStore(root);
  const content = randomBytes(3_000_001, 5); // more than the stream's 1 MiB chunks, and not a multiple of them
  await local.put('packs/aa/obj', content);
  await local.put('packs/aa/empty', Buffer.alloc(0));
  t.ok(local.openReader, 'the local store has a reader of its own');
  const random = prng(9);
  for (const [label, store] of [
    ['local', local],
    ['fallback', withoutReader(local)],
  ] as const) {
    const reader = await openReader(store, 'packs/aa/obj');
    const shared = new Uint8Array(new SharedArrayBuffer(700_000));
    const got: Buffer[] = [];
    for (;;) {
      const size = 1 + Math.floor(random() * shared.length);
      const count = await reader.read(shared.subarray(0, size));
      t.ok(count <= size, 'never more than asked');
      if (count === 0) break;
      got.push(Buffer.from(shared.slice(0, count)));
    }
    await reader.close();
    t.ok(Buffer.concat(got).equals(content), `${label}: the object's bytes, exact`);
    const empty = await openReader(store, 'packs/aa/empty');
    t.equal(await empty.read(new Uint8Array(10)), 0, `${label}: an empty object reads as its end at once`);
    await empty.close();
    await t.rejects(openReader(store, 'packs/aa/missing'), { code: ErrorCodes.MISSING_OBJECT, message: /packs\/aa\/missing/ }, `${label}: a missing object is named`);
  }
});

t.test('a read after the signal aborted rejects', async (t) => {
  const root = mkdtempSync(join(os.tmpdir(), 'blanket-reader-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const local = new LocalStore(root);
  await local.put('packs/aa/obj', randomBytes(10_000, 6));
  const controller = new AbortController();
  const reader = await openReader(local, 'packs/aa/obj', { signal: controller.signal });
  t.equal(await reader.read(new Uint8Array(100)), 100);
  controller.abort(new Error('stop'));
  await t.rejects(reader.read(new Uint8Array(100)), /stop/);
  await reader.close();
});
