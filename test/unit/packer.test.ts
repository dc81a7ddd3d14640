// The packer's commits: a full pack is committed in the background while the next one fills, indexes still
// appear in sequence order, and a failed commit stops the run with its own error.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { encodeHeader, indexObjectName, packObjectName, packStem } from '../../src/formats/archive-layout.js';
import { BEFORE_ALL, pathToKey } from '../../src/formats/path-key.js';
import { LocalStore } from '../../src/stores/local.js';
import type { ObjectInfo, PutBody, PutOptions, Store } from '../../src/stores/store.js';
import { ContentTable } from '../../src/stages/content-table.js';
import { Monitor } from '../../src/stages/monitor.js';
import { OwnerNames } from '../../src/stages/owner-names.js';
import { Packer } from '../../src/stages/packer.js';
import { readCatalog, readClockPointer } from '../../src/stages/state-reader.js';
import { decodeIndexObject } from '../../src/stages/index-decoding.js';
import { getBuffer } from '../../src/stores/store.js';

/** A local store whose puts are logged (start and end, in order) and can be held back or made to fail, by name. */
class ScriptedStore extends LocalStore {
  readonly log: string[] = [];
  hold: (name: string) => number = () => 0;
  failing: (name: string) => boolean = () => false;

  override async put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo> {
    this.log.push(`start ${name}`);
    const delayMs = this.hold(name);
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    if (this.failing(name)) {
      // Drain a streamed body as a store would before its write fails.
      if (!Buffer.isBuffer(body) && !(body instanceof Uint8Array)) for await (const _ of body as AsyncIterable<Uint8Array>) void _;
      this.log.push(`failed ${name}`);
      throw new Error(`injected failure writing ${name}`);
    }
    const info = await super.put(name, body, options);
    this.log.push(`done ${name}`);
    return info;
  }
}

const PACK_SIZE = 64 << 10;

async function setUp(t: Test): Promise<{ store: ScriptedStore; packer: Packer; contents: ContentTable; events: string[] }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'blanket-packer-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = new ScriptedStore(dir);
  await store.put('blanket.json', encodeHeader({ format: 'blanket', version: 1, id: '0'.repeat(32), created: new Date(0).toISOString() }));
  store.log.length = 0;
  const contents = new ContentTable();
  const events: string[] = [];
  const monitor = new Monitor((event) => {
    if (event.type === 'pack-written') events.push(event.pack);
  });
  const packer = new Packer({
    store,
    layer: 1,
    firstSeq: 1,
    after: BEFORE_ALL,
    packSize: PACK_SIZE,
    maxEntries: 1000,
    compressionLevel: 3,
    contents,
    owners: new OwnerNames(),
    monitor,
  });
  return { store, packer, contents, events };
}

/** Feeds `count` unchanged paths, each followed by a stored task of PACK_SIZE / `perPack` (so a pack closes after every `perPack`). */
async function feed(packer: Packer, contents: ContentTable, count: number, first = 0, perPack = 4): Promise<void> {
  for (let i = first; i < first + count; i++) {
    void packer.add({ kind: 'same', key: pathToKey(Buffer.from(`f${String(i).padStart(4, '0')}`)), fileSize: null });
    const frames = randomBytes(PACK_SIZE / perPack);
    contents.reserve(1);
    const pending = packer.add({
      kind: 'stored',
      content: { frames, tarBytes: PACK_SIZE / perPack, members: [{ hash: createHash('sha256').update(frames).digest('hex'), size: frames.length }], release: () => undefined },
    });
    if (pending) await pending;
  }
}

const data = (seq: number): string => packObjectName(packStem({ layer: 1, seq }));
const index = (seq: number): string => indexObjectName(packStem({ layer: 1, seq }));

t.test('the next pack fills while the last one commits, and indexes appear in sequence order', async (t) => {
  const { store, packer, contents, events } = await setUp(t);
  // Pack 1's index is slow to write: pack 2's data must not wait for it, pack 2's index must.
  store.hold = (name) => (name === index(1) ? 300 : 0);
  await feed(packer, contents, 12);
  await packer.finish(true);
  const at = (line: string): number => store.log.indexOf(line);
  t.ok(at(`start ${data(2)}`) >= 0 && at(`start ${data(2)}`) < at(`done ${index(1)}`), "pack 2's data is being written before pack 1's index is in place");
  t.ok(at(`done ${index(1)}`) < at(`start ${index(2)}`), "pack 2's index is written only after pack 1's");
  t.ok(at(`done ${index(2)}`) < at(`start ${index(3)}`), "pack 3's index is written only after pack 2's");
  t.same(events, [1, 2, 3, 4].map((seq) => packStem({ layer: 1, seq })), 'pack-written events come in sequence order');
  const catalog = await readCatalog(store);
  t.same(
    catalog.indexes.map((ref) => ref.stem),
    [1, 2, 3, 4].map((seq) => packStem({ layer: 1, seq })),
    'four indexes, numbered without gaps',
  );
  for (const ref of catalog.indexes) {
    const decoded = await decodeIndexObject(ref.stem, await getBuffer(store, indexObjectName(ref.stem)), 'members');
    t.equal(decoded.members.length, ref.stem === packStem({ layer: 1, seq: 4 }) ? 0 : 4, `index ${ref.stem} lists its pack's members`);
  }
  const pointer = await readClockPointer(store, catalog);
  t.equal(pointer.layer, 2, 'the layer is complete: the next run starts layer 2');
});

t.test("a failed index write stops the run with that error, and no later index is written", async (t) => {
  const { store, packer, contents } = await setUp(t);
  store.failing = (name) => name === index(2);
  await t.rejects(
    (async () => {
      await feed(packer, contents, 24);
      await packer.finish(true);
    })(),
    { message: `injected failure writing ${index(2)}` },
    "the failure of pack 2's index is the error reported",
  );
  const written = store.log.filter((line) => line.startsWith('done ') && line.endsWith('.idx.zst'));
  t.same(written, [`done ${index(1)}`], 'only the index before the failed one is in place');
  const catalog = await readCatalog(store);
  const pointer = await readClockPointer(store, catalog);
  t.equal(pointer.seq, 2, 'the next run writes pack 2 again');
});

t.test('a failed data write of a committing pack stops the filling of the next one', async (t) => {
  const { store, packer, contents } = await setUp(t);
  // Pack 1's data fails once its body has been taken in full, i.e. while pack 2 fills.
  store.failing = (name) => name === data(1);
  let fed = 0;
  await t.rejects(
    (async () => {
      for (; fed < 400; fed++) await feed(packer, contents, 1, fed, 32);
      await packer.finish(true);
    })(),
    { message: `injected failure writing ${data(1)}` },
  );
  t.notOk(store.log.some((line) => line === `start ${index(1)}`), 'pack 1 has no index');
  // Pack 1 closes after 32 tasks; the failure must stop the run well before pack 2 is full (64).
  t.ok(fed < 48, `the run stopped ${fed - 32} tasks after pack 1 closed, not at the end of pack 2`);
});
