// verify --quick: packs checked against the store's listing (present, recorded size, store checksum) while no
// pack data is read; on a local folder (recorded through a call-recording store) and on S3 through the CLI.

import t from 'tap';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DeleteObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, GetObjectCommand } from '@aws-sdk/client-s3';
import { tmpDir } from '../helpers/cli.js';
import { MIB, makeAwkwardTree, mutateTree } from '../helpers/tree.js';
import { blanket, expectExit, finishedEvent } from '../helpers/integration.js';
import { startS3Server } from '../helpers/s3-server.js';
import { LocalStore } from '../../src/stores/local.js';
import { RecordingStore } from '../../src/stores/recording.js';
import { Monitor } from '../../src/stages/monitor.js';
import { verify } from '../../src/pipeline/verify.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';

const isPack = (name: string | undefined): boolean => name?.endsWith('.tar.zst') === true;

t.test('a quick verify reads indexes and lists packs, and reads no pack data', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 5, bigFileBytes: 2 * MIB + 3 });
  expectExit(t, await blanket(['backup', '--pack-size', '256K', source, archive]), 0, 'backup 1');
  await mutateTree(source, 6, 'edit-content');
  expectExit(t, await blanket(['backup', '--pack-size', '256K', source, archive]), 0, 'backup 2');

  const quickStore = new RecordingStore(new LocalStore(archive));
  const quick = await verify({ store: quickStore, monitor: new Monitor(() => undefined), quick: true });
  t.same(quick.damaged, [], 'no damage');
  t.ok(quick.packs >= 4, `packs checked (${quick.packs})`);
  t.equal(quick.unsized, 0, 'every pack has a recorded size');
  const packGets = quickStore.calls.filter((call) => call.operation === 'get' && isPack(call.name));
  t.same(packGets, [], 'no pack object was read');
  t.ok(quickStore.calls.some((call) => call.operation === 'get' && call.name?.endsWith('.idx.zst')), 'indexes were read');

  // The same recording sees a full verify read every pack: the quick result above is not a blind spot.
  const fullStore = new RecordingStore(new LocalStore(archive));
  const full = await verify({ store: fullStore, monitor: new Monitor(() => undefined) });
  t.same(full.damaged, []);
  const fullPackReads = new Set(fullStore.calls.filter((call) => call.operation === 'get' && isPack(call.name)).map((call) => call.name));
  t.equal(fullPackReads.size, full.packs, `a full verify reads each of the ${full.packs} packs`);
  t.ok(fullStore.bytesRead > quickStore.bytesRead * 5, `bytes read: full ${fullStore.bytesRead}, quick ${quickStore.bytesRead}`);
});

t.test('verify --quick on S3: a deleted, a truncated and a same-size rewritten pack are named, with a warm cache and no pack read', async (t) => {
  const server = await startS3Server();
  t.teardown(() => server.stop());
  const work = tmpDir(t);
  const env = { ...server.env, XDG_CACHE_HOME: join(work, 'cache') };
  const s3 = ['--s3-endpoint', server.endpoint];
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 8, bigFileBytes: 3 * MIB + 1 });
  const archive = `s3://${server.bucket}/quick`;
  if (!expectExit(t, await blanket(['backup', '--pack-size', '512K', ...s3, source, archive], { env }), 0, 'backup')) return;

  const ok = await blanket(['verify', '--quick', '--json', ...s3, archive], { env });
  expectExit(t, ok, 0, 'verify --quick');
  const done = finishedEvent(ok.stdout) as { packs: number; damaged: unknown[]; requests: Record<string, number> } | undefined;
  t.ok(done && done.packs >= 4, `packs checked (${done?.packs})`);
  // With the indexes cached by the backup, the only objects read are the header (by the cache, to find the
  // archive id, and by verify): the count does not grow with the archive.
  t.ok(done && (done.requests['get'] ?? 0) <= 2, `gets: ${JSON.stringify(done?.requests)}`);

  const client = new S3Client({ endpoint: server.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: server.credentials });
  t.teardown(() => client.destroy());
  const listed = await client.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: 'quick/layers/' }));
  const packs = (listed.Contents ?? []).map((o) => o.Key!).filter((key) => key.endsWith('.tar.zst')).sort();
  t.ok(packs.length >= 4, 'packs to damage');
  const [deleted, truncated, rewritten] = [packs[0]!, packs[1]!, packs[2]!];
  await client.send(new DeleteObjectCommand({ Bucket: server.bucket, Key: deleted }));
  const bytesOf = async (key: string): Promise<Buffer> =>
    Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: server.bucket, Key: key }))).Body!.transformToByteArray());
  const truncatedBytes = await bytesOf(truncated);
  await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: truncated, Body: truncatedBytes.subarray(0, truncatedBytes.length - 100) }));
  const rewrittenBytes = await bytesOf(rewritten);
  rewrittenBytes[rewrittenBytes.length >> 1] ^= 0x20;
  await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: rewritten, Body: rewrittenBytes }));

  const bad = await blanket(['verify', '--quick', ...s3, archive], { env });
  expectExit(t, bad, 3, 'verify --quick on the damaged archive');
  const name = (key: string): string => key.slice('quick/'.length);
  t.match(bad.stdout, new RegExp(`DAMAGED ${name(deleted)}: missing`), 'the deleted pack');
  t.match(bad.stdout, new RegExp(`DAMAGED ${name(truncated)}: truncated: ${truncatedBytes.length - 100} bytes, ${truncatedBytes.length} when written`), 'the truncated pack');
  t.match(bad.stdout, new RegExp(`DAMAGED ${name(rewritten)}: changed since written: the store reports checksum md5-etag:`), 'the same-size rewrite, by its ETag');
  t.match(bad.stdout, /affects /, 'with the files whose content they hold');
  t.match(bad.stdout, /3 damaged objects/);
});
