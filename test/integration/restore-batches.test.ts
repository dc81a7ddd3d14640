// Restore in many small batches (the restore pipeline called with batchFiles: 3): directory metadata is set as
// each subtree is done, not all at the end, and the restored tree is still identical, directory mtimes included.

import t from 'tap';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpDir } from '../helpers/cli.js';
import { MIB, compareTrees, makeAwkwardTree, snapshotTree } from '../helpers/tree.js';
import { blanket, expectExit, US } from '../helpers/integration.js';
import { openStore } from '../../src/pipeline/archive.js';
import { restore } from '../../src/pipeline/restore.js';
import { Monitor } from '../../src/stages/monitor.js';

t.test('a restore in batches of 3 files gives the same tree as one in a single batch', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 11, bigFileBytes: 2 * MIB + 5 });
  const before = await snapshotTree(source, { includeRoot: true });
  if (!expectExit(t, await blanket(['backup', '--pack-size', '1M', source, archive]), 0, 'backup')) return;

  for (const batchFiles of [3, 1_000_000]) {
    const dest = join(tmpDir(t), 'dest');
    const warnings: string[] = [];
    const monitor = new Monitor((event) => {
      if (event.type === 'warning') warnings.push(event.message);
    });
    const result = await restore({ store: await openStore(archive), destination: dest, paths: [], monitor, batchFiles });
    t.same(warnings, [], `batches of ${batchFiles}: no warnings`);
    t.equal(result.failedFiles, 0, `batches of ${batchFiles}: nothing failed`);
    t.ok(result.dirs > 5, `batches of ${batchFiles}: ${result.dirs} directories`);
    compareTrees(t, before, await snapshotTree(dest, { includeRoot: true }), {
      mtimePrecisionNs: US,
      message: `batches of ${batchFiles}: the restored tree, directory mtimes included`,
    });
  }
});
