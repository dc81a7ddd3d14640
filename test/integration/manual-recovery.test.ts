// Runs the manual-recovery recipe exactly as docs/FORMAT.md prints it (zstd + tar + awk + sh, no Blanket) and
// compares the tree it restores with the source, over several layers with edits, deletions and chunked files.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { appendFileSync, closeSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, runCli, tmpDir } from '../helpers/cli.js';
import { ensureDebianTools } from '../helpers/tools.js';
import { compareTrees, makeAwkwardTree, mutateTree, snapshotTree } from '../helpers/tree.js';

ensureDebianTools([
  { command: 'zstd', pkg: 'zstd' },
  { command: 'tar', pkg: 'tar' },
  { command: 'gawk', pkg: 'gawk' },
  { command: 'rdiff', pkg: 'rdiff' },
]);

function recipe(): string {
  const doc = readFileSync(join(REPO_ROOT, 'docs', 'FORMAT.md'), 'utf8');
  const m = /<!-- recipe:begin -->\n```sh\n([\s\S]*?)```\n<!-- recipe:end -->/.exec(doc);
  if (!m) throw new Error('docs/FORMAT.md has no recipe block');
  return m[1]!;
}

t.test('the recipe in docs/FORMAT.md restores the newest state without Blanket', async (t) => {
  const work = tmpDir(t);
  const src = join(work, 'src');
  const archive = join(work, 'archive');
  const script = join(work, 'restore-by-hand.sh');
  writeFileSync(script, recipe());
  spawnSync('mkdir', [src]);
  await makeAwkwardTree(src, { seed: 7, bigFileBytes: 3 << 20 });

  const env = { XDG_CACHE_HOME: join(work, 'cache') };
  const backup = async (): Promise<void> => {
    const r = await runCli(['backup', src, archive, '--pack-size', '512K'], { env });
    t.equal(r.code, 0, `backup: ${r.stderr}`);
  };
  await backup();
  // The big file edited in place over three runs: a chain of deltas (on the chunk stored whole by the first).
  for (const round of [0, 1, 2]) {
    const fd = openSync(join(src, 'big', 'big.bin'), 'r+');
    writeSync(fd, Buffer.alloc(2000, 0x41 + round), 0, 2000, (1 << 20) + 1000 + round * 300);
    closeSync(fd);
    await backup();
  }
  const deepest = Math.max(
    0,
    ...readdirSync(join(archive, 'layers'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.idx.zst'))
      .flatMap((f) => spawnSync('zstd', ['-dcq', join(archive, 'layers', f)], { encoding: 'utf8' }).stdout.split('\n'))
      .filter((line) => line.startsWith('H\t') && line.split('\t')[3] === 'rdiff')
      .map((line) => Number(line.split('\t')[8])),
  );
  t.ok(deepest >= 3, `the archive holds a chain of ${deepest} deltas for the recipe to follow`);
  for (const [seed, kind] of [
    [1, 'edit-content'],
    [2, 'delete-file'],
    [3, 'rename-file'],
    [4, 'file-to-dir'],
    [5, 'dir-to-symlink'],
    [6, 'chmod'],
  ] as const) {
    await mutateTree(src, seed, kind);
  }
  appendFileSync(join(src, 'big', 'big.bin'), Buffer.alloc(4096, 1)); // a changed multi-chunk file
  renameSync(join(src, 'plain'), join(src, 'plain-moved'));
  await backup();
  await backup(); // a no-change layer: index only, no segments

  const runRecipe = async (label: string): Promise<void> => {
    for (const awk of ['mawk', 'gawk']) {
      const out = join(work, `hand-${awk}`);
      // Debian's /usr/bin/awk may be either; run the recipe under both.
      const bin = join(work, `bin-${awk}`);
      spawnSync('mkdir', ['-p', bin]);
      spawnSync('ln', ['-sf', `/usr/bin/${awk}`, join(bin, 'awk')]);
      const run = spawnSync('sh', [script, archive, out], { encoding: 'utf8', env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
      t.equal(run.status, 0, `${label}: recipe under ${awk} exits 0: ${run.stderr}`);
      t.equal(run.stderr, '', `${label}: recipe under ${awk} prints no errors`);
      compareTrees(t, await snapshotTree(src), await snapshotTree(out), {
        ignoreFields: ['hardLinkGroup'], // hard links come back as copies, as the doc says
        message: `${label}: recipe under ${awk} restores the source exactly`,
      });
      rmSync(out, { recursive: true, force: true });
    }
  };
  await runRecipe('all layers');

  // After a gc the newest state starts from a base; collected layers' indexes must not be replayed.
  const collect = await runCli(['gc', archive, '--keep-layers', '2'], { env });
  t.equal(collect.code, 0, `gc: ${collect.stderr}`);
  t.ok(readdirSync(join(archive, 'layers'), { recursive: true, encoding: 'utf8' }).some((f) => /^\d{6}\/base$/.test(f)), 'gc wrote a base');
  await mutateTree(src, 8, 'delete-file');
  await mutateTree(src, 9, 'edit-content');
  await backup();
  await runRecipe('after gc');
});

