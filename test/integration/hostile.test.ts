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
import { lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { CLI_PATH, runNodeScript, tmpDir, type CliResult } from '../helpers/cli.js';
import { ensureDebianTools } from '../helpers/tools.js';
import { openStore } from '../../src/pipeline/archive.js';
import { restore } from '../../src/pipeline/restore.js';
import type { GetOptions } from '../../src/stores/store.js';
import { Monitor } from '../../src/stages/monitor.js';

ensureDebianTools([{ command: 'zstd', pkg: 'zstd' }]);

// Every CLI run goes through this wrapper: it runs the real CLI and, on exit, prints the process's peak RSS to
// stderr, so the zstd-bomb cases can prove bounded memory. tap's coverage hook is kept out of the children.
const wrapperDir = mkdtempSync(join(tmpdir(), 'blanket-hostile-wrapper-'));
t.teardown(() => rmSync(wrapperDir, { recursive: true, force: true }));
const WRAPPER = join(wrapperDir, 'run-cli.mjs');
writeFileSync(
  WRAPPER,
  `import { writeSync } from 'node:fs';\n` +
    `process.on('exit', () => writeSync(2, '\\n[peak-rss-kib ' + process.resourceUsage().maxRSS + ']\\n'));\n` +
    `await import(${JSON.stringify(pathToFileURL(CLI_PATH).href)});\n`,
);
const CHILD_NODE_OPTIONS = (process.env.NODE_OPTIONS ?? '')
  .split(/\s+/)
  .filter((option) => option !== '' && !option.includes('@tapjs/processinfo'))
  .join(' ');

interface Run extends CliResult {
  /** Peak resident set size of the CLI process, KiB. */
  peakRssKiB: number;
  elapsedMs: number;
}

async function cli(args: string[], timeoutMs = 30_000): Promise<Run> {
  const started = Date.now();
  const r = await runNodeScript(WRAPPER, args, { timeoutMs, env: { NODE_OPTIONS: CHILD_NODE_OPTIONS } });
  const m = /\n\[peak-rss-kib (\d+)\]\n/.exec(r.stderr);
  return { ...r, stderr: r.stderr.replace(/\n\[peak-rss-kib \d+\]\n/, ''), peakRssKiB: m ? Number(m[1]) : -1, elapsedMs: Date.now() - started };
}

// ---------------------------------------------------------------------------
// Hand-made archive pieces

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');
const hex = (name: string | Buffer): string => Buffer.from(name).toString('hex');
/** The key of a path given as its components, written out by hand: "1" hex "." per directory, "0" hex "." last. */
const k = (...names: Array<string | Buffer>): string => names.map((n, i) => (i === names.length - 1 ? '0' : '1') + hex(n) + '.').join('');

const L1 = '000001/00000001';
const L2 = '000002/00000001';
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

/** A segment line covering exactly the given entries (E lines, each possibly followed by its C lines), in key order. */
function seg(...entries: string[]): string[] {
  const keyOf = (entry: string): string => entry.split('\t')[1]!;
  const sorted = [...entries].sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : keyOf(a) > keyOf(b) ? 1 : 0));
  return [`S\t${keyOf(sorted[0]!)}\t${keyOf(sorted[sorted.length - 1]!)}`, ...sorted];
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
    // HOSTILE_KEEP=1 keeps every sandbox for a look afterwards (its path is printed as a comment).
    const keep = process.env.HOSTILE_KEEP === '1';
    const s = new Sandbox(keep ? mkdtempSync(join(tmpdir(), 'blanket-hostile-')) : tmpDir(t, 'blanket-hostile-'));
    if (keep) t.comment(`sandbox kept: ${s.root}`);
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

  /**
   * Layer 1: the root and a file "0good" (restored whatever a later hostile layer says; its name sorts before
   * every name the cases use, so no case's segment covers it).
   */
  async base(): Promise<void> {
    await this.index(L1, indexText({ layer: 1, seq: 1, pack: L1 }, ['S\t-\t' + k('0good'), dirE('-'), fileE(k('0good'), GOOD, L1), member(GOOD)]));
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

  restore(...extra: string[]): Promise<Run> {
    return cli(['restore', this.archive, this.dest, ...extra]);
  }

  verify(): Promise<Run> {
    return cli(['verify', this.archive]);
  }

  ls(): Promise<Run> {
    return cli(['ls', this.archive]);
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

const stemOf = (layer: number): string => `${String(layer).padStart(6, '0')}/00000001`;
const idxOf = (layer: number): string => `layers/${stemOf(layer)}.idx.zst`;
const packOf = (layer: number): string => `layers/${stemOf(layer)}.tar.zst`;

// ---------------------------------------------------------------------------
// What every CLI run must look like

function assertClean(t: Test, r: Run, what: string): void {
  t.equal(r.timedOut, false, `${what}: finished by itself (no hang)`);
  t.equal(r.signal, null, `${what}: not killed by a signal`);
  t.notMatch(r.stderr, /unexpected error/i, `${what}: no "unexpected error"`);
  t.notMatch(r.stderr, /\n\s+at [^\n]*[(:]\d+/, `${what}: no stack trace`);
}

function expectExit(t: Test, r: Run, code: number, what: string, mentions: Array<string | RegExp> = []): void {
  assertClean(t, r, what);
  t.equal(r.code, code, `${what}: exit ${code}`, r.code === code ? {} : { stdout: r.stdout.slice(-3000), stderr: r.stderr.slice(-5000) });
  for (const m of mentions) t.match(r.stderr, m, `${what}: stderr names ${m}`);
}

/** For the cases whose hand-made indexes are meant to be well-formed: nothing may be reported about them. */
function indexesAccepted(t: Test, r: Run): void {
  t.notMatch(r.stderr, /warning: index |what layer \d+ recorded/, 'the hand-made indexes are well-formed (none reported damaged)');
}

/** The stderr warning lines that name `object` (or a path), joined. */
function linesAbout(text: string, needle: string | RegExp): string {
  return text
    .split('\n')
    .filter((line) => (typeof needle === 'string' ? line.includes(needle) : needle.test(line)))
    .join('\n');
}

async function readIf(path: string): Promise<string | null> {
  try {
    return await fsp.readFile(path, 'utf8');
  } catch {
    return null;
  }
}

/**
 * Many damaged indexes in one archive: layer 1 is intact, and each case is the only index of its own layer
 * (2, 3, ...), so every case is an independent damaged object that restore must name and skip. restore exits 3
 * naming each with its reason and still restores layer 1; verify exits 3 and reports each; ls exits 3 naming each
 * and still lists layer 1.
 */
type IndexCase = [what: string, object: (layer: number) => Buffer, reason?: RegExp];

async function damagedIndexes(t: Test, cases: IndexCase[], limits: { ms?: number; rssMiB?: number } = {}): Promise<void> {
  const s = await Sandbox.create(t);
  await s.base();
  for (let i = 0; i < cases.length; i++) await s.raw(idxOf(i + 2), cases[i]![1](i + 2));
  await s.snapshot();
  const restore = await s.restore();
  const verify = await s.verify();
  const ls = await s.ls();
  expectExit(t, restore, 3, 'restore');
  t.equal(await readIf(s.at('0good')), GOOD, 'restore still restored the intact layer 1', { stderr: restore.stderr.slice(-6000) });
  t.same((await fsp.readdir(s.dest)).sort(), ['0good'], 'and nothing else');
  expectExit(t, verify, 3, 'verify');
  expectExit(t, ls, 3, 'ls', [idxOf(2)]);
  t.match(ls.stdout, /0good/, 'ls still lists what the intact layer 1 holds');
  cases.forEach(([what, , reason], i) => {
    const object = idxOf(i + 2);
    const said = linesAbout(restore.stderr, object);
    t.not(said, '', `${what}: restore names ${object}`);
    if (reason) t.match(said, reason, `${what}: restore says why`);
    t.match(verify.stdout, `DAMAGED ${object}`, `${what}: verify reports ${object}`);
    t.not(linesAbout(ls.stderr, object), '', `${what}: ls names ${object}`);
  });
  for (const [what, r] of [['restore', restore], ['verify', verify], ['ls', ls]] as const) {
    if (limits.ms !== undefined) t.ok(r.elapsedMs < limits.ms, `${what} took ${r.elapsedMs} ms (limit ${limits.ms})`);
    if (limits.rssMiB !== undefined) {
      t.ok(r.peakRssKiB > 0 && r.peakRssKiB < limits.rssMiB * 1024, `${what} peak RSS ${Math.round(r.peakRssKiB / 1024)} MiB (limit ${limits.rssMiB})`);
    }
  }
  await s.assertContained(t);
}

// ---------------------------------------------------------------------------
// Keys that are not safe path keys

t.test('keys that decode to unsafe paths, or are not keys at all', async (t) => {
  const evil = 'blanket-evil-X';
  const keys: Array<[string, string]> = [
    ['".." as the name', '02e2e.'],
    ['"." as the name', '02e.'],
    ['".." as a directory, then a name', '12e2e.0' + hex(evil) + '.'],
    ['"../../.." chain', '12e2e.12e2e.12e2e.0' + hex(evil) + '.'],
    ['"." as a directory', '12e.0' + hex(evil) + '.'],
    ['a "/" inside a name (hex 2f): "../../evil"', '0' + hex('../../' + evil) + '.'],
    ['a "/" inside a directory name', '1' + hex('a/..') + '.0' + hex(evil) + '.'],
    ['a name starting with "/" (absolute)', '0' + hex('/tmp/' + evil) + '.'],
    ['a NUL byte inside a name', '0' + hex('a\0b') + '.'],
    ['a name that is just NUL', '000.'],
    ['an empty component', '1.0' + hex('x') + '.'],
    ['an empty last component', '161.0.'],
    ['uppercase hex', '0' + hex('z').toUpperCase() + '.'],
    ['odd-length hex', '0616.'],
    ['no final "."', '061'],
    ['a plain path, not a key', '../../' + evil],
    ['an absolute path, not a key', '/tmp/' + evil],
    ['a "1" token last (a directory prefix)', '161.'],
    ['a key with a space', '061 .'],
    ['a key with a bad token type', '261.'],
    ['the root key as a file', '-'],
  ];
  const cases: IndexCase[] = keys.map(([what, key]) => [
    what,
    (layer) => zstd(indexText({ layer, seq: 1 }, ['S\t' + k('\x01') + '\t' + k('\xff', '\xff'), fileE(key, GOOD, L1)])),
    /key|outside|root/,
  ]);
  cases.push(
    ['an unsafe key in a segment line', (layer) => zstd(indexText({ layer, seq: 1 }, ['S\t12e2e.0' + hex('x') + '.\t' + k('z')])), /segment/],
    ['an unsafe key as the header "through"', (layer) => zstd(indexText({ layer, seq: 1, through: '12e2e.061.' }, [])), /through/],
    ['an unsafe key as the header "after"', (layer) => zstd(indexText({ layer, seq: 1, after: '02f.' }, [])), /after/],
  );
  await damagedIndexes(t, cases);
});

// ---------------------------------------------------------------------------
// Hostile or damaged index text

t.test('damaged index text', async (t) => {
  const f1 = 'one\n';
  const f2 = 'two\n';
  const seg1 = `S\t${k('f1')}\t${k('f1')}`;
  const okBody = (): string[] => [`S\t${k('f1')}\t${k('f2')}`, fileE(k('f1'), f1, L1), fileE(k('f2'), f2, L1)];
  const head = (layer: number, over: Record<string, string> = {}): string[] => {
    const fields: Record<string, string> = { layer: String(layer), seq: '1', pack: '-', after: '!', through: '~', time: '1700000000000', ...over };
    return ['blanket-index\t1', ...Object.entries(fields).map(([name, value]) => `${name}\t${value}`)];
  };
  const text = (body: string[], opts: Parameters<typeof indexText>[2] = {}, over: Partial<IndexHead> = {}) => (layer: number) =>
    zstd(indexText({ layer, seq: 1, ...over }, body, opts));
  const withHead = (over: Record<string, string>, extra: string[] = [], drop?: string) => (layer: number) =>
    zstd(indexText({ layer, seq: 1 }, [], { head: [...head(layer, over).filter((l) => !drop || !l.startsWith(drop)), ...extra] }));
  const cases: IndexCase[] = [
    ['entries out of order', text([`S\t${k('f1')}\t${k('f2')}`, fileE(k('f2'), f2, L1), fileE(k('f1'), f1, L1)]), /out of order/],
    ['a duplicate entry', text([`S\t${k('f1')}\t${k('f2')}`, fileE(k('f1'), f1, L1), fileE(k('f1'), f1, L1)]), /out of order/],
    ['overlapping segments', text([`S\t${k('f1')}\t${k('f2')}`, fileE(k('f1'), f1, L1), `S\t${k('f1')}\t${k('f3')}`]), /overlap/],
    ['segments out of order', text([`S\t${k('f3')}\t${k('f4')}`, `S\t${k('f1')}\t${k('f2')}`]), /overlap|order/],
    ['an inverted segment', text([`S\t${k('f2')}\t${k('f1')}`]), /segment range/],
    ['an entry outside its segment', text([seg1, fileE(k('f2'), f2, L1)]), /outside its segment/],
    ['an entry before any segment', text([fileE(k('f1'), f1, L1)]), /malformed header line|outside any segment/],
    ['a segment outside the header range', text(okBody(), {}, { after: k('m'), through: k('q') }), /outside the index range/],
    ['an inverted header range', text([], {}, { after: k('q'), through: k('m') }), /range/],
    [
      'chunk count larger than the chunk lines',
      text([seg1, E(k('f1'), 'f', { hash: sha256(f1 + f2), size: 8, loc: '+3' }), `C\t${sha256(f1)}\t4\t${L1}`, `C\t${sha256(f2)}\t4\t${L1}`]),
      /missing chunk lines/,
    ],
    ['chunk lines without a chunked entry', text([seg1, fileE(k('f1'), f1, L1), `C\t${sha256(f1)}\t4\t${L1}`]), /chunk line without/],
    [
      'chunk sizes that do not add up to the file size',
      text([seg1, E(k('f1'), 'f', { hash: sha256(f1 + f2), size: 9, loc: '+2' }), `C\t${sha256(f1)}\t4\t${L1}`, `C\t${sha256(f2)}\t4\t${L1}`]),
      /add up/,
    ],
    ['a zero chunk count', text([seg1, E(k('f1'), 'f', { hash: sha256(f1), size: 4, loc: '+0' })]), /chunk count/],
    ['a chunk count beyond 2^53', text([seg1, E(k('f1'), 'f', { hash: sha256(f1), size: 4, loc: '+99999999999999999999' })]), /chunk count/],
    ['a size beyond 2^53', text([seg1, fileE(k('f1'), f1, L1, { size: '99999999999999999999' })]), /out of range/],
    ['a negative size', text([seg1, fileE(k('f1'), f1, L1, { size: '-4' })]), /malformed size/],
    ['a negative nlink', text([seg1, fileE(k('f1'), f1, L1, { nlink: '-1' })]), /malformed nlink/],
    ['a negative uid', text([seg1, fileE(k('f1'), f1, L1, { uid: '-1' })]), /malformed uid/],
    ['a negative rdev', text([seg1, fileE(k('f1'), f1, L1, { rdev: '-1' })]), /malformed rdev/],
    ['a negative mode', text([seg1, fileE(k('f1'), f1, L1, { mode: '-644' })]), /malformed mode/],
    ['a mode beyond 07777', text([seg1, fileE(k('f1'), f1, L1, { mode: '17777' })]), /mode out of range/],
    ['a negative layer', withHead({ layer: '-2' }), /malformed layer/],
    ['a hex number', text([seg1, fileE(k('f1'), f1, L1, { size: '0x4' })]), /malformed size/],
    ['non-ASCII bytes', text([seg1, fileE(k('f1'), f1, L1, { user: 'r\u00e9mi' })]), /non-ASCII/],
    ['a control byte', text([seg1, fileE(k('f1'), f1, L1, { user: 'a\rb' })]), /control/],
    ['a missing end line', text(okBody(), { omitEnd: true }), /no end line/],
    ['a wrong checksum', text(okBody(), { checksum: sha256('something else') }), /checksum mismatch/],
    ['data after the end line', (layer) => zstd(Buffer.concat([indexText({ layer, seq: 1 }, okBody()), Buffer.from(fileE(k('f9'), f1, L1) + '\n')])), /after the end line/],
    ['a last line without a newline', (layer) => zstd(indexText({ layer, seq: 1 }, okBody()).subarray(0, -1)), /truncated/],
    ['a duplicate header field', withHead({}, ['layer\t2']), /duplicate header/],
    ['a missing header field', withHead({}, [], 'through'), /missing header field/],
    ['an unknown record', text([seg1, 'X\tboom']), /unknown record/],
    ['an entry with too few fields', text([seg1, `E\t${k('f1')}\tf\t644`]), /fields/],
    ['an unknown entry kind', text([seg1, E(k('f1'), 's')]), /kind/],
    ['a symlink target with a NUL', text([seg1, linkE(k('f1'), 'a%00b')]), /NUL/],
    ['an empty symlink target', text([seg1, linkE(k('f1'), '-')]), /empty symlink/],
    ['a root that is not a directory', text(['S\t-\t-', linkE('-', '/etc')]), /root must be a directory/],
    ['a content location that is not a stem', text([seg1, fileE(k('f1'), f1, '../../000001/00000001')]), /content location/],
    ['a chunk stem that is not a stem', text([seg1, E(k('f1'), 'f', { hash: sha256(f1), size: 4, loc: '+1' }), `C\t${sha256(f1)}\t4\t/etc/passwd`]), /chunk line/],
    ['a member line in an index without a pack', text([member(f1)]), /without a pack/],
    ['a header claiming another layer', (layer) => zstd(indexText({ layer: 1, seq: 1 }, okBody())), /claims to be layer 1 /],
    ['a header claiming another sequence number', (layer) => zstd(indexText({ layer, seq: 7 }, okBody())), /pack 7/],
    ['not an index at all', () => zstd(Buffer.from('#!/bin/sh\nrm -rf /\n')), /not a Blanket index/],
    ['an index object that is not zstd', (layer) => indexText({ layer, seq: 1 }, okBody()), /zstd/],
    ['an empty index object', () => Buffer.alloc(0)],
    ['an index cut inside its zstd frame', (layer) => zstd(indexText({ layer, seq: 1 }, okBody())).subarray(0, 30), /zstd|truncated/],
  ];
  await damagedIndexes(t, cases);
});

t.test('an index of a future format version is a fatal error, not damage', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  const head = ['blanket-index\t6', 'layer\t2', 'seq\t1', 'pack\t-', 'after\t!', 'through\t~', 'time\t1700000000000'];
  await s.index(L2, indexText({ layer: 2, seq: 1 }, [], { head }));
  await s.snapshot();
  expectExit(t, await s.restore(), 1, 'restore', [idxOf(2), /not supported/]);
  expectExit(t, await s.ls(), 1, 'ls', [idxOf(2), /not supported/]);
  await s.assertContained(t);
});

t.test('index zstd bombs fail fast, with bounded memory', async (t) => {
  await damagedIndexes(
    t,
    [
      ['one frame declaring 64 GiB', () => rleFrame(8, 0x41, 64n << 30n)],
      ['one frame without a content size, 4 GiB of RLE blocks', () => rleFrame(32_768, 0x41)],
      ['many frames, 4 GiB in all', () => Buffer.concat(Array<Buffer>(64).fill(rleFrame(512, 0x41)))],
      ['many frames of newlines, 4 GiB in all', () => Buffer.concat(Array<Buffer>(64).fill(rleFrame(512, 0x0a)))],
      ['frames of 15 MiB each (under the frame limit) with no newline, 300 MiB in all', () => Buffer.concat(Array<Buffer>(20).fill(rleFrame(120, 0x41)))],
    ],
    { ms: 15_000, rssMiB: 400 },
  );
});

// ---------------------------------------------------------------------------
// Symlinks: data inside DEST, never a way out of it

t.test('absolute and ../ symlink targets are restored as symlinks, never followed', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  const body = [
    ...seg(
      linkE(k('abs'), s.nowhere),
      linkE(k('etc'), '/etc'),
      linkE(k('up'), '../..'),
      linkE(k('up2'), '../../../../../../../../tmp'),
    ),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1 }, body));
  await s.snapshot();
  const r = await s.restore();
  indexesAccepted(t, r);
  expectExit(t, r, 0, 'restore');
  t.equal(await fsp.readlink(s.at('abs')), s.nowhere, 'absolute target kept as data');
  t.equal(await fsp.readlink(s.at('etc')), '/etc');
  t.equal(await fsp.readlink(s.at('up')), '../..', '"../.." target kept as data');
  t.equal(await fsp.readlink(s.at('up2')), '../../../../../../../../tmp');
  t.equal(await readIf(s.at('0good')), GOOD);
  await s.assertContained(t);
});

t.test('a symlink to outside and entries below it in the same state (impossible tree)', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  const x = 'written through the link?\n';
  const body = [
    ...seg(
      linkE(k('a'), s.outside),
      linkE(k('b'), s.nowhere),
      fileE(k('a', 'x'), x, L2, { mode: '4755' }),
      dirE(k('a', 'sub'), { mode: '777', mtime: '1000000000000000000' }),
      fileE(k('b', 'x'), x, L2),
      fileE(k('a', 'sub', 'y'), x, L2),
    ),
    member(x),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([x]));
  await s.snapshot();
  const r = await s.restore();
  indexesAccepted(t, r);
  await s.assertContained(t);
  t.equal(exists(join(s.nowhere, 'x')), false, 'nothing created at the absolute target');
  expectExit(t, r, 3, 'restore (entries below a symlink: unsafe)');
  t.match(linesAbout(r.stderr, /^warning: a: /), /./, 'the symlink "a" is reported');
  t.match(linesAbout(r.stderr, /^warning: b: /), /./, 'the symlink "b" is reported');
});

t.test('a symlink to outside, and a file below it in the next batch (restored while the symlink is made)', async (t) => {
  // The pipeline restores a batch's symlinks while the next batch's files are being written: "a" (batch 1) must
  // not become a symlink while "a/x" (batch 2) is planned inside it, or a/x would be written through it.
  const s = await Sandbox.create(t);
  await s.base();
  const x = 'written through the link?\n';
  // Batches of 3 files: [0good, a, a0, a1] and [b, a/x, b/…, b/z]. Between a/x and b/z, directories enough to make DEST's
  // memory of checked directories forget "a", so only the planned batch can tell that "a" must stay a directory.
  const dirs = Array.from({ length: 4200 }, (_, i) => dirE(k('b', `d${String(i).padStart(4, '0')}`)));
  const body = [
    ...seg(linkE(k('a'), s.outside), fileE(k('a0'), x, L2), fileE(k('a1'), x, L2), dirE(k('b')), fileE(k('a', 'x'), x, L2), ...dirs, fileE(k('b', 'z'), x, L2)),
    member(x),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([x]));
  await s.snapshot();
  const warnings: string[] = [];
  const monitor = new Monitor((event) => {
    if (event.type === 'warning') warnings.push(event.message);
  });
  // The pack read for batch 1 waits until batch 2 is planned (a/x, then the directories that make DEST forget
  // "a") and its pack read starts; that one then waits 2 s more: so batch 1's symlink is restored before a/x is
  // written, and only the planned batch can tell that "a" must stay a directory.
  const local = await openStore(s.archive);
  let packReads = 0;
  let secondRead!: () => void;
  const secondReadStarted = new Promise<void>((resolve) => (secondRead = resolve));
  const store = new Proxy(local, {
    get(target, property) {
      if (property === 'get') {
        return async (name: string, options?: GetOptions) => {
          if (name === PACK2) {
            if (++packReads === 1) {
              await secondReadStarted;
            } else {
              secondRead();
              await new Promise((resolve) => setTimeout(resolve, 2000));
            }
          }
          return target.get(name, options);
        };
      }
      const value = Reflect.get(target, property) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  const result = await restore({ store, destination: s.dest, paths: [], monitor, batchFiles: 3 });
  await s.assertContained(t); // OUTSIDE (where "a" points) unchanged: nothing went through the link
  t.ok(result.failedFiles > 0, 'the contradiction is reported');
  if (!lstatSync(s.at('a')).isSymbolicLink()) t.equal(await readIf(s.at('a', 'x')), x, 'a stayed a directory: a/x is inside DEST');
  t.match(warnings.join('\n'), /^a: /m, 'the symlink "a" is named');
});

t.test('hard link whose first name sits below a symlink to outside', async (t) => {
  // a -> OUTSIDE, a/x and c/z one inode: linking c/z to "a/x" after a became a symlink would link OUTSIDE/x.
  const s = await Sandbox.create(t);
  await s.base();
  const body = [
    ...seg(
      linkE(k('a'), s.outside),
      fileE(k('a', 'x'), OUTSIDE_X, L2, { ino: 77, nlink: 2 }),
      fileE(k('c', 'z'), OUTSIDE_X, L2, { ino: 77, nlink: 2 }),
    ),
    member(OUTSIDE_X),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([OUTSIDE_X]));
  await s.snapshot();
  const r = await s.restore();
  indexesAccepted(t, r);
  await s.assertContained(t);
  const outsideIno = lstatSync(join(s.outside, 'x')).ino;
  if (exists(s.at('c', 'z'))) t.not(lstatSync(s.at('c', 'z')).ino, outsideIno, 'c/z is not a link to the outside file');
  expectExit(t, r, 3, 'restore');
  t.match(linesAbout(r.stderr, /^warning: a: /), /./, 'the symlink "a" is reported');
});

t.test('a directory symlink left in DEST by an earlier restore is replaced, not followed', async (t) => {
  // Layer 1: a -> OUTSIDE.  Layer 2: a is a directory with a/x (same content as OUTSIDE/x, setuid) and a/sub.
  const s = await Sandbox.create(t);
  const body1 = [`S\t-\t${k('a')}`, dirE('-'), linkE(k('a'), s.outside)];
  await s.index(L1, indexText({ layer: 1, seq: 1 }, body1));
  const body2 = [
    ...seg(
      dirE(k('a'), { mode: '777' }),
      fileE(k('a', 'x'), OUTSIDE_X, L2, { mode: '4777', mtime: '1000000000000000000' }),
      dirE(k('a', 'sub'), { mode: '777', mtime: '1000000000000000000' }),
    ),
    member(OUTSIDE_X),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body2));
  await s.pack(L2, tarOf([OUTSIDE_X]));
  await s.snapshot();

  const restore = async (...args: string[]): Promise<void> => {
    const r = await s.restore(...args);
    expectExit(t, r, 0, `restore ${args.join(' ')}`);
    indexesAccepted(t, r);
  };
  const again = async (): Promise<void> => {
    await restore('--layer', '1');
    t.equal(await fsp.readlink(s.at('a')), s.outside, 'an earlier restore left a -> OUTSIDE in DEST');
  };
  // Only a/x (its parent "a" is not part of the request): the symlink must still not be followed.
  await again();
  await restore('a/x');
  t.ok(lstatSync(s.at('a')).isDirectory(), 'a replaced by a real directory');
  t.equal(await readIf(s.at('a', 'x')), OUTSIDE_X, 'a/x restored inside DEST');
  await s.assertContained(t);

  await again();
  await restore('a/sub');
  t.ok(lstatSync(s.at('a', 'sub')).isDirectory());
  await s.assertContained(t);

  await again();
  await restore();
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
    ...seg(
      // ino equal to the real inode of OUTSIDE/x: it only groups names, it never names a file
      fileE(k('h1'), OUTSIDE_X, L2, { ino: outsideIno, nlink: 3 }),
      fileE(k('h2'), OUTSIDE_X, L2, { ino: outsideIno, nlink: 3 }),
      fileE(k('z', 'h3'), OUTSIDE_X, L2, { ino: outsideIno, nlink: 3 }),
    ),
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
  await s.snapshot();
  expectExit(t, await s.restore('z/h3'), 0, 'restore z/h3 alone');
  t.equal(await readIf(s.at('z', 'h3')), OUTSIDE_X);
  t.equal(exists(s.at('h1')), false);
  await s.assertContained(t);
});

t.test('hard link whose first name could not be restored', async (t) => {
  const s = await Sandbox.create(t);
  await s.base();
  const body = [
    ...seg(
      fileE(k('h1'), 'never stored\n', L2, { ino: 5, nlink: 2 }),
      fileE(k('h2'), 'never stored\n', L2, { ino: 5, nlink: 2 }),
    ),
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
    ...seg(
      E(k('blk'), 'b', { rdev: 7 << 8 }),
      E(k('chr'), 'c', { rdev: (1 << 8) | 3 }),
      E(k('fifo'), 'p', { mode: '640' }),
    ),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1 }, body));
  await s.snapshot();
  const plain = await s.restore();
  indexesAccepted(t, plain);
  expectExit(t, plain, 0, 'restore without --devices', [/blk: device node not restored/, /chr: device node not restored/]);
  t.equal(exists(s.at('blk')), false, 'no block device');
  t.equal(exists(s.at('chr')), false, 'no character device');
  t.ok(lstatSync(s.at('fifo')).isFIFO(), 'the FIFO is restored');
  await s.assertContained(t);

  if (process.getuid?.() !== 0) return;
  expectExit(t, await s.restore('--devices'), 0, 'restore --devices');
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
    ...seg(
      fileE(k('f-hard'), 'hard member', L2),
      fileE(k('f-lie'), lie, L2),
      fileE(k('f-link'), 'link member', L2),
      fileE(k('f-ok'), ok, L2),
    ),
    member(ok),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([ok], extra));
  await s.snapshot();
  const r = await s.restore();
  indexesAccepted(t, r);
  expectExit(t, r, 3, 'restore', [/f-lie/, /f-link/, /f-hard/, PACK2]);
  t.equal(await readIf(s.at('f-ok')), ok, 'the intact member is restored');
  const v = await s.verify();
  expectExit(t, v, 3, 'verify', [PACK2]);
  t.match(v.stdout, /f-lie/, 'verify names the file the bad member costs');
  await s.assertContained(t);
  t.same((await fsp.readdir(s.dest)).sort(), ['0good', 'f-ok'], 'DEST holds only what the archive legitimately restores');
});

t.test('hostile and damaged pack objects', async (t) => {
  // Layer N holds file pN, stored in pack N; each pack object is hostile in its own way.
  const tarGood = (n: number): Buffer => tarOf([`p${n} content\n`]);
  const cases: Array<[string, (n: number) => Buffer | null, RegExp]> = [
    ['a zstd bomb: one tiny frame declaring 16 GiB', () => rleFrame(8, 0, 16n << 30n), /Corrupt zstd data/],
    ['a zstd bomb: one frame without a content size, 12.5 GiB of RLE blocks', () => rleFrame(100_000, 0x41), /Corrupt zstd data/],
    // A zero block ends a tar (as for tar itself): reading stops there, however many zeros follow, and the member is lacking.
    ['a zstd bomb: 4 GiB of zeros in small frames, then the member', (n) => Buffer.concat([...Array<Buffer>(64).fill(rleFrame(512, 0)), zstd(tarGood(n))]), /lacks 1 members/],
    [
      'a zstd bomb: a tar member declaring 8 GiB, then 4 GiB of zeros',
      (n) => Buffer.concat([zstd(tarHeader(sha256(`p${n} content\n`), 0, { sizeField: '77777777777\0' })), ...Array<Buffer>(64).fill(rleFrame(512, 0))]),
      /declares 8589934591 bytes/,
    ],
    ['not zstd at all (a plain tar)', (n) => tarGood(n), /Corrupt zstd data/],
    ['zstd of something that is not a tar', () => zstd(Buffer.from('#!/bin/sh\nrm -rf /\n'.repeat(100))), /damaged|tar|header/i],
    ['cut short inside a zstd frame', (n) => zstd(tarGood(n)).subarray(0, 40), /truncated|Corrupt/],
    ['a tar cut short inside the member', (n) => zstd(tarGood(n).subarray(0, 515)), /damaged|end/i],
    ['an empty object', () => Buffer.alloc(0), /lacks|missing|damaged/],
    ['missing', () => null, /missing/],
  ];
  const s = await Sandbox.create(t);
  await s.base();
  for (let i = 0; i < cases.length; i++) {
    const n = i + 2;
    const content = `p${n} content\n`;
    const body = [`S\t${k(`p${n}`)}\t${k(`p${n}`)}`, fileE(k(`p${n}`), content, stemOf(n)), member(content)];
    await s.raw(idxOf(n), zstd(indexText({ layer: n, seq: 1, pack: stemOf(n) }, body)));
    const object = cases[i]![1](n);
    if (object) await s.raw(packOf(n), object);
  }
  await s.snapshot();
  const r = await s.restore();
  indexesAccepted(t, r);
  const v = await s.verify();
  expectExit(t, r, 3, 'restore');
  expectExit(t, v, 3, 'verify');
  t.ok(r.elapsedMs < 15_000, `restore finished quickly (${r.elapsedMs} ms)`);
  t.ok(v.elapsedMs < 15_000, `verify finished quickly (${v.elapsedMs} ms)`);
  t.ok(r.peakRssKiB < 768 * 1024, `restore peak RSS ${Math.round(r.peakRssKiB / 1024)} MiB`);
  t.ok(v.peakRssKiB < 768 * 1024, `verify peak RSS ${Math.round(v.peakRssKiB / 1024)} MiB`);
  cases.forEach(([what, , reason], i) => {
    const n = i + 2;
    t.match(linesAbout(r.stderr, packOf(n)), reason, `${what}: restore names ${packOf(n)} and says why`);
    t.match(linesAbout(r.stderr, `warning: p${n}: `), packOf(n), `${what}: restore reports file p${n}, naming the pack`);
    t.equal(exists(s.at(`p${n}`)), false, `${what}: p${n} not written`);
    t.match(v.stdout, `DAMAGED ${packOf(n)}`, `${what}: verify reports ${packOf(n)}`);
    t.match(v.stdout, new RegExp(`DAMAGED ${packOf(n).replace(/\./g, '\\.')}[^\\n]*\\n\\s+affects p${n} \\(layer ${n}\\)`), `${what}: verify names the file p${n}`);
  });
  t.equal(await readIf(s.at('0good')), GOOD, 'the intact layer is restored');
  await s.assertContained(t);
});

t.test('declared sizes that do not match the stored content', async (t) => {
  // The members are intact (their hashes match), but the index lies about their sizes: the restored file would
  // have holes or overlaps, so it must be reported, not silently written wrong.
  const s = await Sandbox.create(t);
  await s.base();
  const a = 'first chunk\n';
  const b = 'second chunk, longer\n';
  const body = [
    ...seg(
      [
        E(k('big'), 'f', { hash: sha256(a + b), size: a.length + b.length, loc: '+2' }),
        `C\t${sha256(a)}\t${a.length + 5}\t${L2}`,
        `C\t${sha256(b)}\t${b.length - 5}\t${L2}`,
      ].join('\n'),
      fileE(k('huge'), a, L2, { size: 1_000_000_000_000_000 }),
    ),
    member(a),
    member(b),
  ];
  await s.index(L2, indexText({ layer: 2, seq: 1, pack: L2 }, body));
  await s.pack(L2, tarOf([a, b]));
  await s.snapshot();
  const r = await s.restore();
  indexesAccepted(t, r);
  expectExit(t, r, 3, 'restore', [/big/, /huge/]);
  t.equal(exists(s.at('big')), false, 'no wrongly assembled file');
  t.equal(exists(s.at('huge')), false, 'no file of the wrong size');
  await s.assertContained(t);
});
