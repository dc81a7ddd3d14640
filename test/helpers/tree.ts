// Test helpers: build awkward directory trees, snapshot them, compare
// snapshots, and mutate trees for incremental-backup tests.
//
// Everything works on raw path bytes (Buffer paths), never follows symlinks,
// and never reads a whole file into memory.
//
// mtime precision (Linux, ext4/tmpfs, Node 20):
//   Node's fs.utimes/fs.lutimes take seconds as a JS number (a double) and
//   libuv TRUNCATES it to whole MICROSECONDS. Nanoseconds below 1 µs cannot
//   be set from Node at all. Because of double rounding, `sec + us / 1e6`
//   truncates to `us - 1` about half the time; passing `sec + (us + 0.5) / 1e6`
//   (see secondsForUtimes) lands exactly on `us`. So every mtime that
//   makeAwkwardTree sets is an exact whole number of microseconds (with
//   non-zero sub-second digits), and it survives utimes/lutimes unchanged.

import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';

// ---------------------------------------------------------------------------
// Deterministic PRNG

/** Small seeded PRNG (mulberry32). Deterministic; never use Math.random. */
export class Prng {
  private state: number;
  constructor(seed: number) {
    this.state = (seed >>> 0) ^ 0x9e3779b9;
    for (let i = 0; i < 4; i++) this.nextU32();
  }
  nextU32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.nextU32() / 0x100000000) * n);
  }
  /** Fill a buffer with pseudo-random bytes. */
  fill(buf: Buffer): Buffer {
    let i = 0;
    const n4 = buf.length & ~3;
    for (; i < n4; i += 4) buf.writeUInt32LE(this.nextU32(), i);
    if (i < buf.length) {
      const w = this.nextU32();
      for (let k = 0; i < buf.length; i++, k++) buf[i] = (w >>> (8 * k)) & 0xff;
    }
    return buf;
  }
  bytes(n: number): Buffer {
    return this.fill(Buffer.alloc(n));
  }
}

/** Seconds value for fs.utimes/lutimes that lands exactly on `ns` truncated to µs. */
export function secondsForUtimes(ns: bigint): number {
  const sec = ns / 1_000_000_000n;
  const us = (ns % 1_000_000_000n) / 1000n;
  return Number(sec) + (Number(us) + 0.5) / 1e6;
}

// ---------------------------------------------------------------------------
// Path helpers

const SLASH = Buffer.from('/');
const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });

function b(s: string | Buffer): Buffer {
  return typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
}

/** Join path pieces (strings are UTF-8) into one raw Buffer path. */
export function joinRaw(...parts: Array<string | Buffer>): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) {
    const buf = b(p);
    if (buf.length === 0) continue;
    if (out.length) out.push(SLASH);
    out.push(buf);
  }
  return Buffer.concat(out);
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/**
 * Readable, unambiguous rendering of raw bytes: valid UTF-8 is shown as is,
 * backslash and control characters are escaped (\\ \n \t \r \xNN) and bytes
 * that are not valid UTF-8 are shown as \xNN.
 */
export function displayBytes(buf: Buffer): string {
  let out = '';
  let i = 0;
  while (i < buf.length) {
    const c = buf[i]!;
    if (c < 0x80) {
      if (c === 0x5c) out += '\\\\';
      else if (c === 0x0a) out += '\\n';
      else if (c === 0x09) out += '\\t';
      else if (c === 0x0d) out += '\\r';
      else if (c < 0x20 || c === 0x7f) out += `\\x${hex2(c)}`;
      else out += String.fromCharCode(c);
      i++;
      continue;
    }
    const len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (len && i + len <= buf.length) {
      try {
        out += fatalUtf8.decode(buf.subarray(i, i + len));
        i += len;
        continue;
      } catch {
        // fall through: not valid UTF-8
      }
    }
    out += `\\x${hex2(c)}`;
    i++;
  }
  return out;
}

/** Readable form of a hex-encoded raw path (as stored in TreeEntry.pathHex etc.). */
export function displayHex(hex: string): string {
  return displayBytes(Buffer.from(hex, 'hex'));
}

// ---------------------------------------------------------------------------
// makeAwkwardTree

export interface AwkwardTreeOptions {
  /** PRNG seed (default 1). Same seed → same tree (names, content, modes, mtimes). */
  seed?: number;
  /** Number of ordinary small files under plain/ (default 24). */
  files?: number;
  /** If given, also write big/big.bin of exactly this many random bytes (written in 1 MiB pieces). */
  bigFileBytes?: number;
  /**
   * If true (needs root), chown owners/foreign to 1234:5678 and lchown the
   * symlink owners/foreign-link to 4321:8765. Default false.
   */
  foreignOwner?: boolean;
}

/** Relative paths (raw bytes) of notable entries created by makeAwkwardTree. */
export const AWKWARD = {
  nonUtf8File: joinRaw('names', Buffer.from([0x66, 0xff, 0xfe])),
  nonUtf8Dir: joinRaw('names', Buffer.from([0x64, 0xc3, 0x28, 0x80])),
  newlineFile: joinRaw('names', 'new\nline'),
  name200: joinRaw('names', 'L'.repeat(200)),
  hardLinks: [joinRaw('hard', 'one'), joinRaw('hard', 'sub', 'two'), joinRaw('hard-other', 'three')],
  fifo: joinRaw('special', 'fifo'),
  bigFile: joinRaw('big', 'big.bin'),
  setuidFile: joinRaw('modes', 'mode-4755'),
  privateDir: joinRaw('modes', 'private-0700'),
} as const;

/** 1 MiB: the piece size used to write big files. */
export const MIB = 1024 * 1024;

async function writeFileRaw(path: Buffer, data: Buffer | string): Promise<void> {
  await fsp.writeFile(path, data);
}

async function writeRandomFile(path: Buffer, size: number, rng: Prng): Promise<void> {
  const fh = await fsp.open(path, 'w');
  try {
    const piece = Buffer.alloc(Math.min(size, MIB));
    let left = size;
    while (left > 0) {
      const n = Math.min(left, piece.length);
      rng.fill(piece);
      let off = 0;
      while (off < n) {
        const { bytesWritten } = await fh.write(piece, off, n - off);
        off += bytesWritten;
      }
      left -= n;
    }
  } finally {
    await fh.close();
  }
}

function smallContent(rng: Prng, i: number): Buffer {
  const pick = rng.int(6);
  const size =
    pick === 0 ? 0 : pick === 1 ? 1 + rng.int(16) : pick === 2 ? 16 + rng.int(1000) : pick === 3 ? 1000 + rng.int(20000) : 4096 * (1 + rng.int(4));
  if (rng.int(2) === 0) return rng.bytes(size);
  // compressible text
  const line = `file ${i} line of text ${rng.nextU32().toString(36)}\n`;
  return Buffer.from(line.repeat(Math.ceil(size / line.length) || 0)).subarray(0, size);
}

/**
 * Build a deterministic awkward tree under `root` (which must exist and should
 * be empty). Layout (all relative to root):
 *
 *   plain/…            `files` ordinary files (0..~20 KB, random or text) in a few subdirs
 *   names/             'with space', 'new\nline', 'tab\there', f\xff\xfe (non-UTF-8),
 *                      d\xc3\x28\x80/ (non-UTF-8 dir), 200-byte name, .hidden, .hiddendir/.inner,
 *                      café (NFC), cafe\u0301 (NFD), 日本/é.txt, back\slash, glob chars, quotes
 *   order/             a-b (file), a/b (file), a.b, a0 (raw byte order traps)
 *   long/              one path > 255 bytes, one > 1000 bytes (nested 100/200-byte dirs)
 *   hard/one, hard/sub/two, hard-other/three   one inode, 3 names
 *   sym/               relative, absolute (/etc/passwd), dangling, loop-a⇄loop-b, to-dir, non-UTF-8 target
 *   empty/, empty-nested/a/b/c/                empty directories
 *   modes/             mode-0600, mode-0755, mode-0444, mode-4755 (setuid), private-0700/ (dir 0700)
 *   zero/              zero-byte files
 *   special/fifo       a FIFO
 *   big/big.bin        only if bigFileBytes is given
 *   owners/            only if foreignOwner
 *
 * Every entry (including root) gets a distinct sub-second mtime that is a whole
 * number of microseconds (see header comment); symlinks via lutimes.
 */
export async function makeAwkwardTree(root: string, options: AwkwardTreeOptions = {}): Promise<void> {
  const seed = options.seed ?? 1;
  const rng = new Prng(seed);
  const R = (...parts: Array<string | Buffer>): Buffer => joinRaw(root, ...parts);
  const mkdir = (...parts: Array<string | Buffer>) => fsp.mkdir(R(...parts), { recursive: true });

  // plain files
  const nFiles = options.files ?? 24;
  const subdirs = ['plain', 'plain/d1', 'plain/d2', 'plain/d2/deeper'];
  for (const d of subdirs) await mkdir(d);
  for (let i = 0; i < nFiles; i++) {
    const dir = subdirs[rng.int(subdirs.length)]!;
    await writeFileRaw(R(dir, `f${String(i).padStart(3, '0')}.dat`), smallContent(rng, i));
  }

  // awkward names
  await mkdir('names');
  const nameFiles: Array<string | Buffer> = [
    'with space',
    ' leading and trailing space ',
    'new\nline',
    'tab\there',
    Buffer.from([0x66, 0xff, 0xfe]),
    'L'.repeat(200),
    '.hidden',
    '...',
    '-dash-first',
    'café', // NFC: c3 a9
    'cafe\u0301', // NFD: 65 cc 81
    'back\\slash',
    'star*question?[bracket]',
    `quote"s'and$dollar`,
  ];
  for (const n of nameFiles) await writeFileRaw(R('names', n), rng.bytes(rng.int(300)));
  await mkdir('names', '.hiddendir');
  await writeFileRaw(R('names', '.hiddendir', '.inner'), 'inner\n');
  await mkdir('names', Buffer.from([0x64, 0xc3, 0x28, 0x80]));
  await writeFileRaw(R('names', Buffer.from([0x64, 0xc3, 0x28, 0x80]), Buffer.from([0x80, 0x81])), rng.bytes(50));
  await mkdir('names', '日本');
  await writeFileRaw(R('names', '日本', 'é.txt'), 'unicode\n');

  // raw byte order traps: '-' (0x2d) < '.' (0x2e) < '/' (0x2f) < '0' (0x30)
  await mkdir('order', 'a');
  await writeFileRaw(R('order', 'a', 'b'), 'a/b\n');
  await writeFileRaw(R('order', 'a-b'), 'a-b\n');
  await writeFileRaw(R('order', 'a.b'), 'a.b\n');
  await writeFileRaw(R('order', 'a0'), 'a0\n');

  // long paths
  const seg100 = (c: string) => c.repeat(100);
  const seg200 = (c: string) => c.repeat(200);
  const over255 = ['long', seg100('p'), seg100('q'), seg100('r')];
  await mkdir(...over255);
  await writeFileRaw(R(...over255, 'over-255'), rng.bytes(123));
  const over1000 = ['long', seg200('A'), seg200('B'), seg200('C'), seg200('D'), seg200('E')];
  await mkdir(...over1000);
  await writeFileRaw(R(...over1000, 'over-1000-bytes-total'), rng.bytes(77));

  // hard links: one inode, three names, across directories
  await mkdir('hard', 'sub');
  await mkdir('hard-other');
  await writeFileRaw(R('hard', 'one'), rng.bytes(2000));
  await fsp.link(R('hard', 'one'), R('hard', 'sub', 'two'));
  await fsp.link(R('hard', 'one'), R('hard-other', 'three'));

  // symlinks (never followed by snapshotTree)
  await mkdir('sym');
  await fsp.symlink('../hard/one', R('sym', 'relative'));
  await fsp.symlink('/etc/passwd', R('sym', 'absolute'));
  await fsp.symlink('no/such/target', R('sym', 'dangling'));
  await fsp.symlink('loop-b', R('sym', 'loop-a'));
  await fsp.symlink('loop-a', R('sym', 'loop-b'));
  await fsp.symlink('../plain', R('sym', 'to-dir'));
  await fsp.symlink(Buffer.from('target-\xff\n', 'latin1'), R('sym', 'odd-target'));

  // empty dirs
  await mkdir('empty');
  await mkdir('empty-nested', 'a', 'b', 'c');

  // zero-byte files
  await mkdir('zero');
  await writeFileRaw(R('zero', 'empty-file'), '');
  await writeFileRaw(R('zero', '.empty-hidden'), '');

  // FIFO
  await mkdir('special');
  execFileSync('mkfifo', ['-m', '0640', R('special', 'fifo').toString()]);

  // big file
  if (options.bigFileBytes !== undefined) {
    await mkdir('big');
    await writeRandomFile(R('big', 'big.bin'), options.bigFileBytes, new Prng(seed ^ 0x5bd1e995));
  }

  // foreign owners (root only)
  if (options.foreignOwner) {
    await mkdir('owners');
    await writeFileRaw(R('owners', 'foreign'), 'owned by 1234:5678\n');
    await fsp.chown(R('owners', 'foreign'), 1234, 5678);
    await fsp.symlink('foreign', R('owners', 'foreign-link'));
    await fsp.lchown(R('owners', 'foreign-link'), 4321, 8765);
  }

  // modes last among content (chown/write could clear setuid)
  await mkdir('modes', 'private-0700');
  for (const m of [0o600, 0o755, 0o444, 0o4755]) {
    const p = R('modes', `mode-${m.toString(8).padStart(4, '0')}`);
    await writeFileRaw(p, rng.bytes(64 + rng.int(64)));
    await fsp.chmod(p, m);
  }
  await writeFileRaw(R('modes', 'private-0700', 'secret'), 'secret\n');
  await fsp.chmod(R('modes', 'private-0700'), 0o700);

  // mtimes last, children before parents, so nothing disturbs them afterwards
  await setAllMtimes(Buffer.from(root), Buffer.alloc(0), rng);
}

async function setAllMtimes(root: Buffer, rel: Buffer, rng: Prng): Promise<void> {
  const abs = rel.length ? joinRaw(root, rel) : root;
  const st = await fsp.lstat(abs);
  if (st.isDirectory()) {
    const names = (await fsp.readdir(abs, { encoding: 'buffer' })).sort(Buffer.compare);
    for (const n of names) await setAllMtimes(root, joinRaw(rel, n), rng);
  }
  // 2001-09-09 .. 2020-07 (past, so tools do not warn about future stamps), whole microseconds, never a whole second
  const sec = 1_000_000_000n + BigInt(rng.int(600_000_000));
  const us = 1n + BigInt(rng.int(999_999));
  const t = secondsForUtimes(sec * 1_000_000_000n + us * 1000n);
  if (st.isSymbolicLink()) await fsp.lutimes(abs, t, t);
  else await fsp.utimes(abs, t, t);
}

// ---------------------------------------------------------------------------
// snapshotTree

export type EntryType = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'char' | 'block';

export interface TreeEntry {
  /** Raw relative path bytes, hex. */
  pathHex: string;
  /** Readable relative path (see displayBytes); unambiguous. */
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (st_mode & 0o7777). */
  mode: number;
  /** Files: byte size. Symlinks: target length. Others: null (dir sizes are fs-specific). */
  size: number | null;
  /** Files: sha256 of content (hex). Others: null. */
  sha256: string | null;
  /** Symlinks: raw target bytes, hex. Others: null. */
  linkTargetHex: string | null;
  /** Symlinks: readable target. Others: null. */
  linkTarget: string | null;
  /** st_mtime in nanoseconds, decimal string (recorded for every type). */
  mtimeNs: string;
  uid: number;
  gid: number;
  /** Device number for char/block devices, else null. */
  rdev: number | null;
  /**
   * For non-directories that share dev+ino with another entry in the tree:
   * pathHex of the smallest (raw bytes) path of that group. Otherwise null.
   */
  hardLinkGroup: string | null;
}

/** Entries sorted by raw relative path bytes. */
export type TreeSnapshot = TreeEntry[];

export interface SnapshotOptions {
  /** Include the root directory itself as an entry with path '' (default false). */
  includeRoot?: boolean;
}

function typeOf(st: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean }): EntryType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'char';
  return 'block';
}

/** sha256 of a file, streamed. */
export async function hashFile(path: string | Buffer): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: MIB })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Snapshot every entry under root (lstat only; symlinks are never followed). */
export async function snapshotTree(root: string, options: SnapshotOptions = {}): Promise<TreeSnapshot> {
  const rootBuf = Buffer.from(root);
  const raw: Array<{ rel: Buffer; entry: TreeEntry; key: string | null }> = [];

  const visit = async (rel: Buffer): Promise<void> => {
    const abs = rel.length ? joinRaw(rootBuf, rel) : rootBuf;
    const st = await fsp.lstat(abs, { bigint: true });
    const type = typeOf(st);
    let sha256: string | null = null;
    let linkTargetHex: string | null = null;
    let linkTarget: string | null = null;
    let size: number | null = null;
    if (type === 'file') {
      sha256 = await hashFile(abs);
      size = Number(st.size);
    } else if (type === 'symlink') {
      const target = await fsp.readlink(abs, { encoding: 'buffer' });
      linkTargetHex = target.toString('hex');
      linkTarget = displayBytes(target);
      size = target.length;
    }
    if (rel.length || options.includeRoot) {
      raw.push({
        rel,
        key: type !== 'dir' ? `${st.dev}:${st.ino}` : null,
        entry: {
          pathHex: rel.toString('hex'),
          path: displayBytes(rel),
          type,
          mode: Number(st.mode & 0o7777n),
          size,
          sha256,
          linkTargetHex,
          linkTarget,
          mtimeNs: st.mtimeNs.toString(),
          uid: Number(st.uid),
          gid: Number(st.gid),
          rdev: type === 'char' || type === 'block' ? Number(st.rdev) : null,
          hardLinkGroup: null,
        },
      });
    }
    if (type === 'dir') {
      const names = await fsp.readdir(abs, { encoding: 'buffer' });
      for (const n of names) await visit(joinRaw(rel, n));
    }
  };
  await visit(Buffer.alloc(0));

  raw.sort((x, y) => Buffer.compare(x.rel, y.rel));
  const groups = new Map<string, { first: string; count: number }>();
  for (const r of raw) {
    if (!r.key) continue;
    const g = groups.get(r.key);
    if (g) g.count++;
    else groups.set(r.key, { first: r.entry.pathHex, count: 1 }); // sorted → first is smallest
  }
  for (const r of raw) {
    if (!r.key) continue;
    const g = groups.get(r.key)!;
    if (g.count > 1) r.entry.hardLinkGroup = g.first;
  }
  return raw.map((r) => r.entry);
}

// ---------------------------------------------------------------------------
// compareTrees

/** What compareTrees needs from a tap Test (so a capturing mock works too). */
export interface AssertTarget {
  pass(message: string): unknown;
  fail(message: string, extra: Record<string, unknown>): unknown;
}

export interface CompareOptions {
  /** 'dirs': ignore directory mtimes; 'all': ignore every mtime; default 'none'. */
  ignoreMtimeFor?: 'dirs' | 'none' | 'all';
  /** Skip entries (on either side) for which this returns true. `path` is the readable form. */
  ignore?: (path: string, entry: TreeEntry) => boolean;
  /** mtimes are equal if |expected - actual| < this (default 1n: exact). E.g. 1000n for µs. */
  mtimePrecisionNs?: bigint;
  /** Fields not to compare at all (e.g. ['uid', 'gid']). */
  ignoreFields?: Array<keyof TreeEntry>;
  /** Label prefixed to the assertion message. */
  message?: string;
  /** Max difference lines in the message (default 200). */
  maxLines?: number;
}

const COMPARED_FIELDS = ['type', 'mode', 'size', 'sha256', 'linkTargetHex', 'mtimeNs', 'uid', 'gid', 'rdev', 'hardLinkGroup'] as const;

function showPath(p: string, hex: string): string {
  // show hex too when the readable form alone could mislead (non-ASCII, escapes)
  return /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/.test(p) ? `"${p}"` : `"${p}" [hex ${hex}]`;
}

function showField(field: string, e: TreeEntry): string {
  switch (field) {
    case 'mode':
      return '0' + e.mode.toString(8);
    case 'linkTargetHex':
      return e.linkTargetHex === null ? 'null' : `"${e.linkTarget}"`;
    case 'hardLinkGroup':
      return e.hardLinkGroup === null ? 'null (not hard-linked)' : `linked with "${displayHex(e.hardLinkGroup)}"`;
    default: {
      const v = e[field as keyof TreeEntry];
      return v === null ? 'null' : String(v);
    }
  }
}

/** Pure diff: one human-readable line per difference; [] when equal. */
export function diffTrees(expected: TreeSnapshot, actual: TreeSnapshot, options: CompareOptions = {}): string[] {
  const ignore = options.ignore ?? (() => false);
  const ignoreFields = new Set<string>(options.ignoreFields ?? []);
  const mtimeMode = options.ignoreMtimeFor ?? 'none';
  const prec = options.mtimePrecisionNs ?? 1n;
  const exp = new Map(expected.filter((e) => !ignore(e.path, e)).map((e) => [e.pathHex, e]));
  const act = new Map(actual.filter((e) => !ignore(e.path, e)).map((e) => [e.pathHex, e]));
  const all = [...new Set([...exp.keys(), ...act.keys()])].sort((x, y) => Buffer.compare(Buffer.from(x, 'hex'), Buffer.from(y, 'hex')));
  const lines: string[] = [];
  for (const k of all) {
    const e = exp.get(k);
    const a = act.get(k);
    if (e && !a) {
      lines.push(`missing ${e.type} ${showPath(e.path, e.pathHex)}`);
      continue;
    }
    if (a && !e) {
      lines.push(`extra   ${a.type} ${showPath(a.path, a.pathHex)}`);
      continue;
    }
    if (!e || !a) continue;
    const diffs: string[] = [];
    for (const f of COMPARED_FIELDS) {
      if (ignoreFields.has(f)) continue;
      if (f === 'linkTargetHex' && ignoreFields.has('linkTarget')) continue;
      if (f === 'mtimeNs') {
        if (mtimeMode === 'all' || (mtimeMode === 'dirs' && e.type === 'dir' && a.type === 'dir')) continue;
        let d = BigInt(e.mtimeNs) - BigInt(a.mtimeNs);
        if (d < 0n) d = -d;
        if (d >= prec) diffs.push(`mtimeNs ${e.mtimeNs} → ${a.mtimeNs} (Δ ${d} ns)`);
        continue;
      }
      if (e[f] !== a[f]) diffs.push(`${f === 'linkTargetHex' ? 'linkTarget' : f} ${showField(f, e)} → ${showField(f, a)}`);
    }
    if (diffs.length) lines.push(`differs ${showPath(e.path, e.pathHex)}: ${diffs.join('; ')}`);
  }
  return lines;
}

/**
 * One assertion: passes when the trees match, otherwise fails; the message
 * gives the count and first difference, the diagnostic `differences` lists
 * every one (missing / extra / per-field, readable paths; hex added for
 * non-ASCII paths).
 * Returns true when equal.
 */
export function compareTrees(t: AssertTarget, expected: TreeSnapshot, actual: TreeSnapshot, options: CompareOptions = {}): boolean {
  const lines = diffTrees(expected, actual, options);
  const label = options.message ?? 'trees match';
  if (lines.length === 0) {
    t.pass(`${label} (${expected.length} expected entries)`);
    return true;
  }
  const max = options.maxLines ?? 200;
  const shown = lines.slice(0, max);
  if (lines.length > max) shown.push(`… and ${lines.length - max} more`);
  // TAP test-point lines cannot hold newlines: the full list goes in the
  // YAML diagnostic (one line per difference), the first one in the message.
  t.fail(`${label}: ${lines.length} difference(s) (expected → actual), first: ${lines[0]}`, {
    differences: shown,
    expectedEntries: expected.length,
    actualEntries: actual.length,
  });
  return false;
}

// ---------------------------------------------------------------------------
// mutateTree

/** Mutations that any correct incremental backup must notice. */
export const MUTATION_KINDS = ['edit-content', 'delete-file', 'rename-file', 'file-to-dir', 'dir-to-symlink', 'chmod', 'touch-mtime'] as const;
/**
 * Sneaky mutations: 'edit-keep-mtime' changes content but keeps size and
 * restores mtime (only ctime changes) — detectable only via ctime or content.
 */
export const SNEAKY_MUTATION_KINDS = ['edit-keep-mtime'] as const;
export type MutationKind = (typeof MUTATION_KINDS)[number] | (typeof SNEAKY_MUTATION_KINDS)[number];

export interface MutationResult {
  kind: MutationKind;
  /** Readable relative path that was changed (for renames: the old path). */
  path: string;
  /** Raw relative path bytes. */
  rawPath: Buffer;
  detail: string;
}

async function listEntries(root: Buffer, rel: Buffer, out: Array<{ rel: Buffer; type: EntryType; nlink: number; size: number }>): Promise<void> {
  const abs = rel.length ? joinRaw(root, rel) : root;
  const st = await fsp.lstat(abs);
  const type = typeOf(st);
  if (rel.length) out.push({ rel, type, nlink: st.nlink, size: st.size });
  if (type === 'dir') {
    for (const n of await fsp.readdir(abs, { encoding: 'buffer' })) await listEntries(root, joinRaw(rel, n), out);
  }
}

function splitParent(rel: Buffer): { parent: Buffer; name: Buffer } {
  const i = rel.lastIndexOf(0x2f);
  return i < 0 ? { parent: Buffer.alloc(0), name: rel } : { parent: rel.subarray(0, i), name: rel.subarray(i + 1) };
}

/**
 * Apply one deterministic mutation (target chosen by `seed` among candidates
 * sorted by raw path). File mutations pick regular files that are not hard
 * linked; 'dir-to-symlink' picks a non-root directory.
 */
export async function mutateTree(root: string, seed: number, kind: MutationKind): Promise<MutationResult> {
  const rootBuf = Buffer.from(root);
  const rng = new Prng(seed);
  const entries: Array<{ rel: Buffer; type: EntryType; nlink: number; size: number }> = [];
  await listEntries(rootBuf, Buffer.alloc(0), entries);
  entries.sort((x, y) => Buffer.compare(x.rel, y.rel));
  const wantDir = kind === 'dir-to-symlink';
  const candidates = entries.filter((e) => (wantDir ? e.type === 'dir' : e.type === 'file' && e.nlink === 1));
  if (candidates.length === 0) throw new Error(`mutateTree(${kind}): no candidate under ${root}`);
  const target = candidates[rng.int(candidates.length)]!;
  const abs = joinRaw(rootBuf, target.rel);
  const path = displayBytes(target.rel);
  const res = (detail: string): MutationResult => ({ kind, path, rawPath: target.rel, detail });

  switch (kind) {
    case 'edit-content':
    case 'edit-keep-mtime': {
      const before = await fsp.stat(abs, { bigint: true });
      const fh = await fsp.open(abs, 'r+');
      let detail: string;
      try {
        if (target.size === 0) {
          await fh.write(Buffer.from('now not empty\n'), 0, 14, 0);
          detail = 'wrote 14 bytes into empty file';
        } else {
          const off = rng.int(target.size);
          const one = Buffer.alloc(1);
          await fh.read(one, 0, 1, off);
          one[0] = one[0]! ^ 0xff;
          await fh.write(one, 0, 1, off);
          detail = `flipped byte at offset ${off} (size unchanged)`;
        }
      } finally {
        await fh.close();
      }
      if (kind === 'edit-keep-mtime') {
        const ns = before.mtimeNs;
        await fsp.utimes(abs, secondsForUtimes(before.atimeNs), secondsForUtimes(ns));
        detail += `, mtime restored to ${ns} (µs precision)`;
      }
      return res(detail);
    }
    case 'delete-file':
      await fsp.unlink(abs);
      return res('deleted');
    case 'rename-file': {
      const { parent, name } = splitParent(target.rel);
      const newRel = joinRaw(parent, Buffer.concat([Buffer.from('renamed-'), name]));
      await fsp.rename(abs, joinRaw(rootBuf, newRel));
      return res(`renamed to ${displayBytes(newRel)}`);
    }
    case 'file-to-dir':
      await fsp.unlink(abs);
      await fsp.mkdir(abs);
      await fsp.writeFile(joinRaw(abs, 'inside'), 'was a file\n');
      return res('replaced file with directory containing "inside"');
    case 'dir-to-symlink':
      await fsp.rm(abs, { recursive: true, force: true });
      await fsp.symlink('replaced-dir-target', abs);
      return res('replaced directory with symlink -> replaced-dir-target');
    case 'chmod': {
      const st = await fsp.lstat(abs);
      const mode = (st.mode & 0o7777) ^ 0o010;
      await fsp.chmod(abs, mode);
      return res(`mode 0${(st.mode & 0o7777).toString(8)} → 0${mode.toString(8)}`);
    }
    case 'touch-mtime': {
      const st = await fsp.lstat(abs, { bigint: true });
      const ns = st.mtimeNs + 1_234_567_000n;
      await fsp.utimes(abs, secondsForUtimes(st.atimeNs), secondsForUtimes(ns));
      return res(`mtime ${st.mtimeNs} → ${ns}`);
    }
    default: {
      const never: never = kind;
      throw new Error(`unknown mutation ${String(never)}`);
    }
  }
}
