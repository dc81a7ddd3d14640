// Crash safety through the real CLI: `blanket backup` is SIGKILLed again and again at seeded random moments,
// and after every kill the archive must verify, and restore to files that are each exactly some version of
// their source (never corrupt).
//
//   source   ~40 MiB: 10 directories of small files with 1–8 MiB random files among them, an empty file and a
//            symlink, backed up with --pack-size 1M (many packs; every big file spans several)
//   probe    three uninterrupted runs into a scratch archive measure the full-run time T (their median) and
//            what a run writes
//   resume   a fresh run killed half-way (half of the probe's packs written) and resumed does not start from
//            scratch: resumedAfter is set, the resumed run stores well under a whole layer, the archive is not
//            much bigger than the probe's, and the stale lock is cleared with a warning
//   creation runs killed the moment blanket.json appears leave a whole header (or none): the next run works
//   kills    24 runs in 6 epochs (each epoch starts a new archive, so that every epoch has a whole first layer
//            to write); 19 of them SIGKILLed after a delay drawn from 50 ms .. 1.25 T (one per stratum, in a seeded
//            random order): node start-up, before the first commit, mid-pack, between packs, after the end.
//            5 are killed on cue instead: the moment a new pack data object appears (between a pack's data
//            and its index, the commit point), 30 ms after a new temporary object appears (mid-pack), or as soon
//            as the pack that completes the layer is reported (after the last commit, lock still held)
//   after each kill
//     verify   exits 0 (an orphan pack left by the kill is reported, not damage)
//     restore  exits 0; every restored entry is byte-exact one of the versions its path had; while an epoch's
//              first layer is being written and the source has not changed, the restored entries are exactly a
//              prefix of the source in Blanket's path order; once it is complete, every path that never changed
//              is there
//     lock     a lock left by a kill is cleared by the next run that gets going, with a stale-lock warning
//     resume   runs that find a partial layer continue it (their started event has resumedAfter)
//   mutations  the source changes before every other run (three small files edited, a big file rewritten, a file
//            deleted, a file added) once an epoch's first layer is complete, and in the last three epochs also
//            while it is partial (a resumed layer then mixes versions); every version is kept
//   end      the last archive is backed up to completion (then once more, as a whole new layer); its newest
//            state restores exactly to the final source

import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { decompress } from '@mongodb-js/zstd';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI_PATH, tmpDir, type CliResult } from '../helpers/cli.js';
import { compareTrees, MIB, Prng, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { blanket, comparePathOrder, finishedEvent, ndjson, rawPath, treeBytes, US } from '../helpers/integration.js';

const PACK_SIZE = '1M';
const EPOCHS = 6;
const KILLS_PER_EPOCH = 4;
const KILLS = EPOCHS * KILLS_PER_EPOCH;
type Cue = 'new pack data' | 'mid-pack' | 'layer complete' | 'after two commits' | 'header created' | 'header being written';
/** Runs killed on cue rather than after a delay. */
const CUES = new Map<number, Cue>([
  // A partial layer that the next run must resume, and that run let finish, whatever the load does to the delays.
  [1, 'after two commits'],
  [2, 'layer complete'],
  [5, 'new pack data'],
  [9, 'mid-pack'],
  [13, 'layer complete'],
  [17, 'new pack data'],
  // Any run that completes its layer prints it: the last run of an epoch, whether it begins a layer or resumes one.
  [23, 'layer complete'],
]);
const RUN_TIMEOUT_MS = 120_000;
const SEED = 20_241_126;

// ---------------------------------------------------------------------------------------------------------------
// The source tree

const BIG_MIB = [1, 2, 3, 4, 5, 6, 8, 7];

async function writeRandom(path: string, size: number, rng: Prng): Promise<void> {
  const handle = await open(path, 'w');
  try {
    for (let left = size; left > 0; left -= MIB) await handle.write(rng.bytes(Math.min(MIB, left)));
  } finally {
    await handle.close();
  }
}

function smallContent(rng: Prng, tag: string): Buffer {
  const size = rng.int(5) === 0 ? rng.int(64) : 200 + rng.int(12_000);
  if (rng.int(2) === 0) return rng.bytes(size);
  const line = `${tag} ${rng.nextU32().toString(36)} some text that compresses\n`;
  return Buffer.from(line.repeat(Math.ceil(size / line.length) + 1)).subarray(0, size);
}

/** ~40 MiB: 10 directories of 30 small files, the big files spread among them, an empty file and a symlink. */
async function makeSource(root: string): Promise<void> {
  const rng = new Prng(SEED);
  for (let d = 0; d < 10; d++) {
    const dir = join(root, `dir${d}`, d % 3 === 0 ? 'sub' : '');
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 30; f++) writeFileSync(join(dir, `f${String(f).padStart(2, '0')}.dat`), smallContent(rng, `d${d}f${f}`));
    if (d < BIG_MIB.length) await writeRandom(join(root, `dir${d}`, `big${d}.bin`), BIG_MIB[d]! * MIB + rng.int(4096), rng);
  }
  writeFileSync(join(root, 'empty'), '');
  symlinkSync('dir1/f01.dat', join(root, 'link'));
}

let mutation = 0;
/** Edits three small files, rewrites one big file, deletes one file and adds one. */
async function mutateSource(root: string, rng: Prng): Promise<string> {
  mutation++;
  const done: string[] = [];
  const smalls = (d: number) => join(root, `dir${d}`, d % 3 === 0 ? 'sub' : '');
  for (let k = 0; k < 3; k++) {
    const dir = smalls(rng.int(10));
    const names = readdirSync(dir).filter((n) => n.endsWith('.dat'));
    const name = names[rng.int(names.length)]!;
    writeFileSync(join(dir, name), smallContent(rng, `m${mutation}`));
    done.push(`edit ${join(dir, name).slice(root.length + 1)}`);
  }
  const d = rng.int(BIG_MIB.length);
  await writeRandom(join(root, `dir${d}`, `big${d}.bin`), (1 + rng.int(8)) * MIB + rng.int(4096), rng);
  done.push(`rewrite dir${d}/big${d}.bin`);
  const victimDir = smalls(rng.int(10));
  const victims = readdirSync(victimDir).filter((n) => n.endsWith('.dat'));
  if (victims.length > 5) {
    const victim = victims[rng.int(victims.length)]!;
    rmSync(join(victimDir, victim));
    done.push(`delete ${join(victimDir, victim).slice(root.length + 1)}`);
  }
  const added = join(smalls(rng.int(10)), `added-${mutation}.dat`);
  writeFileSync(added, smallContent(rng, `added ${mutation}`));
  done.push(`add ${added.slice(root.length + 1)}`);
  return done.join(', ');
}

// ---------------------------------------------------------------------------------------------------------------
// Versions: everything each path has ever been

class History {
  /** path hex → "file:<sha256>" | "dir" | "symlink:<target hex>" seen in any version. */
  private readonly seen = new Map<string, Set<string>>();
  /** Paths (hex) present, with the same identity, in every version recorded so far. */
  private stable: Set<string> | null = null;

  static identity(e: TreeSnapshot[number]): string {
    return e.type === 'file' ? `file:${e.sha256}` : e.type === 'symlink' ? `symlink:${e.linkTargetHex}` : e.type;
  }

  record(snapshot: TreeSnapshot): void {
    const ids = new Map(snapshot.map((e) => [e.pathHex, History.identity(e)]));
    for (const [path, id] of ids) {
      const set = this.seen.get(path) ?? new Set();
      set.add(id);
      this.seen.set(path, set);
    }
    this.stable = new Set([...(this.stable ?? ids.keys())].filter((p) => ids.has(p) && this.seen.get(p)!.size === 1));
  }

  /** Problems of a restored tree: entries that are no version of their path. */
  check(restored: TreeSnapshot): string[] {
    const problems: string[] = [];
    for (const e of restored) {
      const versions = this.seen.get(e.pathHex);
      if (!versions) problems.push(`${e.path}: never existed in the source`);
      else if (!versions.has(History.identity(e))) problems.push(`${e.path}: ${History.identity(e).slice(0, 40)}… is no version of it`);
    }
    return problems;
  }

  missingStable(restored: TreeSnapshot): string[] {
    const have = new Set(restored.map((e) => e.pathHex));
    return [...(this.stable ?? [])].filter((p) => !have.has(p)).map((p) => Buffer.from(p, 'hex').toString());
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Running and killing the CLI

/** NODE_OPTIONS without tap's process-info hook (see blanket() in test/helpers/integration.ts). */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  delete env.FORCE_COLOR;
  env.NODE_OPTIONS = (process.env.NODE_OPTIONS ?? '')
    .split(/\s+/)
    .filter((o) => o !== '' && !o.includes('@tapjs/processinfo'))
    .join(' ');
  return env;
}

interface KilledRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  elapsedMs: number;
  events: Array<Record<string, unknown>>;
}

/**
 * Runs `blanket backup --json` and SIGKILLs it: after `delayMs`; or on cue — when a pack data object that was not
 * there before appears (between that pack's data and its index), 30 ms after a new temporary object appears
 * (mid-pack), when the pack that completes the layer is reported, or when a second pack is; or once `killAfterPacks`
 * packs are reported.
 */
async function killedBackup(
  source: string,
  archive: string,
  how: { delayMs?: number; cue?: Cue; killAfterPacks?: number },
): Promise<KilledRun> {
  const child = spawn(process.execPath, [CLI_PATH, 'backup', source, archive, '--pack-size', PACK_SIZE, '--json'], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const started = Date.now();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let packsWritten = 0;
  const kill = (): void => void child.kill('SIGKILL');
  child.stdout!.on('data', (chunk: Buffer) => {
    out.push(chunk);
    const text = chunk.toString();
    packsWritten += text.split('"type":"pack-written"').length - 1;
    if (how.killAfterPacks !== undefined && packsWritten >= how.killAfterPacks) kill();
    if (how.cue === 'after two commits' && packsWritten >= 2) kill();
    // Printed right after the index that completes the layer is committed, before the lock is released.
    if (how.cue === 'layer complete' && /"type":"pack-written"[^\n]*"complete":true/.test(text)) kill();
  });
  child.stderr!.on('data', (chunk: Buffer) => err.push(chunk));
  const timers: NodeJS.Timeout[] = [setTimeout(kill, RUN_TIMEOUT_MS)];
  if (how.delayMs !== undefined) timers.push(setTimeout(kill, how.delayMs));
  let watcher: FSWatcher | undefined;
  if (how.cue === 'header created' || how.cue === 'header being written') {
    // The archive folder exists and is empty: the run makes it an archive, and is killed as blanket.json appears,
    // or as the first file of all (the header being written under a temporary name) appears.
    watcher = watch(archive, (_event, name) => {
      if (how.cue === 'header being written' || String(name) === 'blanket.json') kill();
    });
  }
  if (how.cue === 'new pack data' || how.cue === 'mid-pack') {
    const layers = join(archive, 'layers');
    const before = new Set(listObjects(archive));
    const onName = (object: string): void => {
      if (before.has(object) || !existsSync(join(archive, object))) return;
      if (how.cue === 'new pack data' && object.endsWith('.tar.zst')) kill();
      if (how.cue === 'mid-pack' && object.includes('/.tmp-')) timers.push(setTimeout(kill, 30));
    };
    const arm = (): void => {
      watcher = watch(layers, { recursive: true }, (_event, name) => onName(`layers/${String(name)}`));
    };
    if (existsSync(layers)) arm();
    else {
      const poll = setInterval(() => {
        if (existsSync(layers)) {
          clearInterval(poll);
          arm();
          for (const object of listObjects(archive)) onName(object);
        }
      }, 2);
      timers.push(poll);
    }
  }
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
  for (const timer of timers) clearTimeout(timer);
  watcher?.close();
  const stdout = Buffer.concat(out).toString();
  // A SIGKILL can cut the last line short.
  const events = stdout
    .split('\n')
    .filter((line) => line.startsWith('{') && line.endsWith('}'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { code, signal, stdout, stderr: Buffer.concat(err).toString(), elapsedMs: Date.now() - started, events };
}

/** Object names below layers/ (including temporary files), relative to the archive. */
function listObjects(archive: string): string[] {
  const layers = join(archive, 'layers');
  if (!existsSync(layers)) return [];
  return readdirSync(layers).flatMap((dir) => readdirSync(join(layers, dir)).map((name) => `layers/${dir}/${name}`));
}

/** Where a kill landed, judged from what the archive holds afterwards. */
function phaseOf(run: KilledRun, before: Set<string>, archive: string): string {
  if (run.signal === null) return 'completed before the kill';
  if (run.events.some((e) => e.type === 'pack-written' && e.complete === true)) return 'after the last commit, lock held';
  const now = listObjects(archive);
  const added = now.filter((n) => !before.has(n));
  const stems = (suffix: string) => new Set(now.filter((n) => n.endsWith(suffix)).map((n) => n.slice(0, -suffix.length)));
  const indexes = stems('.idx.zst');
  // First, as the next pack's data may already be on its way (a temporary object) while this index is written.
  if ([...stems('.tar.zst')].some((s) => !indexes.has(s) && added.includes(`${s}.tar.zst`))) return 'between pack data and index';
  if (now.some((n) => /\/\.tmp-/.test(n))) return added.some((n) => n.endsWith('.idx.zst')) ? 'mid-write, after commits' : 'mid-write, before any commit';
  if (added.some((n) => n.endsWith('.idx.zst'))) return 'between packs';
  return run.events.some((e) => e.type === 'started') ? 'started, nothing written' : 'start-up (before the run began)';
}

function noCrash(t: Test, stderr: string, what: string): void {
  if (/unexpected error|\n\s+at .*\.js:\d+/.test(stderr)) t.fail(`${what}: unexpected error`, { stderr: stderr.slice(-3000) });
}

/** Restored entries are exactly the first entries of the source in Blanket's path order. */
function prefixProblems(source: TreeSnapshot, restored: TreeSnapshot): string[] {
  const order = [...source].sort((a, b) => comparePathOrder(rawPath(a), rawPath(b)));
  const have = new Set(restored.map((e) => e.pathHex));
  const n = order.findIndex((e) => !have.has(e.pathHex));
  const prefix = n < 0 ? order.length : n;
  const extra = order.slice(prefix).filter((e) => have.has(e.pathHex));
  return extra.length === 0 ? [] : [`${extra.length} restored entries after the first missing one (${order[prefix]!.path}): ${extra.slice(0, 5).map((e) => e.path).join(', ')}`];
}

// ---------------------------------------------------------------------------------------------------------------

t.test('SIGKILL at any moment never damages the archive', async (t) => {
  const root = tmpDir(t, 'blanket-crash-');
  const source = join(root, 'source');
  mkdirSync(source);
  await makeSource(source);
  const history = new History();
  let current = await snapshotTree(source);
  history.record(current);
  const sourceBytes = current.reduce((sum, e) => sum + (e.type === 'file' ? e.size! : 0), 0);
  t.ok(sourceBytes > 35 * MIB && sourceBytes < 48 * MIB, `source holds ${(sourceBytes / MIB).toFixed(1)} MiB in ${current.length} entries`);

  // The probe: an uninterrupted run measures the full-run time and what a whole layer stores. Three runs, as the
  // kill delays scale with the median time: one slow run would push most kills past the end of the runs.
  const probeArchive = join(root, 'probe');
  const probeTimes: number[] = [];
  let probe: CliResult = { code: null, signal: null, stdout: '', stderr: '', timedOut: false };
  for (let p = 0; p < 3; p++) {
    rmSync(probeArchive, { recursive: true, force: true });
    const probeStart = Date.now();
    probe = await blanket(['backup', source, probeArchive, '--pack-size', PACK_SIZE, '--json'], { timeoutMs: RUN_TIMEOUT_MS });
    probeTimes.push(Date.now() - probeStart);
    t.equal(probe.code, 0, `probe backup ${p + 1} succeeds in ${probeTimes[p]} ms`, { stderr: probe.stderr });
  }
  const fullMs = [...probeTimes].sort((a, b) => a - b)[1]!;
  const probeEvents = ndjson(probe.stdout);
  const probePacks = probeEvents.filter((e) => e.type === 'pack-written').length;
  const probeStored = finishedEvent(probe.stdout)?.storedBytes as number;
  const probeBytes = await treeBytes(probeArchive);
  t.ok(probePacks >= 30, `the probe wrote ${probePacks} packs in ${fullMs} ms (median) (${(probeStored / MIB).toFixed(1)} MiB stored)`);
  rmSync(probeArchive, { recursive: true, force: true });

  // Killed half-way, then resumed: the second run continues, it does not start again (on the original source,
  // so that the probe's figures apply).
  await t.test('a run killed half-way is resumed, not redone', async (t) => {
    const fresh = join(root, 'resume');
    const killed = await killedBackup(source, fresh, { killAfterPacks: Math.floor(probePacks / 2) });
    t.equal(killed.signal, 'SIGKILL', 'the first run was killed');
    const committed = killed.events.filter((e) => e.type === 'pack-written').length;
    t.ok(committed >= probePacks / 2 - 1, `${committed} packs were committed before the kill`);
    const resumed = await blanket(['backup', source, fresh, '--pack-size', PACK_SIZE, '--json'], { timeoutMs: RUN_TIMEOUT_MS });
    t.equal(resumed.code, 0, 'the resumed run succeeds', { stderr: resumed.stderr.slice(-3000) });
    const events = ndjson(resumed.stdout);
    const finished = events.find((e) => e.type === 'finished')!;
    t.ok(events.some((e) => e.type === 'warning' && e.code === 'stale-lock'), 'it clears the stale lock with a warning');
    t.ok(typeof finished.resumedAfter === 'string', `it resumed after ${String(finished.resumedAfter)}`);
    t.equal(finished.complete, true, 'and completed the layer');
    const stored = finished.storedBytes as number;
    const size = await treeBytes(fresh);
    t.ok(stored < probeStored * 0.75, `the resumed run stored ${(stored / MIB).toFixed(1)} MiB, well under a whole layer's ${(probeStored / MIB).toFixed(1)} MiB`);
    t.ok(size < probeBytes * 1.15, `the archive holds ${(size / MIB).toFixed(1)} MiB, not much more than an uninterrupted run's ${(probeBytes / MIB).toFixed(1)} MiB`);
    const verifyFresh = await blanket(['verify', fresh], { timeoutMs: RUN_TIMEOUT_MS });
    t.equal(verifyFresh.code, 0, 'verify exits 0');
    t.match(verifyFresh.stdout, /archive OK/, 'no damage');
    t.notMatch(verifyFresh.stdout, /orphan/, 'nothing left over');
    rmSync(fresh, { recursive: true, force: true });
  });

  // Killed while it creates the archive: the header must appear whole or not at all, so the next run works.
  await t.test('a run killed while it creates the archive', async (t) => {
    for (let k = 0; k < 4; k++) {
      const fresh = join(root, `created-${k}`);
      mkdirSync(fresh);
      const killed = await killedBackup(source, fresh, { cue: k % 2 === 0 ? 'header created' : 'header being written' });
      t.equal(killed.signal, 'SIGKILL', `run ${k + 1} was killed`);
      const header = join(fresh, 'blanket.json');
      if (existsSync(header)) t.doesNotThrow(() => JSON.parse(readFileSync(header, 'utf8')), `run ${k + 1}: blanket.json is whole`);
      const next = await blanket(['backup', source, fresh, '--pack-size', PACK_SIZE], { timeoutMs: RUN_TIMEOUT_MS });
      t.equal(next.code, 0, `run ${k + 1}: the next backup succeeds`, { stderr: next.stderr.slice(-2000) });
      const verify = await blanket(['verify', fresh], { timeoutMs: RUN_TIMEOUT_MS });
      t.equal(verify.code, 0, `run ${k + 1}: verify exits 0`, { stdout: verify.stdout.slice(-2000) });
      rmSync(fresh, { recursive: true, force: true });
    }
  });

  // Kill delays: one per stratum of [50 ms, 1.25 T], in a seeded random order (the cued runs skip theirs). A bit
  // beyond T, as a resumed run first re-reads the big file it was in (its committed chunks are not stored again).
  const rng = new Prng(SEED + 1);
  const maxDelay = Math.max(600, Math.round(fullMs * 1.25));
  const strata = Array.from({ length: KILLS }, (_, i) => i);
  for (let i = strata.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [strata[i], strata[j]] = [strata[j]!, strata[i]!];
  }
  const delays = strata.map((s) => Math.round(50 + ((s + rng.int(1000) / 1000) / KILLS) * (maxDelay - 50)));

  const phases = new Map<string, number>();
  const mutationRng = new Prng(SEED + 2);
  let resumedRuns = 0;
  let staleLocksCleared = 0;
  let killsInFirstLayers = 0;
  let archive = '';

  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    archive = join(root, `archive-${epoch}`);
    const init = await blanket(['init', archive]);
    t.equal(init.code, 0, `epoch ${epoch + 1}: init`, { stderr: init.stderr });
    let layerOneComplete = false;
    /** The source has not changed since this epoch's archive was started. */
    let frozen = true;
    // In the first half the source stays as it is until the first layer is complete; in the second half it also
    // changes while that layer is partial, so a resumed layer mixes versions.
    const mutateEarly = epoch >= EPOCHS / 2;
    for (let k = 0; k < KILLS_PER_EPOCH; k++) {
      const i = epoch * KILLS_PER_EPOCH + k;
      if ((layerOneComplete || mutateEarly) && k % 2 === 1) {
        const what = await mutateSource(source, mutationRng);
        current = await snapshotTree(source);
        history.record(current);
        frozen = false;
        t.comment(`source changed: ${what}`);
      }
      const before = new Set(listObjects(archive));
      const lockBefore = existsSync(join(archive, 'lock'));
      const cue = CUES.get(i);
      const run = await killedBackup(source, archive, cue ? { cue } : { delayMs: delays[i] });
      const phase = phaseOf(run, before, archive);
      phases.set(phase, (phases.get(phase) ?? 0) + 1);
      const label = `epoch ${epoch + 1}, kill ${i + 1}/${KILLS} (${cue ?? `${delays[i]} ms`}, after ${run.elapsedMs} ms): ${phase}`;
      noCrash(t, run.stderr, label);
      if (run.signal === null) t.equal(run.code, 0, `${label}: exit 0`, { stderr: run.stderr.slice(-3000) });

      // The lock: one left by the previous kill is cleared by this run (if it got that far), with a warning.
      const startedEvent = run.events.find((e) => e.type === 'started');
      if (lockBefore && startedEvent) {
        const warned = run.events.some((e) => e.type === 'warning' && e.code === 'stale-lock');
        t.ok(warned, `${label}: the stale lock was cleared with a warning`);
        if (warned) staleLocksCleared++;
      }
      if (run.signal === null) t.notOk(existsSync(join(archive, 'lock')), `${label}: a finished run leaves no lock`);
      if (startedEvent?.resumedAfter) resumedRuns++;
      if (!layerOneComplete) killsInFirstLayers++;

      // verify and restore (read-only, so at once): exit 0, nothing corrupt, the right set of paths.
      const out = join(root, `out-${i}`);
      const [verify, restore] = await Promise.all([
        blanket(['verify', archive], { timeoutMs: RUN_TIMEOUT_MS }),
        blanket(['restore', archive, out], { timeoutMs: RUN_TIMEOUT_MS }),
      ]);
      noCrash(t, verify.stderr, `${label}: verify`);
      t.equal(verify.code, 0, `${label}: verify exits 0`, { stdout: verify.stdout.slice(-3000), stderr: verify.stderr.slice(-3000) });
      noCrash(t, restore.stderr, `${label}: restore`);
      t.equal(restore.code, 0, `${label}: restore exits 0`, { stderr: restore.stderr.slice(-3000) });
      const restored = existsSync(out) ? await snapshotTree(out) : [];
      rmSync(out, { recursive: true, force: true });
      t.same(history.check(restored), [], `${label}: each of ${restored.length} restored entries is one of its versions`);
      if (!layerOneComplete) {
        if (frozen) t.same(prefixProblems(current, restored), [], `${label}: the restored entries are a prefix of the source in path order`);
        layerOneComplete = await layerComplete(archive, 1);
        if (layerOneComplete) t.comment(`epoch ${epoch + 1}: layer 1 complete after kill ${i + 1}`);
      } else {
        t.same(history.missingStable(restored), [], `${label}: every path that never changed is restored`);
      }
    }
  }

  const summary = [...phases].map(([p, n]) => `${p}: ${n}`).join('; ');
  t.comment(`kill delays (ms; cues in their place): ${delays.map((d, i) => CUES.get(i) ?? d).join(', ')}`);
  t.comment(`where the kills landed: ${summary}`);
  t.ok(killsInFirstLayers >= EPOCHS + 2, `${killsInFirstLayers} kills hit a first layer in progress`);
  t.ok(phases.get('between pack data and index'), `kills landed between a pack's data and its index (${summary})`);
  t.ok(phases.get('after the last commit, lock held'), 'kills landed after the last commit');
  t.ok((phases.get('mid-write, before any commit') ?? 0) + (phases.get('mid-write, after commits') ?? 0) > 0, 'kills landed mid-pack');
  t.ok((phases.get('start-up (before the run began)') ?? 0) + (phases.get('started, nothing written') ?? 0) > 0, 'kills landed before anything was written');
  t.ok(resumedRuns > 0, `runs resumed a partial layer (${resumedRuns})`);
  t.ok(staleLocksCleared > 0, `stale locks were cleared (${staleLocksCleared})`);

  // The end: complete the open layer, then one more layer for changes made while it was partial.
  let whole = false;
  for (let runs = 0; runs < 4 && !whole; runs++) {
    const run = await blanket(['backup', source, archive, '--pack-size', PACK_SIZE, '--json'], { timeoutMs: RUN_TIMEOUT_MS });
    t.equal(run.code, 0, `final backup ${runs + 1}`, { stderr: run.stderr.slice(-3000) });
    const finished = finishedEvent(run.stdout);
    t.equal(finished?.complete, true, `final backup ${runs + 1} completes its layer ${finished?.layer}`);
    whole = finished?.complete === true && finished?.resumedAfter === null;
  }
  t.ok(whole, 'a whole layer was written from the start');
  const out = join(root, 'out-final');
  const [verify, restore] = await Promise.all([
    blanket(['verify', archive], { timeoutMs: RUN_TIMEOUT_MS }),
    blanket(['restore', archive, out], { timeoutMs: RUN_TIMEOUT_MS }),
  ]);
  t.equal(verify.code, 0, 'the final archive verifies', { stdout: verify.stdout.slice(-2000) });
  t.equal(restore.code, 0, 'the final restore exits 0', { stderr: restore.stderr.slice(-3000) });
  compareTrees(t, await snapshotTree(source), await snapshotTree(out), { message: 'the newest state is exactly the final source', mtimePrecisionNs: US });
});

/** Whether layer `layer` is complete: its newest index (decompressed here) covers through "~". */
async function layerComplete(archive: string, layer: number): Promise<boolean> {
  const dir = join(archive, 'layers', String(layer).padStart(6, '0'));
  if (!existsSync(dir)) return false;
  const last = readdirSync(dir).filter((n) => n.endsWith('.idx.zst')).sort().pop();
  if (last === undefined) return false;
  const text = (await decompress(readFileSync(join(dir, last)))).toString('latin1');
  return /^through\t~$/m.test(text);
}
