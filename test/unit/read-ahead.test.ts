// Read-ahead of big files: which files it reads, what take() gives back, and the hasher's use of known chunks.
//
// Real files in a temp folder; pieces hashed by the worker's own hashPiece and tasks run by its packBatch, both
// called in this thread, so the test is deterministic: the read-ahead finishes before the hasher meets the file.

import t from 'tap';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FileStamp } from '../../src/formats/index-format.js';
import { pathToKey } from '../../src/formats/path-key.js';
import type { BackupItem } from '../../src/stages/change-detector.js';
import { ContentTable, hashWordsOfHex, SharedContentSet } from '../../src/stages/content-table.js';
import { DEFAULT_BLOCK_SIZE } from '../../src/stages/compressor.js';
import { FrameRing } from '../../src/stages/frame-ring.js';
import packBatch, { hashPiece, tarBytesOf, type PieceHash, type ReadRequest } from '../../src/stages/hash-worker.js';
import { hashContents, type HashedItem, type TaskOutput } from '../../src/stages/hasher.js';
import { Monitor } from '../../src/stages/monitor.js';
import { ReadAhead } from '../../src/stages/read-ahead.js';
import type { EntryStat } from '../../src/stages/walker.js';
import { zstdFramesBound } from '../../src/formats/zstd-frames.js';
import { BEFORE_ALL } from '../../src/formats/path-key.js';
import { randomBytes } from '../helpers/bytes.js';
import { tmpDir } from '../helpers/cli.js';

const CHUNK = 64 * 1024;
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
const chunkHashes = (data: Buffer): string[] => {
  const out: string[] = [];
  for (let at = 0; at < data.length; at += CHUNK) out.push(sha256(data.subarray(at, at + CHUNK)));
  return out;
};
const stampOf = (root: string, relative: string, stat = lstatSync(join(root, relative), { bigint: true })): FileStamp => ({
  key: pathToKey(Buffer.from(relative)),
  size: Number(stat.size),
  mtimeNs: stat.mtimeNs,
  ctimeNs: stat.ctimeNs,
  ino: stat.ino,
});

/** A ReadAhead over `root` whose pieces are hashed here; `requests` records what it read. */
function readAheadOver(root: string, options: { isExcluded?: (p: Buffer, isDir: boolean) => boolean; after?: string } = {}) {
  const requests: ReadRequest[] = [];
  let pending = Promise.resolve();
  const readAhead = new ReadAhead({
    root,
    after: options.after ?? BEFORE_ALL,
    chunkSize: CHUNK,
    isExcluded: options.isExcluded,
    hashPiece: (request) => {
      requests.push(request);
      const result = new Promise<PieceHash>((resolve) => setImmediate(() => resolve(hashPiece(request))));
      pending = result.then(() => undefined);
      return result;
    },
  });
  /** Resolves once the read-ahead has nothing left in flight. */
  const idle = async (): Promise<void> => {
    for (let last = -1; last !== requests.length; ) {
      last = requests.length;
      await pending;
      await new Promise((r) => setImmediate(r));
    }
  };
  return { readAhead, requests, idle };
}

t.test('changed big files are read ahead in path order; unchanged, small, excluded and vanished ones are not', async (t) => {
  const root = tmpDir(t);
  mkdirSync(join(root, 'a'));
  mkdirSync(join(root, 'skip'));
  const changed = randomBytes(5 * CHUNK + 100, 1);
  const unchanged = randomBytes(3 * CHUNK, 2);
  writeFileSync(join(root, 'a/changed.img'), randomBytes(5 * CHUNK + 100, 9));
  writeFileSync(join(root, 'a/unchanged.img'), unchanged);
  writeFileSync(join(root, 'skip/excluded.img'), randomBytes(3 * CHUNK, 3));
  writeFileSync(join(root, 'small'), randomBytes(CHUNK, 4));
  const before = {
    changed: stampOf(root, 'a/changed.img'),
    unchanged: stampOf(root, 'a/unchanged.img'),
    excluded: stampOf(root, 'skip/excluded.img'),
    small: { ...stampOf(root, 'small'), size: 2 * CHUNK }, // was big, is small now
  };
  writeFileSync(join(root, 'a/changed.img'), changed);
  utimesSync(join(root, 'a/changed.img'), 1_000_000, 1_000_000);
  writeFileSync(join(root, 'skip/excluded.img'), randomBytes(3 * CHUNK, 5));
  const vanished: FileStamp = { key: pathToKey(Buffer.from('gone.img')), size: 4 * CHUNK, mtimeNs: 1n, ctimeNs: 1n, ino: 1n };

  const { readAhead, requests, idle } = readAheadOver(root, { isExcluded: (p) => p.toString() === 'skip' });
  readAhead.note([before.excluded, before.small, vanished]);
  readAhead.note([before.unchanged, before.changed]);
  readAhead.start();
  await idle();
  t.same(
    [...new Set(requests.map((r) => Buffer.from(r.path).toString().slice(root.length + 1)))],
    ['a/changed.img'],
    'only the changed big file is read',
  );
  t.same(
    requests.map((r) => [r.offset, r.length]),
    [0, 1, 2, 3, 4, 5].map((i) => [i * CHUNK, i < 5 ? CHUNK : 100]),
    'chunk by chunk, one at a time',
  );
  t.same(readAhead.totals, { files: 1, bytes: changed.length });
  const stat = lstatSync(join(root, 'a/changed.img'), { bigint: true });
  t.same(readAhead.take(stampOf(root, 'a/changed.img').key, stat), chunkHashes(changed), 'take() gives the hash of every chunk');
  t.equal(readAhead.take(stampOf(root, 'a/changed.img').key, stat), undefined, 'once only');
  await readAhead.close();
});

t.test('a later stamp of a key replaces an earlier one; keys up to the clock pointer are left out', async (t) => {
  const root = tmpDir(t);
  writeFileSync(join(root, 'a.img'), randomBytes(2 * CHUNK, 1));
  writeFileSync(join(root, 'b.img'), randomBytes(2 * CHUNK, 2));
  const stale = { ...stampOf(root, 'b.img'), mtimeNs: 5n };
  const { readAhead, requests, idle } = readAheadOver(root, { after: pathToKey(Buffer.from('a.img')) });
  readAhead.note([{ ...stampOf(root, 'a.img'), size: 1 + 2 * CHUNK }, stale]);
  readAhead.note([stampOf(root, 'b.img')]); // the newer layer says b.img is as it is now
  readAhead.start();
  await idle();
  t.equal(requests.length, 0, 'a.img is before the pointer, b.img unchanged since its newest stamp');
  await readAhead.close();
});

t.test('a file that changed after it was read ahead, or while, gives nothing', async (t) => {
  const root = tmpDir(t);
  const data = randomBytes(4 * CHUNK, 1);
  writeFileSync(join(root, 'after.img'), data);
  writeFileSync(join(root, 'while.img'), data);
  const stamps = [stampOf(root, 'after.img'), stampOf(root, 'while.img')].map((s) => ({ ...s, mtimeNs: 7n }));
  const { readAhead, requests, idle } = readAheadOver(root);
  readAhead.note(stamps);
  readAhead.start();
  // while.img is cut short as soon as its first chunk has been asked for.
  while (!requests.some((r) => Buffer.from(r.path).toString().endsWith('while.img'))) await new Promise((r) => setImmediate(r));
  truncateSync(join(root, 'while.img'), CHUNK / 2);
  await idle();
  t.ok(requests.filter((r) => Buffer.from(r.path).toString().endsWith('while.img')).length < 4, 'while.img: no more chunks after a failed one');
  t.equal(readAhead.take(stamps[1]!.key, lstatSync(join(root, 'while.img'), { bigint: true })), undefined, 'while.img: nothing');
  const walked: EntryStat = { ...lstatSync(join(root, 'after.img'), { bigint: true }), mtimeNs: 123n } as unknown as EntryStat;
  t.equal(readAhead.take(stamps[0]!.key, walked), undefined, 'after.img: the walk saw another mtime: nothing');
  await readAhead.close();
});

t.test('take() drops the files before it: they are not read any more', async (t) => {
  const root = tmpDir(t);
  for (const name of ['a.img', 'b.img', 'c.img']) writeFileSync(join(root, name), randomBytes(40 * CHUNK, name.charCodeAt(0)));
  const stamps = ['a.img', 'b.img', 'c.img'].map((name) => ({ ...stampOf(root, name), mtimeNs: 1n }));
  const { readAhead, requests, idle } = readAheadOver(root);
  readAhead.note(stamps);
  readAhead.start();
  await new Promise((r) => setImmediate(r));
  const partial = readAhead.take(stamps[2]!.key, lstatSync(join(root, 'c.img'), { bigint: true }));
  t.equal(partial, undefined, 'c.img was not reached yet: nothing known');
  await idle();
  t.ok(requests.length <= 2, `reading stopped (${requests.length} chunks read in all)`);
  await readAhead.close();
});

t.test('the hasher skips chunks read ahead whose content is stored, and reads the others', async (t) => {
  const root = tmpDir(t);
  const old = randomBytes(8 * CHUNK + 1000, 1);
  writeFileSync(join(root, 'disk.img'), old);
  const before = stampOf(root, 'disk.img');
  const now = Buffer.from(old);
  randomBytes(4096, 2).copy(now, 3 * CHUNK + 500); // one block overwritten in chunk 3
  const tail = randomBytes(CHUNK + 10, 3);
  const grown = Buffer.concat([now, tail]); // and appended to
  writeFileSync(join(root, 'disk.img'), grown);
  utimesSync(join(root, 'disk.img'), 2_000_000, 2_000_000);

  // The archive holds the old chunks.
  const contents = new ContentTable();
  for (const hash of chunkHashes(old)) contents.record(hash, '000001/00000001');

  const { readAhead, idle } = readAheadOver(root);
  readAhead.note([before]);
  readAhead.start();
  await idle();

  const frames = new FrameRing(8 << 20);
  const taskRequests: ReadRequest[][] = [];
  const runTask = async (requests: ReadRequest[], task: number): Promise<TaskOutput> => {
    taskRequests.push(requests);
    const region = await frames.reserve(zstdFramesBound(tarBytesOf(requests), DEFAULT_BLOCK_SIZE));
    const out = await packBatch({ requests, task, table: contents.buffer, level: 3, ring: frames.buffer, ringOffset: region.offset, ringLength: region.length });
    return { results: out.results, tarBytes: out.tarBytes, frames: frames.view(region, out.framesLength), release: () => frames.release(region) };
  };
  const stat = lstatSync(join(root, 'disk.img'), { bigint: true });
  const item: BackupItem = { kind: 'entry', key: before.key, walked: { key: before.key, path: Buffer.from('disk.img'), stat }, previous: null, read: true };
  async function* input(): AsyncGenerator<BackupItem[]> {
    yield [item];
  }
  const out: HashedItem[] = [];
  for await (const batch of hashContents(input(), {
    root,
    runTask,
    monitor: new Monitor(),
    chunkSize: CHUNK,
    knownChunks: (key, walkedStat) => readAhead.take(key, walkedStat)?.map((h) => (h !== undefined && contents.has(h) ? h : undefined)),
  })) {
    for (const produced of batch) {
      if (produced.kind === 'stored') produced.content.release();
      out.push(produced);
    }
  }
  const expected = chunkHashes(grown);
  t.same(
    out.filter((o) => o.kind === 'chunk').map((o) => (o.kind === 'chunk' ? o.chunk.hash : '')),
    expected,
    'every chunk, in order, with the hash of its content now',
  );
  t.same(
    taskRequests.map((requests) => requests.map((r) => r.offset / CHUNK)),
    [[3], [8], [9]],
    'only the changed chunk and the new ones were read',
  );
  const entry = out.find((o) => o.kind === 'entry');
  t.same(entry && entry.kind === 'entry' && entry.read ? entry.chunkHashes.map((c) => c.hash) : [], expected, 'the entry lists them');
  t.ok(new SharedContentSet(contents.buffer).has(hashWordsOfHex(expected[3]!)), 'the changed chunk was claimed by its task');
  await readAhead.close();
});
