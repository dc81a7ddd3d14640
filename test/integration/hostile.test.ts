// Hostile archives, crafted by hand: index text written here as strings (checksummed, compressed with the real
// zstd CLI), tar packs built byte by byte, a valid blanket.json. The REAL `blanket restore` (and `verify`, `ls`)
// runs on them, and every case proves that nothing outside DEST was created or changed: the whole sandbox around
// DEST (siblings, parents, the archive, an "outside" directory that symlinks point at) is snapshotted before and
// after with lstat (type, mode, owner, size, nlink, inode, mtime, ctime, content, link target), and names that an
// escape would create (in the sandbox, in /tmp, in /) must not exist. Each CLI run must also end by itself
// (timeouts), without an "unexpected error" stack trace, with the exit code a demanding user expects (3 when the
// archive is damaged or unsafe, 1 for a fatal error), naming the damaged object or the path.
//
// Layout of every case:   SANDBOX/archive/...     the hand-made archive
//                         SANDBOX/outside/...     sentinel tree (x, sub/, sub/y) that hostile symlinks point at
//                         SANDBOX/nest/keep       sentinel file beside DEST
//                         SANDBOX/nest/dest/      DEST (two levels down, so "../.." is SANDBOX)

import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { existsSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, tmpDir, type CliResult } from '../helpers/cli.js';
import { ensureDebianTools } from '../helpers/tools.js';

ensureDebianTools([{ command: 'zstd', pkg: 'zstd' }]);

// ---------------------------------------------------------------------------
// Hand-made archive pieces

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');
const hex = (name: string | Buffer): string => Buffer.from(name).toString('hex');
/** The key of a path given as its components, written out by hand: "1" hex "." per directory, "0" hex "." last. */
const k = (...names: Array<string | Buffer>): string => names.map((n, i) => (i === names.length - 1 ? '0' : '1') + hex(n) + '.').join('');

const L1 = '000001/00000001';
const L2 = '000002/00000001';
const IDX1 = 'layers/000001/00000001.idx.zst';
const IDX2 = 'layers/000002/00000001.idx.zst';
const PACK1 = 'layers/000001/00000001.tar.zst';
const PACK2 = 'layers/000002/00000001.tar.zst';
const MTIME = '1700000000123456000';

interface EntryFields {
  mode?: string;
  mtime?: string;
  ctime?: string;
  ino?: string | number;
  nlink?: string | number;
  size?: string | number;
  uid?: string | number;
  gid?: string | number;
  user?: string;
  group?: string;
  hash?: string;
  loc?: string;
  target?: string;
  rdev?: string | number;
}

let nextIno = 1000;
const DEFAULT_MODES: Record<string, string> = { f: '644', d: '755', l: '777', p: '600', c: '600', b: '600' };

/** One E line (17 tab-separated fields), every field overridable with any text. */
function E(key: string, kind: string, f: EntryFields = {}): string {
  return [
    'E',
    key,
    kind,
    f.mode ?? DEFAULT_MODES[kind] ?? '644',
    f.mtime ?? MTIME,
    f.ctime ?? MTIME,
    String(f.ino ?? nextIno++),
    String(f.nlink ?? 1),
    String(f.size ?? 0),
    String(f.uid ?? 0),
    String(f.gid ?? 0),
    f.user ?? 'root',
    f.group ?? 'root',
    f.hash ?? '-',
    f.loc ?? '-',
    f.target ?? '-',
    String(f.rdev ?? 0),
  ].join('\t');
}

/** A file entry whose single chunk is `content`, stored in pack `stem`. */
function fileE(key: string, content: string | Buffer, stem: string, f: EntryFields = {}): string {
  const data = Buffer.from(content);
  return E(key, 'f', { hash: sha256(data), size: data.length, loc: stem, ...f });
}

const dirE = (key: string, f: EntryFields = {}): string => E(key, 'd', f);
const linkE = (key: string, target: string, f: EntryFields = {}): string => E(key, 'l', { target, ...f });

interface IndexHead {
  layer: number;
  seq: number;
  pack?: string;
  after?: string;
  through?: string;
}

/** Index text: header, the given body lines, and the end line with the SHA-256 of everything before it. */
function indexText(h: IndexHead, body: string[], opts: { checksum?: string; omitEnd?: boolean; head?: string[] } = {}): Buffer {
  const head = opts.head ?? [
    'blanket-index\t1',
    `layer\t${h.layer}`,
    `seq\t${h.seq}`,
    `pack\t${h.pack ?? '-'}`,
    `after\t${h.after ?? '!'}`,
    `through\t${h.through ?? '~'}`,
    'time\t1700000000000',
  ];
  const text = Buffer.from([...head, ...body].map((line) => line + '\n').join(''), 'latin1');
  if (opts.omitEnd) return text;
  return Buffer.concat([text, Buffer.from(`end\t${opts.checksum ?? sha256(text)}\n`)]);
}

const member = (content: string | Buffer): string => {
  const data = Buffer.from(content);
  return `H\t${sha256(data)}\t${data.length}`;
};

/** A ustar header block, written by hand. */
function tarHeader(name: string, size: number, o: { type?: string; linkname?: string; mode?: number; sizeField?: string } = {}): Buffer {
  const h = Buffer.alloc(512);
  h.write(name.slice(0, 100), 0, 'latin1');
  h.write((o.mode ?? 0o644).toString(8).padStart(7, '0') + '\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(o.sizeField ?? size.toString(8).padStart(11, '0') + '\0', 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write(o.type ?? '0', 156);
  h.write((o.linkname ?? '').slice(0, 100), 157, 'latin1');
  h.write('ustar\0' + '00', 257, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return h;
}

function tarMember(name: string, content: string | Buffer, o: { type?: string; linkname?: string } = {}): Buffer {
  const data = Buffer.from(content);
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512);
  return Buffer.concat([tarHeader(name, data.length, o), data, pad]);
}

/** A tar of members named by the SHA-256 of their content (what Blanket writes), plus any extra raw members. */
function tarOf(contents: Array<string | Buffer>, extra: Buffer[] = []): Buffer {
  return Buffer.concat([...extra, ...contents.map((c) => tarMember(sha256(Buffer.from(c)), c)), Buffer.alloc(1024)]);
}

const zstd = (data: Buffer): Buffer => execFileSync('zstd', ['-q', '-c', '-3'], { input: data, maxBuffer: 1 << 30 });

/** A zstd frame of RLE blocks of 128 KiB each (4 bytes per block): tiny, decompresses to blocks × 128 KiB. */
function rleFrame(blocks: number, byte = 0, contentSize?: bigint): Buffer {
  const head =
    contentSize === undefined
      ? Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58]) // no content size; window 2^21
      : Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xc0, 0x58]), bigLE(contentSize)]);
  const body = Buffer.alloc(blocks * 4);
  for (let i = 0; i < blocks; i++) {
    body.writeUIntLE((131072 << 3) | (1 << 1) | (i === blocks - 1 ? 1 : 0), i * 4, 3);
    body[i * 4 + 3] = byte;
  }
  return Buffer.concat([head, body]);
}

function bigLE(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value);
  return b;
}

// ---------------------------------------------------------------------------
// Sandbox: archive, DEST, and the sentinel tree around them

const GOOD = 'good content\n';
const OUTSIDE_X = 'OUTSIDE x: must never change\n';

class Sandbox {
  readonly archive: string;
  readonly outside: string;
  readonly dest: string;
  /** A unique name an escape would create (checked in the sandbox, in /tmp and in /). */
  readonly evil = `blanket-evil-${randomBytes(6).toString('hex')}`;
  /** An absolute path that does not exist and must not be created. */
  readonly nowhere = `/tmp/blanket-hostile-nowhere-${randomBytes(6).toString('hex')}`;
  private before: string[] = [];

  private constructor(readonly root: string) {
    this.archive = join(root, 'archive');
    this.outside = join(root, 'outside');
    this.dest = join(root, 'nest', 'dest');
  }

  static async create(t: Test): Promise<Sandbox> {
    const s = new Sandbox(tmpDir(t, 'blanket-hostile-'));
    await fsp.mkdir(join(s.archive, 'layers'), { recursive: true });
    await fsp.writeFile(
      join(s.archive, 'blanket.json'),
      JSON.stringify({ format: 'blanket', version: 1, id: randomBytes(16).toString('hex'), created: '2024-01-01T00:00:00.000Z' }, null, 2) + '\n',
    );
    await fsp.mkdir(join(s.outside, 'sub'), { recursive: true });
    await fsp.writeFile(join(s.outside, 'x'), OUTSIDE_X);
    await fsp.writeFile(join(s.outside, 'sub', 'y'), 'OUTSIDE sub/y\n');
    await fsp.mkdir(s.dest, { recursive: true });
    await fsp.writeFile(join(s.root, 'nest', 'keep'), 'beside DEST\n');
    t.teardown(() => {
      // never leave an escape behind, even when the test failed
      for (const p of s.escapeNames()) void fsp.rm(p, { recursive: true, force: true });
    });
    return s;
  }

  /** Layer 1: the root and a file "good" (restored whatever a later hostile layer says). */
  async base(): Promise<void> {
    await this.index(L1, indexText({ layer: 1, seq: 1, pack: L1 }, ['S\t-\t' + k('good'), dirE('-'), fileE(k('good'), GOOD, L1), member(GOOD)]));
    await this.pack(L1, tarOf([GOOD]));
  }

  async index(stem: string, text: Buffer): Promise<void> {
    await this.raw(`layers/${stem}.idx.zst`, zstd(text));
  }

  async pack(stem: string, tar: Buffer): Promise<void> {
    await this.raw(`layers/${stem}.tar.zst`, zstd(tar));
  }

  async raw(name: string, bytes: Buffer): Promise<void> {
    await fsp.mkdir(join(this.archive, name, '..'), { recursive: true });
    await fsp.writeFile(join(this.archive, name), bytes);
  }

  escapeNames(): string[] {
    return [this.nowhere, join('/tmp', this.evil), join('/', this.evil), join(this.root, this.evil), join(this.root, 'nest', this.evil)];
  }

  async snapshot(): Promise<void> {
    this.before = await snapshotAround(this.root, this.dest);
  }

  /** Nothing around DEST changed, and no escape name exists anywhere. */
  async assertContained(t: Test): Promise<void> {
    const after = await snapshotAround(this.root, this.dest);
    t.same(after, this.before, 'nothing outside DEST was created or changed');
    t.same(
      this.escapeNames().filter((p) => exists(p)),
      [],
      'no escape path exists',
    );
    t.equal(lstatSync(this.dest).isDirectory(), true, 'DEST is still a real directory');
  }

  cli(args: string[], timeoutMs = 30_000): Promise<CliResult> {
    return runCli(args, { timeoutMs });
  }

  restore(...extra: string[]): Promise<CliResult> {
    return this.cli(['restore', this.archive, this.dest, ...extra]);
  }

  verify(): Promise<CliResult> {
    return this.cli(['verify', this.archive]);
  }

  ls(): Promise<CliResult> {
    return this.cli(['ls', this.archive]);
  }

  at(...parts: string[]): string {
    return join(this.dest, ...parts);
  }
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Everything below root except the `skip` subtree, one line per entry, from lstat (never following symlinks). */
async function snapshotAround(root: string, skip: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (abs: string, rel: string): Promise<void> => {
    if (abs === skip) {
      out.push(`${rel} [DEST]`);
      return;
    }
    const st = await fsp.lstat(abs, { bigint: true });
    let what = '';
    if (st.isFile()) what = `file ${sha256(await fsp.readFile(abs))}`;
    else if (st.isSymbolicLink()) what = `symlink -> ${await fsp.readlink(abs)}`;
    else if (st.isDirectory()) what = 'dir';
    else what = `special ${st.mode & 0o170000n} ${st.rdev}`;
    out.push(
      `${rel || '.'} ${what} mode=${(st.mode & 0o7777n).toString(8)} uid=${st.uid} gid=${st.gid} size=${st.isDirectory() ? '-' : st.size} ` +
        `nlink=${st.isDirectory() ? '-' : st.nlink} ino=${st.ino} mtime=${st.mtimeNs} ctime=${st.ctimeNs}`,
    );
    if (st.isDirectory()) {
      for (const name of (await fsp.readdir(abs)).sort()) await visit(join(abs, name), rel ? `${rel}/${name}` : name);
    }
  };
  await visit(root, '');
  return out;
}

// ---------------------------------------------------------------------------
// What every CLI run must look like

function assertClean(t: Test, r: CliResult, what: string): void {
  t.equal(r.timedOut, false, `${what}: finished by itself (no hang)`);
  t.equal(r.signal, null, `${what}: not killed by a signal`);
  t.notMatch(r.stderr, /unexpected error/i, `${what}: no "unexpected error"`);
  t.notMatch(r.stderr, /\n\s+at [^\n]*[(:]\d+/, `${what}: no stack trace`);
}

function expectExit(t: Test, r: CliResult, code: number, what: string, mentions: Array<string | RegExp> = []): void {
  assertClean(t, r, what);
  t.equal(r.code, code, `${what}: exit ${code}`, { stdout: r.stdout, stderr: r.stderr });
  for (const m of mentions) t.match(r.stderr, m, `${what}: stderr names ${m}`);
}

async function readIf(path: string): Promise<string | null> {
  try {
    return await fsp.readFile(path, 'utf8');
  } catch {
    return null;
  }
}

/**
 * The common shape of a "damaged index" case: layer 1 is fine, layer 2's index (text given) is hostile. restore
 * must skip that index, restore layer 1's "good", exit 3 naming the index; verify exits 3 naming it; ls exits 1
 * naming it; nothing escapes.
 */
async function damagedIndexCase(t: Test, text: Buffer | null, opts: { object?: Buffer; pack?: Buffer; reason?: RegExp } = {}): Promise<void> {
  const s = await Sandbox.create(t);
  await s.base();
  if (opts.object) await s.raw(IDX2, opts.object);
  else await s.index(L2, text!);
  if (opts.pack) await s.pack(L2, opts.pack);
  await s.snapshot();
  const [restore, verify, ls] = [await s.restore(), await s.verify(), await s.ls()];
  expectExit(t, restore, 3, 'restore', [IDX2, ...(opts.reason ? [opts.reason] : [])]);
  t.equal(await readIf(s.at('good')), GOOD, 'restore still restored the intact layer');
  expectExit(t, verify, 3, 'verify', [IDX2]);
  t.match(verify.stdout, IDX2, 'verify reports the index as damaged');
  expectExit(t, ls, 1, 'ls', [IDX2]);
  await s.assertContained(t);
}

// ---------------------------------------------------------------------------
// Keys that are not safe path keys

t.test('keys that decode to unsafe paths, or are not keys at all', async (t) => {
  const evilName = 'blanket-evil-X';
  const cases: Array<[string, string]> = [
    ['".." as the name', '02e2e.'],
    ['"." as the name', '02e.'],
    ['".." as a directory, then a name', '12e2e.0' + hex(evilName) + '.'],
    ['"../../.." chain', '12e2e.12e2e.12e2e.0' + hex(evilName) + '.'],
    ['a "/" inside a name (hex 2f): "../../evil"', '0' + hex('../../' + evilName) + '.'],
    ['a name starting with "/" (absolute)', '0' + hex('/tmp/' + evilName) + '.'],
    ['a NUL byte inside a name', '0' + hex('a\0b') + '.'],
    ['an empty component', '1.0' + hex('x') + '.'],
    ['an empty last component', '161.0.'],
    ['uppercase hex', '0' + hex('ab').toUpperCase() + '.'],
    ['odd-length hex', '0616.'],
    ['no final "."', '061'],
    ['a plain path, not a key', '../../' + evilName],
    ['an absolute path, not a key', '/tmp/' + evilName],
    ['a "1" token last (a directory prefix)', '161.'],
    ['a key with a space', '061 .'],
  ];
  for (const [what, key] of cases) {
    await t.test(what, async (t) => {
      const body = ['S\t' + k('\x01') + '\t' + k('\xff', '\xff'), fileE(key, 'EVIL\n', L2), member('EVIL\n')];
      await damagedIndexCase(t, indexText({ layer: 2, seq: 1, pack: L2 }, body), { pack: tarOf(['EVIL\n']), reason: /key/ });
    });
  }
  await t.test('an unsafe key in a segment line, or in the header range', async (t) => {
    for (const [where, text] of [
      ['segment', indexText({ layer: 2, seq: 1 }, ['S\t12e2e.0' + hex('x') + '.\t' + k('z')])],
      ['header through', indexText({ layer: 2, seq: 1, through: '12e2e.061.' }, [])],
      ['header after', indexText({ layer: 2, seq: 1, after: '02f.' }, [])],
    ] as const) {
      await t.test(where, (t) => damagedIndexCase(t, text));
    }
  });
});

// ---------------------------------------------------------------------------
// Symlinks: data inside DEST, never a way out of it

t.test('absolute and ../ symlink targets are restored as symlinks, never followed', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  const body = [
    `S\t${k('abs')}\t${k('up2')}`,
    linkE(k('abs'), s.nowhere),
    linkE(k('etc'), '/etc'),
    linkE(k('up'), '../..'),
    linkE(k('up2'), '../../../../../../../../tmp'),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1 }, body));
  await s.snapshot();
  const r = await s.restore();
  expectExit(t, r, 0, 'restore');
  t.equal(await fsp.readlink(s.at('abs')), s.nowhere, 'absolute target kept as data');
  t.equal(await fsp.readlink(s.at('etc')), '/etc');
  t.equal(await fsp.readlink(s.at('up')), '../..', '"../.." target kept as data');
  t.equal(await fsp.readlink(s.at('up2')), '../../../../../../../../tmp');
  t.equal(await readIf(s.at('good')), GOOD);
  await s.assertContained(t);
});

t.test('a symlink to outside and entries below it in the same state (impossible tree)', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  const x = 'written through the link?\n';
  const body = [
    `S\t${k('a')}\t${k('b', 'x')}`,
    linkE(k('a'), s.outside),
    linkE(k('b'), s.nowhere),
    fileE(k('a', 'x'), x, L2, { mode: '4755' }),
    dirE(k('a', 'sub'), { mode: '777', mtime: '1000000000000000000' }),
    fileE(k('b', 'x'), x, L2),
    fileE(k('a', 'sub', 'y'), x, L2),
    member(x),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([x]));
  await s.snapshot();
  const r = await s.restore();
  await s.assertContained(t);
  t.equal(exists(join(s.nowhere, 'x')), false, 'nothing created at the absolute target');
  expectExit(t, r, 3, 'restore (entries below a symlink are unsafe)', [/\ba\b/]);
  for (const p of ['a', 'b']) {
    const st = lstatSync(s.at(p));
    t.ok(st.isDirectory() || st.isSymbolicLink(), `${p} is inside DEST`);
  }
});

t.test('hard link whose first name sits below a symlink to outside', async (t) => {
  // a -> OUTSIDE, a/x and c/z one inode: linking c/z to "a/x" after a became a symlink would link OUTSIDE/x.
  const s = await Sandbox.create(t);
  await s.base();
  const body = [
    `S\t${k('a')}\t${k('c', 'z')}`,
    linkE(k('a'), s.outside),
    fileE(k('a', 'x'), OUTSIDE_X, L2, { ino: 77, nlink: 2 }),
    fileE(k('c', 'z'), OUTSIDE_X, L2, { ino: 77, nlink: 2 }),
    member(OUTSIDE_X),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([OUTSIDE_X]));
  await s.snapshot();
  const r = await s.restore();
  await s.assertContained(t);
  const outsideIno = lstatSync(join(s.outside, 'x')).ino;
  if (exists(s.at('c', 'z'))) t.not(lstatSync(s.at('c', 'z')).ino, outsideIno, 'c/z is not a link to the outside file');
  expectExit(t, r, 3, 'restore', [/\ba\b/]);
});

t.test('a directory symlink left in DEST by an earlier restore is replaced, not followed', async (t) => {
  // Layer 1: a -> OUTSIDE.  Layer 2: a is a directory with a/x (same content as OUTSIDE/x, setuid) and a/sub.
  const s = await Sandbox.create(t);
  const body1 = [`S\t-\t${k('a')}`, dirE('-'), linkE(k('a'), s.outside)];
  await s.index(L1, indexText({ layer: 1, seq: 1 }, body1));
  const body2 = [
    `S\t${k('a')}\t${k('a', 'sub')}`,
    dirE(k('a'), { mode: '777' }),
    fileE(k('a', 'x'), OUTSIDE_X, L2, { mode: '4777', mtime: '1000000000000000000' }),
    dirE(k('a', 'sub'), { mode: '777', mtime: '1000000000000000000' }),
    member(OUTSIDE_X),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body2));
  await s.pack(L2, tarOf([OUTSIDE_X]));
  await s.snapshot();

  expectExit(t, await s.restore('--layer', '1'), 0, 'restore --layer 1');
  t.equal(await fsp.readlink(s.at('a')), s.outside, 'the earlier restore left a -> OUTSIDE');

  // Only a/x (its parent "a" is not in the request): the symlink must still not be followed.
  expectExit(t, await s.restore('a/x'), 0, 'restore a/x alone');
  await s.assertContained(t);
  t.ok(lstatSync(s.at('a')).isDirectory(), 'a replaced by a real directory');
  t.equal(await readIf(s.at('a', 'x')), OUTSIDE_X, 'a/x restored inside DEST');

  expectExit(t, await s.restore('--layer', '1'), 0, 'restore --layer 1 again');
  t.equal(await fsp.readlink(s.at('a')), s.outside);
  expectExit(t, await s.restore('a/sub'), 0, 'restore a/sub alone');
  await s.assertContained(t);

  expectExit(t, await s.restore('--layer', '1'), 0, 'restore --layer 1 again');
  expectExit(t, await s.restore(), 0, 'restore everything');
  t.ok(lstatSync(s.at('a')).isDirectory(), 'a replaced by a real directory');
  t.equal(lstatSync(s.at('a', 'x')).mode & 0o7777, 0o4777, 'a/x got its mode inside DEST');
  t.equal(await readIf(s.at('a', 'x')), OUTSIDE_X);
  await s.assertContained(t);
});

// ---------------------------------------------------------------------------
// Hard links: every name is a key, so the first name of a group is always inside DEST

t.test('hard-link groups cannot reach outside DEST', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  const outsideIno = lstatSync(join(s.outside, 'x')).ino;
  const body = [
    `S\t${k('h1')}\t${k('z', 'h3')}`,
    // ino equal to the real inode of OUTSIDE/x: it only groups names, it never names a file
    fileE(k('h1'), OUTSIDE_X, L2, { ino: outsideIno, nlink: 3 }),
    fileE(k('h2'), OUTSIDE_X, L2, { ino: outsideIno, nlink: 3 }),
    fileE(k('z', 'h3'), OUTSIDE_X, L2, { ino: outsideIno, nlink: 3 }),
    member(OUTSIDE_X),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([OUTSIDE_X]));
  await s.snapshot();
  expectExit(t, await s.restore(), 0, 'restore');
  const ino = lstatSync(s.at('h1')).ino;
  t.not(ino, outsideIno);
  t.equal(lstatSync(s.at('h2')).ino, ino, 'h2 linked to h1 inside DEST');
  t.equal(lstatSync(s.at('z', 'h3')).ino, ino, 'z/h3 linked to h1 inside DEST');
  // Only z/h3 requested: its group's earlier names are not restored, so it becomes the first name itself.
  await fsp.rm(s.dest, { recursive: true });
  await fsp.mkdir(s.dest);
  expectExit(t, await s.restore('z/h3'), 0, 'restore z/h3 alone');
  t.equal(await readIf(s.at('z', 'h3')), OUTSIDE_X);
  t.equal(exists(s.at('h1')), false);
  await s.assertContained(t);
});

t.test('hard link whose first name could not be restored', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  const body = [
    `S\t${k('h1')}\t${k('h2')}`,
    fileE(k('h1'), 'never stored\n', L2, { ino: 5, nlink: 2 }),
    fileE(k('h2'), 'never stored\n', L2, { ino: 5, nlink: 2 }),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([]));
  await s.snapshot();
  expectExit(t, await s.restore(), 3, 'restore', [/h1/, /h2/, PACK2]);
  t.equal(exists(s.at('h1')), false);
  t.equal(exists(s.at('h2')), false);
  await s.assertContained(t);
});

// ---------------------------------------------------------------------------
// Device nodes

t.test('device nodes: skipped with a warning unless --devices, created with it (as root)', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  const body = [
    `S\t${k('blk')}\t${k('fifo')}`,
    E(k('blk'), 'b', { rdev: (7 << 8) | 0 }),
    E(k('chr'), 'c', { rdev: (1 << 8) | 3 }),
    E(k('fifo'), 'p', { mode: '640' }),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1 }, body));
  await s.snapshot();
  const plain = await s.restore();
  expectExit(t, plain, 0, 'restore without --devices', [/blk: device node not restored/, /chr: device node not restored/]);
  t.equal(exists(s.at('blk')), false, 'no block device');
  t.equal(exists(s.at('chr')), false, 'no character device');
  t.ok(lstatSync(s.at('fifo')).isFIFO(), 'the FIFO is restored');
  await s.assertContained(t);

  if (process.getuid?.() !== 0) return;
  const devices = await s.restore('--devices');
  expectExit(t, devices, 0, 'restore --devices');
  const blk = lstatSync(s.at('blk'));
  const chr = lstatSync(s.at('chr'));
  t.ok(blk.isBlockDevice(), 'block device created');
  t.ok(chr.isCharacterDevice(), 'character device created');
  t.equal(chr.rdev, (1 << 8) | 3, 'char device 1,3');
  t.equal(blk.rdev, 7 << 8, 'block device 7,0');
  t.equal(chr.mode & 0o7777, 0o600);
  await s.assertContained(t);
});

// ---------------------------------------------------------------------------
// Hostile packs

t.test('tar members with ../ or absolute names, links, and content that does not match its name', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  const ok = 'intact member\n';
  const lie = 'the hash names other content\n';
  const extra = [
    tarMember(`../../${s.evil}`, 'EVIL\n'),
    tarMember(`/tmp/${s.evil}`, 'EVIL\n'),
    tarMember(join(s.root, s.evil), 'EVIL\n'),
    tarMember(sha256('link member'), '', { type: '2', linkname: join(s.outside, 'x') }),
    tarMember(sha256('hard member'), '', { type: '1', linkname: join(s.outside, 'x') }),
    tarMember(sha256(lie), 'something else entirely\n'),
  ];
  const body = [
    `S\t${k('f-hard')}\t${k('f-ok')}`,
    fileE(k('f-hard'), 'hard member', L2),
    fileE(k('f-lie'), lie, L2),
    fileE(k('f-link'), 'link member', L2),
    fileE(k('f-ok'), ok, L2),
    member(ok),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([ok], extra));
  await s.snapshot();
  const r = await s.restore();
  expectExit(t, r, 3, 'restore', [/f-lie/, /f-link/, /f-hard/, PACK2]);
  t.equal(await readIf(s.at('f-ok')), ok, 'the intact member is restored');
  for (const p of ['f-lie', 'f-link', 'f-hard']) t.equal(exists(s.at(p)), false, `${p} not written`);
  const v = await s.verify();
  expectExit(t, v, 3, 'verify', [PACK2]);
  t.match(v.stdout, /f-lie/, 'verify names the file the bad member costs');
  await s.assertContained(t);
  t.same((await fsp.readdir(s.dest)).sort(), ['f-ok', 'good'], 'DEST holds only what the archive legitimately restores');
});

/** A layer 2 with files "f" and "g" stored in pack 2, whose data object is replaced by `packObject`. */
async function hostilePackCase(t: Test, packObject: Buffer, reason: RegExp, timeLimitMs = 10_000): Promise<Sandbox> {
  const s = await Sandbox.create(t);
  await s.base();
  const body = [`S\t${k('f')}\t${k('g')}`, fileE(k('f'), 'f content\n', L2), fileE(k('g'), 'g content\n', L2), member('f content\n'), member('g content\n')];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.raw(PACK2, packObject);
  await s.snapshot();
  const started = Date.now();
  const r = await s.restore();
  const elapsed = Date.now() - started;
  expectExit(t, r, 3, 'restore', [PACK2, /\bf\b/, /\bg\b/, reason]);
  t.ok(elapsed < timeLimitMs, `restore finished quickly (${elapsed} ms)`);
  t.equal(await readIf(s.at('good')), GOOD, 'the intact layer is restored');
  t.equal(exists(s.at('f')), false);
  const v = await s.verify();
  expectExit(t, v, 3, 'verify', [PACK2]);
  t.match(v.stdout, /DAMAGED layers\/000002\/00000001\.tar\.zst/);
  await s.assertContained(t);
  return s;
}

t.test('zstd bomb: one tiny frame declaring 16 GiB of content', async (t) => {
  await hostilePackCase(t, rleFrame(8, 0, 16n << 30n), /Corrupt zstd data/);
});

t.test('zstd bomb: one tiny frame without a content size, 12.5 GiB of RLE blocks', async (t) => {
  await hostilePackCase(t, rleFrame(100_000, 0x41), /Corrupt zstd data/);
});

t.test('zstd bomb: many small frames of zeros (1 GiB), bounded memory and time', async (t) => {
  const frame = rleFrame(512, 0);
  await hostilePackCase(t, Buffer.concat([zstd(tarOf([])), ...Array<Buffer>(16).fill(frame)]), /damaged|missing/);
});

t.test('zstd bomb: a tar member declaring 8 GiB, then gigabytes of zeros', async (t) => {
  const head = zstd(tarHeader(sha256('f content\n'), 0, { sizeField: '77777777777\0' }));
  await hostilePackCase(t, Buffer.concat([head, ...Array<Buffer>(16).fill(rleFrame(512, 0))]), /damaged|missing/);
});

t.test('a pack that is not zstd at all', async (t) => {
  await hostilePackCase(t, tarOf(['f content\n', 'g content\n']), /Corrupt zstd data|not/);
});

t.test('a pack cut short inside a zstd frame', async (t) => {
  const whole = zstd(tarOf(['f content\n', 'g content\n']));
  await hostilePackCase(t, whole.subarray(0, whole.length - 7), /truncated|Corrupt/);
});

t.test('a pack whose tar is cut short', async (t) => {
  const tar = tarOf(['f content\n', 'g content\n']);
  await hostilePackCase(t, zstd(tar.subarray(0, 700)), /damaged|Unexpected end/);
});

t.test('a pack that is missing', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, [`S\t${k('f')}\t${k('f')}`, fileE(k('f'), 'f content\n', L2), member('f content\n')]));
  await s.snapshot();
  expectExit(t, await s.restore(), 3, 'restore', [PACK2, /\bf\b/]);
  expectExit(t, await s.verify(), 3, 'verify', [PACK2]);
  await s.assertContained(t);
});

// ---------------------------------------------------------------------------
// Hostile or damaged index text

t.test('damaged index text', async (t) => {
  const f1 = 'one\n';
  const f2 = 'two\n';
  const okBody = (): string[] => [`S\t${k('f1')}\t${k('f2')}`, fileE(k('f1'), f1, L1), fileE(k('f2'), f2, L1)];
  const head = (over: Record<string, string> = {}): string[] => {
    const fields: Record<string, string> = { layer: '2', seq: '1', pack: '-', after: '!', through: '~', time: '1700000000000', ...over };
    return ['blanket-index\t1', ...Object.entries(fields).map(([name, value]) => `${name}\t${value}`)];
  };
  const h2 = { layer: 2, seq: 1 };
  const cases: Array<[string, Buffer, RegExp?]> = [
    ['entries out of order', indexText(h2, [`S\t${k('f1')}\t${k('f2')}`, fileE(k('f2'), f2, L1), fileE(k('f1'), f1, L1)]), /out of order/],
    ['a duplicate entry', indexText(h2, [`S\t${k('f1')}\t${k('f2')}`, fileE(k('f1'), f1, L1), fileE(k('f1'), f1, L1)]), /out of order/],
    ['overlapping segments', indexText(h2, [`S\t${k('f1')}\t${k('f2')}`, fileE(k('f1'), f1, L1), `S\t${k('f1')}\t${k('f3')}`]), /overlap/],
    ['segments out of order', indexText(h2, [`S\t${k('f3')}\t${k('f4')}`, `S\t${k('f1')}\t${k('f2')}`]), /overlap|order/],
    ['an entry outside its segment', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f2'), f2, L1)]), /outside its segment/],
    ['an entry before any segment', indexText(h2, [fileE(k('f1'), f1, L1)]), /outside any segment/],
    ['a segment outside the header range', indexText({ ...h2, after: k('m'), through: k('q') }, okBody()), /outside the index range/],
    ['an inverted header range', indexText({ ...h2, after: k('q'), through: k('m') }, []), /range/],
    [
      'chunk count larger than the chunk lines',
      indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, E(k('f1'), 'f', { hash: sha256(f1 + f2), size: 8, loc: '+3' }), `C\t${sha256(f1)}\t4\t${L1}`, `C\t${sha256(f2)}\t4\t${L1}`]),
      /missing chunk lines/,
    ],
    [
      'chunk lines without a chunked entry',
      indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f1'), f1, L1), `C\t${sha256(f1)}\t4\t${L1}`]),
      /chunk line without/,
    ],
    [
      'chunk sizes that do not add up to the file size',
      indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, E(k('f1'), 'f', { hash: sha256(f1 + f2), size: 9, loc: '+2' }), `C\t${sha256(f1)}\t4\t${L1}`, `C\t${sha256(f2)}\t4\t${L1}`]),
      /add up/,
    ],
    ['a size beyond 2^53', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f1'), f1, L1, { size: '99999999999999999999' })]), /out of range/],
    ['a negative size', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f1'), f1, L1, { size: '-4' })]), /malformed size/],
    ['a negative nlink', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f1'), f1, L1, { nlink: '-1' })]), /malformed nlink/],
    ['a negative uid', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f1'), f1, L1, { uid: '-1' })]), /malformed uid/],
    ['a negative mode', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f1'), f1, L1, { mode: '-644' })]), /malformed mode/],
    ['a mode beyond 07777', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f1'), f1, L1, { mode: '17777' })]), /mode out of range/],
    ['a negative layer', indexText(h2, [], { head: head({ layer: '-2' }) }), /malformed layer/],
    ['non-ASCII bytes', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f1'), f1, L1, { user: 'r\u00e9mi' })]), /non-ASCII/],
    ['a control byte', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f1'), f1, L1, { user: 'a\rb' })]), /control/],
    ['a missing end line', indexText(h2, okBody(), { omitEnd: true }), /no end line/],
    ['a wrong checksum', indexText(h2, okBody(), { checksum: sha256('something else') }), /checksum mismatch/],
    ['data after the end line', Buffer.concat([indexText(h2, okBody()), Buffer.from(fileE(k('f9'), f1, L1) + '\n')]), /after the end line/],
    ['a last line without a newline', indexText(h2, okBody()).subarray(0, -1), /truncated/],
    ['a duplicate header field', indexText(h2, [], { head: [...head(), 'layer\t2'] }), /duplicate header/],
    ['a missing header field', indexText(h2, [], { head: head().filter((l) => !l.startsWith('through')) }), /missing header field/],
    ['an unknown record', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, 'X\tboom']), /unknown record/],
    ['an entry with too few fields', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, `E\t${k('f1')}\tf\t644`]), /fields/],
    ['a symlink target with a NUL', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, linkE(k('f1'), 'a%00b')]), /NUL/],
    ['an empty symlink target', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, linkE(k('f1'), '-')]), /empty symlink/],
    ['a root that is not a directory', indexText(h2, ['S\t-\t-', linkE('-', '/etc')]), /root must be a directory/],
    ['a content location that is not a stem', indexText(h2, [`S\t${k('f1')}\t${k('f1')}`, fileE(k('f1'), f1, '../../000001/00000001')]), /content location/],
    ['a header claiming another layer', indexText({ layer: 1, seq: 1 }, okBody()), /claims to be layer 1/],
    ['a header claiming another sequence number', indexText({ layer: 2, seq: 7 }, okBody()), /claims to be layer 2 pack 7/],
    ['a future format version', indexText(h2, [], { head: ['blanket-index\t9', ...head().slice(1)] }), /version/],
    ['not an index at all', Buffer.from('#!/bin/sh\nrm -rf /\n'), /not a Blanket index/],
  ];
  for (const [what, text, reason] of cases) {
    await t.test(what, (t) => damagedIndexCase(t, text, { reason }));
  }
  await t.test('an index object that is not zstd', (t) => damagedIndexCase(t, null, { object: indexText(h2, okBody()), reason: /zstd/ }));
  await t.test('an empty index object', (t) => damagedIndexCase(t, null, { object: Buffer.alloc(0) }));
});

t.test('index zstd bombs fail fast, with bounded memory', async (t) => {
  for (const [what, object] of [
    ['one frame declaring 64 GiB', rleFrame(8, 0x41, 64n << 30n)],
    ['one frame without a content size, 2 GiB of RLE blocks', rleFrame(16_384, 0x41)],
    ['many frames, 2 GiB in all', Buffer.concat(Array<Buffer>(32).fill(rleFrame(512, 0x41)))],
  ] as const) {
    await t.test(what, async (t) => {
      const started = Date.now();
      await damagedIndexCase(t, null, { object });
      t.ok(Date.now() - started < 20_000, 'restore, verify and ls all finished quickly');
    });
  }
});

t.test('declared sizes that do not match the stored content', async (t) => {
  // The members are intact (their hashes match), but the index lies about their sizes: the restored file would
  // have holes or overlaps, so it must be reported, not silently written wrong.
  const s = await Sandbox.create(t);
  await s.base();
  const a = 'first chunk\n';
  const b = 'second chunk, longer\n';
  const body = [
    `S\t${k('big')}\t${k('huge')}`,
    E(k('big'), 'f', { hash: sha256(a + b), size: a.length + b.length, loc: '+2' }),
    `C\t${sha256(a)}\t${a.length + 5}\t${L2}`,
    `C\t${sha256(b)}\t${b.length - 5}\t${L2}`,
    fileE(k('huge'), a, L2, { size: 1_000_000_000_000_000 }),
    member(a),
    member(b),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([a, b]));
  await s.snapshot();
  const r = await s.restore();
  expectExit(t, r, 3, 'restore', [/big/, /huge/]);
  t.equal(exists(s.at('big')), false, 'no wrongly assembled file');
  t.equal(exists(s.at('huge')), false, 'no file of the wrong size');
  await s.assertContained(t);
});
