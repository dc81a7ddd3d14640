// restore A DEST --from B with A and B independent archives of one source, backed up alternately (some runs
// stopped part way): the archives are merged by time, so each path range comes from the pack written last.

import t from 'tap';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpDir } from '../helpers/cli.js';
import { blanket, expectExit, US } from '../helpers/integration.js';
import { compareTrees, diffTrees, Prng, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { LocalStore } from '../../src/stores/local.js';
import { readCatalog, readClockPointer } from '../../src/stages/state-reader.js';
import { AFTER_ALL, BEFORE_ALL, pathToKey } from '../../src/formats/path-key.js';

/** Ten folders of fifteen files of 4-40 KiB of random bytes. */
function makeTree(root: string, prng: Prng): void {
  for (let d = 0; d < 10; d++) {
    mkdirSync(join(root, `d${d}`), { recursive: true });
    for (let f = 0; f < 15; f++) writeFileSync(join(root, `d${d}`, `f${String(f).padStart(2, '0')}`), prng.bytes(4096 + prng.int(36 * 1024)));
  }
}

/** Changes all over the tree: rewrites a third of the files, deletes some, adds some, changes modes. */
function changeTree(root: string, prng: Prng, round: number): void {
  for (let d = 0; d < 10; d++) {
    for (let f = 0; f < 15; f++) {
      const file = join(root, `d${d}`, `f${String(f).padStart(2, '0')}`);
      const roll = prng.int(12);
      if (roll < 4) writeFileSync(file, prng.bytes(4096 + prng.int(36 * 1024)));
      else if (roll === 4) rmSync(file, { force: true });
      else if (roll === 5 && existsSync(file)) chmodSync(file, 0o600 + prng.int(2) * 0o040);
    }
    writeFileSync(join(root, `d${d}`, `new-${round}`), prng.bytes(2048 + prng.int(8192)));
  }
}

/** What one run wrote: the tree it read, and the range of its layer it covered (after, through]. */
interface Run {
  readonly tree: TreeSnapshot;
  readonly after: string;
  readonly through: string;
}

/**
 * The state merged by time: per path, in each archive the last run whose range holds it (newer layers follow
 * older ones), and of those the one that ran last (`order` lists every run of every archive in the order they ran).
 */
function mergedByTime(order: readonly Run[], archives: readonly (readonly Run[])[]): TreeSnapshot {
  const keyOf = (pathHex: string): string => pathToKey(Buffer.from(pathHex, 'hex'));
  const all = new Map<string, string>(); // key → pathHex
  for (const run of order) for (const entry of run.tree) all.set(keyOf(entry.pathHex), entry.pathHex);
  const result: TreeSnapshot = [];
  for (const [key] of all) {
    let winner: Run | undefined;
    for (const layers of archives) {
      const newest = [...layers].reverse().find((run) => run.after < key && key <= run.through);
      if (newest !== undefined && (winner === undefined || order.indexOf(newest) > order.indexOf(winner))) winner = newest;
    }
    const entry = winner?.tree.find((e) => keyOf(e.pathHex) === key);
    if (entry) result.push(entry);
  }
  return result.sort((x, y) => Buffer.compare(Buffer.from(x.pathHex, 'hex'), Buffer.from(y.pathHex, 'hex')));
}

async function clockPointer(archive: string): Promise<string> {
  if (!existsSync(archive)) return BEFORE_ALL;
  const store = new LocalStore(archive);
  const catalog = await readCatalog(store);
  const pointer = await readClockPointer(store, catalog);
  return pointer.seq === 1 && pointer.after === BEFORE_ALL ? AFTER_ALL : pointer.after; // a layer just completed
}

t.test('two archives of one source, backed up alternately and in part, merge by time', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const a = join(work, 'archive-a');
  const b = join(work, 'archive-b');
  const prng = new Prng(77);
  makeTree(source, prng);
  const backup = async (archive: string, what: string, extra: string[] = []): Promise<Run> => {
    const tree = await snapshotTree(source, { includeRoot: true });
    const after = await clockPointer(archive);
    expectExit(t, await blanket(['backup', '--pack-size', '64K', ...extra, source, archive]), 0, what);
    return { tree, after: after === AFTER_ALL ? BEFORE_ALL : after, through: await clockPointer(archive) };
  };

  const a1 = await backup(a, 'A: first full backup');
  changeTree(source, prng, 1);
  const b1 = await backup(b, 'B: first full backup (newer)');
  changeTree(source, prng, 2);
  const a2 = await backup(a, 'A: a run stopped part way', ['--max-bytes', '300K']);
  t.not(a2.through, AFTER_ALL, 'A layer 2 is partial');
  changeTree(source, prng, 3);
  const b2 = await backup(b, 'B: a run stopped part way', ['--max-bytes', '150K']);
  t.not(b2.through, AFTER_ALL, 'B layer 2 is partial');
  t.ok(b2.through < a2.through, 'B got less far than A, so all three of B2, A2 and B1 win somewhere');
  t.comment(`A stopped after ${a2.through}, B after ${b2.through}`);

  const order = [a1, b1, a2, b2];
  const expected = mergedByTime(order, [
    [a1, a2],
    [b1, b2],
  ]);
  for (const [name, run] of [['A1', a1], ['B1', b1], ['A2', a2], ['B2', b2]] as const) {
    t.ok(diffTrees(run.tree, expected, { mtimePrecisionNs: US }).length > 0, `the merged state is not simply the tree of ${name}`);
  }

  for (const [first, second, label] of [
    [a, b, 'A --from B'],
    [b, a, 'B --from A'],
  ] as const) {
    const dest = join(work, `dest-${label.replace(/ /g, '')}`);
    const merged = await blanket(['restore', first, dest, '--from', second]);
    expectExit(t, merged, 0, `${label}: restore exits 0`);
    t.match(merged.stdout, /merged by time: .*archive-a: layers 1-2/, 'names the archives merged');
    compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: `${label}: the tree merged by time, exactly` });
  }

  // A run that completes A's layer 2 wins only where it went: B's partial layer 2 is newer than A's start.
  changeTree(source, prng, 4);
  const a2rest = await backup(a, 'A: the rest of layer 2');
  t.equal(a2rest.through, AFTER_ALL, 'A layer 2 complete');
  const expected2 = mergedByTime(
    [a1, b1, a2, b2, a2rest],
    [
      [a1, a2, a2rest],
      [b1, b2],
    ],
  );
  t.ok(diffTrees(a2rest.tree, expected2, { mtimePrecisionNs: US }).length > 0, 'B still wins a range');
  const dest2 = join(work, 'dest-resumed');
  expectExit(t, await blanket(['restore', b, dest2, '--from', a]), 0, 'restore after A resumed');
  compareTrees(t, expected2, await snapshotTree(dest2, { includeRoot: true }), { mtimePrecisionNs: US, message: 'after A resumed: the tree merged by time' });

  // A full layer 3 of A is the newest everywhere.
  changeTree(source, prng, 5);
  const a3 = await backup(a, 'A: a full run');
  t.equal(a3.through, AFTER_ALL);
  const dest = join(work, 'dest-newest');
  expectExit(t, await blanket(['restore', b, dest, '--from', a]), 0, 'restore after a full run of A');
  compareTrees(t, a3.tree, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'the newest full run wins everywhere' });

  // A layer number means nothing across archives.
  const layered = await blanket(['restore', a, join(work, 'dest-layer'), '--from', b, '--layer', '1']);
  expectExit(t, layered, 2, '--layer with two archives is a usage error');
  t.match(layered.stderr, /--layer names a layer of one archive/);
});
