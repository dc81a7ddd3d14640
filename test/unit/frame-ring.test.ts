import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { FrameRing, type RingRegion } from '../../src/stages/frame-ring.js';
import { hashContents, type HashedItem, type TaskOutput } from '../../src/stages/hasher.js';
import { detectChanges } from '../../src/stages/change-detector.js';
import { walkBatches } from '../../src/stages/walker.js';
import { Monitor } from '../../src/stages/monitor.js';
import type { ReadRequest } from '../../src/stages/hash-worker.js';
import type { Entry } from '../../src/formats/entry.js';
import { zstdCompressBound, zstdFramesBound } from '../../src/formats/zstd-frames.js';

t.test('regions are taken at the end, wrap to the start, and free oldest first', async (t) => {
  const ring = new FrameRing(100);
  const a = await ring.reserve(40);
  const b = await ring.reserve(40);
  t.same([a.offset, b.offset], [0, 40]);
  t.equal(ring.heldBytes, 80);
  let cGranted: RingRegion | undefined;
  const c = ring.reserve(30).then((r) => (cGranted = r));
  await new Promise((r) => setImmediate(r));
  t.equal(cGranted, undefined, 'no room at the end (20 left) nor at the start (a holds it)');
  ring.release(b); // b is newer: its space is not reusable before a's
  await new Promise((r) => setImmediate(r));
  t.equal(cGranted, undefined, 'releasing a newer region frees nothing while an older one is held');
  ring.release(a);
  await c;
  t.equal(cGranted!.offset, 0, 'wrapped to the start once everything before was given back');
  t.equal(ring.heldBytes, 30);
  const d = await ring.reserve(70);
  t.equal(d.offset, 30);
  t.throws(() => ring.release(a), /released twice/);
  ring.release(cGranted!);
  ring.release(d);
  t.equal(ring.heldBytes, 0);
  t.equal((await ring.reserve(100)).offset, 0, 'an empty ring starts over');
});

t.test('a wrapped ring fills the gap before its oldest region; requests are granted in order', async (t) => {
  const ring = new FrameRing(100);
  const a = await ring.reserve(30);
  const b = await ring.reserve(30);
  const c = await ring.reserve(30);
  ring.release(a);
  const d = await ring.reserve(25); // 10 left at the end, 30 free at the start
  t.equal(d.offset, 0);
  t.ok(ring.heldBytes >= 85);
  const order: string[] = [];
  const big = ring.reserve(60).then((r) => (order.push('big'), r));
  const small = ring.reserve(1).then((r) => (order.push('small'), r));
  await new Promise((r) => setImmediate(r));
  t.same(order, [], 'a small request does not overtake a waiting big one');
  ring.release(b);
  ring.release(c);
  ring.release(d);
  const [bigRegion, smallRegion] = await Promise.all([big, small]);
  t.same(order, ['big', 'small']);
  t.equal(bigRegion.offset, 25, 'after d, once b and c are back');
  t.equal(smallRegion.offset, 85);
});

t.test('views are bounded by their region; bad sizes and aborts are errors', async (t) => {
  const ring = new FrameRing(64);
  const r = await ring.reserve(16);
  const view = ring.view(r, 10);
  view.fill(7);
  t.equal(view.length, 10);
  t.equal(new Uint8Array(ring.buffer)[9], 7);
  t.throws(() => ring.view(r, 17), RangeError);
  await t.rejects(ring.reserve(65), RangeError);
  await t.rejects(ring.reserve(-1), RangeError);
  t.throws(() => new FrameRing(0), RangeError);
  const controller = new AbortController();
  const waiting = ring.reserve(60, controller.signal);
  controller.abort(new Error('stop'));
  await t.rejects(waiting, /stop/);
  ring.release(r);
  t.equal((await ring.reserve(64)).offset, 0, 'an aborted request holds nothing');
});

t.test('zstd bounds match the library formula and cover real output', async (t) => {
  t.equal(zstdCompressBound(0), 64);
  t.equal(zstdCompressBound(1 << 20), (1 << 20) + 4096);
  t.equal(zstdCompressBound(100), 100 + (((128 << 10) - 100) >>> 11));
  t.equal(zstdFramesBound(0, 1 << 20), 0);
  t.equal(zstdFramesBound((1 << 20) + 5, 1 << 20), zstdCompressBound(1 << 20) + zstdCompressBound(5));
  const { compressFrames } = await import('../../src/stages/compressor.js');
  const random = Buffer.alloc((1 << 20) * 2 + 999);
  for (let i = 0; i + 4 <= random.length; i += 4) random.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ (i >>> 7)) >>> 0, i);
  const frames = await compressFrames(random, 3);
  const total = frames.reduce((n, f) => n + f.length, 0);
  t.ok(total <= zstdFramesBound(random.length, 1 << 20), `${total} bytes within the bound`);
});

/**
 * The hash stage with a ring smaller than a few chunks, and a consumer that gives frames back only as it takes
 * them: small files open a batch, then a big file's chunks follow. Were the batch dispatched after the chunks
 * (it is the queue's head), it would wait for ring space that only later chunks hold, and the run would hang.
 */
t.test('the hash stage never waits on frame space held behind its head', async (t) => {
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'blanket-ring-')));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const chunkSize = 64 << 10;
  fs.writeFileSync(path.join(root, 'a-small'), 'a'.repeat(3000));
  fs.writeFileSync(path.join(root, 'b-big'), Buffer.alloc(chunkSize * 9 + 17, 1));
  fs.writeFileSync(path.join(root, 'c-small'), 'c'.repeat(100));
  fs.writeFileSync(path.join(root, 'd-big'), Buffer.alloc(chunkSize * 3, 2));
  const ring = new FrameRing(zstdFramesBound(chunkSize + 512, 1 << 20) * 3);
  let granted = 0;
  const runTask = async (requests: ReadRequest[]): Promise<TaskOutput> => {
    const tarBytes = requests.reduce((n, r) => n + 512 + Math.ceil(r.length / 512) * 512, 0);
    const region = await ring.reserve(zstdFramesBound(tarBytes, 1 << 20));
    granted++;
    await new Promise((r) => setTimeout(r, 1));
    const results = requests.map((r) => {
      const fd = fs.openSync(Buffer.from(r.path), 'r');
      const bytes = Buffer.alloc(r.length);
      fs.readSync(fd, bytes, 0, r.length, r.offset);
      fs.closeSync(fd);
      return { ok: true as const, hash: createHash('sha256').update(bytes).digest('hex'), length: r.length, changed: false, stored: true };
    });
    return { results, tarBytes, frames: ring.view(region, 1), release: () => ring.release(region) };
  };
  const previous: AsyncIterable<Entry[]> = (async function* () {})();
  const items = detectChanges(walkBatches({ root }), previous);
  const out: HashedItem[] = [];
  const run = (async () => {
    for await (const batch of hashContents(items, { root, runTask, monitor: new Monitor(), chunkSize, batchBytes: 1 << 20 })) {
      for (const item of batch) {
        out.push(item);
        if (item.kind === 'stored') {
          await new Promise((r) => setImmediate(r));
          item.content.release();
        }
      }
    }
  })();
  const hang = new Promise((_, reject) => setTimeout(() => reject(new Error('the hash stage hung waiting for frame space')), 10_000).unref());
  await Promise.race([run, hang]);
  t.equal(ring.heldBytes, 0, 'every region was given back');
  t.equal(granted, 2 + 10 + 3, 'a task for each run of small files, one per chunk');
  const entries = out.filter((i) => i.kind === 'entry').map((i) => (i as { key: string }).key);
  t.same(entries, [...entries].sort(), 'items leave in path order');
  t.equal(out.filter((i) => i.kind === 'chunk').length, 13);
});

t.test('a granted wait leaves no listener on the signal (a long run waits many times on one)', async (t) => {
  const { getEventListeners } = (await import('node:events')) as unknown as { getEventListeners: (target: EventTarget, name: string) => unknown[] };
  const ring = new FrameRing(10);
  const controller = new AbortController();
  for (let i = 0; i < 50; i++) {
    const full = await ring.reserve(10, controller.signal);
    const waiting = ring.reserve(10, controller.signal);
    ring.release(full);
    ring.release(await waiting);
  }
  t.equal(getEventListeners(controller.signal, 'abort').length, 0);
});
