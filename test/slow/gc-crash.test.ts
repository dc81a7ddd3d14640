// Crash safety of gc through the real CLI: `blanket gc --keep-layers 3` is SIGKILLed at moments spread over a
// whole run, each time on a fresh copy of one archive of ten layers: local, on S3 (s3rver) and on SFTP (OpenSSH's
// sshd), both on 127.0.0.1. gc's claim: kill -9 anywhere loses nothing a kept layer needs, the next gc completes
// the interrupted one, and it clears the stale lock the kill left (same machine, dead pid) with a warning.
//
//   fixture  ten layers over a changing tree: 90 small random files (most rewritten in every layer, one added and
//            one deleted), a ~9 MiB file edited in place by a few KiB in layers 3, 5, 7 and 9 (its changed 64 KiB
//            chunks stored as rdiff deltas), an empty file, a symlink; --pack-size 128K, so that a layer is a few
//            packs and gc has tens of objects to delete and some packs to rewrite. The tree is snapshotted after
//            each layer; the archive is kept as the pristine copy, and each round copies it (cp -a, or CopyObject)
//   probes   uninterrupted gc runs on fresh copies (two local, one remote) measure T (spawn to exit) and W (its
//            writes: from the first write, the base, to the lock's release), and give what a finished gc leaves
//            (the two local ones byte for byte the same): the base, its marker, tens of deletions, packs rewritten
//   rounds   local 10, S3 and SFTP 4 each; gc SIGKILLed after a delay counted from the spawn (0 .. T: start-up,
//            reading the indexes, the work) or from its first write (0 .. W, the early part denser: the base
//            being written, base without marker, marker before deletions, mid-deletions, mid-rewrites)
//   after each kill
//     objects  every object is one of the pristine archive's or of a finished gc's; every object gone is one a
//              finished gc deletes; no pack index whose data object is deleted (index before data); a rewritten
//              data object never under its old index; a marker only with its whole base and header version 2
//     read     verify exits 0; `layers --json` lists 1-10 (no marker yet) or 8-10 (marker): each listed layer
//              restores exactly to its snapshot (8-10 always among them)
//     next gc  exit 0, and a stale-lock warning if the kill left the lock (none otherwise); the archive then
//              holds byte for byte what an uninterrupted gc leaves, with header version 2: it verifies, layers
//              8-10 restore exactly, and a restore of a collected layer (one of 1-7 in turn) exits 1
//   reading  an archive state already read back in the same loop is not read again: the same bytes are not
//            verified again, the same objects (lock and temporary files aside) not restored again. Every round's
//            next gc leaves the same bytes, and several kills leave the pristine objects
//   where    the kills are classified by what they left (compared with the pristine objects and a finished gc's);
//            at least 3 local and 2 remote must have landed mid-way through gc's writes, so the loop cannot pass
//            by always killing too early or too late

import t, { type Test } from 'tap';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, watch, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CopyObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { spawnCli, tmpDir } from '../helpers/cli.js';
import { blanket, expectExit, finishedEvent, ndjson, US } from '../helpers/integration.js';
import { compareTrees, MIB, Prng, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { startS3Server } from '../helpers/s3-server.js';
import { startSshd } from '../helpers/sshd.js';

const LAYERS = 10;
const KEEP = 3;
/** The oldest layer `gc --keep-layers 3` keeps, and the layer of its base. */
const KEEP_FROM = LAYERS - KEEP + 1;
const PACK = ['--pack-size', '128K'];
const SMALL_FILES = 90;
const SEED = 20_260_412;
const RUN_TIMEOUT_MS = 120_000;
const KEPT = range(KEEP_FROM, LAYERS);
const COLLECTED = range(1, KEEP_FROM - 1);
const BASE_DIR = `layers/${String(KEEP_FROM).padStart(6, '0')}/`;

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

// ---------------------------------------------------------------------------------------------------------------
// The fixture: ten layers and a snapshot of the tree after each

interface Fixture {
  /** The archive as the ten backups left it (never touched again: every round works on a copy). */
  readonly pristine: string;
  /** snapshots[L]: the tree as layer L stored it (includeRoot). */
  readonly snapshots: readonly TreeSnapshot[];
}

const smallName = (i: number): string => `${['a', 'b', 'c/deep'][i % 3]}/f${String(i).padStart(2, '0')}.bin`;

/** The file's own tap object: the fixture outlives the subtest that builds it. */
const fileTest = t;

async function buildFixture(t: Test): Promise<Fixture> {
  const work = tmpDir(fileTest, 'blanket-gc-crash-fixture-');
  const source = join(work, 'source');
  const pristine = join(work, 'archive');
  const env = { XDG_CACHE_HOME: join(work, 'cache') };
  const rng = new Prng(SEED);
  const path = (rel: string): string => join(source, rel);
  for (const dir of ['a', 'b', 'c/deep']) mkdirSync(path(dir), { recursive: true });
  const small = new Set<number>();
  for (let i = 0; i < SMALL_FILES; i++) {
    writeFileSync(path(smallName(i)), rng.bytes(1000 + rng.int(12_000)));
    small.add(i);
  }
  writeFileSync(path('big.bin'), rng.bytes(9 * MIB + 12_345));
  writeFileSync(path('empty'), '');
  symlinkSync('a/f00.bin', path('link'));

  const snapshots: TreeSnapshot[] = [];
  for (let layer = 1; layer <= LAYERS; layer++) {
    if (layer > 1) {
      for (const i of small) if (rng.int(100) < 85) writeFileSync(path(smallName(i)), rng.bytes(1000 + rng.int(12_000)));
      writeFileSync(path(`a/new-${layer}.bin`), rng.bytes(40_000));
      const victim = [...small][rng.int(small.size)]!;
      if (victim !== 0) {
        unlinkSync(path(smallName(victim)));
        small.delete(victim);
      }
      if (layer % 2 === 1) {
        // In place, a few KiB: the chunks it touches are stored as deltas against their previous versions.
        const fd = openSync(path('big.bin'), 'r+');
        for (let k = 0; k < 4; k++) writeSync(fd, rng.bytes(1500), 0, 1500, rng.int(9 * MIB));
        closeSync(fd);
      }
      if (layer === 6) chmodSync(path('b/f01.bin'), 0o600);
    }
    const run = await blanket(['backup', '--json', ...PACK, source, pristine], { env, timeoutMs: RUN_TIMEOUT_MS });
    expectExit(t, run, 0, `backup of layer ${layer}`);
    const finished = finishedEvent(run.stdout) as { newContentBytes: number; storedBytes: number } | undefined;
    t.match(finished, { layer, complete: true }, `layer ${layer} is complete`);
    if (layer > 1 && layer % 2 === 1 && finished) {
      // The big file's changed chunks (4-8 of 64 KiB) are new content stored as small deltas.
      const saved = finished.newContentBytes - finished.storedBytes;
      t.ok(saved > 128 * 1024, `layer ${layer}: big.bin's changed chunks are stored as deltas (${finished.newContentBytes} bytes of new content, ${finished.storedBytes} stored)`);
    }
    snapshots[layer] = await snapshotTree(source, { includeRoot: true });
  }
  const layers = ndjson((await blanket(['layers', '--json', pristine])).stdout) as Array<{ layer: number; bytes: number }>;
  t.same(layers.map((l) => l.layer), range(1, LAYERS), 'the pristine archive has ten layers');
  // A few hundred KiB each after the first: what gc deletes and rewrites is small, and it is quick.
  const sizes = layers.map((l) => `${l.layer}: ${Math.round(l.bytes / 1024)} KiB`).join(', ');
  t.comment(`layer sizes: ${sizes}`);
  for (const l of layers.slice(1)) t.ok(l.bytes > 200_000 && l.bytes < 2 * MIB, `layer ${l.layer} is a few hundred KiB (${sizes})`);
  return { pristine, snapshots };
}

// ---------------------------------------------------------------------------------------------------------------
// Where the archive lives: local folder, S3 bucket prefix, SFTP folder

interface Listing {
  /** Every object (lock and temporary files included), as names relative to the archive, sorted. */
  readonly names: string[];
  /** Object name → its size and content hash (SHA-256, or the S3 ETag). */
  readonly tags: ReadonlyMap<string, string>;
  /**
   * The archive's bytes: one line per object, its name and tag; the lock only as present (its content is a
   * run's own), a temporary file as such (its name is random).
   */
  readonly fingerprint: string;
  /** The same, of the archive's objects proper only (no lock, no temporary files). */
  readonly objects: string;
}

function listingOf(objects: ReadonlyArray<{ name: string; tag: string }>): Listing {
  const sorted = [...objects].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    names: sorted.map((o) => o.name),
    tags: new Map(sorted.map((o) => [o.name, o.tag])),
    fingerprint: sorted.map((o) => fingerprintLine(o.name, o.tag)).join('\n'),
    objects: sorted
      .filter((o) => !isLock(o.name) && !isTemporary(o.name))
      .map((o) => `${o.name} ${o.tag}`)
      .join('\n'),
  };
}

interface Target {
  readonly kind: string;
  /** Options every command needs to reach the archive. */
  readonly options: readonly string[];
  readonly env: Record<string, string>;
  /** Installs a fresh copy of the pristine archive for round `round` and returns its location. */
  install(round: string): Promise<string>;
  list(location: string): Promise<Listing>;
  readHeader(location: string): Promise<{ version: number }>;
  /**
   * Calls `firstWrite` (once) as soon as anything new appears in the base's layer folder, then `lockGone` when the
   * lock is deleted after that (the end of gc's work); returns a stop function, which settles once the watch has
   * (a poll in flight when gc exits still reports what it finds).
   */
  watch(location: string, on: { firstWrite(): void; lockGone(): void }): () => Promise<void>;
}

const fingerprintLine = (name: string, tag: string): string => (isLock(name) ? `${name} (present)` : isTemporary(name) ? '(temporary file)' : `${name} ${tag}`);

/** The objects of a folder archive (temporary files included), with their sizes and SHA-256s. */
function listFolder(dir: string): Listing {
  const names: string[] = [];
  const walk = (rel: string): void => {
    for (const entry of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const name = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) walk(name);
      else names.push(name);
    }
  };
  if (existsSync(dir)) walk('');
  return listingOf(
    names.map((name) => {
      let tag = 'gone';
      try {
        const bytes = readFileSync(join(dir, name));
        tag = `${bytes.length} ${createHash('sha256').update(bytes).digest('hex')}`;
      } catch {
        // a temporary file removed meanwhile
      }
      return { name, tag };
    }),
  );
}

/** gc's first write into a folder archive's base layer folder and the lock's deletion, seen by inotify. */
function watchFolder(dir: string, on: { firstWrite(): void; lockGone(): void }): () => Promise<void> {
  let wrote = false;
  const base = watch(join(dir, BASE_DIR), () => {
    if (wrote) return;
    wrote = true;
    on.firstWrite();
  });
  const root = watch(dir, (_event, name) => {
    if (wrote && String(name) === 'lock' && !existsSync(join(dir, 'lock'))) on.lockGone();
  });
  return async () => {
    base.close();
    root.close();
  };
}

function readHeaderFile(dir: string): { version: number } {
  return JSON.parse(readFileSync(join(dir, 'blanket.json'), 'utf8')) as { version: number };
}

// ---------------------------------------------------------------------------------------------------------------
// Running gc and killing it

/** NODE_OPTIONS without tap's hooks (see blanket() in test/helpers/integration.ts). */
function cliNodeOptions(): string {
  return (process.env.NODE_OPTIONS ?? '')
    .split(/\s+/)
    .filter((o) => o !== '' && !o.includes('/@tapjs/'))
    .join(' ');
}

interface GcRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  /** Spawn to exit. */
  elapsedMs: number;
  /** Spawn to gc's first write into the base's folder, and to the lock's deletion after it, if seen. */
  firstWriteMs: number | null;
  lockGoneMs: number | null;
}

type Kill = { from: 'spawn' | 'first write'; delayMs: number } | null;

/** Runs `gc --keep-layers 3`; SIGKILLs it `delayMs` after its spawn, or after its first write (null: never). */
async function runGc(target: Target, location: string, env: Record<string, string>, kill: Kill): Promise<GcRun> {
  const child: ChildProcess = spawnCli(['gc', ...target.options, location, '--keep-layers', String(KEEP)], {
    env: { ...env, NODE_OPTIONS: cliNodeOptions() },
  });
  const started = performance.now();
  let firstWriteMs: number | null = null;
  let lockGoneMs: number | null = null;
  const timers: NodeJS.Timeout[] = [setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS)];
  const killIn = (ms: number): void => void timers.push(setTimeout(() => child.kill('SIGKILL'), ms));
  const stopWatching = target.watch(location, {
    firstWrite: () => {
      firstWriteMs = performance.now() - started;
      if (kill?.from === 'first write') killIn(kill.delayMs);
    },
    lockGone: () => void (lockGoneMs = performance.now() - started),
  });
  if (kill?.from === 'spawn') killIn(kill.delayMs);
  const err: Buffer[] = [];
  child.stdout!.resume();
  child.stderr!.on('data', (chunk: Buffer) => err.push(chunk));
  child.stdin!.on('error', () => {});
  child.stdin!.end();
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
  const elapsedMs = performance.now() - started;
  for (const timer of timers) clearTimeout(timer);
  await stopWatching();
  return { code, signal, stderr: Buffer.concat(err).toString(), elapsedMs, firstWriteMs, lockGoneMs };
}

// ---------------------------------------------------------------------------------------------------------------
// What a kill left

const isTemporary = (name: string): boolean => /(^|\/)\.tmp-/.test(name);
const isLock = (name: string): boolean => name === 'lock' || name.startsWith('lock-');
const isMarker = (name: string): boolean => /^layers\/\d{6}\/base$/.test(name);
const isBaseIndex = (name: string): boolean => /^layers\/\d{6}\/base-\d{8}\.idx\.zst$/.test(name);
/** The archive's objects proper: no lock, no temporary files. */
const objectsOf = (names: readonly string[]): string[] => names.filter((n) => !isTemporary(n) && !isLock(n));

interface Reference {
  /** Objects of the pristine archive, and of the archive an uninterrupted gc leaves, with their tags. */
  readonly pristine: ReadonlyMap<string, string>;
  readonly final: ReadonlyMap<string, string>;
  /** Objects an uninterrupted gc deletes. */
  readonly deletions: readonly string[];
  /** Pack objects (data and index) an uninterrupted gc rewrites in place: in both, with other bytes. */
  readonly rewrites: readonly string[];
}

function referenceOf(pristine: Listing, final: Listing): Reference {
  const before = new Map([...pristine.tags].filter(([n]) => !isLock(n) && !isTemporary(n)));
  const after = new Map([...final.tags].filter(([n]) => !isLock(n) && !isTemporary(n)));
  return {
    pristine: before,
    final: after,
    deletions: [...before.keys()].filter((n) => !after.has(n)),
    rewrites: [...before.keys()].filter((n) => isPackObject(n) && after.has(n) && after.get(n) !== before.get(n)),
  };
}

const isPackObject = (name: string): boolean => /^layers\/\d{6}\/\d{8}\.(idx|tar)\.zst$/.test(name);

/** Where a kill landed, judged from what the archive holds afterwards; `midway`: some of gc's writes done, not all. */
function phaseOf(killed: Listing, version: number, ref: Reference): { phase: string; midway: boolean } {
  const objects = objectsOf(killed.names);
  const present = new Set(objects);
  const removed = ref.deletions.filter((n) => !present.has(n)).length;
  const added = objects.filter((n) => !ref.pristine.has(n));
  const touched = ref.rewrites.filter((n) => killed.tags.get(n) !== ref.pristine.get(n)).length;
  const rewritten = ref.rewrites.filter((n) => killed.tags.get(n) === ref.final.get(n)).length;
  const lock = killed.names.includes('lock');
  const temporary = killed.names.some(isTemporary);
  const marker = objects.some(isMarker);
  if (removed === 0 && added.length === 0 && touched === 0 && version === 1) {
    if (temporary) return { phase: 'writing the base', midway: true };
    return { phase: lock ? 'lock held, nothing written yet' : 'start-up (no lock yet)', midway: false };
  }
  if (!marker) return { phase: `base written (header version ${version}), no marker yet`, midway: true };
  if (removed === 0) return { phase: 'marker written, nothing deleted yet', midway: true };
  if (removed < ref.deletions.length) return { phase: `mid-deletions (${removed} of ${ref.deletions.length} done)`, midway: true };
  if (ref.rewrites.length > 0 && touched === 0) return { phase: 'deletions done, no rewrite yet', midway: true };
  if (rewritten < ref.rewrites.length) return { phase: `mid-rewrites (${rewritten} of ${ref.rewrites.length} pack objects rewritten)`, midway: true };
  return { phase: lock ? 'all done, lock still held' : 'completed', midway: false };
}

/** What must hold of the objects whenever gc stops: problems found, [] when none. */
function objectProblems(killed: Listing, version: number, ref: Reference): string[] {
  const objects = objectsOf(killed.names);
  const present = new Set(objects);
  const problems: string[] = [];
  for (const n of objects) if (!ref.pristine.has(n) && !ref.final.has(n)) problems.push(`${n}: neither in the pristine archive nor in a finished gc's`);
  for (const n of ref.pristine.keys()) if (!present.has(n) && ref.final.has(n)) problems.push(`${n}: deleted, though a finished gc keeps it`);
  for (const n of objects) {
    const m = /^(layers\/\d{6}\/\d{8})\.idx\.zst$/.exec(n);
    if (m && ref.pristine.has(`${m[1]}.tar.zst`) && !present.has(`${m[1]}.tar.zst`)) problems.push(`${n}: an index whose pack data is deleted`);
  }
  for (const n of ref.rewrites) {
    const tag = killed.tags.get(n);
    if (n.endsWith('.tar.zst') && tag !== ref.pristine.get(n) && tag !== ref.final.get(n)) problems.push(`${n}: neither its old bytes nor its rewritten ones`);
    // The index goes first (listing only the members kept, which either data object holds): a rewritten data
    // object under its old index, which lists members it no longer has, is what must never be seen.
    const index = n.replace(/\.tar\.zst$/, '.idx.zst');
    if (n.endsWith('.tar.zst') && tag === ref.final.get(n) && killed.tags.get(index) === ref.pristine.get(index)) problems.push(`${n}: rewritten, under its old index`);
  }
  if (objects.some(isMarker)) {
    for (const n of ref.final.keys()) if (isBaseIndex(n) && !present.has(n)) problems.push(`${n}: missing, though its marker is there`);
    if (version !== 2) problems.push(`the marker is there, and blanket.json has version ${version}`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading the archive back

async function inParallel<T>(items: readonly T[], width: number, each: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) await each(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, lane));
}

interface Reader {
  readonly target: Target;
  readonly location: string;
  readonly env: Record<string, string>;
  readonly scratch: string;
  readonly snapshots: readonly TreeSnapshot[];
}

async function restoresExactly(t: Test, r: Reader, layer: number, what: string): Promise<void> {
  const dest = join(r.scratch, `restore-${layer}`);
  const run = await blanket(['restore', '--json', '--layer', String(layer), ...r.target.options, r.location, dest], { env: r.env, timeoutMs: RUN_TIMEOUT_MS });
  noCrash(t, run.stderr, `${what}: restore --layer ${layer}`);
  if (expectExit(t, run, 0, `${what}: restore --layer ${layer}`)) {
    t.equal(finishedEvent(run.stdout)?.failedFiles, 0, `${what}: layer ${layer} restored with no failed files`);
    compareTrees(t, r.snapshots[layer]!, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: `${what}: layer ${layer} restores exactly` });
  }
  rmSync(dest, { recursive: true, force: true });
}

async function refusesCollected(t: Test, r: Reader, layer: number, what: string): Promise<void> {
  const dest = join(r.scratch, `refused-${layer}`);
  const run = await blanket(['restore', '--layer', String(layer), ...r.target.options, r.location, dest], { env: r.env, timeoutMs: RUN_TIMEOUT_MS });
  expectExit(t, run, 1, `${what}: restore --layer ${layer} (collected)`);
  rmSync(dest, { recursive: true, force: true });
}

async function verifies(t: Test, r: Reader, what: string): Promise<void> {
  const run = await blanket(['verify', ...r.target.options, r.location], { env: r.env, timeoutMs: RUN_TIMEOUT_MS });
  noCrash(t, run.stderr, `${what}: verify`);
  expectExit(t, run, 0, `${what}: verify`);
}

async function listedLayers(t: Test, r: Reader, what: string): Promise<number[]> {
  const run = await blanket(['layers', '--json', ...r.target.options, r.location], { env: r.env, timeoutMs: RUN_TIMEOUT_MS });
  if (!expectExit(t, run, 0, `${what}: layers --json`)) return [];
  return ndjson(run.stdout).map((l) => l.layer as number);
}

function noCrash(t: Test, stderr: string, what: string): void {
  if (/unexpected error|\n\s+at .*\.js:\d+/.test(stderr)) t.fail(`${what}: unexpected error`, { stderr: stderr.slice(-3000) });
}

// ---------------------------------------------------------------------------------------------------------------
// The loop

interface RoundPlan {
  readonly from: 'spawn' | 'first write';
  /** Of T (from the spawn) or of W (from the first write). */
  readonly fraction: number;
}

const S = (fraction: number): RoundPlan => ({ from: 'spawn', fraction });
const A = (fraction: number): RoundPlan => ({ from: 'first write', fraction });
/**
 * Remote: every kill over gc's writes (a kill before them leaves the pristine objects and a lock, which the local
 * loop covers, and restoring all ten layers over the network is what makes a round slow).
 */
const REMOTE_PLAN = [A(0), A(0.04), A(0.15), A(0.45)];

async function crashLoop(t: Test, fixture: Fixture, target: Target, plan: readonly RoundPlan[], options: { probes: number; minMidway: number }): Promise<void> {
  const work = tmpDir(t, `blanket-gc-crash-${target.kind}-`);
  const envFor = (round: string): Record<string, string> => ({ ...target.env, XDG_CACHE_HOME: join(work, `cache-${round}`) });
  const readerFor = (round: string, location: string): Reader => {
    const scratch = join(work, `scratch-${round}`);
    mkdirSync(scratch, { recursive: true });
    return { target, location, env: envFor(round), scratch, snapshots: fixture.snapshots };
  };

  // The pristine archive as this target lists it, and two uninterrupted runs: T, W, and what a finished gc leaves.
  const probes: GcRun[] = [];
  let pristine: Listing | undefined;
  let final: Listing | undefined;
  for (const probe of range(1, options.probes).map((i) => `probe-${i}`)) {
    const location = await target.install(probe);
    const before = await target.list(location);
    pristine ??= before;
    t.equal(before.fingerprint, pristine.fingerprint, `${probe}: the installed copy is the pristine archive`);
    const run = await runGc(target, location, envFor(probe), null);
    noCrash(t, run.stderr, probe);
    t.equal(run.code, 0, `${probe}: an uninterrupted gc exits 0`, { stderr: run.stderr.slice(-3000) });
    const after = await target.list(location);
    t.same(after.names.filter((n) => isLock(n) || isTemporary(n)), [], `${probe}: no lock or temporary object left`);
    final ??= after;
    t.equal(after.fingerprint, final.fingerprint, `${probe}: byte for byte what the first uninterrupted gc left`);
    t.ok(run.firstWriteMs !== null && run.lockGoneMs !== null, `${probe}: its first write and the lock's release were seen`);
    probes.push(run);
  }
  const ref = referenceOf(pristine!, final!);
  const written = [...ref.final.keys()].filter((n) => !ref.pristine.has(n));
  t.ok(ref.deletions.length >= 20, `a finished gc deletes tens of objects (${ref.deletions.length})`);
  t.same(written.filter((n) => !isBaseIndex(n) && !isMarker(n)), [], `a finished gc adds only its base and marker (${written.join(', ')})`);
  t.ok(written.some(isMarker) && written.some(isBaseIndex), 'a finished gc writes a base and its marker');
  // T: a whole run; W: its work, from the first write (the base) to the lock's release (after deletions, rewrites).
  const T = Math.max(...probes.map((p) => p.elapsedMs));
  const W = Math.max(...probes.map((p) => (p.lockGoneMs ?? p.elapsedMs) - (p.firstWriteMs ?? p.elapsedMs)));
  const ms = (x: number | null): string => (x === null ? '?' : `${Math.round(x)} ms`);
  t.comment(
    `${target.kind}: uninterrupted gc: ${probes.map((p) => `first write at ${ms(p.firstWriteMs)}, lock released at ${ms(p.lockGoneMs)}, exit at ${ms(p.elapsedMs)}`).join('; ')}; ` +
      `${ref.deletions.length} deletions, ${ref.rewrites.length / 2} packs rewritten; kills over T = ${ms(T)} from the spawn, W = ${ms(W)} from the first write`,
  );

  // Archive states read back already in this loop are not read back again: the same bytes (lock and temporary
  // files included) are not verified again, the same objects (without them) not restored again. Every round's
  // next gc leaves the same bytes, and many kills leave the pristine objects (with a lock, or a temporary file).
  const verified = new Set<string>();
  const restored = new Set<string>();
  const readBack = async (listing: Listing, reader: Reader, expected: readonly number[], what: string): Promise<void> => {
    const checks: Array<() => Promise<void>> = [];
    let listed: number[] | null = null;
    if (verified.has(listing.fingerprint)) {
      t.comment(`${what}: the same bytes as an archive verified earlier in this loop: not verified again`);
    } else {
      checks.push(() => verifies(t, reader, what));
      checks.push(async () => void (listed = await listedLayers(t, reader, what)));
    }
    const restoring = !restored.has(listing.objects);
    if (restoring) for (const layer of expected) checks.push(() => restoresExactly(t, reader, layer, what));
    else t.comment(`${what}: the same objects as an archive restored earlier in this loop: not restored again`);
    // All at once, two at a time: the layers expected are restored while the archive's own list is read.
    await inParallel(checks, 2, (check) => check());
    if (listed !== null) {
      t.same(listed, expected, `${what}: layers lists ${expected.length === LAYERS ? 'every layer (no marker yet)' : 'the kept layers'}`);
      const extra = (listed as number[]).filter((layer) => !expected.includes(layer));
      if (restoring) await inParallel(extra, 2, (layer) => restoresExactly(t, reader, layer, what));
      verified.add(listing.fingerprint);
    }
    if (restoring) restored.add(listing.objects);
  };

  const phases = new Map<string, number>();
  let midway = 0;
  let staleLocks = 0;
  for (const [k, round] of plan.entries()) {
    const name = `round-${k + 1}`;
    const location = await target.install(name);
    const reader = readerFor(name, location);
    const delayMs = Math.round(round.fraction * (round.from === 'spawn' ? T : W));
    const run = await runGc(target, location, reader.env, { from: round.from, delayMs });
    const label = `${target.kind} ${name} (killed ${delayMs} ms after its ${round.from}; exit at ${ms(run.elapsedMs)})`;
    noCrash(t, run.stderr, label);
    if (run.signal === null) t.equal(run.code, 0, `${label}: a gc the kill missed exits 0`, { stderr: run.stderr.slice(-3000) });

    const killed = await target.list(location);
    const version = (await target.readHeader(location)).version;
    const landed = phaseOf(killed, version, ref);
    const lockLeft = killed.names.includes('lock');
    const kind = landed.phase.replace(/ \(\d+ of .*\)$/, '');
    phases.set(kind, (phases.get(kind) ?? 0) + 1);
    if (landed.midway) midway++;
    t.comment(`${label}: ${landed.phase}${lockLeft ? ', lock left' : ''}`);
    t.same(objectProblems(killed, version, ref), [], `${label}: nothing a kept layer needs is gone, nothing unexpected is there`);

    // Right after the kill: the archive verifies, and every layer it lists restores exactly.
    const marker = objectsOf(killed.names).some(isMarker);
    await readBack(killed, reader, marker ? KEPT : range(1, LAYERS), `${label}, killed`);

    // The next gc completes the interrupted one: the archive then holds what an uninterrupted gc leaves.
    const next = await blanket(['gc', '--json', ...target.options, location, '--keep-layers', String(KEEP)], { env: reader.env, timeoutMs: RUN_TIMEOUT_MS });
    noCrash(t, next.stderr, `${label}: next gc`);
    if (expectExit(t, next, 0, `${label}: the next gc`)) {
      const warned = ndjson(next.stdout).some((e) => e.type === 'warning' && e.code === 'stale-lock');
      if (lockLeft) t.ok(warned, `${label}: the next gc cleared the stale lock with a warning`, { stdout: next.stdout.slice(-2000) });
      else t.notOk(warned, `${label}: no lock was left, and no stale lock is reported`);
      if (lockLeft && warned) staleLocks++;
    }
    const completed = await target.list(location);
    t.same(completed.names, final!.names, `${label}: after the next gc the archive holds the objects an uninterrupted gc leaves`);
    t.equal(completed.fingerprint, final!.fingerprint, `${label}: ... byte for byte`);
    t.equal((await target.readHeader(location)).version, 2, `${label}: header version 2 after the next gc`);
    await Promise.all([
      readBack(completed, reader, KEPT, `${label}, completed`),
      refusesCollected(t, reader, COLLECTED[k % COLLECTED.length]!, `${label}, completed`),
    ]);
    rmSync(reader.scratch, { recursive: true, force: true });
  }
  const summary = [...phases].map(([p, n]) => `${p}: ${n}`).join('; ');
  t.comment(`${target.kind}: where the kills landed: ${summary}`);
  t.ok(midway >= options.minMidway, `${target.kind}: ${midway} of ${plan.length} kills landed mid-way through gc's writes (at least ${options.minMidway}; ${summary})`);
  t.ok(staleLocks > 0, `${target.kind}: stale locks left by kills were cleared (${staleLocks})`);
}

// ---------------------------------------------------------------------------------------------------------------
// The three stores

let fixture: Promise<Fixture> | undefined;
const fixtureFor = (t: Test): Promise<Fixture> => (fixture ??= buildFixture(t));

t.test('SIGKILL during gc of a local archive loses nothing the kept layers need', async (t) => {
  const f = await fixtureFor(t);
  const work = tmpDir(t, 'blanket-gc-crash-local-copies-');
  const target: Target = {
    kind: 'local',
    options: [],
    env: {},
    install: async (round) => {
      const location = join(work, `archive-${round}`);
      execFileSync('cp', ['-a', f.pristine, location]);
      return location;
    },
    list: async (location) => listFolder(location),
    readHeader: async (location) => readHeaderFile(location),
    watch: (location, on) => watchFolder(location, on),
  };
  // Four kills spread over a whole run, six over its writes (from the base to the lock's release), the early ones
  // denser: the base and the deletions take a few tens of milliseconds, the rewrites (reading, compressing) the rest.
  const plan = [S(0.05), A(0), A(0.02), S(0.4), A(0.06), A(0.15), S(0.75), A(0.3), S(0.97), A(0.6)];
  await crashLoop(t, f, target, plan, { probes: 2, minMidway: 3 });
});

t.test('SIGKILL during gc of an S3 archive loses nothing the kept layers need', async (t) => {
  const f = await fixtureFor(t);
  const server = await startS3Server();
  t.teardown(() => server.stop());
  const client = new S3Client({ endpoint: server.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: server.credentials });
  t.teardown(() => client.destroy());
  const objectsUnder = async (prefix: string): Promise<Array<{ name: string; tag: string }>> => {
    const out: Array<{ name: string; tag: string }> = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) out.push({ name: o.Key!.slice(prefix.length), tag: `${o.Size} ${o.ETag}` });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    return out;
  };
  const prefixOf = (location: string): string => `${location.slice(`s3://${server.bucket}/`.length)}/`;
  // The pristine archive goes up once; each round's copy is made in the server (CopyObject).
  const pristineNames = listFolder(f.pristine).names;
  await inParallel(pristineNames, 8, async (name) => {
    await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: `pristine/${name}`, Body: readFileSync(join(f.pristine, name)) }));
  });
  const target: Target = {
    kind: 's3',
    options: ['--s3-endpoint', server.endpoint],
    env: server.env,
    install: async (round) => {
      await inParallel(pristineNames, 8, async (name) => {
        await client.send(new CopyObjectCommand({ Bucket: server.bucket, CopySource: `${server.bucket}/pristine/${name}`, Key: `${round}/${name}` }));
      });
      return `s3://${server.bucket}/${round}`;
    },
    list: async (location) => listingOf(await objectsUnder(prefixOf(location))),
    readHeader: async (location) => {
      const out = await client.send(new GetObjectCommand({ Bucket: server.bucket, Key: `${prefixOf(location)}blanket.json` }));
      return JSON.parse(await out.Body!.transformToString()) as { version: number };
    },
    // No folder to watch: the base's layer folder, then the lock, are listed again and again. gc may exit between
    // two listings: the one in flight then, or one more, still sees the lock gone (reported a little late).
    watch: (location, on) => {
      let stopped = false;
      const prefix = prefixOf(location);
      const poll = async (): Promise<void> => {
        const before = (await objectsUnder(`${prefix}${BASE_DIR}`)).length;
        for (;;) {
          if (stopped) return;
          if ((await objectsUnder(`${prefix}${BASE_DIR}`)).length > before) break;
          await sleep(15);
        }
        on.firstWrite();
        for (;;) {
          const lockHeld = (await objectsUnder(`${prefix}lock`)).some((o) => o.name === '');
          if (!lockHeld) return on.lockGone();
          if (stopped) return;
          await sleep(15);
        }
      };
      const polling = poll().catch(() => undefined);
      return async () => {
        stopped = true;
        await polling;
      };
    },
  };
  await crashLoop(t, f, target, REMOTE_PLAN, { probes: 1, minMidway: 2 });
});

t.test('SIGKILL during gc of an SFTP archive loses nothing the kept layers need', async (t) => {
  const f = await fixtureFor(t);
  const server = await startSshd();
  t.teardown(() => server.stop());
  const work = tmpDir(t, 'blanket-gc-crash-sftp-copies-');
  const keyFile = join(work, 'id_ed25519');
  writeFileSync(keyFile, server.privateKey, { mode: 0o600 });
  const prefix = `sftp://${server.username}@127.0.0.1:${server.port}`;
  const folder = (location: string): string => location.slice(prefix.length);
  const target: Target = {
    kind: 'sftp',
    options: ['--ssh-key', keyFile, '--known-hosts', server.knownHostsFile],
    env: { SSH_AUTH_SOCK: '' },
    install: async (round) => {
      const dir = join(work, `archive-${round}`);
      execFileSync('cp', ['-a', f.pristine, dir]);
      return `${prefix}${dir}`;
    },
    // The server's files are this machine's: listed and watched directly.
    list: async (location) => listFolder(folder(location)),
    readHeader: async (location) => readHeaderFile(folder(location)),
    watch: (location, on) => watchFolder(folder(location), on),
  };
  await crashLoop(t, f, target, REMOTE_PLAN, { probes: 1, minMidway: 2 });
});
