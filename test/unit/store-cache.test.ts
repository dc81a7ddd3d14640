// The index cache: a copy is served only when the archive lists the object with the same size and the copy
// still hashes as recorded; a deleted, damaged or stale copy is fetched again; puts and deletes keep it in step.

import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { CachingStore } from '../../src/stores/cache.js';
import { LocalStore } from '../../src/stores/local.js';
import { RecordingStore } from '../../src/stores/recording.js';
import { getBuffer } from '../../src/stores/store.js';
import { randomBytes } from '../helpers/bytes.js';
import { storeConformance } from '../helpers/store-conformance.js';

function setup(t: { teardown: (f: () => void) => void }) {
  const root = mkdtempSync(join(os.tmpdir(), 'blanket-cache-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const archive = new LocalStore(join(root, 'archive'));
  const recording = new RecordingStore(archive);
  const folder = join(root, 'cache');
  const cached = new CachingStore(recording, { folder: async () => folder, cacheable: (name) => name.endsWith('.idx') });
  return { archive, recording, cached, folder };
}

async function listAll(store: CachingStore): Promise<void> {
  for await (const _ of store.list('')) void _;
}

t.test('conformance through the cache (every object name cacheable)', async (t) => {
  await storeConformance(t, 'cache(local)', async () => {
    const root = mkdtempSync(join(os.tmpdir(), 'blanket-cache-'));
    const store = new CachingStore(new LocalStore(join(root, 'archive')), { folder: async () => join(root, 'cache'), cacheable: () => true });
    return { store, dispose: async () => rmSync(root, { recursive: true, force: true }) };
  });
});

t.test('a listed index is read from the archive once, then from the copy', async (t) => {
  const { archive, recording, cached, folder } = setup(t);
  const bytes = randomBytes(50_000, 1);
  await archive.put('layers/000001/00000001.idx', bytes);
  await archive.put('layers/000001/00000001.pack', randomBytes(1000, 2));
  await listAll(cached);
  t.ok((await getBuffer(cached, 'layers/000001/00000001.idx')).equals(bytes), 'first read: the bytes');
  t.ok((await getBuffer(cached, 'layers/000001/00000001.idx')).equals(bytes), 'second read: the same bytes');
  t.equal(recording.calls.filter((c) => c.operation === 'get').length, 1, 'one GET from the archive');
  t.same(cached.totals, { hits: 1, misses: 1, refreshed: 0 });
  await getBuffer(cached, 'layers/000001/00000001.pack');
  await getBuffer(cached, 'layers/000001/00000001.pack');
  t.equal(recording.count('get'), 3, 'objects not said to be immutable are always read from the archive');
  t.notOk(existsSync(join(folder, 'layers/000001/00000001.pack')), 'and never copied');

  // A new run (a new wrapper) over the same cache folder: no download at all.
  const again = new RecordingStore(archive);
  const second = new CachingStore(again, { folder: async () => folder, cacheable: (name) => name.endsWith('.idx') });
  await listAll(second);
  t.ok((await getBuffer(second, 'layers/000001/00000001.idx')).equals(bytes));
  t.equal(again.count('get'), 0, 'the next run reads the index from the cache');
});

t.test('a damaged, truncated, stale or deleted copy is fetched again, never served', async (t) => {
  const { archive, recording, cached, folder } = setup(t);
  const bytes = randomBytes(20_000, 3);
  const name = 'layers/000001/00000002.idx';
  await archive.put(name, bytes);
  await listAll(cached);
  await getBuffer(cached, name);
  const copy = join(folder, name);

  const flipped = Buffer.from(readFileSync(copy));
  flipped[777] ^= 1;
  writeFileSync(copy, flipped);
  t.ok((await getBuffer(cached, name)).equals(bytes), 'a flipped byte: the archive\'s bytes');
  t.equal(cached.totals.refreshed, 1, 'counted as refreshed');
  t.ok(readFileSync(copy).equals(bytes), 'and the copy is rewritten');

  writeFileSync(copy, bytes.subarray(0, 100));
  t.ok((await getBuffer(cached, name)).equals(bytes), 'truncated: the archive\'s bytes');

  rmSync(join(folder, 'layers'), { recursive: true });
  t.ok((await getBuffer(cached, name)).equals(bytes), 'deleted cache: the archive\'s bytes');

  // The archive's object differs from the copy (a store that was restored from elsewhere): its listed size wins.
  const other = randomBytes(20_001, 4);
  await archive.put(name, other);
  await listAll(cached);
  t.ok((await getBuffer(cached, name)).equals(other), 'the listing says another size: the archive\'s new bytes');
  t.ok(recording.count('get') >= 5, 'each of these went to the archive');
});

t.test('puts fill the cache; deletes empty it; ranged reads and unlisted objects go to the archive', async (t) => {
  const { archive, recording, cached, folder } = setup(t);
  const bytes = randomBytes(3000, 5);
  await cached.put('layers/000002/00000001.idx', bytes);
  t.ok(readFileSync(join(folder, 'layers/000002/00000001.idx')).equals(bytes), 'written through');
  t.ok((await getBuffer(cached, 'layers/000002/00000001.idx')).equals(bytes));
  t.equal(recording.count('get'), 0, 'an index this run wrote is not downloaded');
  t.ok((await getBuffer(cached, 'layers/000002/00000001.idx', { range: { start: 10, end: 20 } })).equals(bytes.subarray(10, 20)));
  t.equal(recording.count('get'), 1, 'a ranged read goes to the archive');
  await cached.delete('layers/000002/00000001.idx');
  t.notOk(existsSync(join(folder, 'layers/000002/00000001.idx')), 'delete removes the copy');
  t.equal(await archive.stat('layers/000002/00000001.idx'), undefined, 'and the object');

  const noFolder = new CachingStore(archive, { folder: async () => undefined, cacheable: () => true });
  await archive.put('x.idx', bytes);
  await listAll(noFolder);
  t.ok((await getBuffer(noFolder, 'x.idx')).equals(bytes), 'no cache folder (not an archive yet): plain reads');
});
