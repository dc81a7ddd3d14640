// Backup to a pipe: `backup SRC -` appended run after run to one stream file, `receive` into an archive (local and
// S3), `restore -`; a stream cut anywhere, a writer killed with kill -9 and run again, a stream of another archive.

import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CLI_PATH, tmpDir } from '../helpers/cli.js';
import { blanket, expectExit, US } from '../helpers/integration.js';
import { MIB, compareTrees, makeAwkwardTree, mutateTree, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { startS3Server } from '../helpers/s3-server.js';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/**
 * Runs the CLI with stdin from `input` (a file) and stdout appended to `output` (a file), as a shell redirection
 * does; `killWhen` sees stderr as it comes and may ask for a SIGKILL.
 */
function run(args: string[], files: { input?: string; output?: string }, env: Record<string, string>, killWhen?: (stderr: string) => boolean): Promise<Run> {
  const input = files.input !== undefined ? openSync(files.input, 'r') : 'ignore';
  const output = files.output !== undefined ? openSync(files.output, 'a') : 'pipe';
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: [input, output, 'pipe'], env: { ...process.env, ...env, NO_COLOR: '1' } });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    if (killWhen?.(stderr)) child.kill('SIGKILL');
  });
  child.stdout?.resume();
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      if (typeof input === 'number') closeSync(input);
      if (typeof output === 'number') closeSync(output);
      resolve({ code, signal, stderr });
    });
  });
}

const okRun = (t: Test, result: Run, code: number, what: string): boolean => {
  t.equal(result.code, code, `${what} exits ${code}`, result.code === code ? {} : { stderr: result.stderr.slice(-3000) });
  return result.code === code;
};

t.test('backup to a stream, run after run; receive; restore each layer; restore from the stream itself', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 21, bigFileBytes: 3 * MIB + 11 });
  const env = { XDG_CACHE_HOME: join(work, 'cache') };
  const stream = join(work, 'stream');
  const snapshots: TreeSnapshot[] = [];
  for (const [i, kind] of (['initial', 'edit-content', 'delete-file', 'rename-file'] as const).entries()) {
    if (kind !== 'initial') await mutateTree(source, 70 + i, kind);
    const backup = await run(['backup', '--pack-size', '512K', '--json', source, '-'], { output: stream }, env);
    if (!okRun(t, backup, 0, `backup to the stream (${kind})`)) return;
    t.match(backup.stderr, new RegExp(`"type":"finished".*"layer":${i + 1}.*"complete":true`), `layer ${i + 1}, its events on stderr`);
    snapshots.push(await snapshotTree(source, { includeRoot: true }));
  }
  t.ok(statSync(stream).size > 3 * MIB, 'the stream holds the data');

  const archive = join(work, 'archive');
  const received = await run(['receive', archive], { input: stream }, env);
  if (!okRun(t, received, 0, 'receive')) return;
  t.match(received.stderr + '', '', 'no warnings');
  expectExit(t, await blanket(['verify', archive]), 0, 'verify of the received archive');
  for (const [i, expected] of snapshots.entries()) {
    const dest = join(tmpDir(t), 'dest');
    if (!expectExit(t, await blanket(['restore', '--layer', String(i + 1), archive, dest]), 0, `restore --layer ${i + 1}`)) continue;
    compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: `layer ${i + 1} restores exactly` });
  }

  // Receiving the same streams again changes nothing.
  okRun(t, await run(['receive', archive], { input: stream }, env), 0, 'receive again');
  expectExit(t, await blanket(['verify', archive]), 0, 'still verifies');

  const direct = join(tmpDir(t), 'dest');
  const fromStream = await run(['restore', '-', direct], { input: stream }, env);
  if (okRun(t, fromStream, 0, 'restore - (from the stream)')) {
    compareTrees(t, snapshots.at(-1)!, await snapshotTree(direct, { includeRoot: true }), { mtimePrecisionNs: US, message: 'restore - gives the newest state' });
  }

  // A stream of this archive is refused by another archive.
  const other = join(work, 'other');
  const otherSource = join(work, 'other-source');
  await mkdir(otherSource);
  writeFileSync(join(otherSource, 'x'), 'x');
  expectExit(t, await blanket(['backup', otherSource, other]), 0, 'another archive');
  const refused = await run(['receive', other], { input: stream }, env);
  t.equal(refused.code, 2, 'receive into another archive is refused');
  t.match(refused.stderr, /the stream is of archive [0-9a-f]+, but .* is archive [0-9a-f]+/, 'naming both archives');
  t.same((await readdir(join(other, 'layers'))).sort(), ['000001'], 'nothing was written into it');
});

t.test('a stream cut anywhere: what arrived whole is stored, consistent, and the receiver says the stream was cut', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 22, bigFileBytes: 2 * MIB + 5 });
  const env = { XDG_CACHE_HOME: join(work, 'cache') };
  const stream = join(work, 'stream');
  okRun(t, await run(['backup', '--pack-size', '256K', source, '-'], { output: stream }, env), 0, 'backup 1');
  const v1 = await snapshotTree(source, { includeRoot: true });
  await mutateTree(source, 3, 'edit-content');
  okRun(t, await run(['backup', '--pack-size', '256K', source, '-'], { output: stream }, env), 0, 'backup 2');
  const v2 = await snapshotTree(source, { includeRoot: true });
  const whole = readFileSync(stream);
  const versions = [v1, v2].map((v) => new Map(v.filter((e) => e.type === 'file').map((e) => [e.path, e.sha256])));

  for (const fraction of [0.001, 0.2, 0.45, 0.7, 0.93, 0.9999]) {
    const cut = Math.floor(whole.length * fraction);
    const file = join(work, `cut-${cut}`);
    writeFileSync(file, whole.subarray(0, cut));
    const archive = join(work, `archive-${cut}`);
    const received = await run(['receive', archive], { input: file }, env);
    t.equal(received.code, 3, `cut at ${cut} of ${whole.length}: receive exits 3`);
    t.match(received.stderr, /cut off/, 'and says the stream was cut off');
    if (fraction < 0.01) continue; // not even the archive header arrived whole
    const verify = await blanket(['verify', archive]);
    t.equal(verify.code, 0, `cut at ${cut}: what arrived verifies`, { stdout: verify.stdout });
    const dest = join(tmpDir(t), 'dest');
    const restore = await blanket(['restore', archive, dest]);
    t.equal(restore.code, 0, `cut at ${cut}: restores`, { stderr: restore.stderr });
    for (const entry of await snapshotTree(dest, { includeRoot: true })) {
      if (entry.type !== 'file') continue;
      if (!versions.some((v) => v.get(entry.path) === entry.sha256)) t.fail(`cut at ${cut}: ${entry.path} has content of no version`);
    }
  }
  // Damage in the middle of a stream: one object lost, the others stored; the receiver names it.
  const damaged = Buffer.from(whole);
  damaged[Math.floor(whole.length / 3)] ^= 0x40;
  const file = join(work, 'damaged');
  writeFileSync(file, damaged);
  const received = await run(['receive', join(work, 'archive-damaged')], { input: file }, env);
  t.equal(received.code, 3, 'a damaged stream: receive exits 3');
  t.match(received.stderr, /layers\/\d{6}\/\d{8}\.(tar|idx)\.zst: .*not stored/, 'naming the object lost');
});

t.test('a stream backup killed with kill -9 and run again: the receiver gets everything, the cut object whole from the second run', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 23, bigFileBytes: 6 * MIB + 1 });
  const env = { XDG_CACHE_HOME: join(work, 'cache') };
  const stream = join(work, 'stream');
  const killed = await run(['backup', '--pack-size', '512K', '--json', source, '-'], { output: stream }, env, (stderr) => (stderr.match(/"pack-written"/g) ?? []).length >= 5);
  t.equal(killed.signal, 'SIGKILL', 'the first run was killed');
  const resumed = await run(['backup', '--pack-size', '512K', '--json', source, '-'], { output: stream }, env);
  if (!okRun(t, resumed, 0, 'the next run')) return;
  t.match(resumed.stderr, /"resumedAfter":"[^"]+"/, 'resumed after what the first run sent');
  const archive = join(work, 'archive');
  const received = await run(['receive', archive], { input: stream }, env);
  t.equal(received.code, 0, 'receive exits 0: the cut stream was followed by the next run', { stderr: received.stderr });
  const dest = join(work, 'dest');
  expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore');
  compareTrees(t, await snapshotTree(source, { includeRoot: true }), await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'the tree, exactly' });
  expectExit(t, await blanket(['verify', archive]), 0, 'verify');

  // A reader that goes away: the run fails (exit 1), and the next run sends what did not go through.
  const brokenStream = join(work, 'broken');
  await mutateTree(source, 9, 'edit-content');
  writeFileSync(join(source, 'new-big-file'), randomBytes(3 * MIB)); // more than a pipe holds: the writer must notice
  // As in a shell: blanket backup SRC - | head -c 1000 (a reader that stops early), with the writer's exit code.
  const shell = spawn(
    'bash',
    ['-c', `"$0" "$1" backup --pack-size 512K "$2" - 2>"$3" | head -c 1000 >"$4"; echo "\${PIPESTATUS[0]}"`, process.execPath, CLI_PATH, source, join(work, 'writer-stderr'), brokenStream],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } },
  );
  let status = '';
  shell.stdout!.on('data', (chunk: Buffer) => (status += chunk.toString()));
  await new Promise((resolve) => shell.on('close', resolve));
  const stderr = readFileSync(join(work, 'writer-stderr'), 'utf8');
  t.equal(status.trim(), '1', 'a backup whose stream reader went away exits 1', { stderr });
  t.match(stderr, /cannot write the object stream to stdout: .*EPIPE.*reader went away.*BLANKET_E_STORE_IO/, 'saying the stream could not be written');
  okRun(t, await run(['backup', '--pack-size', '512K', source, '-'], { output: stream }, env), 0, 'the next run');
  okRun(t, await run(['receive', archive], { input: stream }, env), 0, 'receive of the whole stream file again');
  const dest2 = join(tmpDir(t), 'dest');
  expectExit(t, await blanket(['restore', archive, dest2]), 0, 'restore');
  compareTrees(t, await snapshotTree(source, { includeRoot: true }), await snapshotTree(dest2, { includeRoot: true }), { mtimePrecisionNs: US, message: 'the edited tree, exactly' });
});

t.test('receive into an S3 archive', async (t) => {
  const server = await startS3Server();
  t.teardown(() => server.stop());
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(source);
  await makeAwkwardTree(source, { seed: 24, bigFileBytes: 9 * MIB + 7 });
  const env = { ...server.env, XDG_CACHE_HOME: join(work, 'cache') };
  const stream = join(work, 'stream');
  okRun(t, await run(['backup', '--pack-size', '16M', source, '-'], { output: stream }, env), 0, 'backup to the stream');
  const archive = `s3://${server.bucket}/from-stream`;
  const received = await run(['receive', '--s3-endpoint', server.endpoint, archive], { input: stream }, env);
  if (!okRun(t, received, 0, 'receive into S3')) return;
  const dest = join(work, 'dest');
  expectExit(t, await blanket(['restore', '--s3-endpoint', server.endpoint, archive, dest], { env }), 0, 'restore from S3');
  compareTrees(t, await snapshotTree(source, { includeRoot: true }), await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'exactly' });
  expectExit(t, await blanket(['verify', '--quick', '--s3-endpoint', server.endpoint, archive], { env }), 0, 'quick verify: sizes recorded by the writer match the S3 objects');
});
