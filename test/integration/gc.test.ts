// gc through the real CLI: retention policies collect the oldest layers, and every kept layer still restores
// exactly.
//
// Twelve layers are built over a changing tree (small files added, edited, deleted, renamed, a directory removed
// and one renamed, a ~9 MiB file edited in place by a few KiB so its chunks become rdiff deltas, and one layer with
// no change at all); the tree is snapshotted after each. Every policy then runs on a fresh copy of that archive
// (with a copy of its signature cache, as the machine that made it would have):
//
//   --keep-layers   the kept layers restore exactly, a collected one is refused, verify passes, the archive
//                   shrinks, and the objects deleted are exactly the ones the scenario makes unneeded;
//   --keep-within, --before and the two together keep what the ended times of `layers --json` say;
//   --dry-run       changes nothing and plans what the real run then does;
//   gc twice        with backups between and after (content of a collected pack written again is stored again);
//   partial layer   a partial newest layer keeps the complete layer before it, and restores as before gc;
//   --max-size      keeps as many layers as the estimates of `layers --json` say fit, and the archive fits;
//                   a cap too small fails and deletes nothing;
//   damage          a missing or corrupt index, a truncated or missing pack: gc refuses and deletes nothing.
//
// A second archive (default pack size: 4 MiB chunks) has a chain of deltas spanning layers; gc keeping the last
// two layers keeps the whole chain.

import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpDir } from '../helpers/cli.js';
import { blanket, expectExit, finishedEvent, ndjson, treeBytes, US } from '../helpers/integration.js';
import { compareTrees, MIB, Prng, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';

const PACK = ['--pack-size', '1M']; // chunks of 512 KiB: the big file has 19, and layer 1 several packs
const LAYERS = 12;
const CHURN_BYTES = 150_000;

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/** An archive and the cache folder (XDG_CACHE_HOME) of the machine that backs up into it. */
interface Fixture {
  readonly archive: string;
  readonly cache: string;
}

const envOf = (f: Fixture): Record<string, string> => ({ XDG_CACHE_HOME: f.cache });

/** A copy of the archive (cp -a) and of its cache, in a fresh directory. */
function copyFixture(t: Test, from: Fixture): Fixture {
  const dir = tmpDir(t, 'blanket-gc-');
  const to = { archive: join(dir, 'archive'), cache: join(dir, 'cache') };
  execFileSync('cp', ['-a', from.archive, to.archive]);
  if (existsSync(from.cache)) execFileSync('cp', ['-a', from.cache, to.cache]);
  else mkdirSync(to.cache);
  return to;
}

/** Every file of the archive, by relative path: its size and SHA-256. */
function objectsOf(archive: string): Map<string, { size: number; sha256: string }> {
  const out = new Map<string, { size: number; sha256: string }>();
  const walk = (rel: string): void => {
    for (const e of readdirSync(join(archive, rel), { withFileTypes: true })) {
      const r = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) walk(r);
      else {
        const bytes = readFileSync(join(archive, r));
        out.set(r, { size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') });
      }
    }
  };
  walk('');
  return out;
}

/** The archive's objects as sorted lines "path size sha256" (for equality checks). */
function objectLines(archive: string): string[] {
  return [...objectsOf(archive)].map(([name, o]) => `${name} ${o.size} ${o.sha256}`).sort();
}

/** Object names under layers/LLLLLL/. */
function layerObjects(archive: string, layer: number): string[] {
  const dir = join(archive, 'layers', String(layer).padStart(6, '0'));
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

interface LayerLine {
  layer: number;
  started: string;
  ended: string;
  complete: boolean;
  through: string | null;
  packs: number;
  indexes: number;
  bytes: number;
  paths: number;
  freedWithOlder: number | null;
  freedAlone: number;
}

interface GcFinished {
  type: 'finished';
  command: 'gc';
  plan: {
    keepFrom: number;
    collected: number[];
    deletions: number;
    bytesBefore: number;
    bytesAfter: number;
    basePaths: number;
    retainedPacks: number;
  };
  deletedObjects: number;
  deletedBytes: number;
  baseIndexes: number;
  writtenBytes: number;
  dryRun: boolean;
}

async function layersOf(t: Test, f: Fixture): Promise<LayerLine[]> {
  const run = await blanket(['layers', '--json', f.archive], { env: envOf(f) });
  expectExit(t, run, 0, 'layers --json');
  return ndjson(run.stdout) as unknown as LayerLine[];
}

async function keptLayers(t: Test, f: Fixture): Promise<number[]> {
  return (await layersOf(t, f)).map((l) => l.layer);
}

const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

/** Runs `gc --json ARGS ARCHIVE`, expecting exit 0; its finished event. */
async function gcRun(t: Test, f: Fixture, args: string[], what: string): Promise<GcFinished | undefined> {
  const run = await blanket(['gc', '--json', ...args, f.archive], { env: envOf(f) });
  if (!expectExit(t, run, 0, what)) return undefined;
  const done = finishedEvent(run.stdout) as unknown as GcFinished | undefined;
  t.match(done, { type: 'finished', command: 'gc' }, `${what}: finished event`);
  return done;
}

/** Restores `--layer L` into a fresh directory and compares it with the snapshot, exactly. */
async function restoresExactly(t: Test, f: Fixture, layer: number, expected: TreeSnapshot, what: string): Promise<boolean> {
  const dest = join(tmpDir(t, 'blanket-gc-dest-'), 'dest');
  const run = await blanket(['restore', '--json', '--layer', String(layer), f.archive, dest], { env: envOf(f) });
  if (!expectExit(t, run, 0, `${what}: restore --layer ${layer}`)) return false;
  t.equal(finishedEvent(run.stdout)?.failedFiles, 0, `${what}: layer ${layer} restored with no failed files`);
  return compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: `${what}: layer ${layer} restores exactly` });
}

/** A restore of a collected layer: exit 1, BLANKET_E_NOT_FOUND, saying gc collected it. */
async function refusesCollected(t: Test, f: Fixture, layer: number, what: string): Promise<void> {
  const dest = join(tmpDir(t, 'blanket-gc-dest-'), 'dest');
  const run = await blanket(['restore', '--layer', String(layer), f.archive, dest], { env: envOf(f) });
  expectExit(t, run, 1, `${what}: restore --layer ${layer} of a collected layer`);
  t.match(run.stderr, 'BLANKET_E_NOT_FOUND', `${what}: layer ${layer}: not found`);
  t.match(run.stderr, new RegExp(`layer ${layer} was collected by gc`), `${what}: layer ${layer}: says gc collected it`);
}

async function verifies(t: Test, f: Fixture, what: string): Promise<void> {
  expectExit(t, await blanket(['verify', f.archive], { env: envOf(f) }), 0, `${what}: verify`);
}

function overwrite(file: string, at: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+');
  writeSync(fd, bytes, 0, bytes.length, at);
  closeSync(fd);
}

const text = (rng: Prng, lines: number): string => Array.from({ length: lines }, (_, i) => `line ${i} of some text ${rng.nextU32().toString(36)}\n`).join('');

/** The content of churn.bin as of layer L: new random bytes in every layer but the unchanged one. */
const churnOf = (layer: number): Buffer => new Prng(1000 + layer).bytes(CHURN_BYTES);

// ---------------------------------------------------------------------------------------------------------------
// Twelve layers, and every policy on a copy of them

t.test('gc over twelve layers of a changing tree', async (t) => {
  const work = tmpDir(t, 'blanket-gc-main-');
  const source = join(work, 'source');
  const main: Fixture = { archive: join(work, 'archive'), cache: join(work, 'cache') };
  mkdirSync(main.cache);
  const src = (rel: string): string => join(source, rel);
  const put = (rel: string, data: string | Buffer): void => {
    mkdirSync(dirname(src(rel)), { recursive: true });
    writeFileSync(src(rel), data);
  };
  const rng = new Prng(2026);

  // Layer 1.
  for (let i = 0; i < 10; i++) put(`src/m${i}.txt`, text(rng, 10 + i * 15));
  for (let i = 0; i < 5; i++) put(`docs/d${i}.md`, text(rng, 20 + i));
  for (let i = 0; i < 5; i++) put(`old/o${i}.dat`, rng.bytes(3000 + i * 111));
  put('big.bin', rng.bytes(9 * MIB + 4321));
  put('churn.bin', churnOf(1));
  mkdirSync(src('empty'));
  execFileSync('ln', ['-s', 'src/m0.txt', src('link-to-m0')]);

  // What each later layer changes. Layers 4 and 5 store only content that is replaced before layer 8, and layer 7
  // stores none: after --keep-layers 5 nothing of theirs may remain. Layer 2's kept.bin lives on to the end, and
  // the big file's chunk at 1 MiB is a delta chain 9 → 6 → 3 → 1: those packs must stay.
  const changes: Record<number, () => void> = {
    2: () => {
      put('keep/kept.bin', rng.bytes(40_000));
      appendFileSync(src('src/m1.txt'), 'appended in layer 2\n');
    },
    3: () => {
      overwrite(src('big.bin'), MIB + 100, rng.bytes(3 * 1024));
      renameSync(src('src/m2.txt'), src('src/m2-renamed.txt'));
    },
    4: () => {
      unlinkSync(src('docs/d0.md'));
      put('src/m3.txt', text(rng, 150));
      chmodSync(src('src/m4.txt'), 0o600);
    },
    5: () => rmSync(src('old'), { recursive: true }),
    6: () => {
      overwrite(src('big.bin'), MIB + 6000, rng.bytes(2 * 1024));
      overwrite(src('big.bin'), 6 * MIB + 10, rng.bytes(4 * 1024));
      put('src/m3.txt', text(rng, 170));
    },
    8: () => {
      put('src/lib/n1.txt', text(rng, 40));
      put('src/lib/n2.txt', text(rng, 60));
      appendFileSync(src('src/m1.txt'), 'appended in layer 8\n');
    },
    9: () => {
      overwrite(src('big.bin'), MIB + 200, rng.bytes(1024));
      renameSync(src('docs'), src('manuals'));
    },
    10: () => {
      put('src/m5.txt', text(rng, 90));
      unlinkSync(src('src/m6.txt'));
    },
    11: () => {
      overwrite(src('big.bin'), 8 * MIB + 100, rng.bytes(2 * 1024));
      truncateSync(src('src/m7.txt'), 10);
    },
    12: () => {
      put('keep/late.txt', text(rng, 30));
      appendFileSync(src('src/m1.txt'), 'appended in layer 12\n');
      const when = statSync(src('src/m8.txt')).mtimeMs / 1000 - 3600;
      utimesSync(src('src/m8.txt'), when, when);
    },
  };
  const UNCHANGED = 7;
  const DELTA_LAYERS = [3, 6, 9, 11];

  const snapshots: TreeSnapshot[] = []; // snapshots[L - 1]: the tree as of layer L
  for (let layer = 1; layer <= LAYERS; layer++) {
    if (layer === 10) await sleep(3000); // a gap between the ends of layers 9 and 10, for --keep-within
    if (layer > 1) changes[layer]?.();
    if (layer > 1 && layer !== UNCHANGED) put('churn.bin', churnOf(layer));
    const run = await blanket(['backup', '--json', ...PACK, source, main.archive], { env: envOf(main) });
    if (!expectExit(t, run, 0, `backup of layer ${layer}`)) return;
    const done = finishedEvent(run.stdout)!;
    t.match(done, { layer, complete: true }, `layer ${layer} complete`);
    if (layer === UNCHANGED) t.match(done, { newFiles: 0, changedFiles: 0, deleted: 0, packs: 0 }, `layer ${layer}: nothing changed`);
    if (DELTA_LAYERS.includes(layer)) {
      // A whole 512 KiB chunk of random bytes would not compress: a few KiB stored for the big file means a delta.
      const stored = done.storedBytes as number;
      t.ok(stored < CHURN_BYTES + 64 * 1024, `layer ${layer}: the big file's edit is stored as deltas (${stored} bytes stored in all)`);
    }
    snapshots.push(await snapshotTree(source, { includeRoot: true }));
  }

  const before = await layersOf(t, main);
  t.same(
    before.map((l) => l.layer),
    range(1, LAYERS),
    `${LAYERS} layers listed`,
  );
  t.same(
    before.map((l) => l.paths),
    snapshots.map((s) => s.length),
    'layers --json counts the paths of each layer',
  );
  const total = before.reduce((sum, l) => sum + l.bytes, 0);
  t.equal(total, await treeBytes(join(main.archive, 'layers')), 'the bytes of the layers add up to the objects under layers/');
  const ended = before.map((l) => Date.parse(l.ended));
  t.ok(
    ended.every((time, i) => i === 0 || time > ended[i - 1]!),
    'each layer ended after the one before',
  );

  await t.test('--keep-layers 5: layers 8-12 remain, each restores exactly; unneeded objects are deleted', async (t) => {
    const f = copyFixture(t, main);
    const objectsBefore = objectsOf(f.archive);
    const bytesBefore = await treeBytes(f.archive);
    const done = await gcRun(t, f, ['--keep-layers', '5'], 'gc --keep-layers 5');
    if (done === undefined) return;
    t.match(done, { dryRun: false, plan: { keepFrom: 8, collected: range(1, 7), basePaths: snapshots[7]!.length } }, 'collects layers 1-7, a base of layer 8');
    t.equal(done.plan.bytesBefore, total, 'bytesBefore is the bytes of the objects under layers/');
    t.same(await keptLayers(t, f), range(8, 12), 'layers --json lists 8-12');

    const objectsAfter = objectsOf(f.archive);
    const removed = [...objectsBefore.keys()].filter((name) => !objectsAfter.has(name));
    const added = [...objectsAfter.keys()].filter((name) => !objectsBefore.has(name));
    t.ok(removed.length > 0, `${removed.length} objects deleted`);
    t.equal(done.deletedObjects, removed.length, 'deletedObjects counts the objects gone');
    t.equal(done.plan.deletions, removed.length, 'the plan counted them');
    t.equal(
      done.deletedBytes,
      removed.reduce((sum, name) => sum + objectsBefore.get(name)!.size, 0),
      'deletedBytes is their size',
    );
    t.ok(
      removed.every((name) => /^layers\/00000[1-7]\/\d{8}\.(idx|tar)\.zst$/.test(name)),
      'only index and pack objects of layers 1-7 were deleted',
      { removed },
    );
    t.ok(added.includes('layers/000008/base'), 'the base marker of layer 8 is written');
    const baseIndexes = added.filter((name) => /^layers\/000008\/base-\d{8}\.idx\.zst$/.test(name));
    t.equal(baseIndexes.length, done.baseIndexes, `${done.baseIndexes} base indexes written`);
    t.ok(done.baseIndexes >= 1, 'at least one base index');
    t.same(
      added.filter((name) => name !== 'layers/000008/base' && name !== 'blanket.json' && !baseIndexes.includes(name)),
      [],
      'nothing else is added',
    );
    t.equal(JSON.parse(readFileSync(join(f.archive, 'blanket.json'), 'utf8')).version, 2, 'blanket.json version 2');
    const bytesAfter = await treeBytes(f.archive);
    t.ok(bytesAfter < bytesBefore, `the archive shrank: ${bytesBefore} → ${bytesAfter} bytes`);

    // What the scenario made unneeded is gone; what the kept layers need is not.
    for (const layer of [4, 5, UNCHANGED]) {
      t.same(layerObjects(f.archive, layer), [], `layer ${layer} stored nothing layers 8-12 need: none of its objects remain`);
    }
    for (const layer of [2, 3, 6]) {
      t.ok(
        layerObjects(f.archive, layer).some((name) => name.endsWith('.tar.zst')),
        `layer ${layer} keeps its pack (${layer === 2 ? 'kept.bin lives on' : 'a delta on the big file chain'})`,
      );
    }
    t.ok(
      layerObjects(f.archive, 1).some((name) => name.endsWith('.tar.zst')),
      "layer 1 keeps packs (the big file's whole chunks)",
    );
    for (let layer = 1; layer < 8; layer++) {
      const names = layerObjects(f.archive, layer);
      const stems = (suffix: string): string[] => names.filter((n) => n.endsWith(suffix)).map((n) => n.slice(0, -suffix.length));
      t.same(stems('.idx.zst'), stems('.tar.zst'), `layer ${layer}: every object left is a pack with its index (${names.length} objects)`);
    }

    await verifies(t, f, 'after gc --keep-layers 5');
    for (let layer = 8; layer <= LAYERS; layer++) await restoresExactly(t, f, layer, snapshots[layer - 1]!, 'keep 5');
    await refusesCollected(t, f, 3, 'keep 5');
    await refusesCollected(t, f, 7, 'keep 5');
    // Nothing left to collect: a second run with the same policy deletes nothing.
    const again = await gcRun(t, f, ['--keep-layers', '5'], 'the same gc again');
    t.match(again, { deletedObjects: 0, plan: { keepFrom: 8, collected: [], deletions: 0 } }, 'a second run changes nothing');
  });

  await t.test('--keep-within and --before keep what the layers\' ended times say', async (t) => {
    /** The first layer that ended at or after `time`: the oldest one kept. */
    const firstFrom = (time: number): number => before.find((l) => Date.parse(l.ended) >= time)?.layer ?? LAYERS;

    // --keep-within: a duration reaching back into the gap between layers 9 and 10 (3 s without a backup).
    const within = copyFixture(t, main);
    const gap = ended[9]! - ended[8]!;
    t.ok(gap >= 3000, `layers 9 and 10 ended ${gap} ms apart`);
    const t0 = Date.now();
    const duration = t0 - ended[9]! + Math.floor(gap / 2);
    const done = await gcRun(t, within, ['--keep-within', `${duration}ms`], `gc --keep-within ${duration}ms`);
    const t1 = Date.now();
    // gc counts from its own "now", somewhere between t0 and t1.
    const [early, late] = [firstFrom(t0 - duration), firstFrom(t1 - duration)];
    t.equal(early, 10, 'computed from the ended times: the duration reaches back to layer 10');
    if (done !== undefined) {
      if (early === late) t.equal(done.plan.keepFrom, early, `keeps from layer ${early}`);
      else t.ok(done.plan.keepFrom >= early && done.plan.keepFrom <= late, `keeps from a layer between ${early} and ${late} (gc was slow to start)`);
      t.same(await keptLayers(t, within), range(done.plan.keepFrom, LAYERS), 'layers --json lists the kept layers');
    }

    // --before: one millisecond after layer 6 ended collects layers 1-6.
    const middle = 6;
    const beforeTime = ended[middle - 1]! + 1;
    const expected = firstFrom(beforeTime);
    t.equal(expected, middle + 1, `layer ${middle + 1} is the first that ended after ${new Date(beforeTime).toISOString()}`);
    const cut = copyFixture(t, main);
    const byDate = await gcRun(t, cut, ['--before', new Date(beforeTime).toISOString()], '--before');
    t.match(byDate, { plan: { keepFrom: expected, collected: range(1, expected - 1) } }, `--before keeps from layer ${expected}`);
    t.same(await keptLayers(t, cut), range(expected, LAYERS), 'layers --json lists them');
    await restoresExactly(t, cut, expected, snapshots[expected - 1]!, '--before: the oldest kept layer');

    // Several rules keep what any of them keeps: --keep-layers 2 alone would keep from 11.
    const both = copyFixture(t, main);
    const union = await gcRun(t, both, ['--keep-layers', '2', '--before', new Date(beforeTime).toISOString()], '--keep-layers 2 --before');
    t.match(union, { plan: { keepFrom: expected } }, `--keep-layers 2 with --before keeps from layer ${expected}`);
    t.same(await keptLayers(t, both), range(expected, LAYERS), 'layers --json lists them');

    // A date before every layer collects nothing.
    const none = copyFixture(t, main);
    const objects = objectLines(none.archive);
    const nothing = await gcRun(t, none, ['--before', '2001-01-01'], '--before 2001-01-01');
    t.match(nothing, { plan: { keepFrom: 1, collected: [], deletions: 0 }, deletedObjects: 0 }, 'a date before every layer collects nothing');
    t.same(objectLines(none.archive), objects, 'and changes nothing');

    // No policy at all is a usage error.
    const usage = await blanket(['gc', none.archive], { env: envOf(none) });
    expectExit(t, usage, 2, 'gc without a policy');
  });

  await t.test('--dry-run changes nothing and plans what the real run does', async (t) => {
    const f = copyFixture(t, main);
    const objects = objectLines(f.archive);
    const objectMap = objectsOf(f.archive);
    const dry = await gcRun(t, f, ['--dry-run', '--keep-layers', '4'], 'gc --dry-run --keep-layers 4');
    t.same(objectLines(f.archive), objects, 'the dry run changed no object (names, sizes, contents)');
    t.equal(existsSync(join(f.archive, 'layers', '000009', 'base')), false, 'no base written');
    // Its text form lists the objects it would delete.
    const listed = await blanket(['gc', '--dry-run', '--keep-layers', '4', f.archive], { env: envOf(f) });
    expectExit(t, listed, 0, 'gc --dry-run (text)');
    t.same(objectLines(f.archive), objects, 'neither did the second dry run');
    const names = [...listed.stdout.matchAll(/^\s+(layers\/\S+)\s/gm)].map((m) => m[1]!);
    if (dry === undefined) return;
    t.match(dry, { dryRun: true, deletedObjects: 0, deletedBytes: 0, baseIndexes: 0, writtenBytes: 0, plan: { keepFrom: 9, collected: range(1, 8) } }, 'the dry run plans keeping 9-12');
    t.ok(dry.plan.deletions > 0, `it would delete ${dry.plan.deletions} objects`);
    t.equal(names.length, Math.min(50, dry.plan.deletions), 'the text form lists the objects (up to 50)');

    const real = await gcRun(t, f, ['--keep-layers', '4'], 'gc --keep-layers 4');
    if (real === undefined) return;
    t.equal(real.dryRun, false, 'the real run is not dry');
    t.same(real.plan, dry.plan, 'the real run carries out the same plan');
    t.equal(real.deletedObjects, dry.plan.deletions, 'and deletes as many objects as the dry run said');
    const gone = [...objectMap.keys()].filter((name) => !existsSync(join(f.archive, name))).sort();
    t.equal(gone.length, dry.plan.deletions, 'that many objects are gone');
    if (names.length === dry.plan.deletions) t.same([...names].sort(), gone, 'exactly the objects the dry run listed');
    else t.ok(names.every((name) => gone.includes(name)), 'every object the dry run listed is gone');
    t.same(await keptLayers(t, f), range(9, 12), 'layers 9-12 remain');
  });

  await t.test('gc twice, with backups between and after', async (t) => {
    const f = copyFixture(t, main);
    const first = await gcRun(t, f, ['--keep-layers', '5'], 'first gc --keep-layers 5');
    t.match(first, { plan: { keepFrom: 8 } }, 'keeps 8-12');
    const snaps = new Map<number, TreeSnapshot>(snapshots.map((s, i) => [i + 1, s]));
    const backup = async (layer: number): Promise<boolean> => {
      const run = await blanket(['backup', '--json', ...PACK, source, f.archive], { env: envOf(f) });
      if (!expectExit(t, run, 0, `backup of layer ${layer} after gc`)) return false;
      t.match(finishedEvent(run.stdout), { layer, complete: true }, `layer ${layer} complete`);
      snaps.set(layer, await snapshotTree(source, { includeRoot: true }));
      return true;
    };
    // Layer 13 writes again content that only collected layers had: churn.bin of layer 4 (its pack was deleted)
    // and of layer 2 (its pack is kept for kept.bin). Neither may be taken for stored if it is not.
    put('revived/churn-4.bin', churnOf(4));
    put('revived/churn-2.bin', churnOf(2));
    put('src/m3.txt', text(rng, 150));
    overwrite(src('big.bin'), MIB + 300, rng.bytes(1500));
    put('churn.bin', churnOf(13));
    if (!(await backup(13))) return;
    rmSync(src('src/lib'), { recursive: true });
    put('manuals/new.md', text(rng, 12));
    put('churn.bin', churnOf(14));
    if (!(await backup(14))) return;
    appendFileSync(src('src/m1.txt'), 'appended in layer 15\n');
    overwrite(src('big.bin'), 3 * MIB, rng.bytes(3000));
    put('churn.bin', churnOf(15));
    if (!(await backup(15))) return;

    const objectsBefore = objectsOf(f.archive);
    const second = await gcRun(t, f, ['--keep-layers', '2'], 'second gc --keep-layers 2');
    if (second === undefined) return;
    t.match(second, { plan: { keepFrom: 14, collected: range(8, 13) } }, 'collects 8-13');
    t.same(await keptLayers(t, f), [14, 15], 'layers 14 and 15 remain');
    t.equal(existsSync(join(f.archive, 'layers', '000008', 'base')), false, 'the old base marker is deleted');
    t.same(
      layerObjects(f.archive, 8).filter((name) => name.startsWith('base')),
      [],
      'and so are the old base indexes',
    );
    t.ok(existsSync(join(f.archive, 'layers', '000014', 'base')), 'the new base marker is written');
    const gone = [...objectsBefore.keys()].filter((name) => !existsSync(join(f.archive, name)));
    t.equal(second.deletedObjects, gone.length, `deletedObjects counts the ${gone.length} objects gone`);
    await verifies(t, f, 'after the second gc');
    for (const layer of [14, 15]) await restoresExactly(t, f, layer, snaps.get(layer)!, 'after the second gc');
    await refusesCollected(t, f, 13, 'after the second gc');

    // A backup after gc, with the tree changed (old content revived again, a big-file edit on the chain).
    put('revived/churn-5.bin', churnOf(5));
    put('revived/churn-13.bin', churnOf(13));
    unlinkSync(src('revived/churn-2.bin'));
    overwrite(src('big.bin'), MIB + 400, rng.bytes(700));
    put('churn.bin', churnOf(16));
    if (!(await backup(16))) return;
    await verifies(t, f, 'after a backup that followed gc');
    await restoresExactly(t, f, 16, snaps.get(16)!, 'a backup after gc');
  });

  await t.test('a partial newest layer keeps the complete layer before it', async (t) => {
    const f = copyFixture(t, main);
    // About 1.8 MB of new random files, in 1 MiB packs: stopping after 400 KB stored leaves the layer partial.
    for (let i = 0; i < 6; i++) put(`partial/p${i}.bin`, rng.bytes(300_000));
    const run = await blanket(['backup', '--json', ...PACK, '--max-bytes', '400K', source, f.archive], { env: envOf(f) });
    if (!expectExit(t, run, 0, 'backup stopped by --max-bytes')) return;
    const partial = finishedEvent(run.stdout)!;
    t.match(partial, { complete: false, stoppedBy: 'max-bytes' }, 'the run stopped early');
    const newest = partial.layer as number;
    const listed = await layersOf(t, f);
    t.match(listed.at(-1), { layer: newest, complete: false }, `layer ${newest} is listed partial`);
    const previous = listed.at(-2)!.layer;
    t.match(listed.at(-2), { complete: true }, `layer ${previous} before it is complete`);

    const beforeGc = join(tmpDir(t, 'blanket-gc-dest-'), 'dest');
    const restoredBefore = await blanket(['restore', '--layer', String(newest), f.archive, beforeGc], { env: envOf(f) });
    expectExit(t, restoredBefore, 0, 'restore of the partial layer before gc');

    const done = await gcRun(t, f, ['--keep-layers', '1'], 'gc --keep-layers 1');
    if (done === undefined) return;
    t.match(done.plan, { keepFrom: previous, collected: range(1, previous - 1) }, `keeps layer ${previous} too`);
    const after = await layersOf(t, f);
    t.same(
      after.map((l) => l.layer),
      [previous, newest],
      'both layers remain',
    );
    t.match(after.at(-1), { complete: false }, 'the newest is still partial');

    const afterGc = join(tmpDir(t, 'blanket-gc-dest-'), 'dest');
    const restoredAfter = await blanket(['restore', '--layer', String(newest), f.archive, afterGc], { env: envOf(f) });
    expectExit(t, restoredAfter, 0, 'restore of the partial layer after gc');
    compareTrees(t, await snapshotTree(beforeGc, { includeRoot: true }), await snapshotTree(afterGc, { includeRoot: true }), {
      mtimePrecisionNs: US,
      message: 'the partial layer restores after gc as it did before',
    });
    await restoresExactly(t, f, previous, snapshots[previous - 1]!, 'after gc of a partial layer');
    await verifies(t, f, 'after gc of a partial layer');

    // The next run finishes the partial layer, which then restores the whole tree.
    const rest = await blanket(['backup', '--json', ...PACK, source, f.archive], { env: envOf(f) });
    expectExit(t, rest, 0, 'the run that finishes the layer');
    t.match(finishedEvent(rest.stdout), { layer: newest, complete: true }, `layer ${newest} now complete`);
    await restoresExactly(t, f, newest, await snapshotTree(source, { includeRoot: true }), 'the finished layer');
  });

  await t.test('--max-size keeps as many layers as fit', async (t) => {
    const f = copyFixture(t, main);
    // Estimated size after collecting layers 1..L (L = 0: nothing).
    const sizes = [total, ...before.map((l) => (l.freedWithOlder === null ? null : total - l.freedWithOlder))];
    const newestNeeded = before.findIndex((l) => l.freedWithOlder === null) + 1;
    t.equal(newestNeeded, LAYERS, 'only the newest layer is listed as needed by the newest state');
    // The cap: halfway across the largest step between collecting layers 1..L-1 and 1..L, for L in 3..9.
    let best = 0;
    for (let l = 3; l <= 9; l++) {
      const [a, b] = [sizes[l - 1]!, sizes[l]!];
      if (a - b > (best === 0 ? 0 : sizes[best - 1]! - sizes[best]!)) best = l;
    }
    t.ok(best > 0 && sizes[best - 1]! - sizes[best]! > 100_000, `collecting layer ${best} frees ${sizes[best - 1]! - sizes[best]!} bytes`);
    const cap = Math.floor((sizes[best - 1]! + sizes[best]!) / 2);
    const firstFit = sizes.findIndex((size) => size !== null && size <= cap); // layers 1..firstFit collected
    t.ok(firstFit >= 1, `the cap ${cap} needs layers 1-${firstFit} collected`);
    const expectedKept = LAYERS - firstFit;

    const done = await gcRun(t, f, ['--max-size', String(cap)], `gc --max-size ${cap}`);
    if (done === undefined) return;
    t.equal(done.plan.keepFrom, firstFit + 1, `keeps from layer ${firstFit + 1}`);
    t.ok(done.plan.bytesAfter <= cap, `the estimate fits: ${done.plan.bytesAfter} ≤ ${cap}`);
    const kept = await keptLayers(t, f);
    t.equal(kept.length, expectedKept, `${expectedKept} layers kept`);
    const size = (await treeBytes(join(f.archive, 'layers'))) + statSync(join(f.archive, 'blanket.json')).size;
    t.ok(size <= cap, `the archive is ${size} bytes, at most the cap of ${cap}`);
    await verifies(t, f, 'after gc --max-size');
    await restoresExactly(t, f, kept[0]!, snapshots[kept[0]! - 1]!, 'after gc --max-size');

    // With --keep-layers too: gc writes the base of the layer --keep-layers names as it reads the history, and the
    // cap then asks for more; that base is deleted again and the right one written (no base object elsewhere).
    const both = copyFixture(t, main);
    const doneBoth = await gcRun(t, both, ['--keep-layers', String(LAYERS - 1), '--max-size', String(cap)], `gc --keep-layers ${LAYERS - 1} --max-size ${cap}`);
    if (doneBoth === undefined) return;
    t.equal(doneBoth.plan.keepFrom, firstFit + 1, `with --keep-layers ${LAYERS - 1} too: keeps from layer ${firstFit + 1}`);
    const baseObjects = objectLines(both.archive).filter((line) => line.includes('/base'));
    const baseDir = `layers/${String(firstFit + 1).padStart(6, '0')}/`;
    t.ok(baseObjects.length >= 2 && baseObjects.every((line) => line.startsWith(baseDir)), `base objects only in ${baseDir}`, { baseObjects });
    t.same(objectLines(both.archive), objectLines(f.archive), 'the same objects as gc --max-size alone');
    await verifies(t, both, 'after gc --keep-layers --max-size');

    // A cap below what the newest state needs: an error saying how much it needs, and nothing deleted.
    const small = copyFixture(t, main);
    const objects = objectLines(small.archive);
    const needed = sizes[LAYERS - 1]!; // collecting all but the newest layer
    const tooSmall = Math.floor(needed / 2);
    const run = await blanket(['gc', '--max-size', String(tooSmall), small.archive], { env: envOf(small) });
    expectExit(t, run, 1, `gc --max-size ${tooSmall}`);
    t.match(run.stderr, 'BLANKET_E_CAP_TOO_SMALL', 'the cap is too small');
    const numbers = [...run.stderr.matchAll(/\d+/g)].map((m) => Number(m[0]));
    t.ok(numbers.includes(needed), `the message says ${needed} bytes are needed`, { stderr: run.stderr });
    t.same(objectLines(small.archive), objects, 'nothing was deleted or written');
    // With --keep-layers as well, whose base gc writes as it reads: taken back, nothing left of it.
    const keepToo = await blanket(['gc', '--keep-layers', '3', '--max-size', String(tooSmall), small.archive], { env: envOf(small) });
    expectExit(t, keepToo, 1, `gc --keep-layers 3 --max-size ${tooSmall}`);
    t.match(keepToo.stderr, 'BLANKET_E_CAP_TOO_SMALL', 'the cap is too small');
    t.same(objectLines(small.archive), objects, 'nothing was deleted or written (the base written on the way is gone)');
    // The same on the archive gc already shrank.
    const objectsShrunk = objectLines(f.archive);
    const again = await blanket(['gc', '--max-size', '1000', f.archive], { env: envOf(f) });
    expectExit(t, again, 1, 'gc --max-size 1000 after gc');
    t.match(again.stderr, 'BLANKET_E_CAP_TOO_SMALL', 'the cap is too small');
    t.same(objectLines(f.archive), objectsShrunk, 'nothing was deleted or written');
  });

  await t.test('a damaged archive: gc refuses and deletes nothing', async (t) => {
    /** Flips the middle byte of object `name`; returns the name. */
    const flipMiddleByte = (f: Fixture, name: string): string => {
      const file = join(f.archive, name);
      const bytes = readFileSync(file);
      const at = Math.floor(bytes.length / 2);
      bytes[at] = bytes[at]! ^ 0xff;
      writeFileSync(file, bytes);
      return name;
    };
    const packOf = (f: Fixture, layer: number): string => {
      const name = layerObjects(f.archive, layer).find((n) => n.endsWith('.tar.zst'));
      if (name === undefined) throw new Error(`layer ${layer} has no pack`);
      return `layers/${String(layer).padStart(6, '0')}/${name}`;
    };
    const cases: Array<[string, (f: Fixture) => string]> = [
      [
        'an index in the middle of a layer of several deleted',
        (f) => {
          const name = 'layers/000001/00000004.idx.zst';
          unlinkSync(join(f.archive, name));
          return name;
        },
      ],
      [
        // Layer 3 has this one index: without it the layer's pack (a delta the big file's chain needs) looks like
        // data no index names.
        'the only index of a middle layer deleted',
        (f) => {
          const name = 'layers/000003/00000001.idx.zst';
          unlinkSync(join(f.archive, name));
          return name;
        },
      ],
      [
        'a byte flipped in the middle of an index',
        (f) => flipMiddleByte(f, 'layers/000006/00000001.idx.zst'),
      ],
      [
        // gc reads this one first, to guess the layer it keeps from: the damage is still named as such.
        "a byte flipped in the newest layer's last index",
        (f) => flipMiddleByte(f, `layers/${String(LAYERS).padStart(6, '0')}/${layerObjects(f.archive, LAYERS).filter((n) => n.endsWith('.idx.zst')).pop()!}`),
      ],
      [
        'a pack truncated by 100 bytes',
        (f) => {
          const name = packOf(f, 2);
          truncateSync(join(f.archive, name), statSync(join(f.archive, name)).size - 100);
          return name;
        },
      ],
      [
        'a pack deleted',
        (f) => {
          const name = packOf(f, 5);
          unlinkSync(join(f.archive, name));
          return name;
        },
      ],
    ];
    const indexesOf = (layer: number): string[] => layerObjects(main.archive, layer).filter((n) => n.endsWith('.idx.zst'));
    t.ok(indexesOf(1).length > 4, `layer 1 has ${indexesOf(1).length} indexes`);
    t.same(indexesOf(3), ['00000001.idx.zst'], 'layer 3 has one index');
    for (const [label, damage] of cases) {
      const f = copyFixture(t, main);
      const object = damage(f);
      const objects = objectLines(f.archive);
      const run = await blanket(['gc', '--keep-layers', '2', f.archive], { env: envOf(f) });
      expectExit(t, run, 1, `${label}: gc --keep-layers 2`);
      t.match(run.stderr, 'BLANKET_E_DAMAGED_ARCHIVE', `${label}: the archive is damaged`);
      t.ok(run.stderr.includes(object), `${label}: the message names ${object}`, { stderr: run.stderr });
      t.same(objectLines(f.archive), objects, `${label}: no object was deleted or written`);
      if (label === 'a pack deleted') {
        const dry = await blanket(['gc', '--dry-run', '--keep-layers', '2', f.archive], { env: envOf(f) });
        expectExit(t, dry, 1, `${label}: gc --dry-run refuses too`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// A chain of deltas across layers

t.test('gc keeps every pack of a kept delta chain', async (t) => {
  const work = tmpDir(t, 'blanket-gc-delta-');
  const source = join(work, 'source');
  const f: Fixture = { archive: join(work, 'archive'), cache: join(work, 'cache') };
  mkdirSync(source);
  mkdirSync(f.cache);
  const rng = new Prng(77);
  const big = join(source, 'big.img');
  writeFileSync(big, rng.bytes(9 * MIB + 1234)); // default packs: chunks of 4 MiB, 4 MiB and 1234 bytes over 1 MiB
  writeFileSync(join(source, 'note.txt'), 'version 1\n');
  const snapshots: TreeSnapshot[] = [];
  const backup = async (what: string): Promise<number | undefined> => {
    const run = await blanket(['backup', '--json', source, f.archive], { env: envOf(f) });
    if (!expectExit(t, run, 0, what)) return undefined;
    snapshots.push(await snapshotTree(source, { includeRoot: true }));
    return finishedEvent(run.stdout)?.storedBytes as number;
  };
  if ((await backup('layer 1')) === undefined) return;
  // The middle chunk is edited in layers 2, 3 and 4: a chain 4 → 3 → 2 → 1; the first and last chunks in 4 and 5.
  const edits: Array<Array<[number, number]>> = [
    [[4 * MIB + 1000, 3000]],
    [[4 * MIB + 9000, 2000]],
    [[100, 1000], [4 * MIB + 20_000, 2500]],
    [[8 * MIB + 50, 1500]],
  ];
  for (const [i, layerEdits] of edits.entries()) {
    for (const [at, length] of layerEdits) overwrite(big, at, rng.bytes(length));
    writeFileSync(join(source, 'note.txt'), `version ${i + 2}\n`);
    const stored = await backup(`layer ${i + 2}`);
    if (stored === undefined) return;
    t.ok(stored < 256 * 1024, `layer ${i + 2}: the edits are stored as deltas (${stored} bytes, a 4 MiB chunk would not compress)`);
  }
  const objectsBefore = objectsOf(f.archive);
  const done = await gcRun(t, f, ['--keep-layers', '2'], 'gc --keep-layers 2');
  if (done === undefined) return;
  t.match(done.plan, { keepFrom: 4, collected: [1, 2, 3] }, 'collects layers 1-3');
  t.same(await keptLayers(t, f), [4, 5], 'layers 4 and 5 remain');
  for (const layer of [1, 2, 3]) {
    const packs = [...objectsBefore.keys()].filter((name) => name.startsWith(`layers/00000${layer}/`) && name.endsWith('.tar.zst'));
    t.ok(packs.length > 0 && packs.every((name) => existsSync(join(f.archive, name))), `layer ${layer}'s packs are kept: the chain needs them`);
  }
  await verifies(t, f, 'after gc of a delta chain');
  for (const layer of [4, 5]) await restoresExactly(t, f, layer, snapshots[layer - 1]!, 'delta chain');
  await refusesCollected(t, f, 3, 'delta chain');

  // One more edit on the chain after gc: its delta's bases lie in packs of collected layers.
  overwrite(big, 4 * MIB + 30_000, rng.bytes(1000));
  const stored = await backup('layer 6, after gc');
  if (stored === undefined) return;
  t.ok(stored < 256 * 1024, `layer 6: still a delta (${stored} bytes)`);
  await restoresExactly(t, f, 6, snapshots[5]!, 'delta chain after gc');

  // Damage: every object of layer 1 (the chain's first base) gone. gc refuses, naming the content and its pack.
  const damaged = copyFixture(t, f);
  const layer1 = [...objectsOf(damaged.archive).keys()].filter((name) => name.startsWith('layers/000001/'));
  t.ok(layer1.length >= 2, `layer 1 holds ${layer1.length} objects`);
  for (const name of layer1) rmSync(join(damaged.archive, name));
  const objects = objectLines(damaged.archive);
  const refused = await blanket(['gc', '--keep-layers', '1', damaged.archive], { env: envOf(damaged) });
  expectExit(t, refused, 1, 'gc without the base of a kept delta');
  t.match(refused.stderr, 'BLANKET_E_DAMAGED_ARCHIVE', 'the archive is damaged');
  t.match(refused.stderr, /a delta needs content [0-9a-f]{64} of pack 000001\/\d{8}/, 'the message names the content and its pack');
  t.same(objectLines(damaged.archive), objects, 'nothing was deleted or written');
});
