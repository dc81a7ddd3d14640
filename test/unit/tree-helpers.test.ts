// Tests for the shared test helpers: they must be able to FAIL.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AWKWARD,
  MIB,
  MUTATION_KINDS,
  SNEAKY_MUTATION_KINDS,
  Prng,
  compareTrees,
  diffTrees,
  displayBytes,
  joinRaw,
  makeAwkwardTree,
  mutateTree,
  snapshotTree,
  type AssertTarget,
  type MutationKind,
  type TreeSnapshot,
} from '../helpers/tree.js';
import { runNodeScript, spawnNodeScript, tmpDir } from '../helpers/cli.js';
import { DEBIAN_TEST_TOOLS, ensureDebianTools, findOnPath } from '../helpers/tools.js';

const BIG = 2 * MIB + 12345; // spans three 1 MiB pieces

/** Captures compareTrees assertions instead of reporting them. */
function capture(): AssertTarget & { calls: Array<{ ok: boolean; message: string; differences?: string[] }> } {
  const calls: Array<{ ok: boolean; message: string; differences?: string[] }> = [];
  return {
    calls,
    pass(message: string) {
      calls.push({ ok: true, message });
    },
    fail(message: string, extra: Record<string, unknown>) {
      calls.push({ ok: false, message, differences: extra.differences as string[] | undefined });
    },
  };
}

function byPath(snap: TreeSnapshot, rel: Buffer | string) {
  const hex = Buffer.from(rel).toString('hex');
  return snap.find((e) => e.pathHex === hex);
}

/** tar -c | tar -x without a shell. */
function tarCopy(src: string, dst: string, formatArgs: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn('tar', [...formatArgs, '--numeric-owner', '-C', src, '-cpf', '-', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const x = spawn('tar', [...formatArgs, '--numeric-owner', '-xpf', '-', '-C', dst], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    c.stderr!.on('data', (d) => (err += d));
    x.stderr!.on('data', (d) => (err += d));
    c.stdout!.pipe(x.stdin!);
    let pending = 2;
    const codes: Array<number | null> = [];
    const done = (code: number | null) => {
      codes.push(code);
      if (--pending === 0) {
        if (codes.every((k) => k === 0)) resolve(err);
        else reject(new Error(`tar failed (${codes.join(',')}): ${err}`));
      }
    };
    c.on('close', done);
    x.on('close', done);
  });
}

t.test('displayBytes is readable and unambiguous', async (t) => {
  t.equal(displayBytes(Buffer.from('a b')), 'a b');
  t.equal(displayBytes(Buffer.from('new\nline\ttab\\')), 'new\\nline\\ttab\\\\');
  t.equal(displayBytes(Buffer.from([0x66, 0xff, 0xfe])), 'f\\xff\\xfe');
  t.equal(displayBytes(Buffer.from('日本/é')), '日本/é');
  t.equal(displayBytes(Buffer.from([0xc3, 0x28])), '\\xc3(');
  t.not(displayBytes(Buffer.from('\\xff')), displayBytes(Buffer.from([0xff])));
});

t.test('awkward tree: contents, determinism, snapshot equals itself', async (t) => {
  const dir = tmpDir(t, 'blanket-tree-');
  const a = join(dir, 'a');
  const b = join(dir, 'b');
  const c = join(dir, 'c');
  for (const d of [a, b, c]) await mkdir(d);
  await makeAwkwardTree(a, { seed: 42, bigFileBytes: BIG });
  await makeAwkwardTree(b, { seed: 42, bigFileBytes: BIG });
  await makeAwkwardTree(c, { seed: 43, bigFileBytes: BIG });
  const sa = await snapshotTree(a);

  compareTrees(t, sa, await snapshotTree(a), { message: 'snapshot equals itself' });
  compareTrees(t, sa, await snapshotTree(b), { message: 'same seed → same tree' });
  const other = capture();
  t.notOk(compareTrees(other, sa, await snapshotTree(c)), 'different seed → different tree');

  // sorted by raw bytes, root excluded by default
  const raws = sa.map((e) => Buffer.from(e.pathHex, 'hex'));
  t.ok(raws.every((r, i) => i === 0 || Buffer.compare(raws[i - 1]!, r) < 0), 'sorted by raw path bytes');
  t.notOk(byPath(sa, ''), 'root not included by default');
  t.ok((await snapshotTree(a, { includeRoot: true })).some((e) => e.pathHex === ''), 'includeRoot');
  t.ok(byPath(sa, 'order/a-b') && byPath(sa, 'order/a/b'), 'a-b beside a/b');
  t.ok(raws.findIndex((r) => r.equals(Buffer.from('order/a-b'))) < raws.findIndex((r) => r.equals(Buffer.from('order/a/b'))), "'a-b' sorts before 'a/b' in raw bytes");

  // awkward names and paths
  t.equal(byPath(sa, AWKWARD.nonUtf8File)?.type, 'file', 'non-UTF-8 name');
  t.equal(byPath(sa, AWKWARD.nonUtf8File)?.path, 'names/f\\xff\\xfe');
  t.equal(byPath(sa, AWKWARD.nonUtf8Dir)?.type, 'dir', 'non-UTF-8 dir');
  t.ok(byPath(sa, AWKWARD.newlineFile) && byPath(sa, 'names/tab\there') && byPath(sa, 'names/with space'));
  t.ok(byPath(sa, AWKWARD.name200), '200-byte name');
  t.ok(byPath(sa, 'names/café') && byPath(sa, 'names/cafe\u0301') && byPath(sa, 'names/日本/é.txt'), 'unicode, NFC and NFD');
  t.ok(byPath(sa, 'names/.hidden') && byPath(sa, 'names/.hiddendir/.inner'), 'dot names');
  const lengths = raws.map((r) => r.length);
  t.ok(lengths.some((l) => l > 255 && l < 1000), 'a path over 255 bytes');
  t.ok(lengths.some((l) => l > 1000), 'a path over 1000 bytes');

  // hard links
  const groups = AWKWARD.hardLinks.map((p) => byPath(sa, p)?.hardLinkGroup);
  t.equal(groups[0], Buffer.from('hard-other/three').toString('hex'), 'group id = smallest path');
  t.same(new Set(groups).size, 1, 'three names share one group');
  t.equal(sa.filter((e) => e.hardLinkGroup !== null).length, 3, 'only those are grouped');

  // symlinks
  t.equal(byPath(sa, 'sym/relative')?.linkTarget, '../hard/one');
  t.equal(byPath(sa, 'sym/absolute')?.linkTarget, '/etc/passwd');
  t.equal(byPath(sa, 'sym/dangling')?.type, 'symlink');
  t.equal(byPath(sa, 'sym/loop-a')?.linkTarget, 'loop-b');
  t.equal(byPath(sa, 'sym/loop-b')?.linkTarget, 'loop-a');
  t.equal(byPath(sa, 'sym/to-dir')?.type, 'symlink', 'dir symlink not followed');
  t.notOk(byPath(sa, 'sym/to-dir/f000.dat'), 'nothing under a dir symlink');
  t.equal(byPath(sa, 'sym/odd-target')?.linkTargetHex, Buffer.from('target-\xff\n', 'latin1').toString('hex'));

  // modes, empties, special
  t.equal(byPath(sa, 'modes/mode-0600')?.mode, 0o600);
  t.equal(byPath(sa, 'modes/mode-0755')?.mode, 0o755);
  t.equal(byPath(sa, 'modes/mode-0444')?.mode, 0o444);
  t.equal(byPath(sa, AWKWARD.setuidFile)?.mode, 0o4755, 'setuid kept');
  t.equal(byPath(sa, AWKWARD.privateDir)?.mode, 0o700);
  t.equal(byPath(sa, 'empty')?.type, 'dir');
  t.equal(byPath(sa, 'empty-nested/a/b/c')?.type, 'dir');
  t.equal(byPath(sa, 'zero/empty-file')?.size, 0);
  t.equal(byPath(sa, 'zero/empty-file')?.sha256, createHash('sha256').digest('hex'));
  t.equal(byPath(sa, AWKWARD.fifo)?.type, 'fifo');

  // big file: right size, content = seeded PRNG stream
  const big = byPath(sa, AWKWARD.bigFile);
  t.equal(big?.size, BIG);
  const rng = new Prng(42 ^ 0x5bd1e995);
  const h = createHash('sha256');
  for (let left = BIG; left > 0; left -= MIB) h.update(rng.bytes(MIB).subarray(0, Math.min(MIB, left)));
  t.equal(big?.sha256, h.digest('hex'), 'big file content is the seeded stream');

  // mtimes: sub-second, whole microseconds, survive utimes/lutimes exactly
  const mt = sa.map((e) => BigInt(e.mtimeNs));
  t.ok(mt.every((m) => m % 1_000_000_000n !== 0n), 'every mtime has a sub-second part');
  t.ok(mt.every((m) => m % 1000n === 0n), 'every mtime is whole microseconds');
  t.ok(mt.every((m) => m < BigInt(Date.now()) * 1_000_000n), 'no mtime in the future');
  t.equal(new Set(sa.filter((e) => e.type === 'symlink').map((e) => e.mtimeNs)).size, sa.filter((e) => e.type === 'symlink').length, 'symlink mtimes set individually (lutimes)');
});

t.test('compareTrees passes once, fails once listing every difference', async (t) => {
  const dir = tmpDir(t, 'blanket-cmp-');
  await makeAwkwardTree(dir, { seed: 5, files: 4 });
  const s = await snapshotTree(dir);

  const ok = capture();
  t.equal(compareTrees(ok, s, s), true);
  t.same(ok.calls.map((c) => c.ok), [true], 'one passing assertion');

  const changed = s.map((e) => ({ ...e }));
  const f = changed.find((e) => e.path === 'modes/mode-0600')!;
  f.mode = 0o644;
  f.uid = 1234;
  changed.splice(changed.indexOf(changed.find((e) => e.path === 'order/a0')!), 1);
  changed.push({ ...f, path: 'zz-extra', pathHex: Buffer.from('zz-extra').toString('hex') });
  const bad = capture();
  t.equal(compareTrees(bad, s, changed, { message: 'restore' }), false);
  t.equal(bad.calls.length, 1, 'exactly one assertion');
  t.equal(bad.calls[0]!.ok, false);
  t.match(bad.calls[0]!.message, /^restore: 3 difference\(s\) \(expected → actual\), first: differs "modes\/mode-0600"/);
  t.notMatch(bad.calls[0]!.message, /\n/, 'message is one line (TAP)');
  t.same(bad.calls[0]!.differences, [
    'differs "modes/mode-0600": mode 0600 → 0644; uid 0 → 1234',
    'missing file "order/a0"',
    'extra   file "zz-extra"',
  ]);

  t.equal(diffTrees(s, changed, { ignore: (p) => p === 'order/a0' || p === 'zz-extra', ignoreFields: ['mode', 'uid'] }).length, 0, 'ignore + ignoreFields');

  // mtime options
  const shifted = s.map((e) => ({ ...e, mtimeNs: (BigInt(e.mtimeNs) + 500n).toString() }));
  t.equal(diffTrees(s, shifted).length, s.length, 'exact mtimes by default');
  t.equal(diffTrees(s, shifted, { mtimePrecisionNs: 1000n }).length, 0, 'within mtimePrecisionNs');
  t.equal(diffTrees(s, shifted, { ignoreMtimeFor: 'dirs' }).length, s.filter((e) => e.type !== 'dir').length, "ignoreMtimeFor: 'dirs'");
  t.equal(diffTrees(s, shifted, { ignoreMtimeFor: 'all' }).length, 0, "ignoreMtimeFor: 'all'");

  // non-ASCII paths are shown with hex too
  const nu = s.filter((e) => e.pathHex !== AWKWARD.nonUtf8File.toString('hex'));
  t.match(diffTrees(s, nu)[0], `missing file "names/f\\xff\\xfe" [hex ${AWKWARD.nonUtf8File.toString('hex')}]`);
});

t.test('every mutateTree kind is detected', async (t) => {
  const expectations: Record<MutationKind, { lines: (n: number) => boolean; match: RegExp[]; notMatch?: RegExp[] }> = {
    'edit-content': { lines: (n) => n === 1, match: [/differs .*sha256/, /mtimeNs/] },
    'edit-keep-mtime': { lines: (n) => n === 1, match: [/differs .*sha256/], notMatch: [/mtimeNs/, /size/] },
    'delete-file': { lines: (n) => n === 2, match: [/^missing file/] },
    'rename-file': { lines: (n) => n === 3, match: [/^missing file/, /^extra {3}file .*renamed-/] },
    'file-to-dir': { lines: (n) => n === 3, match: [/type file → dir/, /^extra {3}file .*\/inside"/] },
    'dir-to-symlink': { lines: (n) => n >= 2, match: [/type dir → symlink/] },
    chmod: { lines: (n) => n === 1, match: [/differs .*: mode 0\d+ → 0\d+$/] },
    'touch-mtime': { lines: (n) => n === 1, match: [/differs .*: mtimeNs \d+ → \d+ \(Δ 1234567000 ns\)$/] },
  };
  const kinds: MutationKind[] = [...MUTATION_KINDS, ...SNEAKY_MUTATION_KINDS];
  t.equal(kinds.length, Object.keys(expectations).length);
  const dir = tmpDir(t, 'blanket-mut-');
  for (const [i, kind] of kinds.entries()) {
    const root = join(dir, kind);
    await mkdir(root);
    await makeAwkwardTree(root, { seed: 100 + i, files: 12 });
    const before = await snapshotTree(root);
    const mut = await mutateTree(root, 7 + i, kind);
    const after = await snapshotTree(root);
    const cap = capture();
    t.equal(compareTrees(cap, before, after), false, `${kind}: compareTrees returns false (${mut.path}: ${mut.detail})`);
    t.same(cap.calls.map((c) => c.ok), [false], `${kind}: one failing assertion`);
    const lines = diffTrees(before, after);
    const exp = expectations[kind];
    t.ok(exp.lines(lines.length), `${kind}: number of differences (${lines.length})`, { lines });
    for (const re of exp.match) t.ok(lines.some((l) => re.test(l)), `${kind}: ${re}`, { lines });
    for (const re of exp.notMatch ?? []) t.notOk(lines.some((l) => re.test(l)), `${kind}: not ${re}`, { lines });
    t.ok(lines.some((l) => l.includes(`"${mut.path}"`)), `${kind}: names the mutated path`, { lines });
    // same seed, same target
    const again = join(dir, `${kind}-again`);
    await mkdir(again);
    await makeAwkwardTree(again, { seed: 100 + i, files: 12 });
    t.equal((await mutateTree(again, 7 + i, kind)).path, mut.path, `${kind}: deterministic target`);
  }
});

t.test('tar round trip', async (t) => {
  ensureDebianTools([{ command: 'tar', pkg: 'tar' }]);
  const dir = tmpDir(t, 'blanket-tar-');
  const src = join(dir, 'src');
  for (const d of ['src', 'posix', 'gnu']) await mkdir(join(dir, d));
  await makeAwkwardTree(src, { seed: 9, bigFileBytes: MIB + 1, foreignOwner: process.getuid?.() === 0 });
  const expected = await snapshotTree(src, { includeRoot: true });

  // --xattrs implies --format=posix: pax headers keep ns mtimes, long and
  // non-UTF-8 names, symlink mtimes, hard links, FIFOs, setuid, owners.
  await tarCopy(src, join(dir, 'posix'), ['--xattrs']);
  compareTrees(t, expected, await snapshotTree(join(dir, 'posix'), { includeRoot: true }), { message: 'tar --xattrs (posix) preserves everything' });

  // The default GNU format stores whole-second mtimes only.
  await tarCopy(src, join(dir, 'gnu'), ['--format=gnu']);
  const gnu = await snapshotTree(join(dir, 'gnu'), { includeRoot: true });
  const lines = diffTrees(expected, gnu);
  t.equal(lines.length, expected.length, 'gnu format: every entry differs');
  t.ok(lines.every((l) => /: mtimeNs \d+ → \d+000000000 \(Δ \d+ ns\)$/.test(l)), 'gnu format: only mtimes differ, truncated to seconds', { lines: lines.slice(0, 5) });
  compareTrees(t, expected, gnu, { mtimePrecisionNs: 1_000_000_000n, message: 'gnu format equal at 1 s precision' });
});

t.test('tools and cli helpers', async (t) => {
  t.ok(findOnPath('sh'), 'findOnPath finds sh');
  t.equal(findOnPath('no-such-command-blanket'), null);
  t.same(DEBIAN_TEST_TOOLS.map((x) => x.command), ['zstd', 'tar', 'rdiff', 'gpg']);
  ensureDebianTools([{ command: 'sh', pkg: 'dash' }]); // present: no apt-get run

  const dir = tmpDir(t, 'blanket-cli-');
  t.ok(lstatSync(dir).isDirectory(), 'tmpDir made a directory');
  const script = join(dir, 'child.mjs');
  writeFileSync(
    script,
    `let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const [mode] = process.argv.slice(2);
  if (mode === 'hang') { setInterval(() => {}, 1000); return; }
  process.stdout.write(JSON.stringify({ args: process.argv.slice(2), input, cwd: process.cwd(), noColor: process.env.NO_COLOR, x: process.env.X_TEST }));
  process.stderr.write('err-out');
  process.exit(3);
});`,
  );
  const r = await runNodeScript(script, ['a b', '--x'], { cwd: dir, env: { X_TEST: 'yes' }, input: 'hello' });
  t.equal(r.code, 3);
  t.equal(r.signal, null);
  t.equal(r.stderr, 'err-out');
  t.same(JSON.parse(r.stdout), { args: ['a b', '--x'], input: 'hello', cwd: dir, noColor: '1', x: 'yes' });
  const hung = await runNodeScript(script, ['hang'], { timeoutMs: 300 });
  t.equal(hung.signal, 'SIGKILL');
  t.equal(hung.timedOut, true);
  t.match(hung.stderr, /timeout/);

  const child = spawnNodeScript(script, ['hang']);
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((res) => child.on('close', (c, s) => res([c, s])));
  child.kill('SIGKILL');
  t.same(await exited, [null, 'SIGKILL'], 'spawnNodeScript child can be killed -9');
});
