// Budgets through the real CLI: --max-bytes and --max-time stop a backup cleanly (exit 0) with a partial layer
// that restores exactly the part it covers, and the next run continues from the clock pointer.
//
//   * --max-bytes 300K on a ~3 MiB tree (--pack-size 256K): a line says how far the layer got; `layers` shows it
//     partial; its restore is exactly the source paths up to the pointer (a prefix of the path order), each exact;
//     more runs complete the layer, whose restore is then exact.
//   * an edit spread over the tree, then a partial layer 2: the newest state is layer 2's up to its pointer and
//     layer 1's after it; --layer 1 still gives the old tree.
//   * --max-time 500ms on 320 MiB of random files (--pack-size 8M; a whole run takes ~1.5 s here, more under
//     load): stops with exit 0 and a partial layer; the next run resumes after the pointer
//     (finished.resumedAfter) instead of starting over.

import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpDir } from '../helpers/cli.js';
import { Prng, compareTrees, hashFile, makeAwkwardTree, snapshotTree, type TreeEntry, type TreeSnapshot } from '../helpers/tree.js';
import {
  blanket,
  US,
  cliPath,
  comparePathOrder,
  expectExit,
  finishedEvent,
  ndjson,
  parseCliPath,
  rawPath,
  restrictSnapshot,
  sortSnapshot,
} from '../helpers/integration.js';

const DATA_DIRS = ['d-a', 'd-b', 'd-c', 'd-d', 'd-e', 'd-f'];
const FILES_PER_DIR = 5;
const DATA_FILE = 100 * 1024;

/** ~3 MiB of incompressible files spread over six directories, next to a small awkward tree. */
async function makeBudgetTree(root: string): Promise<void> {
  await mkdir(join(root, 'awkward'));
  await makeAwkwardTree(join(root, 'awkward'), { seed: 3 });
  const rng = new Prng(42);
  for (const dir of DATA_DIRS) {
    await mkdir(join(root, 'data', dir), { recursive: true });
    for (let i = 0; i < FILES_PER_DIR; i++) await writeFile(join(root, 'data', dir, `file-${i}.bin`), rng.bytes(DATA_FILE));
  }
}

/** Selects the entries at or before `through` in path order (the root comes first). */
function upTo(through: Buffer): (entry: TreeEntry) => boolean {
  return (e) => comparePathOrder(rawPath(e), through) <= 0;
}

const inOrder = (snapshot: TreeSnapshot): Buffer[] => snapshot.map(rawPath).sort(comparePathOrder);

t.test('--max-bytes: partial layers restore the part they cover', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  await mkdir(source);
  await makeBudgetTree(source);
  const v1 = await snapshotTree(source, { includeRoot: true });
  const order = inOrder(v1);

  // First run: stopped by the byte budget.
  const first = await blanket(['backup', '--max-bytes', '300K', '--pack-size', '256K', source, archive]);
  if (!expectExit(t, first, 0, 'backup stopped by --max-bytes')) return;
  const line = /layer 1 partial: covered up to (.*) \(stopped by max-bytes\)/.exec(first.stdout);
  t.ok(line, 'a line says how far the layer got', { stdout: first.stdout });
  if (!line) return;
  const through1 = parseCliPath(line[1]!);
  t.ok(order.some((p) => p.equals(through1)), `the pointer ${line[1]} is a source path`);
  t.ok(comparePathOrder(through1, order.at(-1)!) < 0, 'and not the last one');

  const layers = await blanket(['layers', archive]);
  expectExit(t, layers, 0, 'layers');
  t.match(layers.stdout, new RegExp(`^layer 1 .* partial, up to ${escapeRegExp(line[1]!)} `, 'm'), 'layers shows layer 1 partial');
  t.match(ndjson((await blanket(['layers', '--json', archive])).stdout), [{ layer: 1, complete: false, through: line[1] }]);

  await t.test('the partial layer restores exactly the covered prefix', async (t) => {
    const dest = join(tmpDir(t), 'dest');
    const restored = await blanket(['restore', '--json', archive, dest]);
    expectExit(t, restored, 0, 'restore of the partial layer');
    t.equal(finishedEvent(restored.stdout)?.failedFiles, 0);
    const got = await snapshotTree(dest, { includeRoot: true });
    const want = restrictSnapshot(v1, upTo(through1));
    t.ok(want.length > 1 && want.length < v1.length, `covered: ${want.length} of ${v1.length} entries`);
    compareTrees(t, want, got, { mtimePrecisionNs: US, message: 'restore = the source up to the pointer' });
    t.same(inOrder(got).map(cliPath), order.slice(0, got.length).map(cliPath), 'the restored paths are a prefix of the path order');
    const listed = ndjson((await blanket(['ls', '--json', archive])).stdout).map((e) => e.path);
    t.same(listed, ['/', ...order.slice(1, got.length).map(cliPath)], 'ls lists the same prefix, in path order');
    expectExit(t, await blanket(['verify', archive]), 0, 'verify of the partial layer');
  });

  // More runs (with a larger budget, to keep the test short) complete the layer; each resumes where the one before stopped.
  let pointer = line[1]!;
  let complete = false;
  let runs = 1;
  for (let run = 2; run <= 12 && !complete; run++) {
    runs = run;
    const next = await blanket(['backup', '--json', '--max-bytes', '800K', '--pack-size', '256K', source, archive]);
    if (!expectExit(t, next, 0, `backup run ${run}`)) return;
    const done = finishedEvent(next.stdout)!;
    t.equal(done.layer, 1, `run ${run} continues layer 1`);
    t.equal(done.resumedAfter, pointer, `run ${run} resumes after ${pointer}`);
    complete = done.complete === true;
    if (!complete) {
      t.equal(done.stoppedBy, 'max-bytes');
      t.ok(comparePathOrder(parseCliPath(done.through as string), parseCliPath(pointer)) > 0, 'the pointer moves forward');
      pointer = done.through as string;
    }
  }
  t.ok(complete, `layer 1 completes (after ${runs} runs)`);
  t.ok(runs >= 3, 'it took several runs');
  t.match(ndjson((await blanket(['layers', '--json', archive])).stdout), [{ layer: 1, complete: true, through: null }]);
  {
    const dest = join(tmpDir(t), 'dest');
    expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore of the completed layer');
    compareTrees(t, v1, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'completed layer restores exactly' });
    expectExit(t, await blanket(['verify', archive]), 0, 'verify');
  }

  // Edit one file in every data directory (new random content, same size), then a partial layer 2.
  const rng = new Prng(4242);
  const edited: Buffer[] = [];
  for (const dir of DATA_DIRS) {
    const rel = join('data', dir, 'file-2.bin');
    const handle = await open(join(source, rel), 'r+');
    await handle.write(rng.bytes(DATA_FILE), 0, DATA_FILE, 0);
    await handle.close();
    edited.push(Buffer.from(rel));
  }
  const v2 = await snapshotTree(source, { includeRoot: true });
  const second = await blanket(['backup', '--json', '--max-bytes', '200K', '--pack-size', '256K', source, archive]);
  if (!expectExit(t, second, 0, 'layer 2 stopped by --max-bytes')) return;
  const done2 = finishedEvent(second.stdout)!;
  t.match(done2, { layer: 2, complete: false, stoppedBy: 'max-bytes', resumedAfter: null });
  const through2 = parseCliPath(done2.through as string);
  const covered = edited.filter((p) => comparePathOrder(p, through2) <= 0);
  t.ok(covered.length > 0 && covered.length < edited.length, `the pointer ${done2.through} splits the edited files (${covered.length} of ${edited.length} covered)`);
  t.match(ndjson((await blanket(['layers', '--json', archive])).stdout), [{ layer: 1, complete: true }, { layer: 2, complete: false, through: done2.through }]);

  // Newest state: layer 2 up to its pointer, layer 1 after it.
  const mixed = sortSnapshot([...v2.filter(upTo(through2)), ...v1.filter((e) => !upTo(through2)(e))]);
  const expectedMixed = restrictSnapshot(mixed, () => true);
  for (const args of [[], ['--layer', '2']]) {
    const dest = join(tmpDir(t), 'dest');
    const restored = await blanket(['restore', ...args, archive, dest]);
    expectExit(t, restored, 0, `restore ${args.join(' ') || 'newest'}`);
    compareTrees(t, expectedMixed, await snapshotTree(dest, { includeRoot: true }), {
      mtimePrecisionNs: US,
      message: `restore ${args.join(' ') || 'newest'}: covered edits new, the rest from layer 1`,
    });
  }
  const old = join(tmpDir(t), 'dest');
  expectExit(t, await blanket(['restore', '--layer', '1', archive, old]), 0, 'restore --layer 1');
  compareTrees(t, v1, await snapshotTree(old, { includeRoot: true }), { mtimePrecisionNs: US, message: '--layer 1 is still the old tree' });

  // Finish layer 2: the newest state is the edited tree.
  const finish = await blanket(['backup', '--json', '--pack-size', '256K', source, archive]);
  expectExit(t, finish, 0, 'layer 2 completes');
  t.match(finishedEvent(finish.stdout), { layer: 2, complete: true, resumedAfter: done2.through });
  const dest = join(tmpDir(t), 'dest');
  expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore of layer 2');
  compareTrees(t, v2, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'completed layer 2 restores the edited tree' });
});

t.test('--max-time stops a big backup, and the next run resumes', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  await mkdir(source);
  // 320 MiB: five 64 MiB files of random bytes (crypto: fast to make, never compressible or deduplicated).
  const sizes = [0, 1, 2, 3, 4].map(() => 64 * 1024 * 1024);
  for (const [i, size] of sizes.entries()) {
    const handle = await open(join(source, `big-${i}.bin`), 'w');
    for (let done = 0; done < size; done += 8 << 20) await handle.write(randomBytes(Math.min(8 << 20, size - done)));
    await handle.close();
  }

  // The budget must end the run after it stored something and before it finished: on a loaded machine 500 ms
  // can pass before the first pack, so a run that stored nothing is tried again, on a fresh archive, with more.
  let first = await blanket(['backup', '--json', '--max-time', '500ms', '--pack-size', '8M', source, archive]);
  for (const budget of ['1s', '2s', '4s']) {
    const done = finishedEvent(first.stdout);
    if (first.code !== 0 || done === undefined || (done.newContentBytes as number) > 0 || done.complete === true) break;
    t.comment(`the run stored nothing before its budget ran out: again with ${budget}`);
    await rm(archive, { recursive: true, force: true });
    first = await blanket(['backup', '--json', '--max-time', budget, '--pack-size', '8M', source, archive]);
  }
  if (!expectExit(t, first, 0, 'backup stopped by --max-time')) return;
  const done1 = finishedEvent(first.stdout)!;
  t.match(done1, { layer: 1, complete: false, stoppedBy: 'max-time', resumedAfter: null }, 'stopped by the time budget');
  t.match(ndjson((await blanket(['layers', '--json', archive])).stdout), [{ layer: 1, complete: false, through: done1.through }], 'layer 1 partial');

  const second = await blanket(['backup', '--json', '--pack-size', '8M', source, archive]);
  if (!expectExit(t, second, 0, 'second backup')) return;
  const done2 = finishedEvent(second.stdout)!;
  t.match(done2, { layer: 1, complete: true, resumedAfter: done1.through }, 'the second run resumes layer 1 after the pointer');
  const started = ndjson(second.stdout).find((e) => e.type === 'started');
  t.equal(started?.resumedAfter, done1.through, 'its started event says so too');
  // Files up to the pointer were stored by the first run and are not counted again.
  const coveredFirst = sizes.filter((_s, i) => comparePathOrder(Buffer.from(`big-${i}.bin`), parseCliPath(done1.through as string)) <= 0).length;
  t.equal((done2.newFiles as number) + coveredFirst, sizes.length, `the second run adds only the ${sizes.length - coveredFirst} files after the pointer`);
  // Content the first run stored (even of a file it did not finish) is found again, not stored twice.
  const total = sizes.reduce((a, b) => a + b, 0);
  t.ok((done1.newContentBytes as number) > 0, `the first run stored ${done1.newContentBytes} bytes of content`);
  t.equal((done1.newContentBytes as number) + (done2.newContentBytes as number), total, 'the two runs together store every byte once');

  const dest = join(tmpDir(t), 'dest');
  expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore');
  for (let i = 0; i < sizes.length; i++) {
    t.equal(await hashFile(join(dest, `big-${i}.bin`)), await hashFile(join(source, `big-${i}.bin`)), `big-${i}.bin restored`);
  }
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
