// gc rewrites a kept pack of a collected layer that is mostly unneeded: in place, under its name; a rewrite stopped
// between its writes leaves a consistent archive, which verify accepts and the next gc finishes.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { blanket, expectExit, finishedEvent, US } from '../helpers/integration.js';
import { tmpDir } from '../helpers/cli.js';
import { randomBytes } from '../helpers/bytes.js';
import { ensureDebianTools } from '../helpers/tools.js';
import { compareTrees, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { FaultInjectingStore } from '../../src/stores/faults.js';
import { LocalStore } from '../../src/stores/local.js';
import { Monitor } from '../../src/stages/monitor.js';
import { gc } from '../../src/pipeline/gc.js';
import { verify } from '../../src/pipeline/verify.js';

ensureDebianTools([{ command: 'zstd', pkg: 'zstd' }]);

const PACK = join('layers', '000001', '00000001');

/** Layer 1: a file kept to the end and a bigger one deleted in layer 2; layers 2 and 3 change a small file. */
async function archiveWithWaste(t: Test): Promise<{ work: string; src: string; archive: string; env: Record<string, string>; snapshots: Map<number, TreeSnapshot> }> {
  const work = tmpDir(t);
  const src = join(work, 'src');
  const archive = join(work, 'archive');
  const env = { XDG_CACHE_HOME: join(work, 'cache') };
  const snapshots = new Map<number, TreeSnapshot>();
  const write = (name: string, bytes: Buffer | string): void => writeFileSync(join(src, name), bytes);
  mkdirSync(src);
  write('keep.bin', randomBytes(300_000, 1));
  write('gone.bin', randomBytes(2_000_000, 2));
  write('a.txt', 'one\n');
  for (let layer = 1; layer <= 3; layer++) {
    if (layer === 2) rmSync(join(src, 'gone.bin'));
    if (layer > 1) write('a.txt', `version ${layer}\n`);
    const r = await blanket(['backup', src, archive], { env });
    expectExit(t, r, 0, `backup ${layer}`);
    snapshots.set(layer, await snapshotTree(src));
  }
  return { work, src, archive, env, snapshots };
}

/** The text of index object `file` (zstd, as any reader would). */
function indexText(file: string): string {
  const run = spawnSync('zstd', ['-dcq', file], { encoding: 'latin1' });
  if (run.status !== 0) throw new Error(`zstd -d ${file}: ${run.stderr}`);
  return run.stdout;
}

t.test('a mostly unneeded pack of a collected layer is rewritten in place; kept layers restore exactly', async (t) => {
  const { work, archive, env, snapshots } = await archiveWithWaste(t);
  const before = statSync(join(archive, `${PACK}.tar.zst`)).size;
  const dry = await blanket(['gc', archive, '--keep-layers', '2', '--dry-run'], { env });
  expectExit(t, dry, 0, 'dry run');
  t.match(dry.stdout + dry.stderr, /would rewrite 1 of them/);
  t.equal(statSync(join(archive, `${PACK}.tar.zst`)).size, before, 'the dry run changed nothing');
  const run = await blanket(['gc', archive, '--keep-layers', '2'], { env });
  expectExit(t, run, 0, 'gc');
  const after = statSync(join(archive, `${PACK}.tar.zst`)).size;
  t.ok(after < before / 5, `the pack shrank from ${before} to ${after} bytes`);
  const index = indexText(join(archive, `${PACK}.idx.zst`));
  t.match(index, new RegExp(`^packsize\\t${after}$`, 'm'), 'its index records the new size');
  t.notMatch(index, /^replaces\t/m, 'and no rewrite in progress');
  t.notMatch(index, /^[SE]\t/m, 'and no S or E lines (a collected layer)');
  t.equal(index.match(/^H\t/gm)?.length, 1, 'one member left');
  for (const layer of [2, 3]) {
    const dest = join(work, `restored-${layer}`);
    expectExit(t, await blanket(['restore', archive, dest, '--layer', String(layer)], { env }), 0, `restore layer ${layer}`);
    compareTrees(t, snapshots.get(layer)!, await snapshotTree(dest), { mtimePrecisionNs: US, message: `layer ${layer} restores exactly` });
  }
  expectExit(t, await blanket(['verify', archive], { env }), 0, 'verify');
  expectExit(t, await blanket(['verify', '--quick', archive], { env }), 0, 'verify --quick');
  const none = await blanket(['gc', archive, '--keep-layers', '2', '--max-waste', '0'], { env });
  expectExit(t, none, 0, 'gc again');
  t.equal(statSync(join(archive, `${PACK}.tar.zst`)).size, after, 'a pack with nothing unneeded is not rewritten again');
});

t.test('a rewrite stopped after its first index leaves a consistent archive, and the next gc finishes it', async (t) => {
  const { work, archive, env, snapshots } = await archiveWithWaste(t);
  const before = statSync(join(archive, `${PACK}.tar.zst`)).size;
  // The data object's put fails: the stop between index' and data'.
  const store = new FaultInjectingStore(new LocalStore(archive), [{ operation: 'put', name: `${PACK}.tar.zst`, fault: { kind: 'error', transient: false } }]);
  const warnings: string[] = [];
  const monitor = new Monitor((event) => {
    if (event.type === 'warning') warnings.push(event.message);
  });
  process.env['XDG_CACHE_HOME'] = env.XDG_CACHE_HOME;
  await t.rejects(gc({ store, monitor, policy: { keepLayers: 2 } }), { code: 'BLANKET_E_STORE_IO' }, 'gc fails on the data put');
  t.equal(store.injected, 1, 'the fault was injected');
  const index = indexText(join(archive, `${PACK}.idx.zst`));
  t.match(index, new RegExp(`^replaces\\t${before}$`, 'm'), 'the index says the old data object may still be there');
  t.equal(statSync(join(archive, `${PACK}.tar.zst`)).size, before, 'and it still is');
  rmSync(join(archive, 'lock'), { force: true }); // the failed run released it; a kill would leave it for the next run to clear
  const checked = await verify({ store: new LocalStore(archive), monitor });
  t.same(checked.damaged, [], 'verify finds no damage');
  const quick = await verify({ store: new LocalStore(archive), monitor, quick: true });
  t.same(quick.damaged, [], 'nor does verify --quick');
  for (const layer of [2, 3]) {
    const dest = join(work, `mid-${layer}`);
    expectExit(t, await blanket(['restore', archive, dest, '--layer', String(layer)], { env }), 0, `restore layer ${layer} mid-rewrite`);
    compareTrees(t, snapshots.get(layer)!, await snapshotTree(dest), { mtimePrecisionNs: US, message: `layer ${layer} restores exactly mid-rewrite` });
  }
  const finish = await blanket(['gc', archive, '--keep-layers', '2'], { env });
  expectExit(t, finish, 0, 'the next gc');
  t.ok(statSync(join(archive, `${PACK}.tar.zst`)).size < before / 5, 'finished the rewrite');
  t.notMatch(indexText(join(archive, `${PACK}.idx.zst`)), /^replaces\t/m, 'and recorded it done');
  expectExit(t, await blanket(['verify', archive], { env }), 0, 'verify after');
});

t.test("gc prunes the local signature cache to the newest state's chunks, and the next backup still stores a delta", async (t) => {
  const work = tmpDir(t);
  const src = join(work, 'src');
  const archive = join(work, 'archive');
  const cache = join(work, 'cache');
  const env = { XDG_CACHE_HOME: cache };
  mkdirSync(src);
  const big = randomBytes(9_000_000, 3); // three chunks: 4 + 4 + 0.6 MiB
  const edit = async (offset: number, round: number): Promise<void> => {
    big.fill(0x41 + round, offset, offset + 100);
    writeFileSync(join(src, 'big.bin'), big);
    expectExit(t, await blanket(['backup', src, archive], { env }), 0, `backup ${round}`);
  };
  await edit(0, 0);
  for (const round of [1, 2, 3]) await edit(round * 1_000_000, round); // chunk 0 changes three times
  const signatures = (): string[] => {
    const found: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        if (entry.isDirectory()) walk(join(dir, entry.name));
        else if (dir.includes('signatures')) found.push(entry.name);
      }
    };
    walk(cache);
    return found;
  };
  t.equal(signatures().length, 6, 'three versions of chunk 0 before the last, and the newest chunks: 6 signatures cached');
  const run = await blanket(['gc', archive, '--keep-layers', '4', '--json'], { env });
  expectExit(t, run, 0, 'gc');
  t.equal(finishedEvent(run.stdout)?.['prunedSignatures'], 3, 'gc prunes the three of older versions');
  t.equal(signatures().length, 3, 'the newest chunks keep theirs');
  big.fill(0x5a, 2_000_000, 2_000_100);
  writeFileSync(join(src, 'big.bin'), big);
  const next = await blanket(['backup', src, archive, '--json'], { env });
  expectExit(t, next, 0, 'backup after gc');
  const stored = Number(finishedEvent(next.stdout)?.['storedBytes']);
  t.ok(stored < 200_000, `a delta again: the run stored ${stored} bytes for a 100-byte edit of a 4 MiB chunk`);
  const dest = join(work, 'restored');
  expectExit(t, await blanket(['restore', archive, dest], { env }), 0, 'restore');
  t.ok(readFileSync(join(dest, 'big.bin')).equals(big), 'the big file restores exactly');
});
