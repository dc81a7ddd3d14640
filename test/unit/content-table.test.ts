// The shared content table: claims in task order, lookups, growth, and claims from several threads at once.

import t from 'tap';
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { ContentTable, hashWordsOfDigest, hashWordsOfHex, SharedContentSet } from '../../src/stages/content-table.js';

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
  const table = new ContentTable(1 << 16);
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
