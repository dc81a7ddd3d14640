// The CLI on an S3 archive (a real S3-protocol server on 127.0.0.1): init, backup, incremental backup, layers,
// ls, restore of every layer, verify, and a damaged object named by verify.

import t from 'tap';
import { writeFileSync, rmSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { S3Client, DeleteObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { spawnCli, tmpDir } from '../helpers/cli.js';
import { MIB, compareTrees, makeAwkwardTree, mutateTree, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { blanket, expectExit, ndjson, US } from '../helpers/integration.js';
import { startFlakyProxy } from '../helpers/flaky-proxy.js';
import { startS3Server } from '../helpers/s3-server.js';

t.test('backup, restore and verify on an S3 archive through the CLI', async (t) => {
  const server = await startS3Server();
  t.teardown(() => server.stop());
  const cacheHome = tmpDir(t);
  const env = { ...server.env, XDG_CACHE_HOME: cacheHome };
  const archive = `s3://${server.bucket}/backups/laptop`;
  const s3 = ['--s3-endpoint', server.endpoint];
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 3, bigFileBytes: 3 * MIB + 5 });

  const snapshots: TreeSnapshot[] = [];
  for (const [i, kind] of (['initial', 'edit-content', 'delete-file', 'rename-file', 'file-to-dir'] as const).entries()) {
    if (kind !== 'initial') await mutateTree(source, 40 + i, kind);
    const run = await blanket(['backup', '--pack-size', '1M', '--json', ...s3, source, archive], { env });
    if (!expectExit(t, run, 0, `backup (${kind})`)) return;
    const done = ndjson(run.stdout).find((e) => e.type === 'finished');
    t.match(done, { layer: i + 1, complete: true }, `layer ${i + 1} complete`);
    snapshots.push(await snapshotTree(source, { includeRoot: true }));
  }

  const layers = await blanket(['layers', '--json', ...s3, archive], { env });
  expectExit(t, layers, 0, 'layers');
  t.equal(ndjson(layers.stdout).length, 5, 'five layers');

  const ls = await blanket(['ls', ...s3, archive], { env });
  expectExit(t, ls, 0, 'ls');
  t.ok(ls.stdout.split('\n').length > 10, 'ls lists the tree');

  for (const [i, expected] of snapshots.entries()) {
    const dest = join(tmpDir(t), 'dest');
    const restore = await blanket(['restore', ...s3, '--layer', String(i + 1), archive, dest], { env });
    if (!expectExit(t, restore, 0, `restore --layer ${i + 1}`)) continue;
    compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: `layer ${i + 1} restores exactly` });
  }

  // The indexes are cached locally, per archive id; a damaged or deleted copy is fetched again, never trusted.
  const cached = (await readdirRecursive(join(cacheHome, 'blanket', 'archives'))).filter((f) => f.endsWith('.idx.zst'));
  t.ok(cached.length >= 5, `indexes are cached (${cached.length})`);
  for (const file of cached) writeFileSync(file, Buffer.from('damaged'));
  const afterDamage = join(tmpDir(t), 'dest');
  const restoreDamaged = await blanket(['restore', ...s3, archive, afterDamage], { env });
  if (expectExit(t, restoreDamaged, 0, 'restore with a damaged cache')) {
    compareTrees(t, snapshots.at(-1)!, await snapshotTree(afterDamage, { includeRoot: true }), { mtimePrecisionNs: US, message: 'a damaged cache changes nothing' });
  }
  rmSync(join(cacheHome, 'blanket'), { recursive: true, force: true });
  const noCache = await blanket(['backup', '--json', ...s3, source, archive], { env });
  expectExit(t, noCache, 0, 'backup with the cache deleted');
  t.match(ndjson(noCache.stdout).find((e) => e.type === 'finished'), { layer: 6, complete: true, changedFiles: 0, newFiles: 0 }, 'nothing seen as changed');

  const verify = await blanket(['verify', ...s3, archive], { env });
  expectExit(t, verify, 0, 'verify');
  t.match(verify.stdout, /archive OK/);

  // Damage: delete one pack object; verify names it.
  const client = new S3Client({ endpoint: server.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: server.credentials });
  t.teardown(() => client.destroy());
  const listed = await client.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: 'backups/laptop/' }));
  const keys = (listed.Contents ?? []).map((o) => o.Key ?? '');
  t.ok(keys.every((key) => /^backups\/laptop\/[0-9a-z./-]+$/.test(key)), 'object names are short ASCII under the prefix');
  const pack = (listed.Contents ?? []).filter((o) => o.Key?.endsWith('.tar.zst')).sort((a, b) => (b.Size ?? 0) - (a.Size ?? 0))[0]?.Key;
  t.ok(pack, 'a pack object exists');
  await client.send(new DeleteObjectCommand({ Bucket: server.bucket, Key: pack! }));
  const damaged = await blanket(['verify', ...s3, archive], { env });
  t.not(damaged.code, 0, 'verify fails on a deleted pack');
  t.match(damaged.stdout + damaged.stderr, pack!.slice('backups/laptop/'.length), 'and names it');
});

async function readdirRecursive(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath ?? e.path, e.name));
}

t.test('a backup over a link that cuts and stalls connections restores exactly, like one over a clean link', async (t) => {
  const server = await startS3Server();
  t.teardown(() => server.stop());
  const proxy = await startFlakyProxy({ targetPort: Number(new URL(server.endpoint).port), seed: 11, cutProbability: 0.4, cutWithinBytes: 512 << 10, laterCutWithinBytes: 8 << 20, stallProbability: 0.1 });
  t.teardown(() => proxy.close());
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 9, bigFileBytes: 12 * MIB + 1 });
  const env = { ...server.env, XDG_CACHE_HOME: join(work, 'cache') };
  const flaky = ['--s3-endpoint', `http://127.0.0.1:${proxy.port}`, '--io-timeout', '2s', '--retry-budget', '60s'];
  const clean = ['--s3-endpoint', server.endpoint];
  const backup = await blanket(['backup', '--pack-size', '4M', '--json', ...flaky, source, `s3://${server.bucket}/flaky`], { env });
  if (!expectExit(t, backup, 0, 'backup over the flaky link')) return;
  t.match(ndjson(backup.stdout).find((e) => e.type === 'finished'), { layer: 1, complete: true });
  const reference = await blanket(['backup', '--pack-size', '4M', ...clean, source, `s3://${server.bucket}/clean`], { env });
  expectExit(t, reference, 0, 'backup over a clean link');
  t.ok(proxy.stats.cut + proxy.stats.stalled >= 3, `the link was bad (${proxy.stats.cut} cut, ${proxy.stats.stalled} stalled of ${proxy.stats.connections} connections)`);
  const expected = await snapshotTree(source, { includeRoot: true });
  for (const [label, location] of [
    ['flaky', `s3://${server.bucket}/flaky`],
    ['clean', `s3://${server.bucket}/clean`],
  ] as const) {
    const dest = join(tmpDir(t), 'dest');
    const restore = await blanket(['restore', ...clean, location, dest], { env });
    if (!expectExit(t, restore, 0, `restore of the ${label} archive`)) continue;
    compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: `the ${label} archive restores exactly` });
  }
  const layers = async (location: string): Promise<unknown> =>
    ndjson((await blanket(['layers', '--json', ...clean, location], { env })).stdout).map((l) => ({ complete: l.complete, packs: l.packs }));
  t.same(await layers(`s3://${server.bucket}/flaky`), await layers(`s3://${server.bucket}/clean`), 'the same layers and pack count as the clean one');
  const verify = await blanket(['verify', ...clean, `s3://${server.bucket}/flaky`], { env });
  expectExit(t, verify, 0, 'verify of the archive made over the flaky link');
});

t.test('a link down for longer than the retry budget: the run exits 1 naming the archive, and the next run resumes', async (t) => {
  const server = await startS3Server();
  t.teardown(() => server.stop());
  const proxy = await startFlakyProxy({ targetPort: Number(new URL(server.endpoint).port), seed: 3, cutProbability: 0, cutWithinBytes: 1, stallProbability: 0 });
  proxy.heal();
  t.teardown(() => proxy.close());
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 14, bigFileBytes: 24 * MIB + 5 });
  const env = { ...server.env, XDG_CACHE_HOME: join(work, 'cache') };
  const archive = `s3://${server.bucket}/down`;
  const via = ['--s3-endpoint', `http://127.0.0.1:${proxy.port}`, '--retry-budget', '3s', '--io-timeout', '2s'];
  // The link goes down once the run has committed a pack, and stays down past the budget.
  const child = spawnCli(['backup', '--pack-size', '1M', '--json', ...via, source, archive], { env });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    if (stdout.includes('"pack-written"')) proxy.down();
  });
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  t.equal(code, 1, 'the run exits 1', { stderr });
  t.match(stderr, /gave up on .* at s3:\/\/blanket-test\/down\/ after \d+ attempts.*next run resumes/s, 'saying what it gave up on, where, and that the next run resumes');
  proxy.up();
  const next = await blanket(['backup', '--pack-size', '1M', '--json', ...via, source, archive], { env });
  if (!expectExit(t, next, 0, 'the next run, link back')) return;
  t.match(ndjson(next.stdout).find((e) => e.type === 'started'), { resumedAfter: /./ }, 'resumes after what the first run committed');
  t.match(ndjson(next.stdout).find((e) => e.type === 'finished'), { layer: 1, complete: true });
  const dest = join(tmpDir(t), 'dest');
  expectExit(t, await blanket(['restore', '--s3-endpoint', server.endpoint, archive, dest], { env }), 0, 'restore');
  compareTrees(t, await snapshotTree(source, { includeRoot: true }), await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'the tree, exactly' });
});

t.test('a bad S3 location or an unreachable endpoint is a clear error', async (t) => {
  const bad = await blanket(['layers', 's3://Not_A_Bucket/x']);
  t.equal(bad.code, 2, 'usage error');
  t.match(bad.stderr, /s3:\/\/BUCKET/);
  const down = await blanket(['layers', '--retry-budget', '3s', '--s3-endpoint', 'http://127.0.0.1:9', 's3://bucket/x'], {
    env: { AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y', AWS_REGION: 'us-east-1', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    timeoutMs: 280_000,
  });
  t.equal(down.timedOut, false, 'gives up in time');
  t.not(down.code, 0);
  t.match(down.stderr, /gave up on .* at s3:\/\/bucket\/x\/ after \d+ attempts/, 'after its retry budget, naming the archive');
});
