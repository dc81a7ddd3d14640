// The CLI on an SFTP archive (a real OpenSSH sshd on 127.0.0.1): backup, incremental backup, restore of each
// layer, verify; an unknown host key is refused before anything is written.

import t from 'tap';
import { writeFileSync, existsSync, readdirSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpDir } from '../helpers/cli.js';
import { MIB, compareTrees, makeAwkwardTree, mutateTree, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { blanket, expectExit, ndjson, US } from '../helpers/integration.js';
import { startSshd } from '../helpers/sshd.js';
import { startFlakyProxy } from '../helpers/flaky-proxy.js';

t.test('backup, restore and verify on an SFTP archive through the CLI', async (t) => {
  const server = await startSshd();
  t.teardown(() => server.stop());
  const work = tmpDir(t);
  const keyFile = join(work, 'id_ed25519');
  writeFileSync(keyFile, server.privateKey, { mode: 0o600 });
  const remoteRoot = join(work, 'remote', 'arch');
  const archive = `sftp://${server.username}@127.0.0.1:${server.port}${remoteRoot}`;
  const ssh = ['--ssh-key', keyFile, '--known-hosts', server.knownHostsFile];
  const env = { XDG_CACHE_HOME: join(work, 'cache'), SSH_AUTH_SOCK: '' };
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 5, bigFileBytes: 2 * MIB + 3 });

  const snapshots: TreeSnapshot[] = [];
  for (const [i, kind] of (['initial', 'edit-content', 'dir-to-symlink'] as const).entries()) {
    if (kind !== 'initial') await mutateTree(source, 60 + i, kind);
    const run = await blanket(['backup', '--pack-size', '1M', '--json', ...ssh, source, archive], { env });
    if (!expectExit(t, run, 0, `backup (${kind})`)) return;
    t.match(ndjson(run.stdout).find((e) => e.type === 'finished'), { layer: i + 1, complete: true }, `layer ${i + 1} complete`);
    snapshots.push(await snapshotTree(source, { includeRoot: true }));
  }
  t.ok(existsSync(join(remoteRoot, 'blanket.json')), 'the archive is on the server, at the path given');

  for (const [i, expected] of snapshots.entries()) {
    const dest = join(tmpDir(t), 'dest');
    const restore = await blanket(['restore', ...ssh, '--layer', String(i + 1), archive, dest], { env });
    if (!expectExit(t, restore, 0, `restore --layer ${i + 1}`)) continue;
    compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: `layer ${i + 1} restores exactly` });
  }
  const verify = await blanket(['verify', ...ssh, archive], { env });
  expectExit(t, verify, 0, 'verify');

  const emptyKnownHosts = join(work, 'known_hosts_empty');
  writeFileSync(emptyKnownHosts, '');
  const other = `sftp://${server.username}@127.0.0.1:${server.port}${join(work, 'remote', 'other')}`;
  const refused = await blanket(['backup', '--ssh-key', keyFile, '--known-hosts', emptyKnownHosts, source, other], { env });
  t.equal(refused.code, 1, 'an unknown host key stops the run');
  t.match(refused.stderr, /127\.0\.0\.1/, 'naming the host');
  t.match(refused.stderr, /SHA256:/, 'and the key it offered');
  t.notOk(existsSync(join(work, 'remote', 'other')), 'nothing written');

  const pinned = await blanket(['layers', '--ssh-key', keyFile, '--ssh-host-key', server.hostKeySha256, '--known-hosts', emptyKnownHosts, archive], { env });
  expectExit(t, pinned, 0, 'a pinned host key is accepted');
  t.match(pinned.stdout, /^layer 3 /m);

  const badLocation = await blanket(['layers', 'sftp://127.0.0.1/x']);
  t.equal(badLocation.code, 2, 'a location without a user is a usage error');
  t.match(badLocation.stderr, /sftp:\/\/USER@HOST/);
});

t.test('a backup over a link that cuts and stalls the SSH connection restores exactly, like one over a clean link', async (t) => {
  const server = await startSshd();
  t.teardown(() => server.stop());
  const proxy = await startFlakyProxy({ targetPort: server.port, seed: 5, cutProbability: 0.5, cutWithinBytes: 1 << 20, laterCutWithinBytes: 6 << 20, stallProbability: 0.15 });
  t.teardown(() => proxy.close());
  const work = tmpDir(t);
  const keyFile = join(work, 'id_ed25519');
  writeFileSync(keyFile, server.privateKey, { mode: 0o600 });
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 12, bigFileBytes: 10 * MIB + 9 });
  const env = { XDG_CACHE_HOME: join(work, 'cache'), SSH_AUTH_SOCK: '' };
  // Through the proxy the port differs from known_hosts': the host key is pinned instead.
  const ssh = ['--ssh-key', keyFile, '--ssh-host-key', server.hostKeySha256];
  const flakyArchive = `sftp://${server.username}@127.0.0.1:${proxy.port}${join(work, 'remote', 'flaky')}`;
  const cleanArchive = `sftp://${server.username}@127.0.0.1:${server.port}${join(work, 'remote', 'clean')}`;
  const backup = await blanket(['backup', '--pack-size', '2M', '--json', '--io-timeout', '3s', '--retry-budget', '90s', ...ssh, source, flakyArchive], { env, timeoutMs: 280_000 });
  if (!expectExit(t, backup, 0, 'backup over the flaky link')) return;
  t.match(ndjson(backup.stdout).find((e) => e.type === 'finished'), { layer: 1, complete: true });
  t.ok(proxy.stats.cut + proxy.stats.stalled >= 2, `the link was bad (${proxy.stats.cut} cut, ${proxy.stats.stalled} stalled of ${proxy.stats.connections} connections)`);
  const reference = await blanket(['backup', '--pack-size', '2M', ...ssh, source, cleanArchive], { env });
  expectExit(t, reference, 0, 'backup over a clean link');
  const expected = await snapshotTree(source, { includeRoot: true });
  const direct = (location: string): string => location.replace(`:${proxy.port}/`, `:${server.port}/`);
  for (const [label, location] of [
    ['flaky', direct(flakyArchive)],
    ['clean', cleanArchive],
  ] as const) {
    const dest = join(tmpDir(t), 'dest');
    const restore = await blanket(['restore', ...ssh, location, dest], { env });
    if (!expectExit(t, restore, 0, `restore of the ${label} archive`)) continue;
    compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: `the ${label} archive restores exactly` });
  }
  const layers = async (location: string): Promise<unknown> =>
    ndjson((await blanket(['layers', '--json', ...ssh, location], { env })).stdout).map((l) => ({ complete: l.complete, packs: l.packs }));
  t.same(await layers(direct(flakyArchive)), await layers(cleanArchive), 'the same layers and pack count as the clean one');
  expectExit(t, await blanket(['verify', ...ssh, direct(flakyArchive)], { env }), 0, 'verify of the archive made over the flaky link');
  t.same(readdirSync(join(work, 'remote', 'flaky')).filter((name) => name.startsWith('.tmp-')), [], 'no temporary file left at the top');
});
