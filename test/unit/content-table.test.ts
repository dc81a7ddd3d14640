// The shared content table: claims in task order, lookups, growth, and claims from several threads at once.

import t from 'tap';
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Piscina } from 'piscina';
import { ErrorCodes } from '../../src/formats/errors.js';
import type { FileStamp } from '../../src/formats/index-format.js';
import { pathToKey } from '../../src/formats/path-key.js';
import { openStore } from '../../src/pipeline/archive.js';
import {
  ContentTable,
  hashWordsOfDigest,
  hashWordsOfHex,
  SharedContentSet,
  type ContentLoadOptions,
  type MemberLoadResult,
} from '../../src/stages/content-table.js';
import { readCatalog, readIndex } from '../../src/stages/state-reader.js';
import { randomBytes } from '../helpers/bytes.js';
import { runCli, tmpDir } from '../helpers/cli.js';

const hashOf = (n: number): string => createHash('sha256').update(`content ${n}`).digest('hex');

t.test('hash words agree between hex and digest forms', async (t) => {
  const digest = createHash('sha256').update('x').digest();
  t.same(hashWordsOfHex(digest.toString('hex')), hashWordsOfDigest(digest));
});

t.test('a content is stored by the first task to claim it, and skipped by later ones', async (t) => {
  const table = new ContentTable();
  const set = new SharedContentSet(table.buffer);
  const words = hashWordsOfHex(hashOf(1));
  t.equal(set.claim(words, 5), true, 'task 5 claims it: stores it');
  t.equal(set.claim(words, 5), false, 'the same task meets it again: already in its own members');
  t.equal(set.claim(words, 7), false, 'a later task skips it');
  t.equal(set.claim(words, 3), true, 'an earlier task that comes late stores its own copy');
  t.equal(table.lookup(hashOf(1)), undefined, 'no pack until the packer records one');
  table.record(hashOf(1), '000001/00000002');
  t.equal(table.lookup(hashOf(1)), '000001/00000002');
  t.equal(set.claim(hashWordsOfHex(hashOf(2)), 1), true);
});

t.test('recorded content (claim 0) is skipped by every task', async (t) => {
  const table = new ContentTable();
  table.record(hashOf(9), '000001/00000001');
  const set = new SharedContentSet(table.buffer);
  t.equal(set.claim(hashWordsOfHex(hashOf(9)), 1), false);
  t.equal(set.claim(hashWordsOfHex(hashOf(9)), 1000), false);
});

t.test('growth keeps every record and claim, in a new buffer', async (t) => {
  const table = new ContentTable();
  const first = table.buffer;
  const count = 20_000;
  for (let i = 0; i < count; i++) {
    table.reserve(1);
    if (i % 2 === 0) table.record(hashOf(i), `000001/${String(1 + (i % 7)).padStart(8, '0')}`);
    else new SharedContentSet(table.buffer).claim(hashWordsOfHex(hashOf(i)), 10);
  }
  t.not(table.buffer, first, 'the table moved to a larger buffer');
  t.equal(table.size, count);
  let wrong = 0;
  const set = new SharedContentSet(table.buffer);
  t.ok(set.capacity >= 2 * count, `capacity ${set.capacity} keeps it at most half full`);
  for (let i = 0; i < count; i++) {
    if (i % 2 === 0 && table.lookup(hashOf(i)) !== `000001/${String(1 + (i % 7)).padStart(8, '0')}`) wrong++;
    if (i % 2 === 1 && (set.claim(hashWordsOfHex(hashOf(i)), 11) !== false || set.claim(hashWordsOfHex(hashOf(i)), 9) !== true)) wrong++;
  }
  t.equal(wrong, 0, 'every record and claim survived');
  t.equal(table.lookup(hashOf(count + 1)), undefined);
});

t.test('a full table says "store it" rather than spin', async (t) => {
  const set = SharedContentSet.create(1);
  for (let i = 0; i < set.capacity; i++) t.equal(set.claim(hashWordsOfHex(hashOf(i)), 1), true);
  t.equal(set.claim(hashWordsOfHex(hashOf(-1)), 1), true, 'no free slot: store it');
  t.equal(set.claim(hashWordsOfHex(hashOf(0)), 2), false, 'the ones in it are still found');
});

t.test('claims from several threads at once: every content stored by its earliest claimer at least', async (t) => {
  const table = new ContentTable();
  const hashes = Array.from({ length: 5000 }, (_, i) => hashOf(i % 2500)); // each content twice
  const moduleUrl = new URL('../../dist/src/stages/content-table.js', import.meta.url).href // workers run the build;
  const source = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.moduleUrl).then(({ SharedContentSet, hashWordsOfHex }) => {
      const set = new SharedContentSet(workerData.buffer);
      const stored = [];
      workerData.hashes.forEach((hash, i) => { if (set.claim(hashWordsOfHex(hash), workerData.tasks[i])) stored.push(i); });
      parentPort.postMessage(stored);
    });`;
  // Four threads walk the same list; thread w numbers item i as task 4*i + w, so numbers are distinct.
  const results = await Promise.all(
    [0, 1, 2, 3].map(
      (w) =>
        new Promise<number[]>((resolve, reject) => {
          const worker = new Worker(source, {
            eval: true,
            workerData: { moduleUrl, buffer: table.buffer, hashes, tasks: hashes.map((_, i) => 4 * i + 1 + w) },
          });
          worker.once('message', resolve);
          worker.once('error', reject);
        }),
    ),
  );
  // For each content: the tasks that store it; the lowest-numbered task that met it must be among them.
  const storers = new Map<string, number[]>();
  results.forEach((stored, w) => stored.forEach((i) => storers.set(hashes[i]!, [...(storers.get(hashes[i]!) ?? []), 4 * i + 1 + w])));
  let bad = 0;
  for (let i = 0; i < 2500; i++) {
    // Content i is met at positions i and i + 2500; the lowest task number of all is thread 0's at position i.
    if (!(storers.get(hashOf(i)) ?? []).includes(4 * i + 1)) bad++;
  }
  t.equal(bad, 0, 'the earliest task of every content stores it');
  t.equal(table.size, 2500, 'one slot per content');
});

t.test('load: every member of the archive, with its pack, in this thread or in a worker of the pool', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  mkdirSync(source);
  writeFileSync(join(source, 'big.bin'), randomBytes(3 * 512 * 1024 + 10, 1)); // four chunks at --pack-size 1M
  for (let i = 0; i < 40; i++) writeFileSync(join(source, `f${i}.txt`), `file ${i}\n`.repeat(i + 1));
  const run = await runCli(['backup', '--pack-size', '1M', source, archive]);
  t.equal(run.code, 0, 'backup exits 0');
  writeFileSync(join(source, 'big.bin'), randomBytes(3 * 512 * 1024 + 10, 2));
  t.equal((await runCli(['backup', '--pack-size', '1M', source, archive])).code, 0, 'second layer');

  const store = await openStore(archive);
  const catalog = await readCatalog(store);
  const expected = new Map<string, string>();
  for (const ref of catalog.indexes) for (const member of (await readIndex(store, ref.stem)).members) expected.set(member.hash, ref.stem);
  t.ok(expected.size > 40, `the archive holds ${expected.size} members`);
  const bigKey = pathToKey(Buffer.from('big.bin'));

  const pool = new Piscina({ filename: new URL('../../dist/src/stages/hash-worker.js', import.meta.url).href, maxThreads: 1 });
  t.teardown(() => pool.destroy());
  const runners: Array<[string, ContentLoadOptions['run']]> = [
    ['this thread', undefined],
    ['a worker', async (task) => (await pool.run(task, { name: 'loadMembers' })) as MemberLoadResult],
  ];
  for (const [where, runner] of runners) {
    const table = new ContentTable();
    const stamps: FileStamp[][] = [];
    await table.load(store, catalog, { run: runner, onChunkedFiles: (files) => stamps.push([...files]) });
    let wrong = 0;
    for (const [hash, stem] of expected) if (table.lookup(hash) !== stem || !table.has(hash)) wrong++;
    t.equal(wrong, 0, `${where}: every member found, with its pack`);
    t.equal(table.size, expected.size, `${where}: nothing else`);
    t.same(stamps.flat().map((s) => [s.key, s.size]), [[bigKey, 3 * 512 * 1024 + 10], [bigKey, 3 * 512 * 1024 + 10]], `${where}: the big file's stamp from each layer, oldest first`);
    // The packer records new content after the load: numbering continues where the load left it.
    table.record(hashOf(1), '000009/00000001');
    t.equal(table.lookup(hashOf(1)), '000009/00000001', `${where}: records go on after the load`);
  }

  // A damaged index is an error naming it, with its code, from either thread.
  const victim = join(archive, 'layers', `${catalog.indexes[0]!.stem}.idx.zst`);
  const bytes = readFileSync(victim);
  bytes[bytes.length - 5] ^= 0x10;
  writeFileSync(victim, bytes);
  for (const [where, runner] of runners) {
    await t.rejects(new ContentTable().load(store, catalog, { run: runner }), { code: ErrorCodes.CORRUPT_OBJECT, subject: `layers/${catalog.indexes[0]!.stem}.idx.zst` }, `${where}: damaged index`);
  }

  // Members of a pack missing from the archive are not there to refer to.
  bytes[bytes.length - 5] ^= 0x10;
  writeFileSync(victim, bytes); // repaired
  rmSync(victim.replace(/\.idx\.zst$/, '.tar.zst'));
  const withoutPack = await readCatalog(store);
  const table = new ContentTable();
  await table.load(store, withoutPack);
  const lost = [...expected].filter(([, stem]) => stem === catalog.indexes[0]!.stem).map(([hash]) => hash);
  t.ok(lost.length > 0 && lost.every((hash) => !table.has(hash)), `the ${lost.length} members of the missing pack are left out`);
});
