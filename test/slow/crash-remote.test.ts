// Crash safety on remote archives, S3 (s3rver) and SFTP (OpenSSH's sshd), both on 127.0.0.1: `blanket backup`
// SIGKILLed at seeded moments, mid-upload included. After every kill the archive verifies and every restored
// file is exact; resumed runs continue the layer; the finished layer restores the tree exactly.

import t, { type Test } from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnCli, tmpDir } from '../helpers/cli.js';
import { compareTrees, MIB, Prng, snapshotTree } from '../helpers/tree.js';
import { blanket, expectExit, finishedEvent, ndjson, US } from '../helpers/integration.js';
import { randomBytes } from '../helpers/bytes.js';
import { startS3Server } from '../helpers/s3-server.js';
import { startSshd } from '../helpers/sshd.js';

interface Remote {
  readonly archive: string;
  /** Options every command needs to reach it. */
  readonly options: string[];
  readonly env: Record<string, string>;
}

t.test('SIGKILL during S3 backups never damages the archive', async (t) => {
  const server = await startS3Server();
  t.teardown(() => server.stop());
  await crashLoop(t, () => ({ archive: `s3://${server.bucket}/crash`, options: ['--s3-endpoint', server.endpoint], env: server.env }));
});

t.test('SIGKILL during SFTP backups never damages the archive', async (t) => {
  const server = await startSshd();
  t.teardown(() => server.stop());
  await crashLoop(t, (work) => {
    const keyFile = join(work, 'id_ed25519');
    writeFileSync(keyFile, server.privateKey, { mode: 0o600 });
    return {
      archive: `sftp://${server.username}@127.0.0.1:${server.port}${join(work, 'remote')}`,
      options: ['--ssh-key', keyFile, '--known-hosts', server.knownHostsFile],
      env: { SSH_AUTH_SOCK: '' },
    };
  });
});

async function crashLoop(t: Test, remote: (work: string) => Remote): Promise<void> {
  const work = tmpDir(t);
  const { archive, options: remoteOptions, env: remoteEnv } = remote(work);
  const source = join(work, 'source');
  const random = new Prng(2027);
  for (let d = 0; d < 6; d++) {
    const dir = join(source, `dir${d}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 40; f++) writeFileSync(join(dir, `small${f}.txt`), randomBytes(1000 + random.int(20_000), d * 100 + f));
    // Big files: several 1 MiB packs each, and several 5 MiB parts for the 18 MiB one (multipart).
    writeFileSync(join(dir, 'big.bin'), randomBytes((d === 3 ? 18 : 5) * MIB + random.int(MIB), 900 + d));
  }
  const expected = await snapshotTree(source, { includeRoot: true });
  const env = { ...remoteEnv, XDG_CACHE_HOME: join(work, 'cache') };
  // 8 MiB packs of random data are more than one 5 MiB part: on S3 each goes up as a multipart upload of
  // two parts, which the kills can cut.
  const args = ['backup', '--pack-size', '8M', '--json', ...remoteOptions, source, archive];

  // Each run is killed after it has committed one new pack (so the layer moves on), plus a seeded delay of up
  // to 150 ms: mid-way through the next pack's multipart upload, between its data and its index, or later.
  // The first run is killed at once, before anything is committed.
  const kills = 8;
  let resumed = 0;
  let finished = false;
  for (let k = 0; k < kills; k++) {
    const delayMs = k === 0 ? 200 : random.int(150);
    const child = spawnCli(args, { env });
    let stdout = '';
    let timer: NodeJS.Timeout | undefined = k === 0 ? setTimeout(() => child.kill('SIGKILL'), delayMs) : undefined;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (timer === undefined && stdout.includes('"pack-written"')) timer = setTimeout(() => child.kill('SIGKILL'), delayMs);
    });
    child.stderr!.resume();
    child.stdin!.end();
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    clearTimeout(timer);
    const started = ndjson(stdout.slice(0, stdout.lastIndexOf('\n') + 1)).find((e) => e.type === 'started');
    if (started?.resumedAfter) resumed++;
    t.comment(`kill ${k + 1}: ${signal ?? code} ${delayMs} ms after ${k === 0 ? 'start' : 'its first commit'}, ${ndjson(stdout.slice(0, stdout.lastIndexOf('\n') + 1)).filter((e) => e.type === 'pack-written').length} packs, resumed after ${String(started?.resumedAfter)}`);
    const verify = await blanket(['verify', ...remoteOptions, archive], { env });
    if (verify.code === 1 && /not a Blanket archive/.test(verify.stderr)) continue; // killed before the header
    t.equal(verify.code, 0, `kill ${k + 1} (${signal ?? `exit ${code}`}): verify exits 0`, { stdout: verify.stdout.slice(-1500), stderr: verify.stderr.slice(-1500) });
    const dest = join(tmpDir(t), 'dest');
    const restore = await blanket(['restore', ...remoteOptions, archive, dest], { env });
    if (restore.code !== 0 && /no layer|nothing to restore|NOT_FOUND/.test(restore.stderr)) continue; // no pack yet
    t.equal(restore.code, 0, `kill ${k + 1}: restore exits 0`, { stderr: restore.stderr.slice(-1500) });
    // Whatever was committed restores exactly: a prefix of the tree, each file whole.
    const got = await snapshotTree(dest, { includeRoot: true });
    const byPath = new Map(expected.map((e) => [e.path, e]));
    for (const entry of got) {
      const want = byPath.get(entry.path);
      if (entry.type !== 'file') continue;
      t.ok(want && want.type === 'file' && want.sha256 === entry.sha256, `kill ${k + 1}: ${entry.path} is exact`);
    }
    if (code === 0) {
      finished = true;
      break;
    }
  }
  // How many runs the layer takes depends on the machine's speed (a fast one commits several packs within a
  // kill's delay): at least one run must have continued it.
  t.ok(resumed >= 1, `later runs resumed the layer (${resumed})`);
  if (!finished) {
    const last = await blanket(args, { env });
    expectExit(t, last, 0, 'the last run completes the layer');
    t.match(finishedEvent(last.stdout), { layer: 1, complete: true });
  }
  const dest = join(tmpDir(t), 'final');
  const restore = await blanket(['restore', ...remoteOptions, archive, dest], { env });
  if (expectExit(t, restore, 0, 'final restore')) {
    compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'the completed layer restores the tree exactly' });
  }
}
