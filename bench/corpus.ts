// Deterministic benchmark corpus for Blanket.
//
// Everything (tree shape, names, sizes, contents, mtimes) is a function of a seed string: structure comes
// from a small seeded PRNG (sfc32), file contents from an AES-128-CTR keystream keyed by SHA-256 of
// (seed, file id), so bytes are produced at memory speed and no two files share content (nothing for a
// deduplicating tool to find across files that a real tree would not have).
//
// About half of the bytes are text-like (words from a fixed vocabulary in prose, log and record layouts;
// zstd -3 compresses them roughly 3-4x), the other half are keystream bytes (incompressible).
//
// Command line (after `npx tsc -p .`):
//   node dist/bench/corpus.js generate DIR [--scale X] [--file-mult Y] [--small-only N] [--seed S]
//   node dist/bench/corpus.js day DIR [--seed S]       (applyDayOfChanges)

import { createCipheriv, createHash, type Cipher } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

const KiB = 1024;
const MiB = 1024 * KiB;

// ---------------------------------------------------------------------------------------------------------
// Specification

export interface CorpusSpec {
  readonly seed: string;
  readonly smallFiles: number;
  readonly smallMinBytes: number;
  readonly smallMaxBytes: number;
  readonly mediumFiles: number;
  readonly mediumMinBytes: number;
  readonly mediumMaxBytes: number;
  /** Size of each of the two big files (vm/disk.img, var/log/mail.log); 0 for none. */
  readonly bigFileBytes: number;
  /** Number of directories, top-level ones included. */
  readonly dirs: number;
  /** Deepest directory level (top-level directories are level 1). */
  readonly maxDepth: number;
  /** Share of all bytes that is text-like (compressible). */
  readonly compressibleFraction: number;
}

export const DEFAULT_SEED = 'blanket-bench-1';

/**
 * The standard corpus: scale 1 is ~1.2 GiB in ~25,000 small files (0.5-64 KiB, log-uniform), ~150 files of
 * 1-8 MiB (log-uniform), two files of 200 MiB and ~2,000 directories. `scale` multiplies all counts and the
 * big files' size (0.1 = the --quick corpus); `fileMultiplier` further multiplies the small-file and
 * directory counts.
 */
export function standardSpec(opts: { scale?: number; fileMultiplier?: number; seed?: string } = {}): CorpusSpec {
  const scale = opts.scale ?? 1;
  const mult = opts.fileMultiplier ?? 1;
  return {
    seed: opts.seed ?? DEFAULT_SEED,
    smallFiles: Math.max(1, Math.round(25_000 * scale * mult)),
    smallMinBytes: 512,
    smallMaxBytes: 64 * KiB,
    mediumFiles: Math.round(150 * scale),
    mediumMinBytes: 1 * MiB,
    mediumMaxBytes: 8 * MiB,
    bigFileBytes: Math.round(200 * MiB * scale),
    dirs: Math.max(12, Math.round(2_000 * scale * mult)),
    maxDepth: 6,
    compressibleFraction: 0.5,
  };
}

/** Small files only (for the memory-flatness check): `files` files of 1-4 KiB, ~12.5 files per directory. */
export function smallFilesSpec(opts: { files: number; minBytes?: number; maxBytes?: number; seed?: string }): CorpusSpec {
  return {
    seed: opts.seed ?? `${DEFAULT_SEED}-small`,
    smallFiles: opts.files,
    smallMinBytes: opts.minBytes ?? 1 * KiB,
    smallMaxBytes: opts.maxBytes ?? 4 * KiB,
    mediumFiles: 0,
    mediumMinBytes: 0,
    mediumMaxBytes: 0,
    bigFileBytes: 0,
    dirs: Math.max(12, Math.round(opts.files / 12.5)),
    maxDepth: 6,
    compressibleFraction: 0.5,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Randomness

/** sfc32, seeded from SHA-256 of a string. Used for structure (never per byte). */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: string) {
    const h = createHash('sha256').update(seed).digest();
    this.a = h.readUInt32LE(0);
    this.b = h.readUInt32LE(4);
    this.c = h.readUInt32LE(8);
    this.d = h.readUInt32LE(12) | 1;
    for (let i = 0; i < 16; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [lo, hi). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo));
  }

  logUniform(lo: number, hi: number): number {
    return Math.round(Math.exp(Math.log(lo) + this.float() * (Math.log(hi) - Math.log(lo))));
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length)]!;
  }

  /** Fisher-Yates, in place. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      const t = items[i]!;
      items[i] = items[j]!;
      items[j] = t;
    }
    return items;
  }
}

const ZEROS = Buffer.alloc(4 * MiB);

/** AES-128-CTR keystream keyed by SHA-256(id): incompressible bytes at memory speed, plus a byte pool. */
export class KeyStream {
  private readonly cipher: Cipher;
  private pool: Buffer = Buffer.alloc(0);
  private p = 0;

  constructor(id: string) {
    const h = createHash('sha256').update(id).digest();
    this.cipher = createCipheriv('aes-128-ctr', h.subarray(0, 16), h.subarray(16, 32));
  }

  /** n fresh keystream bytes (n ≤ 4 MiB per call). */
  bytes(n: number): Buffer {
    if (n > ZEROS.length) throw new RangeError('KeyStream.bytes: at most 4 MiB per call');
    return this.cipher.update(ZEROS.subarray(0, n));
  }

  /** Writes keystream bytes into out[start, end). */
  fill(out: Buffer, start = 0, end = out.length): void {
    let pos = start;
    while (pos < end) {
      const n = Math.min(end - pos, ZEROS.length);
      this.bytes(n).copy(out, pos);
      pos += n;
    }
  }

  u8(): number {
    if (this.p >= this.pool.length) {
      // Grows from 512 bytes: many files are small, and each has its own keystreams.
      this.pool = this.bytes(Math.min(64 * KiB, Math.max(512, this.pool.length * 4)));
      this.p = 0;
    }
    return this.pool[this.p++]!;
  }

  u16(): number {
    return (this.u8() << 8) | this.u8();
  }

  /** Uniform integer in [0, n) for n ≤ 65536 (slightly biased; fine for text). */
  below(n: number): number {
    return (this.u16() * n) >>> 16;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Text-like content

function buildVocabulary(): string[] {
  const base = (
    'the of and to in is it that for on was with as be by at this are from or have an not but which ' +
    'all were when we there can more if will one about up out what their so no time has would been ' +
    'system file data user server backup archive layer storage request error warning info debug ' +
    'connection client session status value record table index config service process thread queue ' +
    'message update delete create commit write read open close start stop retry timeout network disk ' +
    'memory cache buffer block chunk stream packet address host port path directory folder account ' +
    'report summary invoice order customer product price total amount balance payment number name date ' +
    'project meeting schedule review draft version release build test result check failed success done ' +
    'pending running waiting complete started finished accepted rejected received sent delivered'
  ).split(' ');
  const syllables = ['ka', 'lo', 'ren', 'ti', 'mar', 'vex', 'su', 'pol', 'an', 'der', 'qui', 'to', 'ber', 'ni', 'gal', 'os'];
  const rng = new Rng('blanket-bench-vocabulary');
  const words = new Set(base);
  while (words.size < 640) {
    const n = rng.int(2, 4);
    let w = '';
    for (let i = 0; i < n; i++) w += rng.pick(syllables);
    words.add(w);
  }
  return [...words];
}

const VOCAB = buildVocabulary();
/** Recurring multi-word phrases (real text repeats phrases, which is what LZ compressors find). */
const PHRASES: string[] = (() => {
  const rng = new Rng('blanket-bench-phrases');
  const out: string[] = [];
  for (let i = 0; i < 256; i++) {
    const n = rng.int(2, 5);
    const w: string[] = [];
    for (let j = 0; j < n; j++) w.push(VOCAB[Math.floor(rng.float() ** 2 * VOCAB.length)]!);
    out.push(w.join(' '));
  }
  return out;
})();
const HOSTS = ['web01', 'web02', 'db01', 'mx1', 'mx2', 'app03', 'cache1', 'gw'];
const PROCS = ['sshd', 'cron', 'nginx', 'postgres', 'kernel', 'systemd', 'dockerd', 'backupd'];
const MAIL_PROCS = ['postfix/smtpd', 'postfix/cleanup', 'postfix/qmgr', 'postfix/smtp', 'postfix/local', 'dovecot'];
const LEVELS = ['INFO', 'INFO', 'INFO', 'DEBUG', 'DEBUG', 'WARN', 'ERROR', 'NOTICE'];
const HEX = '0123456789ABCDEF';

export type TextStyle = 'prose' | 'log' | 'mail' | 'records' | 'csv';

/** Produces text from a keystream, in pieces (a paragraph or a line), continuing across fill() calls. */
export class TextWriter {
  private pending = '';
  private ts: number;
  private seq: number;

  constructor(
    private readonly r: KeyStream,
    private readonly style: TextStyle,
    startMs = Date.UTC(2023, 0, 1),
  ) {
    this.ts = startMs + r.u16() * 1000;
    this.seq = r.u16() * 16;
  }

  private word(): string {
    // Skewed toward the start of the vocabulary (frequent words), like real text.
    const x = this.r.u16() / 65536;
    if (this.r.u8() < 77) return PHRASES[Math.floor(x * x * PHRASES.length)]!;
    return VOCAB[Math.floor(x * x * VOCAB.length)]!;
  }

  private words(n: number): string {
    let s = this.word();
    for (let i = 1; i < n; i++) s += ' ' + this.word();
    return s;
  }

  private hex(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += HEX[this.r.u8() & 15];
    return s;
  }

  private piece(): string {
    const r = this.r;
    switch (this.style) {
      case 'prose': {
        let para = '';
        const sentences = 2 + (r.u8() & 7);
        for (let i = 0; i < sentences; i++) {
          const w = this.words(5 + (r.u8() % 16));
          para += w.charAt(0).toUpperCase() + w.slice(1) + (r.u8() < 24 ? ', ' + this.words(3 + (r.u8() & 3)) : '') + '. ';
        }
        return para + '\n\n';
      }
      case 'log': {
        this.ts += r.u8() * 4;
        return `${new Date(this.ts).toISOString()} ${HOSTS[r.u8() & 7]} ${PROCS[r.u8() & 7]}[${1000 + (r.u8() & 63)}]: ${LEVELS[r.u8() & 7]} ${this.words(3 + (r.u8() & 7))} id=${this.hex(4)}\n`;
      }
      case 'mail': {
        this.ts += r.u8() * 8;
        const d = new Date(this.ts).toISOString();
        return `${d.slice(5, 10)} ${d.slice(11, 19)} ${HOSTS[3 + (r.u8() & 1)]} ${MAIL_PROCS[r.u8() % 6]}[${2000 + (r.u8() & 31)}]: ${this.hex(10)}: ${r.u8() < 128 ? `from=<${this.word()}@example.com>, size=${r.u16()}, nrcpt=1 (queue active)` : `to=<${this.word()}.${this.word()}@example.org>, relay=${this.word()}.example.net, delay=${(r.u8() / 100).toFixed(2)}, status=sent (250 2.0.0 Ok)`}\n`;
      }
      case 'records': {
        this.seq += 1 + (r.u8() & 3);
        return `{"id":${this.seq},"user":"${this.word()}","action":"${this.word()}","object":"${this.word()}/${this.word()}","ok":${r.u8() < 200},"ms":${r.u8()},"note":"${this.words(2 + (r.u8() & 3))}"}\n`;
      }
      case 'csv': {
        this.seq += 1 + (r.u8() & 3);
        this.ts += r.u8() * 60_000;
        return `${this.seq},${new Date(this.ts).toISOString().slice(0, 10)},${this.word()},${this.word()},${r.u16() % 5000},${r.u8()}.${r.u8() % 100},${LEVELS[r.u8() & 7].toLowerCase()}\n`;
      }
    }
  }

  /** Fills out[start, end) with text. */
  fill(out: Buffer, start = 0, end = out.length): void {
    let pos = start;
    while (pos < end) {
      if (this.pending.length === 0) this.pending = this.piece();
      const n = out.write(this.pending, pos, end - pos, 'latin1');
      this.pending = n < this.pending.length ? this.pending.slice(n) : '';
      pos += n;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// File kinds and content

export type ContentKind = 'text' | 'random' | 'mixed';

const TEXT_EXT_STYLE: Record<string, TextStyle> = { txt: 'prose', md: 'prose', html: 'prose', log: 'log', json: 'records', csv: 'csv' };
const TEXT_EXTS = Object.keys(TEXT_EXT_STYLE);
const RANDOM_EXTS = ['jpg', 'png', 'zip', 'gz', 'mp3', 'mp4', 'bin'];

export function kindOfName(name: string): ContentKind {
  if (name === 'disk.img') return 'mixed';
  const ext = name.slice(name.lastIndexOf('.') + 1);
  return ext in TEXT_EXT_STYLE || name === 'mail.log' ? 'text' : 'random';
}

function styleOfName(name: string): TextStyle {
  if (name === 'mail.log') return 'mail';
  return TEXT_EXT_STYLE[name.slice(name.lastIndexOf('.') + 1)] ?? 'prose';
}

const EXTENT = 1 * MiB;

/**
 * Content producer for one file: write(out, fileOffset) fills `out` with the bytes for
 * [fileOffset, fileOffset + out.length), called with increasing, contiguous offsets.
 */
class ContentSource {
  private ksCache: KeyStream | undefined;
  private textCache: TextWriter | undefined;
  private mixedTextCache: TextWriter | undefined;

  constructor(
    private readonly id: string,
    private readonly kind: ContentKind,
    private readonly style: TextStyle,
  ) {}

  private get ks(): KeyStream {
    return (this.ksCache ??= new KeyStream(this.id));
  }

  private get text(): TextWriter {
    return (this.textCache ??= new TextWriter(new KeyStream(this.id + '/text'), this.style));
  }

  private get mixedText(): TextWriter {
    return (this.mixedTextCache ??= new TextWriter(new KeyStream(this.id + '/mixed-text'), 'records'));
  }

  write(out: Buffer, fileOffset: number): void {
    if (this.kind === 'random') return this.ks.fill(out);
    if (this.kind === 'text') return this.text.fill(out);
    // mixed: 1 MiB extents, each either text-like or random (decided per extent, deterministically).
    let pos = 0;
    while (pos < out.length) {
      const off = fileOffset + pos;
      const extent = Math.floor(off / EXTENT);
      const end = Math.min(out.length, (extent + 1) * EXTENT - fileOffset);
      const h = createHash('sha256').update(`${this.id}/extent/${extent}`).digest();
      if ((h[0]! & 1) === 0) this.ks.fill(out, pos, end);
      else (extent % 3 === 0 ? this.text : this.mixedText).fill(out, pos, end);
      pos = end;
    }
  }
}

const CHUNK = 4 * MiB;

function writeContent(abs: string, size: number, source: ContentSource, flags = 'w', startOffset = 0): void {
  if (size <= CHUNK && flags === 'w') {
    const buf = Buffer.allocUnsafe(size);
    source.write(buf, startOffset);
    fs.writeFileSync(abs, buf);
    return;
  }
  const fd = fs.openSync(abs, flags);
  try {
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, size));
    let done = 0;
    while (done < size) {
      const n = Math.min(CHUNK, size - done);
      const b = n === buf.length ? buf : buf.subarray(0, n);
      source.write(b, startOffset + done);
      let w = 0;
      while (w < n) w += fs.writeSync(fd, b, w, n - w);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Plan

export interface PlannedDir {
  readonly rel: string;
  readonly depth: number;
  readonly mtimeMs: number;
}

export interface PlannedFile {
  readonly rel: string;
  readonly size: number;
  readonly kind: ContentKind;
  readonly id: string;
  readonly mtimeMs: number;
}

export interface CorpusPlan {
  readonly spec: CorpusSpec;
  readonly dirs: PlannedDir[];
  readonly files: PlannedFile[];
  readonly totalBytes: number;
  /** Estimated text-like bytes (disk.img counted as half). */
  readonly compressibleBytes: number;
}

/** Top-level directories and the share of files (and subdirectories) each gets. `archive` holds ~5%. */
const TOP_LEVEL: ReadonlyArray<readonly [string, number]> = [
  ['home', 0.18],
  ['projects', 0.16],
  ['photos', 0.12],
  ['docs', 0.1],
  ['src', 0.09],
  ['var', 0.08],
  ['mail', 0.07],
  ['music', 0.06],
  ['archive', 0.05],
  ['vm', 0.04],
  ['backup', 0.03],
  ['shared', 0.02],
];

const BASE_MTIME = Date.UTC(2023, 0, 1);
const YEAR_MS = 365 * 24 * 3600 * 1000;

export function planCorpus(spec: CorpusSpec): CorpusPlan {
  const rng = new Rng(`${spec.seed}/plan`);
  const mtime = (): number => BASE_MTIME + Math.floor(rng.float() * YEAR_MS / 1000) * 1000;
  const dirs: PlannedDir[] = [];
  const byTop: PlannedDir[][] = [];
  const cumShare: number[] = [];
  let acc = 0;
  const extraDirs = Math.max(0, spec.dirs - TOP_LEVEL.length);
  for (const [name, share] of TOP_LEVEL) {
    const top: PlannedDir = { rel: name, depth: 1, mtimeMs: mtime() };
    const list = [top];
    dirs.push(top);
    const n = Math.round(extraDirs * share);
    let counter = 0;
    for (let i = 0; i < n; i++) {
      let parent: PlannedDir;
      do parent = rng.pick(list);
      while (parent.depth >= spec.maxDepth);
      const d: PlannedDir = { rel: `${parent.rel}/${rng.pick(VOCAB)}_${(counter++).toString(36)}`, depth: parent.depth + 1, mtimeMs: mtime() };
      list.push(d);
      dirs.push(d);
    }
    byTop.push(list);
    acc += share;
    cumShare.push(acc);
  }
  const pickDir = (): PlannedDir => {
    const x = rng.float() * acc;
    let t = cumShare.findIndex((c) => x < c);
    if (t < 0) t = cumShare.length - 1;
    return rng.pick(byTop[t]!);
  };

  const files: PlannedFile[] = [];
  let fileNo = 0;
  let compressible = 0;
  const add = (dir: string, base: string, ext: string, size: number, kind: ContentKind): void => {
    const id = fileNo++;
    const rel = `${dir}/${base}${ext ? `_${id.toString(36)}.${ext}` : ''}`;
    files.push({ rel, size, kind, id: `${spec.seed}/file/${id}`, mtimeMs: mtime() });
    if (kind === 'text') compressible += size;
    else if (kind === 'mixed') compressible += size / 2;
  };

  for (let i = 0; i < spec.smallFiles; i++) {
    const size = rng.logUniform(spec.smallMinBytes, spec.smallMaxBytes);
    const text = rng.float() < spec.compressibleFraction;
    add(pickDir().rel, rng.pick(VOCAB), rng.pick(text ? TEXT_EXTS : RANDOM_EXTS), size, text ? 'text' : 'random');
  }
  const mediumSizes: number[] = [];
  for (let i = 0; i < spec.mediumFiles; i++) mediumSizes.push(rng.logUniform(spec.mediumMinBytes, spec.mediumMaxBytes));
  if (spec.bigFileBytes > 0) {
    dirs.push({ rel: 'var/log', depth: 2, mtimeMs: mtime() });
    add('vm', 'disk.img', '', spec.bigFileBytes, 'mixed');
    add('var/log', 'mail.log', '', spec.bigFileBytes, 'text');
  }
  // Medium files: text or random, greedily, so that the whole corpus ends near compressibleFraction.
  const total = files.reduce((s, f) => s + f.size, 0) + mediumSizes.reduce((s, n) => s + n, 0);
  const target = total * spec.compressibleFraction;
  for (const size of mediumSizes) {
    const text = compressible + size / 2 <= target;
    add(pickDir().rel, rng.pick(VOCAB), rng.pick(text ? TEXT_EXTS : RANDOM_EXTS), size, text ? 'text' : 'random');
  }
  return { spec, dirs, files, totalBytes: total, compressibleBytes: compressible };
}

// ---------------------------------------------------------------------------------------------------------
// Generation

export interface GenerateResult {
  readonly files: number;
  readonly dirs: number;
  readonly bytes: number;
  readonly compressibleBytes: number;
  /** Files (re)written; smaller than `files` when an existing tree was repaired. */
  readonly written: number;
  readonly removed: number;
  readonly seconds: number;
}

/**
 * Writes the corpus for `spec` into `root`. With `repair`, an existing tree is brought back to the plan:
 * entries not in the plan are removed and only files whose size or mtime differ are rewritten (every
 * change applyDayOfChanges makes moves an mtime), which is much faster than a full regeneration.
 */
export function generateCorpus(root: string, spec: CorpusSpec, opts: { repair?: boolean; log?: (s: string) => void } = {}): GenerateResult {
  const t0 = performance.now();
  const plan = planCorpus(spec);
  let removed = 0;
  if (opts.repair && fs.existsSync(root)) {
    const wantDirs = new Set(plan.dirs.map((d) => d.rel));
    const wantFiles = new Set(plan.files.map((f) => f.rel));
    const prune = (rel: string): void => {
      for (const e of fs.readdirSync(rel ? path.join(root, rel) : root, { withFileTypes: true })) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory() && wantDirs.has(r)) prune(r);
        else if (!(e.isFile() && wantFiles.has(r))) {
          fs.rmSync(path.join(root, r), { recursive: true, force: true });
          removed++;
        }
      }
    };
    prune('');
  } else {
    fs.rmSync(root, { recursive: true, force: true });
  }
  fs.mkdirSync(root, { recursive: true });
  for (const d of plan.dirs) fs.mkdirSync(path.join(root, d.rel), { recursive: true });
  let written = 0;
  let lastLog = performance.now();
  for (const f of plan.files) {
    const abs = path.join(root, f.rel);
    if (opts.repair) {
      const st = fs.statSync(abs, { throwIfNoEntry: false });
      if (st && st.isFile() && st.size === f.size && Math.round(st.mtimeMs) === f.mtimeMs) continue;
    }
    const name = f.rel.slice(f.rel.lastIndexOf('/') + 1);
    writeContent(abs, f.size, new ContentSource(f.id, f.kind, styleOfName(name)));
    fs.utimesSync(abs, f.mtimeMs / 1000, f.mtimeMs / 1000);
    written++;
    if (opts.log && performance.now() - lastLog > 10_000) {
      opts.log(`  ... ${written} files written`);
      lastLog = performance.now();
    }
  }
  // Directory mtimes last, deepest first (creating entries moves a directory's mtime).
  for (const d of [...plan.dirs].sort((a, b) => b.depth - a.depth)) fs.utimesSync(path.join(root, d.rel), d.mtimeMs / 1000, d.mtimeMs / 1000);
  fs.utimesSync(root, BASE_MTIME / 1000, BASE_MTIME / 1000);
  return {
    files: plan.files.length,
    dirs: plan.dirs.length,
    bytes: plan.totalBytes,
    compressibleBytes: Math.round(plan.compressibleBytes),
    written,
    removed,
    seconds: (performance.now() - t0) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Tree walking

export interface TreeEntry {
  readonly rel: string;
  readonly size: number;
}

/** Regular files and directories under root, in sorted (deterministic) order. */
export function walkTree(root: string): { files: TreeEntry[]; dirs: string[] } {
  const files: TreeEntry[] = [];
  const dirs: string[] = [];
  const visit = (rel: string): void => {
    const entries = fs.readdirSync(rel ? path.join(root, rel) : root, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        dirs.push(r);
        visit(r);
      } else if (e.isFile()) {
        files.push({ rel: r, size: fs.statSync(path.join(root, r)).size });
      }
    }
  };
  visit('');
  return { files, dirs };
}

// ---------------------------------------------------------------------------------------------------------
// A day of changes

export interface DayOptions {
  /** Share of files (big files excluded) partly rewritten in place. Default 0.01. */
  readonly editFraction?: number;
  readonly deleteCount?: number;
  readonly addCount?: number;
  readonly diskOverwriteBytes?: number;
  readonly logAppendBytes?: number;
}

export interface DaySummary {
  readonly edited: number;
  readonly editedBytes: number;
  readonly deleted: number;
  readonly deletedBytes: number;
  readonly added: number;
  readonly addedBytes: number;
  readonly renamed: { readonly from: string; readonly to: string; readonly files: number } | undefined;
  readonly diskImageOverwrite: { readonly offset: number; readonly bytes: number } | undefined;
  readonly logAppended: number;
  readonly seconds: number;
}

/**
 * One day of changes, a function of (tree, seed): rewrite part of 1% of the files, delete 100 files, add 100,
 * rename one directory (not a top-level one), overwrite 4 KiB in the middle of disk.img, append 1 MiB to
 * mail.log. Every modified file gets a new mtime (the current time), as a real edit would.
 */
export function applyDayOfChanges(root: string, seed: string, opts: DayOptions = {}): DaySummary {
  const t0 = performance.now();
  const rng = new Rng(`${seed}/day`);
  const { files, dirs } = walkTree(root);
  const isBig = (rel: string): boolean => rel.endsWith('/disk.img') || rel.endsWith('/mail.log') || rel === 'disk.img' || rel === 'mail.log';
  const candidates = rng.shuffle(files.filter((f) => !isBig(f.rel)));
  const editCount = Math.max(1, Math.round(candidates.length * (opts.editFraction ?? 0.01)));
  const deleteCount = Math.min(opts.deleteCount ?? 100, Math.max(0, candidates.length - editCount));
  const edits = candidates.slice(0, editCount);
  const deletes = candidates.slice(editCount, editCount + deleteCount);

  let editedBytes = 0;
  for (const [i, f] of edits.entries()) {
    const name = f.rel.slice(f.rel.lastIndexOf('/') + 1);
    const kind = kindOfName(name);
    const len = f.size <= 4 * KiB ? f.size : Math.min(f.size, Math.max(4 * KiB, Math.round(f.size * (0.1 + 0.4 * rng.float()))));
    const offset = rng.int(0, f.size - len + 1);
    const buf = Buffer.allocUnsafe(len);
    new ContentSource(`${seed}/edit/${i}`, kind === 'mixed' ? 'random' : kind, styleOfName(name)).write(buf, 0);
    const fd = fs.openSync(path.join(root, f.rel), 'r+');
    try {
      fs.writeSync(fd, buf, 0, len, offset);
    } finally {
      fs.closeSync(fd);
    }
    editedBytes += len;
  }

  let deletedBytes = 0;
  for (const f of deletes) {
    fs.rmSync(path.join(root, f.rel));
    deletedBytes += f.size;
  }

  const addCount = opts.addCount ?? 100;
  let addedBytes = 0;
  for (let i = 0; i < addCount; i++) {
    const dir = rng.pick(dirs);
    const text = rng.float() < 0.5;
    const ext = rng.pick(text ? TEXT_EXTS : RANDOM_EXTS);
    const name = `new_${rng.pick(VOCAB)}_${i}.${ext}`;
    const size = rng.logUniform(512, 64 * KiB);
    writeContent(path.join(root, dir, name), size, new ContentSource(`${seed}/add/${i}`, text ? 'text' : 'random', styleOfName(name)));
    addedBytes += size;
  }

  // Rename a directory below the top level that holds a modest number of files (about 0.2-2% of them).
  let renamed: DaySummary['renamed'];
  const countUnder = (d: string): number => {
    let n = 0;
    for (const f of files) if (f.rel.startsWith(d + '/')) n++;
    return n;
  };
  const nested = dirs.filter((d) => d.includes('/') && !files.some((f) => isBig(f.rel) && f.rel.startsWith(d + '/')));
  rng.shuffle(nested);
  const lo = Math.max(1, files.length * 0.002);
  const hi = Math.max(lo, files.length * 0.02);
  let chosen: string | undefined;
  let chosenCount = 0;
  for (const d of nested.slice(0, 400)) {
    const n = countUnder(d);
    if (n >= lo && n <= hi) {
      chosen = d;
      chosenCount = n;
      break;
    }
  }
  if (!chosen && nested.length > 0) {
    chosen = nested[0]!;
    chosenCount = countUnder(chosen);
  }
  if (chosen) {
    const to = `${chosen}-renamed`;
    fs.renameSync(path.join(root, chosen), path.join(root, to));
    renamed = { from: chosen, to, files: chosenCount };
  }

  let diskImageOverwrite: DaySummary['diskImageOverwrite'];
  const disk = files.find((f) => f.rel.endsWith('disk.img'));
  if (disk) {
    const bytes = Math.min(opts.diskOverwriteBytes ?? 4 * KiB, disk.size);
    const offset = Math.floor(disk.size / 2 / 4096) * 4096;
    const fd = fs.openSync(path.join(root, disk.rel), 'r+');
    try {
      fs.writeSync(fd, new KeyStream(`${seed}/disk`).bytes(bytes), 0, bytes, offset);
    } finally {
      fs.closeSync(fd);
    }
    diskImageOverwrite = { offset, bytes };
  }

  let logAppended = 0;
  const log = files.find((f) => f.rel.endsWith('mail.log'));
  if (log) {
    logAppended = opts.logAppendBytes ?? 1 * MiB;
    // Continue the log's style; newer timestamps than the generated part.
    const buf = Buffer.allocUnsafe(logAppended);
    new TextWriter(new KeyStream(`${seed}/mail.log`), 'mail', Date.UTC(2024, 0, 1)).fill(buf);
    fs.appendFileSync(path.join(root, log.rel), buf);
  }

  return {
    edited: edits.length,
    editedBytes,
    deleted: deletes.length,
    deletedBytes,
    added: addCount,
    addedBytes,
    renamed,
    diskImageOverwrite,
    logAppended,
    seconds: (performance.now() - t0) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Command line

function mainCli(argv: string[]): void {
  const [cmd, dir, ...rest] = argv;
  const opt = (name: string): string | undefined => {
    const i = rest.indexOf(name);
    return i >= 0 ? rest[i + 1] : undefined;
  };
  if (cmd === 'generate' && dir) {
    const small = opt('--small-only');
    const seed = opt('--seed');
    const spec = small
      ? smallFilesSpec({ files: Number(small), ...(seed ? { seed } : {}) })
      : standardSpec({
          scale: rest.includes('--quick') ? 0.1 : Number(opt('--scale') ?? 1),
          fileMultiplier: Number(opt('--file-mult') ?? 1),
          ...(seed ? { seed } : {}),
        });
    const res = generateCorpus(dir, spec, { repair: rest.includes('--repair'), log: (s) => console.log(s) });
    console.log(JSON.stringify({ spec, result: res }, null, 2));
    return;
  }
  if (cmd === 'day' && dir) {
    console.log(JSON.stringify(applyDayOfChanges(dir, opt('--seed') ?? `${DEFAULT_SEED}/day1`), null, 2));
    // The bench's marker beside the corpus (run.ts) must not call it clean any more, or the next bench run
    // would take this changed tree for the generated one (and apply its day of changes on top).
    const marker = `${path.resolve(dir)}.json`;
    if (fs.existsSync(marker)) {
      const parsed = JSON.parse(fs.readFileSync(marker, 'utf8')) as { state?: string };
      parsed.state = 'changed';
      fs.writeFileSync(marker, JSON.stringify(parsed, null, 2));
    }
    return;
  }
  console.error(
    'usage: node dist/bench/corpus.js generate DIR [--quick | --scale X] [--file-mult Y] [--small-only N] [--seed S] [--repair]\n' +
      '       node dist/bench/corpus.js day DIR [--seed S]',
  );
  process.exitCode = 2;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) mainCli(process.argv.slice(2));
