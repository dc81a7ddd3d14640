// Worker pools: a late reply to a task the pool no longer tracks (torn down mid-run) does not crash the process.

import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { Piscina } from 'piscina';
import { startPool } from '../../src/stages/worker-threads.js';

t.test("a pool error about a reply to an untracked task is ignored; any other is thrown", async (t) => {
  const dir = mkdtempSync(join(os.tmpdir(), 'blanket-pool-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const worker = join(dir, 'worker.mjs');
  writeFileSync(worker, 'export default async (n) => n + 1;\n');
  const pool = startPool(Piscina, { filename: worker, maxThreads: 1 });
  t.teardown(() => pool.destroy());
  t.equal(await pool.run(1), 2, 'the pool works');
  // What piscina emits when a worker answers a task it dropped (node_modules/piscina/dist/index.js, onMessage).
  t.doesNotThrow(() => pool.emit('error', new Error('Unexpected message from Worker: { taskId: 12, result: 1 }')), 'a late reply is ignored');
  t.throws(() => pool.emit('error', new Error('something else went wrong')), /something else/, 'another pool error is not hidden');
  t.equal(await pool.run(2), 3, 'and the pool still works');
});
