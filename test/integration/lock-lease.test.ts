// A backup whose archive lock is taken over by another machine (lease run out) stops writing at once; what it
// wrote stays consistent, and once the other run is gone the next backup resumes and completes the layer.

import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BlanketError, ErrorCodes } from '../../src/formats/errors.js';
import { BackupRun } from '../../src/pipeline/backup.js';
import { Monitor } from '../../src/stages/monitor.js';
import { LocalStore } from '../../src/stores/local.js';
import { ForwardingStore } from '../../src/stores/forwarding.js';
import type { ObjectInfo, PutBody, PutOptions } from '../../src/stores/store.js';
import { tmpDir } from '../helpers/cli.js';
import { blanket, expectExit, US } from '../helpers/integration.js';
import { compareTrees, snapshotTree } from '../helpers/tree.js';

/** A slow store (each index takes 100 ms to write) whose writes of the lock fail while `down` (renewals cannot land). */
class LockWritesDown extends ForwardingStore {
  down = false;
  override async put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo> {
    if (this.down && name === 'lock') throw new BlanketError(ErrorCodes.STORE_IO, 'link down', { transient: true });
    if (name.endsWith('.idx.zst')) await new Promise((resolve) => setTimeout(resolve, 100));
    return this.inner.put(name, body, options);
  }
}

t.test('a backup whose lock another machine took stops writing; the archive stays consistent and the next run completes it', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  await mkdir(source);
  for (let i = 0; i < 60; i++) await writeFile(join(source, `file-${String(i).padStart(3, '0')}`), randomBytes(256 << 10));
  const store = new LockWritesDown(new LocalStore(archive));
  const packs: string[] = [];
  let takeover: Promise<void> | undefined;
  const theirs = JSON.stringify({ host: 'elsewhere.example', pid: 7, command: 'backup', token: '00000000000000ee', created: new Date().toISOString(), renewed: new Date().toISOString(), leaseMs: 1_800_000 }) + '\n';
  const monitor = new Monitor((event) => {
    if (event.type !== 'pack-written') return;
    packs.push(event.pack);
    // After the first pack: the holder's renewals stop landing, and another machine takes the archive.
    takeover ??= (async () => {
      store.down = true;
      await writeFile(join(archive, 'lock'), theirs);
    })();
  });
  const run = new BackupRun({ source, store, monitor, create: true, packSize: 256 << 10, workers: 1, lockLeaseMs: 1500 });
  const outcome = await run.run().then(
    () => null,
    (error: unknown) => error,
  );
  await takeover;
  // Found taken over at the next renewal (or, on a starved machine, found not renewed for half a lease first).
  t.match(outcome, { code: ErrorCodes.LOCKED, message: /no longer this run's|could not be renewed/ }, 'the run stops with BLANKET_E_LOCKED');
  t.ok(packs.length < 30, `soon after the takeover (${packs.length} packs of about 60 written)`);
  t.equal(await readFile(join(archive, 'lock'), 'utf8'), theirs, "the other run's lock is left alone");

  await rm(join(archive, 'lock')); // the other run is gone
  const verify = await blanket(['verify', archive]);
  expectExit(t, verify, 0, 'verify: what the stopped run wrote is consistent');
  const resumed = await blanket(['backup', source, archive, '--pack-size', '256K']);
  expectExit(t, resumed, 0, 'the next backup');
  t.match(resumed.stdout, /layer 1 complete/, 'completes the layer');
  const dest = join(work, 'dest');
  expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore');
  compareTrees(t, await snapshotTree(source), await snapshotTree(dest), { mtimePrecisionNs: US, message: 'restores exactly' });
});
