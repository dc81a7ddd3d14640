// Incremental backups through the real CLI: one layer per mutation, every layer restorable as it was.
//
// Layer 1 is the awkward tree; each later layer follows one mutateTree kind (edit, delete, rename, file→dir,
// dir→symlink, chmod, touch-mtime, and the same-size-same-mtime edit that only ctime reveals). After every
// backup the source is snapshotted; then every layer is restored with --layer N into a fresh directory and
// must equal its snapshot exactly, and the newest layer also without --layer. A no-change run adds at most
// 16 KiB and is listed complete; a renamed 2 MiB file is not stored again.

import t from 'tap';
import { appendFile, copyFile, mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpDir } from '../helpers/cli.js';
import {
  MIB,
  MUTATION_KINDS,
  Prng,
  SNEAKY_MUTATION_KINDS,
  compareTrees,
  makeAwkwardTree,
  mutateTree,
  snapshotTree,
  type MutationKind,
  type TreeSnapshot,
} from '../helpers/tree.js';
import { blanket, US, expectExit, finishedEvent, ndjson, treeBytes } from '../helpers/integration.js';

t.test('every layer restores to its own snapshot', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 7, bigFileBytes: 2 * MIB + 777 });

  const snapshots: TreeSnapshot[] = [];
  const labels: string[] = [];
  const backup = async (label: string): Promise<Record<string, unknown> | undefined> => {
    const run = await blanket(['backup', '--pack-size', '1M', '--json', source, archive]);
    if (!expectExit(t, run, 0, `backup after ${label}`)) return undefined;
    const events = ndjson(run.stdout);
    const done = events.find((e) => e.type === 'finished');
    t.equal(done?.complete, true, `layer ${snapshots.length + 1} (${label}) complete`);
    t.equal(done?.layer, snapshots.length + 1, `layer number ${snapshots.length + 1}`);
    if (snapshots.length > 0) {
      // Every mutation changes at least one path (and its directory's mtime): the layer's index lists entries.
      const entries = events.filter((e) => e.type === 'pack-written').reduce((sum, e) => sum + (e.entries as number), 0);
      t.ok(entries > 0, `the change is recorded (${entries} index entries)`);
    }
    snapshots.push(await snapshotTree(source, { includeRoot: true }));
    labels.push(label);
    return done;
  };

  await backup('initial tree');
  let sneakyPath: Buffer | undefined;
  const kinds: MutationKind[] = [...MUTATION_KINDS, ...SNEAKY_MUTATION_KINDS];
  for (const [i, kind] of kinds.entries()) {
    const mutation = await mutateTree(source, 100 + i, kind);
    if (kind === 'edit-keep-mtime') sneakyPath = mutation.rawPath;
    const done = await backup(`${kind}: ${mutation.path} ${mutation.detail}`);
    if (done === undefined) return;
    if (kind === 'edit-keep-mtime' || kind === 'edit-content') {
      t.match(done, { changedFiles: 1, newFiles: 0, deleted: 0 }, `${kind} is seen as one changed file`);
    }
  }
  // Changes mutateTree does not make: a directory with contents becomes a symlink, a symlink becomes a directory
  // with files, a hard-linked file is edited in place (all its names change), and a new file repeats old content.
  await rm(join(source, 'plain', 'd2'), { recursive: true });
  await symlink('d1', join(source, 'plain', 'd2'));
  await rm(join(source, 'sym', 'relative'));
  await mkdir(join(source, 'sym', 'relative'));
  await writeFile(join(source, 'sym', 'relative', 'now-a-file'), 'was a symlink\n');
  await appendFile(join(source, 'hard', 'one'), 'more\n');
  await copyFile(join(source, 'hard', 'sub', 'two'), join(source, 'copy-of-hard'));
  await backup('non-empty dir to symlink, symlink to dir, hard-linked file edited, copied file');

  // The sneaky edit changed content at the same size and mtime: only ctime (and the content) tell.
  const sneaky = sneakyPath!.toString('hex');
  const was = snapshots.at(-3)!.find((e) => e.pathHex === sneaky);
  const now = snapshots.at(-2)!.find((e) => e.pathHex === sneaky);
  t.ok(was && now && was.size === now.size && was.mtimeNs === now.mtimeNs && was.sha256 !== now.sha256, 'the sneaky edit kept size and mtime');

  const layerCount = snapshots.length;
  const layers = ndjson((await blanket(['layers', '--json', archive])).stdout);
  t.equal(layers.length, layerCount, `${layerCount} layers listed`);
  t.ok(
    layers.every((l) => l.complete === true),
    'all complete',
  );

  for (let layer = 1; layer <= layerCount; layer++) {
    const dest = join(tmpDir(t), 'dest');
    const restored = await blanket(['restore', '--json', '--layer', String(layer), archive, dest]);
    if (!expectExit(t, restored, 0, `restore --layer ${layer}`)) continue;
    t.equal(finishedEvent(restored.stdout)?.failedFiles, 0, `layer ${layer}: no failed files`);
    compareTrees(t, snapshots[layer - 1]!, await snapshotTree(dest, { includeRoot: true }), {
      mtimePrecisionNs: US,
      message: `layer ${layer} (${labels[layer - 1]}) restores exactly`,
    });
  }
  const newest = join(tmpDir(t), 'dest');
  const restored = await blanket(['restore', archive, newest]);
  expectExit(t, restored, 0, 'restore of the newest state');
  compareTrees(t, snapshots.at(-1)!, await snapshotTree(newest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'newest state without --layer' });

  await t.test('restoring one layer over another in the same place', async (t) => {
    // Types change between these layers (file → directory, directory → symlink, symlink → directory), so DEST
    // holds things in the way. Restore does not delete what the archive does not have: compare what it has.
    const dest = join(tmpDir(t), 'dest');
    for (const layer of [1, layerCount, Math.ceil(layerCount / 2)]) {
      const run = await blanket(['restore', '--json', '--layer', String(layer), archive, dest]);
      if (!expectExit(t, run, 0, `restore --layer ${layer} over the one before`)) return;
      t.equal(finishedEvent(run.stdout)?.failedFiles, 0, 'no failed files');
      const expected = snapshots[layer - 1]!;
      const wanted = new Set(expected.map((e) => e.pathHex));
      compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), {
        mtimePrecisionNs: US,
        ignore: (_path, e) => !wanted.has(e.pathHex),
        message: `layer ${layer} restored over an earlier restore`,
      });
    }
  });

  await t.test('verify after many layers', async (t) => {
    expectExit(t, await blanket(['verify', archive]), 0, 'verify');
  });

  await t.test('a run with nothing changed adds almost nothing', async (t) => {
    const size = await treeBytes(archive);
    const run = await blanket(['backup', '--json', source, archive]);
    expectExit(t, run, 0, 'no-change backup');
    const done = finishedEvent(run.stdout);
    t.match(done, { complete: true, layer: layerCount + 1, newFiles: 0, changedFiles: 0, deleted: 0, packs: 0 }, 'nothing new');
    const grown = (await treeBytes(archive)) - size;
    t.ok(grown <= 16 * 1024, `archive grew by ${grown} bytes (at most 16 KiB)`);
    const listed = ndjson((await blanket(['layers', '--json', archive])).stdout);
    t.match(listed.at(-1), { layer: layerCount + 1, complete: true, through: null }, 'the no-change layer is listed complete');
    const text = await blanket(['layers', archive]);
    t.match(text.stdout, new RegExp(`^layer ${layerCount + 1} .* complete `, 'm'));
    const dest = join(tmpDir(t), 'dest');
    expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore of the no-change layer');
    compareTrees(t, snapshots.at(-1)!, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'no-change layer restores the same tree' });
  });

  await t.test('a renamed file is not stored again', async (t) => {
    const big = new Prng(99).bytes(2 * MIB);
    await writeFile(join(source, 'two-mib.bin'), big);
    let size = await treeBytes(archive);
    expectExit(t, await blanket(['backup', source, archive]), 0, 'backup with the new 2 MiB file');
    const added = (await treeBytes(archive)) - size;
    t.ok(added >= 2 * MIB, `storing it took ${added} bytes (random data does not compress)`);

    await mkdir(join(source, 'moved'));
    await rename(join(source, 'two-mib.bin'), join(source, 'moved', 'renamed.bin'));
    size = await treeBytes(archive);
    const run = await blanket(['backup', '--json', source, archive]);
    expectExit(t, run, 0, 'backup after the rename');
    const grown = (await treeBytes(archive)) - size;
    t.ok(grown < 64 * 1024, `the archive grew by ${grown} bytes, far less than the 2 MiB file`);
    t.match(finishedEvent(run.stdout), { newFiles: 1, deleted: 1, newContentBytes: 0 });
    const expected = await snapshotTree(source, { includeRoot: true });
    const dest = join(tmpDir(t), 'dest');
    expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore after the rename');
    compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'renamed file restored' });
  });
});

t.test('a pack lost from the archive: the next backup stores its content again, and the new layer restores whole', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  await mkdir(join(source, 'a'), { recursive: true });
  await mkdir(join(source, 'b'), { recursive: true });
  const rng = new Prng(7);
  // Small packs, so the tree spans several; a multi-chunk file and duplicated content are among them.
  for (let i = 0; i < 40; i++) await writeFile(join(source, i < 20 ? 'a' : 'b', `f${i}`), rng.bytes(20_000 + i));
  await writeFile(join(source, 'b', 'big'), rng.bytes(300_000));
  await copyFile(join(source, 'a', 'f3'), join(source, 'b', 'copy-of-f3'));
  expectExit(t, await blanket(['backup', '--pack-size', '128K', source, archive]), 0, 'first backup');
  const packs = (await import('node:fs')).readdirSync(join(archive, 'layers', '000001')).filter((n) => n.endsWith('.tar.zst')).sort();
  t.ok(packs.length >= 4, `${packs.length} packs`);
  const lost = packs[1]!;
  await rm(join(archive, 'layers', '000001', lost));

  const run = await blanket(['backup', '--json', '--pack-size', '128K', source, archive]);
  expectExit(t, run, 0, 'backup after the loss');
  const warnings = ndjson(run.stdout).filter((e) => e.type === 'warning');
  t.match(warnings, [{ code: 'missing-pack', object: `layers/000001/${lost}` }], 'the missing pack is named, once');
  t.ok((finishedEvent(run.stdout)!.newContentBytes as number) > 0, 'its content was stored again');
  const dest = join(tmpDir(t), 'dest');
  expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore of the newest layer needs nothing from the lost pack');
  const verify = await blanket(['verify', archive]);
  expectExit(t, verify, 3, 'verify still reports layer 1 as damaged');
  t.match(verify.stdout, `DAMAGED layers/000001/${lost}`);
  compareTrees(t, await snapshotTree(source, { includeRoot: true }), await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'layer 2 restores the whole tree' });
  const again = await blanket(['backup', '--json', '--pack-size', '128K', source, archive]);
  expectExit(t, again, 0, 'a third backup');
  t.match(finishedEvent(again.stdout), { newContentBytes: 0 }, 'reads nothing again: layer 2 holds it all');
});
