// Round trip through the real CLI: an awkward tree → backup → restore → the restored tree is identical.
//
// Covers: multi-pack and multi-chunk files (a 5 MiB file with --pack-size 1M), zero-byte files, directory
// mtimes, hard-link groups, symlinks (dangling, looping, non-UTF-8 target), a FIFO, setuid and other modes,
// non-UTF-8 names, long paths; verify, ls (text and --json, a PATH argument with \xNN escapes), layers, an
// idempotent second restore into the same place, and restores of chosen subtrees (one a non-UTF-8 name).

import t from 'tap';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpDir } from '../helpers/cli.js';
import { AWKWARD, MIB, compareTrees, makeAwkwardTree, snapshotTree } from '../helpers/tree.js';
import {
  blanket,
  US,
  cliPath,
  comparePathOrder,
  expectExit,
  finishedEvent,
  isUnder,
  ndjson,
  parentsOf,
  rawPath,
  restrictSnapshot,
  under,
} from '../helpers/integration.js';

const BIG = 5 * MIB + 12345;

t.test('round trip of an awkward tree through the CLI', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  await mkdir(source);
  // As root (how these tests run), also files and symlinks owned by ids that have no name here.
  await makeAwkwardTree(source, { bigFileBytes: BIG, foreignOwner: process.getuid?.() === 0 });
  const before = await snapshotTree(source, { includeRoot: true });
  t.ok(before.some((e) => e.type === 'file' && e.size === 0), 'the tree has zero-byte files');

  const backup = await blanket(['backup', '--pack-size', '1M', '--json', source, archive]);
  if (!expectExit(t, backup, 0, 'backup')) return;
  const events = ndjson(backup.stdout);
  const dataPacks = events.filter((e) => e.type === 'pack-written' && (e.members as number) > 0);
  t.ok(dataPacks.length >= 5, `the 5 MiB file spreads over several 1 MiB packs (${dataPacks.length} packs with data)`);
  const done = events.find((e) => e.type === 'finished');
  t.equal(done?.complete, true, 'layer 1 complete');
  t.equal(done?.layer, 1);
  t.equal(done?.warnings, 0, 'no warnings');

  compareTrees(t, before, await snapshotTree(source, { includeRoot: true }), { message: 'the backup leaves the source as it was' });

  await t.test('verify exits 0', async (t) => {
    const verify = await blanket(['verify', archive]);
    expectExit(t, verify, 0, 'verify');
    t.match(verify.stdout, /archive OK/);
  });

  await t.test('layers shows layer 1 complete', async (t) => {
    const text = await blanket(['layers', archive]);
    expectExit(t, text, 0, 'layers');
    t.match(text.stdout, /^layer 1 .* complete /m);
    const json = await blanket(['layers', '--json', archive]);
    expectExit(t, json, 0, 'layers --json');
    const layers = ndjson(json.stdout);
    t.equal(layers.length, 1, 'one layer');
    t.match(layers[0], { layer: 1, complete: true, through: null });
  });

  await t.test('full restore is exact, and restoring again skips every file', async (t) => {
    const dest = join(tmpDir(t), 'dest');
    const restored = await blanket(['restore', '--json', archive, dest]);
    expectExit(t, restored, 0, 'restore');
    const first = finishedEvent(restored.stdout);
    t.equal(first?.failedFiles, 0, 'no failed files');
    compareTrees(t, before, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'restored tree equals the source' });

    // Files that need content: one name per hard-link group (the other names are links to it).
    const contentFiles = new Set(before.filter((e) => e.type === 'file').map((e) => e.hardLinkGroup ?? e.pathHex)).size;
    t.equal(first?.restoredFiles, contentFiles, `first restore writes every file (${contentFiles})`);
    t.equal(first?.skippedFiles, 0);

    const again = await blanket(['restore', '--json', archive, dest]);
    expectExit(t, again, 0, 'second restore');
    const second = finishedEvent(again.stdout);
    t.equal(second?.restoredFiles, 0, 'second restore writes no file');
    t.equal(second?.skippedFiles, contentFiles, `second restore skips every file (${contentFiles})`);
    t.equal(second?.failedFiles, 0);
    compareTrees(t, before, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'tree still exact after restoring again' });
  });

  await t.test('ls lists every path', async (t) => {
    const expected = before.filter((e) => e.path !== '').map((e) => cliPath(rawPath(e)));
    const json = await blanket(['ls', '--json', archive]);
    expectExit(t, json, 0, 'ls --json');
    const listed = ndjson(json.stdout);
    const paths = listed.map((e) => e.path as string);
    t.equal(paths[0], '/', 'the root comes first');
    t.same([...paths.slice(1)].sort(), [...expected].sort(), 'ls --json lists exactly the source paths');
    t.same(
      paths.slice(1),
      before
        .filter((e) => e.path !== '')
        .map(rawPath)
        .sort(comparePathOrder)
        .map(cliPath),
      'in path order',
    );
    t.ok(paths.includes('names/new\\x0aline') && paths.includes('names/tab\\x09here'), 'control characters are escaped');

    const nonUtf8 = cliPath(AWKWARD.nonUtf8File);
    t.equal(nonUtf8, 'names/f\\xff\\xfe');
    t.ok(paths.includes(nonUtf8), 'a non-UTF-8 name is shown with \\xNN escapes');
    t.match(listed.find((e) => e.path === 'big/big.bin'), { kind: 'file', size: BIG }, 'the big file');
    t.match(listed.find((e) => e.path === 'special/fifo'), { kind: 'fifo' });
    t.match(listed.find((e) => e.path === 'sym/dangling'), { kind: 'symlink', target: 'no/such/target' });
    t.match(listed.find((e) => e.path === 'sym/odd-target'), { kind: 'symlink', target: 'target-\\xff\\x0a' });
    t.match(listed.find((e) => e.path === cliPath(AWKWARD.setuidFile)), { mode: 0o4755 }, 'setuid mode listed');
    t.match(listed.find((e) => e.path === 'zero/empty-file'), { kind: 'file', size: 0 });

    const text = await blanket(['ls', archive]);
    expectExit(t, text, 0, 'ls');
    const lines = text.stdout.split('\n').filter((l) => l !== '');
    t.equal(lines.length, expected.length + 1, 'ls prints one line per path');
    t.ok(lines.some((l) => l.endsWith('  names/f\\xff\\xfe')), 'ls shows the escaped non-UTF-8 name');
    t.ok(lines.some((l) => l.endsWith('  sym/loop-a -> loop-b')), 'ls shows symlink targets');

    // The escaped form is accepted back as a PATH argument.
    const one = await blanket(['ls', '--json', archive, nonUtf8]);
    expectExit(t, one, 0, 'ls PATH with \\xNN escapes');
    t.same(
      ndjson(one.stdout).map((e) => e.path),
      [nonUtf8],
      'ls of the non-UTF-8 file lists just it',
    );
    const dir = cliPath(AWKWARD.nonUtf8Dir);
    const sub = await blanket(['ls', '--json', archive, dir]);
    expectExit(t, sub, 0, 'ls of a non-UTF-8 directory');
    t.same(
      ndjson(sub.stdout).map((e) => e.path),
      under(before, [AWKWARD.nonUtf8Dir]).map((e) => cliPath(rawPath(e))),
      'ls of a non-UTF-8 directory lists it and its contents',
    );
    // Directory arguments as shells complete them, or written from the root, mean the same path.
    const hard = ndjson((await blanket(['ls', '--json', archive, 'hard'])).stdout).map((e) => e.path);
    t.same(hard, ['hard', 'hard/one', 'hard/sub', 'hard/sub/two'], 'ls hard');
    for (const form of ['hard/', './hard', '/hard', 'hard//']) {
      const other = await blanket(['ls', '--json', archive, form]);
      expectExit(t, other, 0, `ls ${form}`);
      t.same(ndjson(other.stdout).map((e) => e.path), hard, `ls ${form} is ls hard`);
    }
    const up = await blanket(['ls', archive, '../hard']);
    expectExit(t, up, 2, 'ls ../hard');
    const missing = await blanket(['ls', archive, 'no/such/path']);
    expectExit(t, missing, 1, 'ls of a missing path');
    t.match(missing.stderr, /BLANKET_E_NOT_FOUND/);
  });

  await t.test('subtree restore restores exactly the given paths', async (t) => {
    const dest = join(tmpDir(t), 'dest');
    const chosen = [Buffer.from('hard'), AWKWARD.nonUtf8Dir];
    const restored = await blanket(['restore', '--json', archive, dest, 'hard/', cliPath(AWKWARD.nonUtf8Dir)]);
    expectExit(t, restored, 0, 'subtree restore');
    t.equal(finishedEvent(restored.stdout)?.failedFiles, 0, 'no failed files');
    const actual = await snapshotTree(dest);
    // hard/one and hard/sub/two stay one inode (hard-other/three, the group's first name in the source, was not asked for).
    const expected = restrictSnapshot(before, (e) => isUnder(rawPath(e), chosen));
    t.equal(expected.find((e) => e.path === 'hard/sub/two')?.hardLinkGroup, Buffer.from('hard/one').toString('hex'));
    t.ok(expected.length >= 6, `the chosen subtrees hold ${expected.length} entries`);
    compareTrees(t, expected, under(actual, chosen), { mtimePrecisionNs: US, message: 'restored subtrees equal the source subtrees' });
    t.same(
      actual.filter((e) => under([e], chosen).length === 0).map((e) => e.path),
      parentsOf(before, chosen).map((e) => e.path),
      'nothing else is restored but the directories that hold the chosen paths',
    );

    const single = join(tmpDir(t), 'dest');
    const files = [AWKWARD.nonUtf8File, AWKWARD.bigFile];
    const file = await blanket(['restore', archive, single, cliPath(AWKWARD.nonUtf8File), 'big/big.bin']);
    expectExit(t, file, 0, 'restore of two single files');
    const got = await snapshotTree(single);
    compareTrees(t, under(before, files), under(got, files), { mtimePrecisionNs: US, message: 'single files exact' });
    t.same(
      got.filter((e) => under([e], files).length === 0).map((e) => e.path),
      parentsOf(before, files).map((e) => e.path),
      'only their directories besides',
    );
  });
});
