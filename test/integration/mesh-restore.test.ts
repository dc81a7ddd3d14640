// restore ARCHIVE DEST --from COPY: two copies of one archive, each damaged in different places (deleted, flipped,
// truncated packs and indexes), restore exactly together; content damaged in every copy is all that fails.

import t from 'tap';
import { cpSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpDir } from '../helpers/cli.js';
import { blanket, expectExit, US } from '../helpers/integration.js';
import { MIB, compareTrees, makeAwkwardTree, mutateTree, snapshotTree } from '../helpers/tree.js';
import { startS3Server } from '../helpers/s3-server.js';
import { S3Store } from '../../src/stores/s3.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';

type Damage = 'delete' | 'truncate' | 'flip';

function damage(file: string, how: Damage): void {
  const bytes = readFileSync(file);
  if (how === 'delete') rmSync(file);
  else if (how === 'truncate') truncateSync(file, Math.floor(bytes.length / 2));
  else {
    // Many bytes, so that some member's content is surely hit (one byte may land in padding).
    for (let at = 100; at < bytes.length; at += 997) bytes[at] = bytes[at]! ^ 0xff;
    writeFileSync(file, bytes);
  }
}

/** Object names under layers/, sorted: packs and indexes. */
function objects(archive: string): { packs: string[]; indexes: string[] } {
  const all = readdirSync(join(archive, 'layers'), { recursive: true, encoding: 'utf8' }).map((f) => `layers/${f}`).sort();
  return { packs: all.filter((f) => f.endsWith('.tar.zst')), indexes: all.filter((f) => f.endsWith('.idx.zst')) };
}

t.test('two copies damaged in different places restore exactly together', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 31, bigFileBytes: 3 * MIB + 3 });
  const archive = join(work, 'archive');
  expectExit(t, await blanket(['backup', '--pack-size', '128K', source, archive]), 0, 'backup 1');
  await mutateTree(source, 32, 'edit-content');
  expectExit(t, await blanket(['backup', '--pack-size', '128K', source, archive]), 0, 'backup 2');
  const expected = await snapshotTree(source, { includeRoot: true });
  const { packs, indexes } = objects(archive);
  const layer1Packs = packs.filter((p) => p.startsWith('layers/000001/'));
  const layer1Indexes = indexes.filter((i) => i.startsWith('layers/000001/'));
  t.ok(layer1Packs.length >= 8 && layer1Indexes.length >= 6, `enough objects to damage (${layer1Packs.length} packs, ${layer1Indexes.length} indexes)`);

  const a = join(work, 'copy-a');
  const b = join(work, 'copy-b');
  cpSync(archive, a, { recursive: true });
  cpSync(archive, b, { recursive: true });
  const pick = (list: string[], i: number): string => list[Math.floor(((i + 1) * list.length) / 8)]!;
  const inA: Array<[string, Damage]> = [
    [pick(layer1Packs, 0), 'delete'],
    [pick(layer1Packs, 2), 'flip'],
    [pick(layer1Indexes, 1), 'truncate'],
  ];
  const inB: Array<[string, Damage]> = [
    [pick(layer1Packs, 4), 'flip'],
    [pick(layer1Indexes, 3), 'delete'],
    [pick(layer1Packs, 6), 'truncate'],
  ];
  for (const [object, how] of inA) damage(join(a, object), how);
  for (const [object, how] of inB) damage(join(b, object), how);

  // Each copy alone is not enough.
  for (const [label, copy] of [['a', a], ['b', b]] as const) {
    const alone = await blanket(['restore', copy, join(tmpDir(t), 'dest')]);
    t.equal(alone.code, 3, `copy ${label} alone: restore exits 3 (damage)`, { stdout: alone.stdout });
  }

  const dest = join(work, 'dest');
  const mesh = await blanket(['restore', a, dest, '--from', b]);
  t.equal(mesh.code, 3, 'together: exit 3, since the copies need repair', { stderr: mesh.stderr });
  compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'together: the tree, exactly' });
  t.match(mesh.stdout, /restored \d+ files/, 'a summary');
  t.notMatch(mesh.stdout, /FAILED/, 'no file failed');
  // What the restore had to go around is named, with the copy: all of copy a's damage here, and copy b's missing
  // index. Copy b's damaged packs were not needed (copy a's are intact), so not read: verify each copy for that.
  t.match(mesh.stdout, new RegExp(`copy ${a}: 1 objects missing \\(${inA[0]![0]}\\)`), "copy a's deleted pack");
  t.match(mesh.stdout, new RegExp(`copy ${a}: ${inA[1]![0]}: damaged`), "copy a's flipped pack");
  t.match(mesh.stdout, new RegExp(`copy ${a}: ${inA[2]![0]}: .*truncated`), "copy a's truncated index");
  t.match(mesh.stdout, new RegExp(`copy ${b}: 1 objects missing \\(${inB[1]![0]}\\)`), "copy b's deleted index");

  // The same pack damaged in both copies: only the files whose content it holds fail; the others are exact.
  const both = pick(layer1Packs, 5);
  damage(join(a, both), 'flip');
  damage(join(b, both), 'flip');
  const dest2 = join(work, 'dest2');
  const partial = await blanket(['restore', a, dest2, '--from', b, '--json']);
  t.equal(partial.code, 3, 'a pack damaged in every copy: exit 3');
  const failed = partial.stdout
    .split('\n')
    .filter((line) => line.includes('"warning"') && line.includes('"path"'))
    .map((line) => (JSON.parse(line) as { path?: string }).path!)
    .filter((path) => path !== undefined);
  const finished = JSON.parse(partial.stdout.split('\n').filter((l) => l.includes('"finished"')).at(-1)!) as { failedFiles: number; passes: number };
  t.ok(finished.failedFiles > 0, `files fail (${finished.failedFiles})`);
  t.ok(finished.passes >= 2, `after trying both copies (${finished.passes} passes)`);
  const restored = await snapshotTree(dest2, { includeRoot: true });
  const byPath = new Map(restored.map((e) => [e.path, e]));
  let exact = 0;
  for (const entry of expected) {
    if (entry.type !== 'file') continue;
    const got = byPath.get(entry.path);
    if (got === undefined) t.ok(failed.some((f) => f.includes(entry.path.split('/').at(-1)!)), `${entry.path} is missing only because it was reported failed`);
    else if (got.sha256 === entry.sha256) exact++;
    else t.fail(`${entry.path} restored with the wrong content`);
  }
  t.ok(exact > 20, `every other file exact (${exact})`);

  // Another archive of the same source is merged by time: made last, it is the newest everywhere.
  const other = join(work, 'other');
  expectExit(t, await blanket(['backup', source, other]), 0, 'another archive');
  const dest3 = join(work, 'dest3');
  const merged = await blanket(['restore', a, dest3, '--from', other]);
  t.match(merged.stdout, /merged by time: .*other: layers 1-1/, 'two archives: merged by time');
  compareTrees(t, expected, await snapshotTree(dest3, { includeRoot: true }), { mtimePrecisionNs: US, message: 'two archives: the newer one' });
  // A copy whose header is gone cannot be placed among two archives.
  const headless = join(work, 'headless');
  cpSync(b, headless, { recursive: true });
  rmSync(join(headless, 'blanket.json'));
  const unplaced = await blanket(['restore', a, join(work, 'dest4'), '--from', other, '--from', headless]);
  t.equal(unplaced.code, 2, 'a copy without a header among two archives: refused');
  t.match(unplaced.stderr, /headless has no readable header, so it cannot be told which of the 2 archives/);
});

t.test('a local copy and an S3 copy, each damaged, restore exactly together', async (t) => {
  const server = await startS3Server();
  t.teardown(() => server.stop());
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 33, bigFileBytes: 2 * MIB + 1 });
  const archive = join(work, 'archive');
  expectExit(t, await blanket(['backup', '--pack-size', '128K', source, archive]), 0, 'backup');
  // The S3 copy: every object uploaded as it is.
  const s3 = new S3Store({ bucket: server.bucket, prefix: 'copy/', endpoint: server.endpoint, credentials: server.credentials });
  t.teardown(() => s3.close());
  const names = ['blanket.json', ...readdirSync(join(archive, 'layers'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.zst')).map((f) => `layers/${f}`)];
  for (const name of names) await s3.put(name, readFileSync(join(archive, name)));
  const { packs, indexes } = objects(archive);
  await s3.delete(packs[1]!);
  await s3.delete(indexes[2]!);
  damage(join(archive, packs[3]!), 'truncate');
  damage(join(archive, indexes[4]!), 'flip');
  const dest = join(work, 'dest');
  const env = { ...server.env, XDG_CACHE_HOME: join(work, 'cache') };
  const mesh = await blanket(['restore', '--s3-endpoint', server.endpoint, archive, dest, '--from', `s3://${server.bucket}/copy`], { env });
  t.equal(mesh.code, 3, 'exit 3: both copies need repair', { stderr: mesh.stderr });
  compareTrees(t, await snapshotTree(source, { includeRoot: true }), await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'the tree, exactly' });
});
