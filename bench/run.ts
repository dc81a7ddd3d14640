// Blanket vs restic benchmark: `npm run bench [-- OPTIONS]` (runs dist/bench/run.js; build first with
// `npx tsc -p .`). See bench/README.md for what each scenario measures and the targets.

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PackIndex } from '../src/formats/index-format.js';
import { pathToKey } from '../src/formats/path-key.js';
import { layerIndexes, readCatalog, readIndex } from '../src/stages/state-reader.js';
import { startPool } from '../src/stages/worker-threads.js';
import { LocalStore } from '../src/stores/local.js';
import type { RdiffTask, RdiffTaskResult } from './rdiff-worker.js';
import {
  type CorpusSpec,
  DEFAULT_SEED,
  type GenerateResult,
  KeyStream,
  Rng,
  applyDayOfChanges,
  generateCorpus,
  smallFilesSpec,
  standardSpec,
  walkTree,
} from './corpus.js';

const KiB = 1024;
const MiB = 1024 * KiB;

// ---------------------------------------------------------------------------------------------------------
// Options

const SCENARIOS = ['initial', 'rerun', 'changed', 'restore', 'subtree', 'verify', 'killed', 'memory', 's3', 'rdiff', 'gc'] as const;
type Scenario = (typeof SCENARIOS)[number];
type ToolName = 'blanket' | 'restic';

interface Options {
  quick: boolean;
  skipRestic: boolean;
  skipBlanket: boolean;
  only: Set<Scenario> | undefined;
  timeoutSec: number;
  keep: boolean;
  blanketCli: string;
  /** Rounds of the initial and no-change backups (tool order alternating); the median run is the figure. */
  repeat: number;
}

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const WORK = path.join(REPO_ROOT, 'bench', 'work');

const USAGE = `usage: npm run bench -- [options]      (or: node dist/bench/run.js [options])
  --quick            1/10-scale corpus (~120 MB; memory check 2,500 vs 25,000 files): checks the harness fast
  --skip-restic      run only Blanket
  --skip-blanket     run only restic
  --only LIST        only these scenarios (comma-separated, or repeat the option); prerequisites are run as setup:
                     ${SCENARIOS.join(', ')}
  --timeout SEC      per-command time limit (default 7200)
  --keep             keep archives, repositories and restored trees under bench/work/ (default: removed when done)
  --blanket-cli PATH Blanket entry point (default dist/src/cli/main.js)
  --repeat N         rounds of the initial and no-change backups, the tools' order alternating (default 3);
                     each tool's median run is its figure
  -h, --help`;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    quick: false,
    skipRestic: false,
    skipBlanket: false,
    only: undefined,
    timeoutSec: 7200,
    keep: false,
    blanketCli: path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js'),
    repeat: 3,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--quick':
        o.quick = true;
        break;
      case '--skip-restic':
        o.skipRestic = true;
        break;
      case '--skip-blanket':
        o.skipBlanket = true;
        break;
      case '--keep':
        o.keep = true;
        break;
      case '--timeout':
        o.timeoutSec = Number(value());
        if (!(o.timeoutSec > 0)) fail('--timeout needs a positive number of seconds');
        break;
      case '--blanket-cli':
        o.blanketCli = path.resolve(value());
        break;
      case '--repeat':
        o.repeat = Number(value());
        if (!Number.isInteger(o.repeat) || o.repeat < 1) fail('--repeat needs a positive integer');
        break;
      case '--only':
        o.only ??= new Set();
        for (const s of value().split(',').map((x) => x.trim()).filter(Boolean)) {
          if (!(SCENARIOS as readonly string[]).includes(s)) fail(`unknown scenario "${s}"; known: ${SCENARIOS.join(', ')}`);
          o.only.add(s as Scenario);
        }
        break;
      case '-h':
      case '--help':
        console.log(USAGE);
        process.exit(0);
      default:
        fail(`unknown option ${a}`);
    }
  }
  if (o.skipBlanket && o.skipRestic) fail('--skip-blanket and --skip-restic together leave nothing to run');
  return o;
}

function fail(msg: string): never {
  console.error(`bench: ${msg}\n${USAGE}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------------------
// Formatting

const fmt = (n: number, digits = 1): string => n.toFixed(digits);
const mib = (bytes: number): string => `${fmt(bytes / MiB)} MiB`;
const pad = (s: string, n: number): string => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const lpad = (s: string, n: number): string => (s.length >= n ? s : ' '.repeat(n - s.length) + s);

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function log(s = ''): void {
  console.log(s);
}

// ---------------------------------------------------------------------------------------------------------
// Running commands

interface Cmd {
  readonly cmd: string;
  readonly args: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
}

interface RunResult {
  readonly ok: boolean;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly seconds: number;
  /** Peak RSS of the command's process (and of any children it waited for), KiB. */
  readonly peakRssKiB: number | undefined;
  readonly cpuSeconds: number | undefined;
  /** CPU time the hypervisor gave to other guests while the command ran (all cores; /proc/stat steal). */
  readonly stealSeconds: number | undefined;
  readonly stdout: string;
  readonly stderr: string;
}

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ: the unit of /proc/stat on Linux

/** Seconds of CPU time stolen by the hypervisor since boot, summed over cores (undefined where not reported). */
function stealSecondsNow(): number | undefined {
  try {
    const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/);
    const steal = Number(cpu[8]);
    return Number.isFinite(steal) ? steal / CLOCK_TICKS_PER_SECOND : undefined;
  } catch {
    return undefined;
  }
}

const TIME_BIN = '/usr/bin/time';
const active = new Set<number>();

process.on('SIGINT', () => {
  for (const pid of active) killGroup(pid);
  process.exit(130);
});

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** Keeps the last `limit` characters of a stream. */
class Tail {
  private parts: string[] = [];
  private len = 0;
  constructor(private readonly limit: number) {}
  push(chunk: string): void {
    this.parts.push(chunk);
    this.len += chunk.length;
    while (this.len - this.parts[0]!.length > this.limit) this.len -= this.parts.shift()!.length;
  }
  toString(): string {
    const s = this.parts.join('');
    return s.length > this.limit ? s.slice(s.length - this.limit) : s;
  }
}

let timeAvailable = false;

/**
 * Runs a command without a shell, wrapped in /usr/bin/time -f %M (max RSS of the child as reported by wait4,
 * which for a node process is the whole process, worker threads included). Without /usr/bin/time, polls
 * VmHWM of the child instead.
 */
async function measure(c: Cmd, timeoutSec: number): Promise<RunResult> {
  // No timed run pays for the writeback of what an earlier run wrote.
  spawnSync('sync');
  const timeFile = path.join(WORK, `.time-${process.pid}`);
  fs.rmSync(timeFile, { force: true });
  const [file, args] = timeAvailable ? [TIME_BIN, ['-f', 'BENCHTIME %M %U %S', '-o', timeFile, c.cmd, ...c.args]] : [c.cmd, [...c.args]];
  const stdout = new Tail(256 * KiB);
  const stderr = new Tail(64 * KiB);
  const steal0 = stealSecondsNow();
  const t0 = performance.now();
  const child = spawn(file, args, { env: { ...process.env, ...c.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let hwmKiB: number | undefined;
  let poll: NodeJS.Timeout | undefined;
  if (child.pid !== undefined) {
    active.add(child.pid);
    if (!timeAvailable) {
      const pid = child.pid;
      poll = setInterval(() => {
        const v = readVmHWM(pid);
        if (v !== undefined) hwmKiB = Math.max(hwmKiB ?? 0, v);
      }, 50);
    }
  }
  child.stdout.setEncoding('utf8').on('data', (d: string) => stdout.push(d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => stderr.push(d));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    if (child.pid !== undefined) killGroup(child.pid);
  }, timeoutSec * 1000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    child.on('error', (e) => {
      stderr.push(`spawn error: ${e.message}\n`);
      resolve([null, null]);
    });
    child.on('close', (code, signal) => resolve([code, signal]));
  });
  const seconds = (performance.now() - t0) / 1000;
  const steal1 = stealSecondsNow();
  const stealSeconds = steal0 !== undefined && steal1 !== undefined ? steal1 - steal0 : undefined;
  clearTimeout(timer);
  if (poll) clearInterval(poll);
  if (child.pid !== undefined) active.delete(child.pid);
  let peakRssKiB = hwmKiB;
  let cpuSeconds: number | undefined;
  if (timeAvailable) {
    const m = /BENCHTIME (\d+) ([\d.]+) ([\d.]+)/.exec(fs.existsSync(timeFile) ? fs.readFileSync(timeFile, 'utf8') : '');
    if (m) {
      peakRssKiB = Number(m[1]);
      cpuSeconds = Number(m[2]) + Number(m[3]);
    }
    fs.rmSync(timeFile, { force: true });
  }
  return { ok: code === 0 && !timedOut, code, signal, timedOut, seconds, peakRssKiB, cpuSeconds, stealSeconds, stdout: stdout.toString(), stderr: stderr.toString() };
}

function readVmHWM(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function runSync(cmd: string, args: string[], env?: Record<string, string>): { ok: boolean; out: string; err: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 * MiB });
  return { ok: r.status === 0, out: r.stdout ?? '', err: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

function onPath(cmd: string): boolean {
  return runSync('sh', ['-c', `command -v ${cmd}`]).ok;
}

function aptInstall(pkg: string): boolean {
  log(`installing ${pkg}: apt-get install -y ${pkg}`);
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  let r = runSync('apt-get', ['install', '-y', pkg], env);
  if (!r.ok) {
    runSync('apt-get', ['update'], env);
    r = runSync('apt-get', ['install', '-y', pkg], env);
  }
  if (!r.ok) log(`  apt-get install ${pkg} failed:\n${indent(lastLines(r.err + r.out, 15))}`);
  return r.ok;
}

function duBytes(p: string): number {
  if (!fs.existsSync(p)) return 0;
  const r = runSync('du', ['-sb', p]);
  return r.ok ? Number(r.out.split(/\s/)[0]) : NaN;
}

/** Apparent size of a tree (fast, no child process): for polling. */
function treeBytes(p: string): number {
  let total = 0;
  const visit = (d: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const q = path.join(d, e.name);
      if (e.isDirectory()) visit(q);
      else {
        try {
          total += fs.lstatSync(q).size;
        } catch {
          /* vanished */
        }
      }
    }
  };
  visit(p);
  return total;
}

function lastLines(s: string, n: number): string {
  const lines = s.trimEnd().split('\n');
  return lines.slice(Math.max(0, lines.length - n)).join('\n');
}

function indent(s: string, by = '      | '): string {
  return s
    .split('\n')
    .map((l) => by + l)
    .join('\n');
}

function rmrf(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
}

/** Makes `to` an exact copy of `from` (modes and times too), or absent if `from` is. */
function copyTree(from: string, to: string): void {
  rmrf(to);
  if (!fs.existsSync(from)) return;
  const r = spawnSync('cp', ['-a', from, to], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cp -a ${from} ${to} failed: ${r.stderr || r.error}`);
}

/**
 * Restore targets on a file system made afresh for each restore (an ext4 image on a loop device, when run as
 * root with mkfs.ext4 and mount): on this VM's ext4 (no journal) creating files is slow for minutes after many
 * were deleted (the inode allocator skips recently deleted inodes: ~0.5-0.9 ms of kernel time per file), so a
 * restore's speed depended on what ran before it, and whichever tool restored first was the slower. A fresh file
 * system gives every restore the same start. Elsewhere (not root, no loop devices) a plain directory, as before.
 */
const RESTORE_IMAGE = path.join(WORK, 'restore-fs.img');
const RESTORE_MOUNT = path.join(WORK, 'restore-fs');
let freshFsWorks: boolean | undefined;

function freshRestoreDir(name: string): string {
  if (freshFsWorks !== false) {
    spawnSync('umount', [RESTORE_MOUNT], { stdio: 'ignore' });
    fs.mkdirSync(RESTORE_MOUNT, { recursive: true });
    const made =
      spawnSync('truncate', ['-s', '8G', RESTORE_IMAGE]).status === 0 &&
      spawnSync('mkfs.ext4', ['-q', '-F', '-N', '1000000', '-E', 'lazy_itable_init=0,lazy_journal_init=0', RESTORE_IMAGE]).status === 0 &&
      spawnSync('mount', ['-o', 'loop', RESTORE_IMAGE, RESTORE_MOUNT]).status === 0;
    if (freshFsWorks === undefined) {
      freshFsWorks = made;
      log(made ? `restore targets: a fresh ext4 file system (loop device) for each restore, at ${rel(RESTORE_MOUNT)}` : 'restore targets: plain directories (no loop-mounted file system here)');
    }
    if (made) {
      spawnSync('sync');
      return path.join(RESTORE_MOUNT, name);
    }
  }
  const dest = path.join(WORK, name);
  rmrf(dest);
  return dest;
}

function releaseRestoreFs(): void {
  if (freshFsWorks !== true) return;
  spawnSync('umount', [RESTORE_MOUNT], { stdio: 'ignore' });
  rmrf(RESTORE_IMAGE);
  rmrf(RESTORE_MOUNT);
}


// ---------------------------------------------------------------------------------------------------------
// Corpus

interface CorpusInfo {
  readonly dir: string;
  readonly files: number;
  readonly bytes: number;
}

interface Marker {
  spec: CorpusSpec;
  state: 'clean' | 'changed';
  result?: GenerateResult;
}

function markerPath(dir: string): string {
  return `${dir}.json`;
}

/** Generates the corpus, or reuses it when its marker (beside it, not in it) is for the same spec. */
function ensureCorpus(dir: string, spec: CorpusSpec): CorpusInfo {
  const mp = markerPath(dir);
  let marker: Marker | undefined;
  try {
    marker = JSON.parse(fs.readFileSync(mp, 'utf8')) as Marker;
  } catch {
    marker = undefined;
  }
  const same = marker !== undefined && JSON.stringify(marker.spec) === JSON.stringify(spec) && fs.existsSync(dir);
  let res: GenerateResult | undefined = marker?.result;
  if (same && marker!.state === 'clean') {
    log(`corpus: reusing ${rel(dir)} (marker ${rel(mp)} matches)`);
  } else {
    const repair = same; // same spec, changed by a previous run's day of changes: put it back
    log(`corpus: ${repair ? 'restoring' : 'generating'} ${rel(dir)} ...`);
    fs.rmSync(mp, { force: true });
    res = generateCorpus(dir, spec, { repair, log });
    fs.writeFileSync(mp, JSON.stringify({ spec, state: 'clean', result: res } satisfies Marker, null, 2));
    log(
      `corpus: ${repair ? `restored (${res.written} files rewritten, ${res.removed} entries removed)` : 'generated'} in ${fmt(res.seconds)} s: ` +
        `${res.files} files, ${res.dirs} directories, ${mib(res.bytes)} (${fmt((100 * res.compressibleBytes) / res.bytes, 0)}% text-like)`,
    );
  }
  return { dir, ...countTree(dir) };
}

function markCorpusChanged(dir: string): void {
  const mp = markerPath(dir);
  const marker = JSON.parse(fs.readFileSync(mp, 'utf8')) as Marker;
  marker.state = 'changed';
  fs.writeFileSync(mp, JSON.stringify(marker, null, 2));
}

function countTree(dir: string): { files: number; bytes: number } {
  const { files } = walkTree(dir);
  return { files: files.length, bytes: files.reduce((s, f) => s + f.size, 0) };
}

/** Reads every file once so that all tools start from the same (warm) page cache. */
function warmCache(dir: string): { bytes: number; seconds: number } {
  const t0 = performance.now();
  const buf = Buffer.allocUnsafe(4 * MiB);
  let bytes = 0;
  if (!fs.existsSync(dir)) return { bytes, seconds: 0 }; // a run that failed before creating it: nothing to warm
  for (const f of walkTree(dir).files) {
    const fd = fs.openSync(path.join(dir, f.rel), 'r');
    try {
      let n: number;
      while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) bytes += n;
    } finally {
      fs.closeSync(fd);
    }
  }
  return { bytes, seconds: (performance.now() - t0) / 1000 };
}

function rel(p: string): string {
  return path.relative(REPO_ROOT, p) || '.';
}

// ---------------------------------------------------------------------------------------------------------
// Tools

interface Tool {
  readonly name: ToolName;
  readonly repo: string;
  /** Removes any previous archive/repository (and creates an empty repository where the tool needs one). */
  fresh(timeoutSec: number): Promise<RunResult | undefined>;
  backup(src: string): Cmd;
  restore(dest: string, subtree?: string): Cmd;
  verify(): Cmd;
  /** Where `relPath` (relative to the backup root) of a full restore into dest lands. */
  restoredPath(dest: string, relPath: string): string;
  /** Everything a backup reads and changes besides the source: the archive and the tool's cache. */
  readonly stateDirs: readonly string[];
  /** One-line summary of a backup's stdout, if the tool prints one. */
  backupSummary(stdout: string): string | undefined;
}

function blanketTool(cli: string, repo: string): Tool {
  const env = { XDG_CACHE_HOME: path.join(WORK, 'blanket-xdg-cache') };
  // Run the executable itself, as `npx blanket` does, so its shebang's malloc settings apply.
  return {
    name: 'blanket',
    repo,
    async fresh() {
      rmrf(repo);
      return undefined;
    },
    backup: (s) => ({ cmd: cli, args: ['backup', s, repo, '--json'], env }),
    restore: (dest, subtree) => ({ cmd: cli, args: ['restore', repo, dest, ...(subtree ? [subtree] : [])], env }),
    verify: () => ({ cmd: cli, args: ['verify', repo], env }),
    restoredPath: (dest, r) => path.join(dest, r),
    stateDirs: [repo, env.XDG_CACHE_HOME],
    backupSummary(stdout) {
      const t = stdout.trim();
      if (!t) return undefined;
      const last = t.split('\n').pop()!;
      return last.length > 400 ? last.slice(0, 400) + '...' : last;
    },
  };
}

function resticTool(repo: string, src: string): Tool {
  const env = { RESTIC_PASSWORD: 'blanket-bench', RESTIC_CACHE_DIR: path.join(WORK, 'restic-cache'), RESTIC_PROGRESS_FPS: '0.016666' };
  return {
    name: 'restic',
    repo,
    async fresh(timeoutSec) {
      rmrf(repo);
      rmrf(env.RESTIC_CACHE_DIR);
      return measure({ cmd: 'restic', args: ['-r', repo, 'init'], env }, timeoutSec);
    },
    backup: (s) => ({ cmd: 'restic', args: ['-r', repo, 'backup', '--json', s], env }),
    restore: (dest, subtree) => ({
      cmd: 'restic',
      args: ['-r', repo, 'restore', 'latest', '--target', dest, ...(subtree ? ['--include', path.join(src, subtree)] : [])],
      env,
    }),
    verify: () => ({ cmd: 'restic', args: ['-r', repo, 'check', '--read-data'], env }),
    restoredPath: (dest, r) => path.join(dest, src, r),
    stateDirs: [repo, env.RESTIC_CACHE_DIR],
    backupSummary(stdout) {
      for (const line of stdout.split('\n').reverse()) {
        if (!line.includes('"summary"')) continue;
        try {
          const s = JSON.parse(line) as Record<string, number | string>;
          return `files new/changed/unmodified ${s.files_new}/${s.files_changed}/${s.files_unmodified}, data added ${mib(Number(s.data_added))}, snapshot ${String(s.snapshot_id).slice(0, 8)}`;
        } catch {
          return undefined;
        }
      }
      return undefined;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Results

interface Figure {
  readonly tool: ToolName;
  readonly label: string;
  readonly run: RunResult;
  readonly bytes: number;
  readonly files: number;
  readonly archiveBytes?: number;
  readonly addedBytes?: number;
  readonly note?: string;
}

const figures = new Map<string, Figure>();
/** Every run reported, repeated rounds included: peak RSS is the maximum over all of them. */
const allFigures: Figure[] = [];
const key = (tool: ToolName, id: string): string => `${tool}:${id}`;

function report(id: string, f: Figure): Figure {
  figures.set(key(f.tool, id), f);
  allFigures.push(f);
  const r = f.run;
  const head = `  ${pad(f.tool, 8)} ${pad(f.label, 28)}`;
  const rss = r.peakRssKiB !== undefined ? `${lpad(fmt(r.peakRssKiB / 1024), 7)} MiB RSS` : '       ? MiB RSS';
  const cpu =
    (r.cpuSeconds !== undefined ? `  cpu ${lpad(fmt(r.cpuSeconds), 6)} s` : '') +
    (r.stealSeconds !== undefined ? `  steal ${lpad(fmt(r.stealSeconds), 5)} s` : '');
  const extra =
    (f.archiveBytes !== undefined ? `  archive ${mib(f.archiveBytes)}` : '') +
    (f.addedBytes !== undefined ? `  added ${f.addedBytes} B (${mib(f.addedBytes)})` : '');
  const rate = `${lpad(fmt(f.bytes / 1e6 / r.seconds), 7)} MB/s ${lpad(fmt(f.files / r.seconds, 0), 7)} files/s`;
  if (r.ok) {
    log(`${head} ${lpad(fmt(r.seconds, 2), 8)} s ${rate} ${rss}${cpu}${extra}`);
  } else {
    const why = r.timedOut ? 'timed out' : r.signal ? `signal ${r.signal}` : `exit ${r.code}`;
    log(`${head} FAILED (${why}) after ${fmt(r.seconds, 2)} s ${rss}${extra}`);
    const err = lastLines(r.stderr || r.stdout || '(no output)', 25);
    log(indent(err));
  }
  if (f.note) log(`           ${f.note}`);
  return f;
}

function get(tool: ToolName, id: string): Figure | undefined {
  return figures.get(key(tool, id));
}

// ---------------------------------------------------------------------------------------------------------
// Changed day: what the day's layer stores for the two big files

/** The big files and what the day does to them (applyDayOfChanges' defaults, which the bench keeps). */
const BIG_FILES = [
  { rel: 'vm/disk.img', name: 'disk.img', change: '4 KiB overwritten', target: 1 * MiB, targetText: '1 MiB' },
  { rel: 'var/log/mail.log', name: 'mail.log', change: '1 MiB appended', target: 1.2 * MiB, targetText: '1.2 MiB' },
] as const;

/** The H members of one layer that store a file's chunks: content members, deltas and signatures of them. */
interface LayerFileBytes {
  readonly chunks: number;
  /** Chunks stored whole in the layer (a content member). */
  readonly wholeChunks: number;
  /** Chunks stored as an rdiff delta in the layer (a delta member whose TARGET is the chunk). */
  readonly deltaChunks: number;
  readonly contentBytes: number;
  readonly deltaBytes: number;
  readonly signatureBytes: number;
  /** All of the above: uncompressed member sizes, an upper bound of what the archive grew for the file. */
  readonly bytes: number;
}

interface DayLayerGrowth {
  readonly layer: number;
  /** By BIG_FILES rel; absent: the layer holds no E line for the file. */
  readonly files: ReadonlyMap<string, LayerFileBytes>;
}

/** Keyed by the changed-day run (Blanket's) that the growth was read after. */
const dayLayerGrowth = new Map<Figure, DayLayerGrowth>();

/**
 * Reads the newest layer's indexes (the day's, after scenario 3's backup): each big file's E line and C lines give
 * its chunk hashes; the layer's H members storing those chunks (content whose hash is one, delta or signature
 * whose TARGET is one) are what the day stored for it.
 */
async function readDayLayerGrowth(archive: string): Promise<DayLayerGrowth | undefined> {
  const store = new LocalStore(archive);
  const catalog = await readCatalog(store);
  const layer = catalog.layers[catalog.layers.length - 1];
  if (layer === undefined) return undefined;
  const wanted = new Map<string, string>(BIG_FILES.map((b) => [pathToKey(Buffer.from(b.rel)), b.rel]));
  const chunksOf = new Map<string, Set<string>>();
  const counts = new Map<string, { chunks: number; whole: Set<string>; deltas: Set<string>; contentBytes: number; deltaBytes: number; signatureBytes: number }>();
  const indexes: PackIndex[] = [];
  for (const ref of layerIndexes(catalog, layer)) indexes.push(await readIndex(store, ref.stem));
  // E lines first (a file's chunks may be in packs of the layer written before the index that records it).
  for (const index of indexes) {
    for (const segment of index.segments) {
      for (const e of segment.entries) {
        const rel = wanted.get(e.key);
        if (rel === undefined) continue;
        chunksOf.set(rel, new Set(e.chunks.map((c) => c.hash)));
        counts.set(rel, { chunks: e.chunks.length, whole: new Set(), deltas: new Set(), contentBytes: 0, deltaBytes: 0, signatureBytes: 0 });
      }
    }
  }
  for (const index of indexes) {
    for (const m of index.members) {
      for (const [rel, hashes] of chunksOf) {
        const c = counts.get(rel)!;
        if (m.kind === undefined) {
          if (hashes.has(m.hash)) {
            c.contentBytes += m.size;
            c.whole.add(m.hash);
          }
        } else if (m.kind === 'delta') {
          if (hashes.has(m.target)) {
            c.deltaBytes += m.size;
            c.deltas.add(m.target);
          }
        } else if (hashes.has(m.target)) {
          c.signatureBytes += m.size;
        }
      }
    }
  }
  const files = new Map<string, LayerFileBytes>();
  for (const [rel, c] of counts) {
    files.set(rel, {
      chunks: c.chunks,
      wholeChunks: c.whole.size,
      deltaChunks: c.deltas.size,
      contentBytes: c.contentBytes,
      deltaBytes: c.deltaBytes,
      signatureBytes: c.signatureBytes,
      bytes: c.contentBytes + c.deltaBytes + c.signatureBytes,
    });
  }
  return { layer, files };
}

/** The scenario's lines under a Blanket changed-day run: what its layer stores for each big file. */
function logDayLayerGrowth(g: DayLayerGrowth): void {
  for (const b of BIG_FILES) {
    const f = g.files.get(b.rel);
    if (!f) {
      log(`           ${b.rel}: no E line in layer ${g.layer} (not recorded as changed)`);
      continue;
    }
    log(
      `           ${b.rel} (${b.change}): layer ${g.layer} stores ${f.bytes} B (${fmt(f.bytes / MiB, 3)} MiB) for it: ` +
        `content ${f.contentBytes} B, deltas ${f.deltaBytes} B, signatures ${f.signatureBytes} B; ` +
        `${f.deltaChunks} of its ${f.chunks} chunks as deltas, ${f.wholeChunks} whole ` +
        `(uncompressed member sizes: an upper bound of what the archive grew for this file)`,
    );
  }
}

/** Counts files and bytes under dest and compares a deterministic sample of files with the source. */
function checkRestore(tool: Tool, dest: string, src: string, expected: { files: number; bytes: number }, sampleFrom: string[], subtree?: string): string {
  if (!fs.existsSync(dest)) return 'restore check: destination does not exist';
  const got = countTree(dest);
  const rng = new Rng('restore-sample');
  const sample = rng.shuffle([...sampleFrom]).slice(0, 100);
  let same = 0;
  for (const r of sample) {
    const a = path.join(src, r);
    const b = tool.restoredPath(dest, r);
    try {
      if (sha256File(a) === sha256File(b)) same++;
    } catch {
      /* missing */
    }
  }
  const countOk = got.files === expected.files && got.bytes === expected.bytes;
  return (
    `restore check${subtree ? ` (${subtree}/)` : ''}: ${got.files} files, ${got.bytes} bytes ` +
    `${countOk ? '= source' : `!= source (${expected.files} files, ${expected.bytes} bytes)`}; ` +
    `content sample ${same}/${sample.length} identical`
  );
}

function sha256File(p: string): string {
  return createHash('sha256').update(fs.readFileSync(p)).digest('hex');
}

// ---------------------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  fs.mkdirSync(WORK, { recursive: true });
  const wanted = (s: Scenario): boolean => !opts.only || opts.only.has(s);
  const needArchive = (['initial', 'rerun', 'changed', 'restore', 'subtree', 'verify'] as const).some(wanted);
  const needMain = needArchive || ((wanted('killed') || wanted('s3') || wanted('gc')) && !opts.skipBlanket);

  // Header
  const cpuModel = /model name\s*:\s*(.*)/.exec(readOr('/proc/cpuinfo', ''))?.[1] ?? os.cpus()[0]?.model ?? '?';
  const memKiB = Number(/MemTotal:\s+(\d+)/.exec(readOr('/proc/meminfo', ''))?.[1] ?? os.totalmem() / 1024);
  const nproc = runSync('nproc', []).out.trim() || String(os.availableParallelism());
  const cmdline = [path.relative(process.cwd(), process.argv[1]!) || process.argv[1]!, ...process.argv.slice(2)];
  log('# Blanket benchmark');
  log(`command:  node ${cmdline.map(shellQuote).join(' ')}${process.env.npm_lifecycle_event === 'bench' ? '   (via npm run bench)' : ''}`);
  log(`date:     ${new Date().toISOString()}`);
  log(`machine:  nproc ${nproc}, ${fmt(memKiB / 1024 / 1024)} GiB RAM, ${cpuModel}, ${os.type()} ${os.release()} ${os.arch()}`);
  log(`node:     ${process.version}`);
  const fsType = runSync('stat', ['-f', '-c', '%T', WORK]).out.trim();
  log(`work dir: ${rel(WORK)} (${fsType || '?'}; free ${fmt(freeBytes(WORK) / 1024 ** 3)} GiB)`);

  // Tools
  timeAvailable = fs.existsSync(TIME_BIN) || aptInstall('time');
  if (!timeAvailable) log('note: /usr/bin/time unavailable; peak RSS is polled from /proc/PID/status VmHWM');
  let runRestic = !opts.skipRestic;
  if (runRestic && !onPath('restic') && !aptInstall('restic')) {
    log('restic: not available, restic runs skipped');
    runRestic = false;
  }
  if (runRestic) {
    const v = runSync('restic', ['version']).out.trim();
    log(`restic:   ${v}${/restic 0\.14\./.test(v) ? '' : '   (note: the targets are phrased against restic 0.14)'}`);
  }
  const runBlanket = !opts.skipBlanket;
  if (runBlanket) {
    const commit = runSync('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']).out.trim();
    log(`blanket:  ${rel(opts.blanketCli)}${commit ? ` (commit ${commit})` : ''}${fs.existsSync(opts.blanketCli) ? '' : '   (NOT FOUND: Blanket runs will fail)'}`);
  }
  log(`scenarios: ${SCENARIOS.filter(wanted).join(', ')}${opts.quick ? '   (--quick: 1/10-scale corpus)' : ''}`);
  log('units: MB = 10^6 bytes, MiB = 2^20 bytes; MB/s and files/s are corpus (or subtree) bytes and files per wall-clock second');
  log();

  const corpusDir = path.join(WORK, opts.quick ? 'corpus-quick' : 'corpus');
  const src = corpusDir;
  const blanketCache = path.join(WORK, 'blanket-xdg-cache');
  rmrf(blanketCache); // Blanket runs get XDG_CACHE_HOME here; every run of the bench starts without a cache
  const tools: Tool[] = [];
  if (runBlanket) tools.push(blanketTool(opts.blanketCli, path.join(WORK, 'blanket-archive')));
  if (runRestic) tools.push(resticTool(path.join(WORK, 'restic-repo'), src));

  let corpus: CorpusInfo | undefined;
  if (needMain) {
    corpus = ensureCorpus(corpusDir, standardSpec({ scale: opts.quick ? 0.1 : 1 }));
    log(`corpus: ${corpus.files} files, ${corpus.bytes} bytes (${mib(corpus.bytes)})`);
    const w = warmCache(corpusDir);
    log(`page cache: not dropped (not reliably possible here); warmed instead by reading the corpus now (and each timed run's input again just before it; ${mib(w.bytes)} in ${fmt(w.seconds)} s)`);
    log();
  }

  const T = opts.timeoutSec;
  const label = (s: Scenario, text: string): string => (wanted(s) ? text : `${text} (setup)`);

  // Several rounds, the tools' order alternating (whichever runs first in a round meets a colder page cache and
  // a busier disk); each tool's median run is its figure.
  const rounds = (round: number): Tool[] => (round % 2 === 0 ? tools : [...tools].reverse());
  const medianOf = (id: string, runs: Map<ToolName, Figure[]>): void => {
    for (const [tool, list] of runs) {
      const sorted = [...list].sort((a, b) => a.run.seconds - b.run.seconds);
      const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
      figures.set(key(tool, id), median);
      if (list.length > 1) log(`  ${pad(tool, 8)} median of ${list.length}: ${fmt(median.run.seconds, 2)} s (runs: ${list.map((f) => fmt(f.run.seconds, 2)).join(', ')} s)`);
    }
  };

  if (corpus && needArchive) {
    const c = corpus;
    // (1) initial backup, and (2) no-change re-run, in rounds.
    log(`## (1) initial backup of a fresh archive (${opts.repeat} rounds)`);
    const initialRuns = new Map<ToolName, Figure[]>();
    for (let round = 0; round < opts.repeat; round++) {
      for (const t of rounds(round)) {
        const init = await t.fresh(T);
        if (init && !init.ok) log(`  ${t.name}: repository init failed:\n${indent(lastLines(init.stderr, 15))}`);
        warmCache(src);
        const r = await measure(t.backup(src), T);
        const f = report('initial', { tool: t.name, label: label('initial', 'initial backup'), run: r, bytes: c.bytes, files: c.files, archiveBytes: duBytes(t.repo), note: t.backupSummary(r.stdout) });
        initialRuns.set(t.name, [...(initialRuns.get(t.name) ?? []), f]);
      }
    }
    medianOf('initial', initialRuns);
    log();

    // (2) no-change re-run
    if (wanted('rerun')) {
      log(`## (2) no-change re-run (${opts.repeat} rounds)`);
      const rerunRuns = new Map<ToolName, Figure[]>();
      for (let round = 0; round < opts.repeat; round++) {
        for (const t of rounds(round)) {
          const before = duBytes(t.repo);
          warmCache(src);
          const r = await measure(t.backup(src), T);
          const after = duBytes(t.repo);
          const f = report('rerun', { tool: t.name, label: 'no-change re-run', run: r, bytes: c.bytes, files: c.files, archiveBytes: after, addedBytes: after - before, note: t.backupSummary(r.stdout) });
          rerunRuns.set(t.name, [...(rerunRuns.get(t.name) ?? []), f]);
        }
      }
      medianOf('rerun', rerunRuns);
      log();
    }
  }

  // killed half-way (Blanket only; on the pristine corpus, before the day of changes)
  if (corpus && wanted('killed') && runBlanket) await killedScenario(opts, corpus, src);
  // S3 (Blanket only; on the pristine corpus, before the day of changes)
  if (corpus && wanted('s3') && runBlanket) await s3Scenario(opts, corpus, src);
  // gc (Blanket only; on a copy of the pristine corpus, changed day by day)
  if (corpus && wanted('gc') && runBlanket) await gcScenario(opts, corpus, src);

  if (corpus && needArchive) {
    let c = corpus;
    // (3) backup after a day of changes
    if (wanted('changed')) {
      // One run of a couple of seconds is at the mercy of this VM's noise: several rounds, each from a copy of the
      // archive (and cache) as they were before the day, the tools' order alternating; the median is the figure.
      log(`## (3) backup after a day of changes (applied once to the source; ${opts.repeat} rounds, each from a copy of the state before the day)`);
      const saved = new Map(tools.map((t) => [t.name, t.stateDirs.map((dir) => ({ dir, copy: `${dir}.before-day` }))]));
      for (const pairs of saved.values()) for (const { dir, copy } of pairs) copyTree(dir, copy);
      markCorpusChanged(corpusDir);
      const scale = opts.quick ? 0.1 : 1;
      const day = applyDayOfChanges(corpusDir, `${DEFAULT_SEED}/day1`, { deleteCount: Math.round(100 * scale), addCount: Math.round(100 * scale) });
      c = corpus = { dir: corpusDir, ...countTree(corpusDir) };
      log(
        `  changes: ${day.edited} files partly rewritten (${mib(day.editedBytes)}), ${day.deleted} deleted, ${day.added} added (${mib(day.addedBytes)}), ` +
          `renamed ${day.renamed ? `${day.renamed.from} (${day.renamed.files} files)` : 'nothing'}, ` +
          `disk.img ${day.diskImageOverwrite ? `${day.diskImageOverwrite.bytes} B overwritten at ${day.diskImageOverwrite.offset}` : 'absent'}, ` +
          `mail.log +${mib(day.logAppended)}; now ${c.files} files, ${mib(c.bytes)}`,
      );
      warmCache(corpusDir);
      const changedRuns = new Map<ToolName, Figure[]>();
      for (let round = 0; round < opts.repeat; round++) {
        for (const t of rounds(round)) {
          if (round > 0) for (const { dir, copy } of saved.get(t.name)!) copyTree(copy, dir);
          const before = duBytes(t.repo);
          warmCache(src);
          const r = await measure(t.backup(src), T);
          const after = duBytes(t.repo);
          const f = report('changed', { tool: t.name, label: 'changed-day backup', run: r, bytes: c.bytes, files: c.files, archiveBytes: after, addedBytes: after - before, note: t.backupSummary(r.stdout) });
          if (t.name === 'blanket' && r.ok) {
            try {
              const g = await readDayLayerGrowth(t.repo);
              if (g) {
                dayLayerGrowth.set(f, g);
                logDayLayerGrowth(g);
              }
            } catch (e) {
              log(`           reading the day's layer failed: ${(e as Error).message}`);
            }
          }
          changedRuns.set(t.name, [...(changedRuns.get(t.name) ?? []), f]);
        }
      }
      for (const pairs of saved.values()) for (const { copy } of pairs) rmrf(copy);
      medianOf('changed', changedRuns);
      log();
    }

    const sourceFiles = walkTree(corpusDir).files;
    // (4) full restore, each tool into a file system of its own made just before (freshRestoreDir).
    if (wanted('restore')) {
      log('## (4) full restore into an empty directory');
      const dests: string[] = [];
      for (const t of tools) {
        const dest = freshRestoreDir(`restore-${t.name}`);
        fs.mkdirSync(dest);
        dests.push(dest);
        warmCache(t.repo);
        const r = await measure(t.restore(dest), T);
        const check = r.ok ? checkRestore(t, dest, src, c, sourceFiles.map((f) => f.rel)) : undefined;
        report('restore', { tool: t.name, label: 'full restore', run: r, bytes: c.bytes, files: c.files, ...(check ? { note: check } : {}) });
      }
      if (!opts.keep) for (const dest of dests) rmrf(dest);
      log();
    }

    // (5) one-subtree restore
    if (wanted('subtree')) {
      const tops = fs
        .readdirSync(corpusDir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name)
        .sort();
      const stats = tops.map((name) => {
        const files = sourceFiles.filter((f) => f.rel.startsWith(name + '/'));
        return { name, files: files.length, bytes: files.reduce((s, f) => s + f.size, 0), rels: files.map((f) => f.rel) };
      });
      const pick = stats.reduce((best, s) => (Math.abs(s.files / c.files - 0.05) < Math.abs(best.files / c.files - 0.05) ? s : best));
      log(`## (5) one-subtree restore: ${pick.name}/ (${pick.files} files = ${fmt((100 * pick.files) / c.files)}% of files, ${mib(pick.bytes)})`);
      for (const t of tools) {
        const dest = freshRestoreDir(`restore-${t.name}-subtree`);
        fs.mkdirSync(dest);
        warmCache(t.repo);
        const r = await measure(t.restore(dest, pick.name), T);
        const check = r.ok ? checkRestore(t, dest, src, pick, pick.rels, pick.name) : undefined;
        report('subtree', { tool: t.name, label: `subtree restore`, run: r, bytes: pick.bytes, files: pick.files, ...(check ? { note: check } : {}) });
        if (!opts.keep) rmrf(dest);
      }
      log();
    }

    // (6) verify
    if (wanted('verify')) {
      log('## (6) verify (blanket verify; restic check --read-data)');
      for (const t of tools) {
        warmCache(t.repo);
        const r = await measure(t.verify(), T);
        report('verify', { tool: t.name, label: 'verify', run: r, bytes: c.bytes, files: c.files });
      }
      log();
    }
  }

  if (wanted('memory') && runBlanket) await memoryScenario(opts);
  if (wanted('rdiff') && runBlanket) await rdiffScenario(opts);
  if (!runBlanket && (wanted('killed') || wanted('memory') || wanted('rdiff'))) log('(killed half-way, memory flatness and rdiff are Blanket-only: skipped with --skip-blanket)\n');

  if (!opts.keep) {
    for (const t of tools) rmrf(t.repo);
    rmrf(blanketCache);
    rmrf(path.join(WORK, 'restic-cache'));
    releaseRestoreFs();
  }
  summary(opts, runBlanket, runRestic);
}

function readOr(p: string, dflt: string): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return dflt;
  }
}

function freeBytes(p: string): number {
  try {
    const s = fs.statfsSync(p);
    return s.bavail * s.bsize;
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Killed half-way

interface KilledOutcome {
  killedAtSeconds: number;
  archiveAtKill: number;
  fullSize: number;
  fullSizeSource: string;
  finishedFirst: boolean;
}
let killed: KilledOutcome | undefined;

/**
 * Half-way is half the time of the full initial backup measured in this run: the re-run should then take the
 * other half, plus what resuming costs. (Half the archive's bytes is not half the work: on the bench corpus the
 * first half holds most of the random content, stored raw, and the second the text, compressed.) Without a full
 * run to time, the kill comes at half of an estimated archive size.
 */
async function killedScenario(opts: Options, corpus: CorpusInfo, src: string): Promise<void> {
  const archive = path.join(WORK, 'blanket-killed');
  const tool = blanketTool(opts.blanketCli, archive);
  const full = get('blanket', 'initial');
  const fullSize = full?.run.ok && full.archiveBytes ? full.archiveBytes : Math.round(corpus.bytes / 1.6);
  const fullSizeSource = full?.run.ok && full.archiveBytes ? 'the initial backup archive size' : 'an estimate (corpus bytes / 1.6)';
  const killAtSeconds = full?.run.ok ? full.run.seconds / 2 : undefined;
  const threshold = fullSize / 2;
  const killPoint =
    killAtSeconds !== undefined ? `${fmt(killAtSeconds, 2)} s, half the full initial backup's ${fmt(full!.run.seconds, 2)} s` : `${mib(threshold)} in the archive (half of ${fullSizeSource})`;
  // How far a killed run gets by a given time varies as much as any run here: several rounds, the median re-run
  // (with its own kill) is the figure.
  log(`## killed half-way: Blanket initial backup of a fresh archive, SIGKILL at ${killPoint}, then re-run and verify (${opts.repeat} rounds)`);
  const ref = full?.run.ok ? full.run.seconds : undefined;
  const outcomes: { outcome: KilledOutcome; rerun: Figure; verify: Figure }[] = [];
  for (let round = 0; round < opts.repeat; round++) {
    rmrf(archive);
    warmCache(src);
    const outcome = await killOnce(tool, src, opts.timeoutSec, killAtSeconds, threshold, fullSize, fullSizeSource);
    warmCache(src);
    const r = await measure(tool.backup(src), opts.timeoutSec);
    const rerun = report('killed-rerun', {
      tool: 'blanket',
      label: 're-run after SIGKILL',
      run: r,
      bytes: corpus.bytes,
      files: corpus.files,
      archiveBytes: duBytes(archive),
      note:
        ref !== undefined
          ? `re-run / full initial backup time = ${fmt(r.seconds / ref, 2)} (${fmt(1 - outcome.killedAtSeconds / ref, 2)} of the full run's time was left at the kill)`
          : 'no full initial backup time to compare with (run scenario initial too)',
    });
    warmCache(archive);
    const v = await measure(tool.verify(), opts.timeoutSec);
    const verify = report('killed-verify', { tool: 'blanket', label: 'verify after kill + re-run', run: v, bytes: corpus.bytes, files: corpus.files });
    outcomes.push({ outcome, rerun, verify });
  }
  // The median re-run is the figure; any failed verify is reported as the verify figure.
  const sorted = [...outcomes].sort((a, b) => (a.rerun.run.ok ? a.rerun.run.seconds : Infinity) - (b.rerun.run.ok ? b.rerun.run.seconds : Infinity));
  const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
  figures.set(key('blanket', 'killed-rerun'), median.rerun);
  figures.set(key('blanket', 'killed-verify'), outcomes.find((o) => !o.verify.run.ok)?.verify ?? median.verify);
  killed = median.outcome;
  if (outcomes.length > 1) log(`  blanket  re-run median of ${outcomes.length}: ${fmt(median.rerun.run.seconds, 2)} s (runs: ${outcomes.map((o) => fmt(o.rerun.run.seconds, 2)).join(', ')} s)`);
  if (!opts.keep) rmrf(archive);
  log();
}

/** Starts a fresh Blanket backup and SIGKILLs it at `killAtSeconds` (or once the archive reaches `threshold` bytes). */
async function killOnce(
  tool: Tool,
  src: string,
  timeoutSec: number,
  killAtSeconds: number | undefined,
  threshold: number,
  fullSize: number,
  fullSizeSource: string,
): Promise<KilledOutcome> {
  const archive = tool.repo;
  const c = tool.backup(src);
  const steal0 = stealSecondsNow();
  const t0 = performance.now();
  const child = spawn(c.cmd, [...c.args], { env: { ...process.env, ...c.env }, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  const stderr = new Tail(16 * KiB);
  child.stderr.setEncoding('utf8').on('data', (d: string) => stderr.push(d));
  if (child.pid !== undefined) active.add(child.pid);
  const state: { exited?: { code: number | null; signal: NodeJS.Signals | null } } = {};
  const done = new Promise<void>((resolve) => {
    child.on('close', (code, signal) => {
      state.exited = { code, signal };
      resolve();
    });
    child.on('error', (e) => {
      stderr.push(String(e));
      state.exited = { code: null, signal: null };
      resolve();
    });
  });
  let atKill = 0;
  let killedAt = 0;
  while (!state.exited) {
    await new Promise((r) => setTimeout(r, killAtSeconds !== undefined ? 10 : 100));
    const elapsed = (performance.now() - t0) / 1000;
    const reached = killAtSeconds !== undefined ? elapsed >= killAtSeconds : treeBytes(archive) >= threshold;
    if (reached && !state.exited) {
      killedAt = elapsed;
      if (child.pid !== undefined) killGroup(child.pid);
      await done;
      atKill = Math.max(1, treeBytes(archive));
      break;
    }
    if (elapsed > timeoutSec && child.pid !== undefined) killGroup(child.pid);
  }
  await done;
  if (child.pid !== undefined) active.delete(child.pid);
  const finishedFirst = atKill === 0;
  if (finishedFirst) {
    const e = state.exited;
    log(`  blanket  first run ended by itself (${e?.signal ?? `exit ${e?.code}`}) after ${fmt((performance.now() - t0) / 1000, 2)} s before reaching the kill point`);
    if (e?.code !== 0) log(indent(lastLines(stderr.toString() || '(no output)', 25)));
  } else {
    const steal1 = stealSecondsNow();
    const steal = steal0 !== undefined && steal1 !== undefined ? `; steal ${fmt(steal1 - steal0)} s` : '';
    log(`  blanket  SIGKILLed after ${fmt(killedAt, 2)} s with ${mib(atKill)} in the archive (${fmt((100 * atKill) / fullSize, 0)}% of ${mib(fullSize)}${steal})`);
  }
  return { killedAtSeconds: killedAt, archiveAtKill: atKill, fullSize, fullSizeSource, finishedFirst };
}

// ---------------------------------------------------------------------------------------------------------
// Memory flatness

const memoryRows: { files: number; backup?: Figure; restore?: Figure }[] = [];

/** s3rver (a dev dependency) in a process of its own on 127.0.0.1, with one bucket "bench". */
async function startS3rver(dir: string): Promise<{ endpoint: string; stop: () => void }> {
  rmrf(dir);
  fs.mkdirSync(dir, { recursive: true });
  const script =
    "const S3rver = require('s3rver'); new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: process.argv[1], " +
    "configureBuckets: [{ name: 'bench' }] }).run().then(({ port }) => console.log(port));";
  const child = spawn(process.execPath, ['-e', script, dir], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once('exit', (code) => reject(new Error(`s3rver exited (${code})`)));
  });
  return { endpoint: `http://127.0.0.1:${port}`, stop: () => void child.kill() };
}

/** "N requests (get g, list l, ...)" from a Blanket --json run's finished event. */
function requestsOf(stdout: string): { total: number; text: string } | undefined {
  const finished = stdout.split('\n').reverse().find((line) => line.includes('"type":"finished"'));
  if (finished === undefined) return undefined;
  const requests = (JSON.parse(finished) as { requests?: Record<string, number> }).requests;
  if (requests === undefined) return undefined;
  const { total, ...byKind } = requests;
  return { total: total ?? 0, text: `${total} requests (${Object.entries(byKind).map(([k, v]) => `${k} ${v}`).join(', ')})` };
}

const gcRows: { initial?: Figure; gc?: Figure; layers?: number; result?: Record<string, unknown>; dryRunMatches?: boolean; restoreCheck?: string } = {};

/**
 * gc of the oldest of 30 layers: an initial backup of a copy of the corpus, then 29 days of changes each backed up
 * (a layer each), then `gc --keep-layers 29`, timed against the initial backup; it reports the bytes it read
 * (indexes only), wrote (the base) and deleted, and its store calls. The newest layer is restored and checked.
 * Both are timed `--repeat` times, medians compared: the initial backup again into fresh archives, and gc on
 * fresh copies of the 30-layer archive (the last round's archive is the one checked).
 */
async function gcScenario(opts: Options, corpus: CorpusInfo, src: string): Promise<void> {
  const T = opts.timeoutSec;
  const layers = opts.quick ? 10 : 30;
  log(`## (9) gc: the oldest of ${layers} layers (an initial backup, then ${layers - 1} days of changes), against the initial backup's time`);
  const tree = path.join(WORK, 'gc-corpus');
  const archive = path.join(WORK, 'gc-archive');
  const env = { XDG_CACHE_HOME: path.join(WORK, 'gc-cache') };
  rmrf(tree);
  rmrf(archive);
  rmrf(env.XDG_CACHE_HOME);
  copyTree(src, tree);
  const cli = (...args: string[]): Cmd => ({ cmd: opts.blanketCli, args, env });
  try {
    warmCache(tree);
    const initialRuns: RunResult[] = [];
    for (let round = 0; round < opts.repeat; round++) {
      const into = round === 0 ? archive : path.join(WORK, 'gc-archive-extra');
      initialRuns.push(await measure(cli('backup', tree, into, '--json'), T));
      if (round > 0) rmrf(into);
    }
    const initial = medianRun(initialRuns);
    if (initial === undefined) {
      log(`  an initial backup failed: ${initialRuns.find((r) => !r.ok)?.stderr.slice(-400)}`);
      return;
    }
    gcRows.initial = report('gc-initial', {
      tool: 'blanket',
      label: `initial backup (gc setup; median of ${opts.repeat})`,
      run: initial,
      bytes: corpus.bytes,
      files: corpus.files,
      archiveBytes: duBytes(archive),
    });
    const scale = opts.quick ? 0.1 : 1;
    for (let day = 2; day <= layers; day++) {
      applyDayOfChanges(tree, `${DEFAULT_SEED}/gc-day${day}`, { deleteCount: Math.round(100 * scale), addCount: Math.round(100 * scale) });
      const r = await measure(cli('backup', tree, archive), T);
      if (!r.ok) {
        log(`  backup of day ${day} failed: ${r.stderr.slice(-400)}`);
        return;
      }
    }
    gcRows.layers = layers;
    const before = duBytes(archive);
    const dry = await measure(cli('gc', archive, '--keep-layers', String(layers - 1), '--dry-run', '--json'), T);
    const planOf = (stdout: string): Record<string, unknown> | undefined => {
      const line = stdout.trim().split('\n').reverse().find((l) => l.includes('"finished"'));
      return line ? (JSON.parse(line) as Record<string, unknown>) : undefined;
    };
    // Each round from the same archive and the same local cache (gc prunes its signatures).
    const pristine = path.join(WORK, 'gc-archive-30');
    const pristineCache = path.join(WORK, 'gc-cache-30');
    rmrf(pristine);
    rmrf(pristineCache);
    copyTree(archive, pristine);
    copyTree(env.XDG_CACHE_HOME, pristineCache);
    const gcRuns: RunResult[] = [];
    for (let round = 0; round < opts.repeat; round++) {
      if (round > 0) {
        rmrf(archive);
        copyTree(pristine, archive);
        rmrf(env.XDG_CACHE_HOME);
        copyTree(pristineCache, env.XDG_CACHE_HOME);
      }
      warmCache(archive);
      gcRuns.push(await measure(cli('gc', archive, '--keep-layers', String(layers - 1), '--json'), T));
    }
    rmrf(pristine);
    rmrf(pristineCache);
    const r = medianRun(gcRuns) ?? gcRuns.find((run) => !run.ok)!;
    log(`  gc rounds: ${gcRuns.map((run) => (run.ok ? `${fmt(run.seconds, 2)} s` : 'FAILED')).join(', ')}`);
    const result = r.ok ? planOf(gcRuns[gcRuns.length - 1]!.stdout) : undefined;
    const plan = result?.plan as { keepFrom?: number; deletions?: number } | undefined;
    const dryPlan = planOf(dry.stdout)?.plan as { keepFrom?: number; deletions?: number } | undefined;
    gcRows.dryRunMatches = dry.ok && plan !== undefined && dryPlan?.keepFrom === plan.keepFrom && dryPlan?.deletions === plan.deletions;
    gcRows.result = result;
    const after = duBytes(archive);
    gcRows.gc = report('gc', {
      tool: 'blanket',
      label: `gc --keep-layers ${layers - 1} (median of ${opts.repeat})`,
      run: r,
      bytes: before - after,
      files: Number(result?.deletedObjects ?? 0),
      archiveBytes: after,
      note: result
        ? `kept from layer ${plan?.keepFrom}; deleted ${result.deletedObjects} objects (${mib(Number(result.deletedBytes))}); base ${result.baseIndexes} indexes (${mib(Number(result.writtenBytes))}); ` +
          `read ${mib(Number(result.readBytes))} (indexes only); store calls ${JSON.stringify(result.calls)}; archive ${mib(before)} -> ${mib(after)}; dry run's plan ${gcRows.dryRunMatches ? 'the same' : 'DIFFERENT'}`
        : r.stderr.slice(-400),
    });
    // The newest state after gc: restored and compared with the tree.
    const dest = freshRestoreDir('gc-restore');
    fs.mkdirSync(dest);
    const restored = await measure(cli('restore', archive, dest), T);
    const want = countTree(tree);
    const got = restored.ok ? countTree(dest) : undefined;
    gcRows.restoreCheck = got ? `${got.files} files, ${got.bytes} bytes ${got.files === want.files && got.bytes === want.bytes ? '= the tree' : `!= the tree (${want.files}, ${want.bytes})`}` : 'restore FAILED';
    log(`  restore of the newest layer after gc: ${gcRows.restoreCheck}`);
    rmrf(dest);
  } finally {
    if (!opts.keep) {
      rmrf(tree);
      rmrf(archive);
      rmrf(env.XDG_CACHE_HOME);
    }
    log();
  }
}

const s3Rows: { local?: Figure; s3?: Figure; ceiling?: Figure; reruns: { files: number; requests?: number; figure: Figure }[] } = { reruns: [] };

/** A module run with node -e ENDPOINT BYTES: puts BYTES into s3://bench/plain/ as 64 MiB streamed objects. */
const PLAIN_PUTS = `
import { S3Store } from ${JSON.stringify(path.join(REPO_ROOT, 'dist', 'src', 'stores', 's3.js'))};
const [endpoint, total] = [process.argv[1], Number(process.argv[2])];
const store = new S3Store({ bucket: 'bench', prefix: 'plain/', endpoint });
const chunk = Buffer.alloc(1 << 20, 7);
for (let left = total, i = 0; left > 0; left -= 64 << 20, i++) {
  const size = Math.min(left, 64 << 20);
  await store.put('p' + i, (async function* () { for (let at = 0; at < size; at += chunk.length) yield chunk.subarray(0, Math.min(chunk.length, size - at)); })());
}
await store.close();
`;

/**
 * Backup to an S3 archive on loopback against one into a local folder (throughput ratio), then no-change re-runs
 * with a warm index cache on two corpora of very different file counts: the request count must not follow them.
 */
async function s3Scenario(opts: Options, corpus: CorpusInfo, src: string): Promise<void> {
  const T = opts.timeoutSec;
  log('## (8) S3 archive on 127.0.0.1 (s3rver in its own process): initial backup vs a local archive; requests of no-change re-runs');
  const server = await startS3rver(path.join(WORK, 's3rver'));
  const cache = path.join(WORK, 'blanket-s3-cache');
  const env = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', XDG_CACHE_HOME: cache };
  const backup = (dir: string, archive: string): Cmd => ({ cmd: opts.blanketCli, args: ['backup', dir, archive, '--s3-endpoint', server.endpoint, '--json'], env });
  try {
    rmrf(cache);
    const localArchive = path.join(WORK, 'blanket-archive-s3-reference');
    rmrf(localArchive);
    warmCache(src);
    s3Rows.local = report('s3-local', { tool: 'blanket', label: 'initial backup, local', run: await measure(backup(src, localArchive), T), bytes: corpus.bytes, files: corpus.files, archiveBytes: duBytes(localArchive) });
    const storedBytes = s3Rows.local.archiveBytes ?? corpus.bytes;
    rmrf(localArchive);
    warmCache(src);
    const first = await measure(backup(src, 's3://bench/main'), T);
    s3Rows.s3 = report('s3-initial', { tool: 'blanket', label: 'initial backup, S3', run: first, bytes: corpus.bytes, files: corpus.files, note: requestsOf(first.stdout)?.text });
    // The server's own ceiling: as many bytes as the backup stored, put as 64 MiB streamed objects through the same
    // store code with nothing else running. The backup cannot upload faster than this.
    const ceiling = await measure({ cmd: process.execPath, args: ['--input-type=module', '-e', PLAIN_PUTS, server.endpoint, String(storedBytes)], env }, T);
    s3Rows.ceiling = report('s3-ceiling', { tool: 'blanket', label: 'plain puts, S3 (server ceiling)', run: ceiling, bytes: storedBytes, files: Math.ceil(storedBytes / (64 * MiB)) });
    const corpora: { dir: string; files: number; bytes: number; archive: string }[] = [{ dir: src, files: corpus.files, bytes: corpus.bytes, archive: 's3://bench/main' }];
    const smallCount = opts.quick ? 25_000 : 250_000; // ten times the main corpus's files, or more
    const smallDir = path.join(WORK, `corpus-small-${smallCount}`);
    const small = ensureCorpus(smallDir, smallFilesSpec({ files: smallCount }));
    warmCache(smallDir);
    const smallFirst = await measure(backup(smallDir, 's3://bench/small'), T);
    report('s3-small-initial', { tool: 'blanket', label: `initial backup, S3, ${smallCount} files`, run: smallFirst, bytes: small.bytes, files: small.files, note: requestsOf(smallFirst.stdout)?.text });
    corpora.push({ dir: smallDir, files: small.files, bytes: small.bytes, archive: 's3://bench/small' });
    for (const c of corpora) {
      warmCache(c.dir);
      const r = await measure(backup(c.dir, c.archive), T);
      const requests = requestsOf(r.stdout);
      const figure = report(`s3-rerun-${c.files}`, { tool: 'blanket', label: `no-change re-run, S3, ${c.files} files`, run: r, bytes: c.bytes, files: c.files, note: requests ? `${requests.text}, warm index cache` : undefined });
      s3Rows.reruns.push({ files: c.files, ...(requests ? { requests: requests.total } : {}), figure });
    }
  } finally {
    server.stop();
    if (!opts.keep) rmrf(path.join(WORK, 's3rver'));
  }
  log();
}

async function memoryScenario(opts: Options): Promise<void> {
  const counts = opts.quick ? [2_500, 25_000] : [25_000, 250_000];
  log(`## memory flatness: Blanket on ${counts.map((n) => n.toLocaleString('en-US')).join(' vs ')} small files (1-4 KiB)`);
  for (const n of counts) {
    const dir = path.join(WORK, `corpus-small-${n}`);
    const c = ensureCorpus(dir, smallFilesSpec({ files: n }));
    warmCache(dir);
    const archive = path.join(WORK, `blanket-mem-${n}`);
    const tool = blanketTool(opts.blanketCli, archive);
    await tool.fresh(opts.timeoutSec);
    const b = report(`mem-backup-${n}`, {
      tool: 'blanket',
      label: `backup, ${n} small files`,
      run: await measure(tool.backup(dir), opts.timeoutSec),
      bytes: c.bytes,
      files: c.files,
      archiveBytes: duBytes(archive),
    });
    const dest = freshRestoreDir(`restore-mem-${n}`);
    fs.mkdirSync(dest);
    warmCache(archive);
    const rr = await measure(tool.restore(dest), opts.timeoutSec);
    const sample = rr.ok ? walkTree(dir).files.map((f) => f.rel) : [];
    const r = report(`mem-restore-${n}`, {
      tool: 'blanket',
      label: `restore, ${n} small files`,
      run: rr,
      bytes: c.bytes,
      files: c.files,
      ...(rr.ok ? { note: checkRestore(tool, dest, dir, c, sample) } : {}),
    });
    memoryRows.push({ files: n, backup: b, restore: r });
    if (!opts.keep) {
      rmrf(dest);
      rmrf(archive);
    }
  }
  log();
}

// ---------------------------------------------------------------------------------------------------------
// rdiff: our rdiff signature / delta / patch (src/formats/rdiff-*.ts) against librsync's rdiff, on one core

const RDIFF_BIN = '/usr/bin/rdiff';

/** The rdiff scenario's input files: a random basis and an edited copy (reused while the marker matches). */
interface RdiffFilesSpec {
  readonly seed: string;
  readonly basisBytes: number;
  /** Scattered overwrites of this many bytes each, in basis coordinates. */
  readonly overwrites: number;
  readonly overwriteBytes: number;
  /** One insertion near the start. */
  readonly insertBytes: number;
  readonly appendBytes: number;
}

interface RdiffFiles {
  readonly basis: string;
  readonly edited: string;
  readonly basisBytes: number;
  readonly editedBytes: number;
  readonly editedSha256: string;
  /** What was changed, for the log. */
  readonly edits: string;
}

function ensureRdiffFiles(dir: string, spec: RdiffFilesSpec): RdiffFiles {
  const mp = `${dir}.json`;
  const basis = path.join(dir, 'basis.bin');
  const edited = path.join(dir, 'edited.bin');
  let marker: { spec: RdiffFilesSpec; files: RdiffFiles } | undefined;
  try {
    marker = JSON.parse(fs.readFileSync(mp, 'utf8')) as typeof marker;
  } catch {
    marker = undefined;
  }
  const sizeOf = (p: string): number => (fs.existsSync(p) ? fs.statSync(p).size : -1);
  if (
    marker &&
    JSON.stringify(marker.spec) === JSON.stringify(spec) &&
    sizeOf(basis) === marker.files.basisBytes &&
    sizeOf(edited) === marker.files.editedBytes
  ) {
    log(`  files: reusing ${rel(dir)} (marker ${rel(mp)} matches)`);
    return { ...marker.files, basis, edited };
  }
  const t0 = performance.now();
  fs.rmSync(mp, { force: true });
  rmrf(dir);
  fs.mkdirSync(dir, { recursive: true });
  const piece = 4 * MiB;
  const keys = new KeyStream(`${spec.seed}/basis`);
  const fd = fs.openSync(basis, 'w');
  for (let at = 0; at < spec.basisBytes; at += piece) {
    const b = keys.bytes(Math.min(piece, spec.basisBytes - at));
    for (let off = 0; off < b.length; ) off += fs.writeSync(fd, b, off);
  }
  fs.closeSync(fd);
  // The edits: overwrites spread over the file (one per equal stretch), the insertion within the first 64 KiB.
  const rng = new Rng(`${spec.seed}/edits`);
  const editKeys = new KeyStream(`${spec.seed}/edit-bytes`);
  const stretch = Math.floor(spec.basisBytes / spec.overwrites);
  const overwrites = Array.from({ length: spec.overwrites }, (_, k) => ({
    at: k * stretch + rng.int(0, stretch - spec.overwriteBytes),
    bytes: editKeys.bytes(spec.overwriteBytes),
  }));
  const insertAt = rng.int(4 * KiB, 64 * KiB);
  const insert = editKeys.bytes(spec.insertBytes);
  const hash = createHash('sha256');
  const in_ = fs.openSync(basis, 'r');
  const out = fs.openSync(edited, 'w');
  const put = (b: Uint8Array): void => {
    hash.update(b);
    for (let off = 0; off < b.length; ) off += fs.writeSync(out, b, off);
  };
  const buf = Buffer.allocUnsafe(piece);
  for (let at = 0; at < spec.basisBytes; ) {
    const n = fs.readSync(in_, buf, 0, piece, at);
    if (n === 0) throw new Error(`${basis} ended early`);
    for (const o of overwrites) {
      const from = Math.max(o.at, at);
      const to = Math.min(o.at + o.bytes.length, at + n);
      if (from < to) buf.set(o.bytes.subarray(from - o.at, to - o.at), from - at);
    }
    if (insertAt >= at && insertAt < at + n) {
      put(buf.subarray(0, insertAt - at));
      put(insert);
      put(buf.subarray(insertAt - at, n));
    } else {
      put(buf.subarray(0, n));
    }
    at += n;
  }
  for (let left = spec.appendBytes; left > 0; left -= piece) put(editKeys.bytes(Math.min(piece, left)));
  fs.closeSync(in_);
  fs.closeSync(out);
  const files: RdiffFiles = {
    basis,
    edited,
    basisBytes: spec.basisBytes,
    editedBytes: spec.basisBytes + spec.insertBytes + spec.appendBytes,
    editedSha256: hash.digest('hex'),
    edits:
      `${spec.overwrites} x ${spec.overwriteBytes} B overwritten (at ${overwrites.map((o) => o.at).join(', ')}), ` +
      `${spec.insertBytes} B inserted at ${insertAt}, ${mib(spec.appendBytes)} appended`,
  };
  if (sizeOf(edited) !== files.editedBytes) throw new Error(`${edited}: ${sizeOf(edited)} bytes, expected ${files.editedBytes}`);
  fs.writeFileSync(mp, JSON.stringify({ spec, files }, null, 2));
  log(`  files: generated ${rel(dir)} in ${fmt((performance.now() - t0) / 1000)} s`);
  return files;
}

/** Reads files once (untimed), so that each timed run starts from a warm page cache. */
function warmFiles(paths: readonly string[]): void {
  const buf = Buffer.allocUnsafe(4 * MiB);
  for (const p of paths) {
    const fd = fs.openSync(p, 'r');
    try {
      while (fs.readSync(fd, buf, 0, buf.length, null) > 0);
    } finally {
      fs.closeSync(fd);
    }
  }
}

function sha256FileStreaming(p: string): string {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(4 * MiB);
  const fd = fs.openSync(p, 'r');
  try {
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

type RdiffOpId = 'signature' | 'delta-unchanged' | 'delta-edited' | 'patch';
type RdiffSide = 'blanket' | 'rdiff';

interface RdiffOpResult {
  readonly label: string;
  /** Bytes the MB/s figures are of: the basis (signature), the new file (deltas), the output (patch). */
  readonly bytes: number;
  readonly runs: Record<RdiffSide, RunResult[]>;
  median?: Record<RdiffSide, RunResult | undefined>;
}

const rdiffResults: {
  ran: boolean;
  failure?: string;
  ops: Partial<Record<RdiffOpId, RdiffOpResult>>;
  checks: { signatureSame?: boolean; patchOk?: boolean; rdiffPatchOk?: boolean; deltasSame?: string };
  maxSteal: number;
} = { ran: false, ops: {}, checks: {}, maxSteal: 0 };

const rateMBps = (bytes: number, r: RunResult): number => bytes / 1e6 / r.seconds;

/** Median over the runs of bytes per CPU-second (what one core does when it gets the core: unaffected by other load). */
function cpuRate(op: RdiffOpResult, side: RdiffSide): number | undefined {
  const rates = op.runs[side].filter((r) => r.ok && r.cpuSeconds !== undefined && r.cpuSeconds > 0).map((r) => op.bytes / 1e6 / r.cpuSeconds!);
  if (rates.length === 0 || rates.length !== op.runs[side].length) return undefined;
  return rates.sort((a, b) => a - b)[Math.floor((rates.length - 1) / 2)];
}

function medianRun(list: readonly RunResult[]): RunResult | undefined {
  const ok = list.filter((r) => r.ok).sort((a, b) => a.seconds - b.seconds);
  return ok.length === list.length && ok.length > 0 ? ok[Math.floor((ok.length - 1) / 2)] : undefined;
}

function rdiffRunLine(side: RdiffSide, label: string, bytes: number, r: RunResult, note = ''): void {
  const head = `  ${pad(side, 8)} ${pad(label, 32)}`;
  const where = side === 'blanket' ? '  (worker thread)' : r.peakRssKiB !== undefined ? `${lpad(fmt(r.peakRssKiB / 1024), 7)} MiB RSS` : '';
  const cpu =
    (r.cpuSeconds !== undefined ? `  cpu ${lpad(fmt(r.cpuSeconds, 2), 6)} s` : '') +
    (r.stealSeconds !== undefined ? `  steal ${lpad(fmt(r.stealSeconds), 5)} s` : '');
  if (r.ok) log(`${head} ${lpad(fmt(r.seconds, 2), 8)} s ${lpad(fmt(rateMBps(bytes, r)), 7)} MB/s ${where}${cpu}${note}`);
  else {
    log(`${head} FAILED (${r.timedOut ? 'timed out' : r.signal ? `signal ${r.signal}` : `exit ${r.code}`}) after ${fmt(r.seconds, 2)} s`);
    log(indent(lastLines(r.stderr || r.stdout || '(no output)', 25)));
  }
}

/**
 * Our rdiff signature, deltas (unchanged and edited file) and patch in a piscina pool of one thread, against
 * /usr/bin/rdiff on the same files: `--repeat` rounds, the two alternating which goes first; medians in MB/s.
 */
async function rdiffScenario(opts: Options): Promise<void> {
  const spec: RdiffFilesSpec = {
    seed: 'blanket-bench-rdiff-1',
    basisBytes: opts.quick ? 32 * MiB : 256 * MiB,
    overwrites: 6,
    overwriteBytes: 4 * KiB,
    insertBytes: 1000,
    appendBytes: 1 * MiB,
  };
  log(
    `## rdiff: our signature / delta / patch (src/formats/rdiff-*.ts, in a piscina pool of one thread, 1 MiB reads) vs ${RDIFF_BIN} on a ${mib(spec.basisBytes)} random file (${opts.repeat} rounds)`,
  );
  rdiffResults.ran = true;
  if (!fs.existsSync(RDIFF_BIN) && !aptInstall('rdiff')) {
    rdiffResults.failure = `${RDIFF_BIN} not found (apt-get install rdiff failed)`;
    log(`  FAILED: ${rdiffResults.failure}; the scenario compares against it, so it did not run\n`);
    return;
  }
  const loadavg = (): string => os.loadavg().map((x) => fmt(x, 2)).join(' ');
  log(`  load average (1, 5, 15 min) at the start: ${loadavg()} on ${os.availableParallelism()} cores`);
  const version = runSync(RDIFF_BIN, ['--version']).out.split('\n', 1)[0]!.trim();
  log(`  rdiff: ${version}${/librsync 2\.3\./.test(version) ? '' : '   (note: the formats follow librsync 2.3)'}`);
  const dir = path.join(WORK, 'rdiff');
  const files = ensureRdiffFiles(dir, spec);
  log(`  basis ${files.basisBytes} B; edited copy ${files.editedBytes} B: ${files.edits}`);
  const outDir = path.join(WORK, 'rdiff-out');
  rmrf(outDir);
  fs.mkdirSync(outDir, { recursive: true });
  const out = (side: RdiffSide, name: string): string => path.join(outDir, `${side}-${name}`);

  const { Piscina } = await import('piscina');
  const pool = startPool(Piscina, {
    filename: new URL('./rdiff-worker.js', import.meta.url).href,
    minThreads: 1,
    maxThreads: 1,
    idleTimeout: 60_000,
  });
  const T = opts.timeoutSec;
  try {
    await pool.run({ op: 'warmup' } satisfies RdiffTask);
    const ours = async (task: RdiffTask): Promise<RunResult> => {
      spawnSync('sync');
      const steal0 = stealSecondsNow();
      const t0 = performance.now();
      try {
        const res = (await pool.run(task)) as RdiffTaskResult;
        const seconds = (performance.now() - t0) / 1000;
        const steal1 = stealSecondsNow();
        return {
          ok: true,
          code: 0,
          signal: null,
          timedOut: false,
          seconds,
          peakRssKiB: undefined,
          cpuSeconds: res.cpuSeconds,
          stealSeconds: steal0 !== undefined && steal1 !== undefined ? steal1 - steal0 : undefined,
          stdout: '',
          stderr: '',
        };
      } catch (e) {
        const seconds = (performance.now() - t0) / 1000;
        return { ok: false, code: null, signal: null, timedOut: false, seconds, peakRssKiB: undefined, cpuSeconds: undefined, stealSeconds: undefined, stdout: '', stderr: String((e as Error)?.stack ?? e) };
      }
    };
    const theirs = (args: string[]): Promise<RunResult> => measure({ cmd: RDIFF_BIN, args }, T);
    const ops: { id: RdiffOpId; label: string; bytes: number; inputs: (s: RdiffSide) => string[]; output: (s: RdiffSide) => string; run: (s: RdiffSide) => Promise<RunResult> }[] = [
      {
        id: 'signature',
        label: 'signature',
        bytes: files.basisBytes,
        inputs: () => [files.basis],
        output: (s) => out(s, 'basis.sig'),
        run: (s) => (s === 'blanket' ? ours({ op: 'signature', basis: files.basis, out: out(s, 'basis.sig') }) : theirs(['signature', files.basis, out(s, 'basis.sig')])),
      },
      {
        id: 'delta-unchanged',
        label: 'delta, unchanged file',
        bytes: files.basisBytes,
        inputs: (s) => [out(s, 'basis.sig'), files.basis],
        output: (s) => out(s, 'unchanged.delta'),
        run: (s) =>
          s === 'blanket'
            ? ours({ op: 'delta', signature: out(s, 'basis.sig'), newFile: files.basis, out: out(s, 'unchanged.delta') })
            : theirs(['delta', out(s, 'basis.sig'), files.basis, out(s, 'unchanged.delta')]),
      },
      {
        id: 'delta-edited',
        label: 'delta, edited file',
        bytes: files.editedBytes,
        inputs: (s) => [out(s, 'basis.sig'), files.edited],
        output: (s) => out(s, 'edited.delta'),
        run: (s) =>
          s === 'blanket'
            ? ours({ op: 'delta', signature: out(s, 'basis.sig'), newFile: files.edited, out: out(s, 'edited.delta') })
            : theirs(['delta', out(s, 'basis.sig'), files.edited, out(s, 'edited.delta')]),
      },
      {
        id: 'patch',
        label: 'patch, edited delta',
        bytes: files.editedBytes,
        inputs: (s) => [files.basis, out(s, 'edited.delta')],
        output: (s) => out(s, 'edited.patched'),
        run: (s) =>
          s === 'blanket'
            ? ours({ op: 'patch', basis: files.basis, delta: out(s, 'edited.delta'), out: out(s, 'edited.patched') })
            : theirs(['patch', files.basis, out(s, 'edited.delta'), out(s, 'edited.patched')]),
      },
    ];
    for (const op of ops) rdiffResults.ops[op.id] = { label: op.label, bytes: op.bytes, runs: { blanket: [], rdiff: [] } };
    for (let round = 0; round < opts.repeat; round++) {
      const order: RdiffSide[] = round % 2 === 0 ? ['blanket', 'rdiff'] : ['rdiff', 'blanket'];
      for (const op of ops) {
        for (const side of order) {
          const inputs = op.inputs(side);
          if (!inputs.every((p) => fs.existsSync(p))) {
            log(`  ${pad(side, 8)} ${pad(op.label, 32)} skipped: no ${inputs.filter((p) => !fs.existsSync(p)).map(rel).join(', ')} (an earlier run failed)`);
            rdiffResults.ops[op.id]!.runs[side].push({ ok: false, code: null, signal: null, timedOut: false, seconds: 0, peakRssKiB: undefined, cpuSeconds: undefined, stealSeconds: undefined, stdout: '', stderr: 'input missing' });
            continue;
          }
          fs.rmSync(op.output(side), { force: true }); // rdiff refuses to overwrite; both write a new file
          warmFiles(inputs);
          const r = await op.run(side);
          rdiffResults.ops[op.id]!.runs[side].push(r);
          rdiffResults.maxSteal = Math.max(rdiffResults.maxSteal, r.stealSeconds ?? 0);
          const sizeNote = r.ok && fs.existsSync(op.output(side)) && op.id !== 'patch' ? `  -> ${fs.statSync(op.output(side)).size} B` : '';
          rdiffRunLine(side, `${op.label} (round ${round + 1})`, op.bytes, r, sizeNote);
        }
      }
    }
  } finally {
    await pool.destroy();
  }

  // Medians, ratios, and correctness of the last round's outputs.
  for (const op of Object.values(rdiffResults.ops)) {
    op.median = { blanket: medianRun(op.runs.blanket), rdiff: medianRun(op.runs.rdiff) };
    const show = (side: RdiffSide): string => {
      const m = op.median![side];
      const cpu = cpuRate(op, side);
      return m
        ? `${fmt(rateMBps(op.bytes, m))} MB/s (${fmt(m.seconds, 2)} s; runs ${op.runs[side].map((r) => (r.ok ? fmt(r.seconds, 2) : 'FAILED')).join(', ')} s` +
            `${cpu !== undefined ? `; ${fmt(cpu)} MB per cpu-second` : ''})`
        : 'FAILED';
    };
    const b = op.median.blanket;
    const r = op.median.rdiff;
    log(`  ${pad(`${op.label}:`, 23)} median blanket ${show('blanket')}, rdiff ${show('rdiff')}${b && r ? `; blanket / rdiff ${fmt(r.seconds / b.seconds, 2)}` : ''}`);
  }
  const sigOurs = out('blanket', 'basis.sig');
  const sigTheirs = out('rdiff', 'basis.sig');
  if (fs.existsSync(sigOurs) && fs.existsSync(sigTheirs)) rdiffResults.checks.signatureSame = Buffer.compare(fs.readFileSync(sigOurs), fs.readFileSync(sigTheirs)) === 0;
  const same = (name: string): string => {
    const a = out('blanket', name);
    const b = out('rdiff', name);
    if (!fs.existsSync(a) || !fs.existsSync(b)) return `${name} n/a`;
    return `${name} ${Buffer.compare(fs.readFileSync(a), fs.readFileSync(b)) === 0 ? 'identical' : 'DIFFERENT'} (${fs.statSync(a).size} B)`;
  };
  rdiffResults.checks.deltasSame = `${same('unchanged.delta')}, ${same('edited.delta')}`;
  const patched = out('blanket', 'edited.patched');
  if (fs.existsSync(patched)) rdiffResults.checks.patchOk = sha256FileStreaming(patched) === files.editedSha256;
  const theirPatched = out('rdiff', 'edited.patched');
  if (fs.existsSync(theirPatched)) rdiffResults.checks.rdiffPatchOk = sha256FileStreaming(theirPatched) === files.editedSha256;
  const c = rdiffResults.checks;
  const yes = (v: boolean | undefined, good: string, bad: string): string => (v === undefined ? 'n/a' : v ? good : bad);
  log(
    `  checks: our signature ${yes(c.signatureSame, '= rdiff\'s, byte for byte', 'DIFFERS from rdiff\'s')}; ` +
      `our patch output SHA-256 ${yes(c.patchOk, '= the edited file\'s', 'DIFFERS from the edited file\'s')} ` +
      `(rdiff's: ${yes(c.rdiffPatchOk, 'equal', 'DIFFERENT')}); deltas ours vs rdiff's: ${c.deltasSame}`,
  );
  log(
    `  (blanket: wall-clock around the pool task, after an untimed warm-up of the thread; cpu is the worker thread's. ` +
      `rdiff: the process's wall-clock and cpu. steal: all cores, during the run; ${fmt(rdiffResults.maxSteal)} s at most)`,
  );
  log(`  load average at the end: ${loadavg()}`);
  if (!opts.keep) rmrf(outDir);
  log();
}

// ---------------------------------------------------------------------------------------------------------
// Summary

function summary(opts: Options, runBlanket: boolean, runRestic: boolean): void {
  log(`## summary (ratios are Blanket / restic${rdiffResults.ran ? "; in the rdiff rows Blanket / rdiff, rdiff's figure in the restic column" : ''})`);
  const rows: string[][] = [['measure', 'Blanket', 'restic', 'ratio', 'target', 'result']];
  const okFig = (t: ToolName, id: string): Figure | undefined => {
    const f = get(t, id);
    return f?.run.ok ? f : undefined;
  };
  const status = (id: string, tool: ToolName): string => {
    const f = get(tool, id);
    return !f ? 'n/a' : f.run.ok ? '' : 'FAILED';
  };
  const cmp = (
    name: string,
    id: string,
    value: (f: Figure) => number,
    show: (v: number) => string,
    ratio: (b: number, r: number) => number,
    target: string,
    pass: ((x: number) => boolean) | undefined,
  ): void => {
    const b = okFig('blanket', id);
    const r = okFig('restic', id);
    const bv = b ? value(b) : undefined;
    const rv = r ? value(r) : undefined;
    const x = bv !== undefined && rv !== undefined ? ratio(bv, rv) : undefined;
    rows.push([
      name,
      bv !== undefined ? show(bv) : runBlanket ? status(id, 'blanket') : 'skipped',
      rv !== undefined ? show(rv) : runRestic ? status(id, 'restic') : 'skipped',
      x !== undefined && Number.isFinite(x) ? fmt(x, 2) : '-',
      target,
      x === undefined || !pass ? '' : pass(x) ? 'ok' : 'MISSED',
    ]);
  };
  const s = (v: number): string => `${fmt(v, 2)} s`;
  const mbps = (v: number): string => `${fmt(v)} MB/s`;
  // Single-tool targets
  const single = (name: string, b: string, r: string, target: string, result: string): void => {
    rows.push([name, b, r, '-', target, result]);
  };
  cmp('(1) initial backup throughput', 'initial', (f) => f.bytes / 1e6 / f.run.seconds, mbps, (b, r) => b / r, '>= 1.5', (x) => x >= 1.5);
  cmp('(2) no-change re-run time', 'rerun', (f) => f.run.seconds, s, (b, r) => b / r, '<= 0.55', (x) => x <= 0.55);
  cmp('(3) changed-day backup time', 'changed', (f) => f.run.seconds, s, (b, r) => b / r, '<= 0.55', (x) => x <= 0.55);
  const cb = okFig('blanket', 'changed');
  const cr = okFig('restic', 'changed');
  single(
    'changed-day backup time (absolute)',
    cb ? s(cb.run.seconds) : runBlanket ? status('changed', 'blanket') : 'skipped',
    cr ? s(cr.run.seconds) : runRestic ? status('changed', 'restic') : 'skipped',
    '<= 1.5 s',
    cb ? (cb.run.seconds <= 1.5 ? 'ok' : 'MISSED') : '-',
  );
  cmp('(4) full restore throughput', 'restore', (f) => f.bytes / 1e6 / f.run.seconds, mbps, (b, r) => b / r, '>= 1.0', (x) => x >= 1.0);
  cmp('(5) subtree restore time', 'subtree', (f) => f.run.seconds, s, (b, r) => b / r, '(info)', undefined);
  cmp('(6) verify time', 'verify', (f) => f.run.seconds, s, (b, r) => b / r, '(info)', undefined);
  cmp('archive size after initial backup', 'initial', (f) => f.archiveBytes ?? NaN, mib, (b, r) => b / r, '<= 1.0', (x) => x <= 1.0);
  cmp('archive size after changed day', 'changed', (f) => f.archiveBytes ?? NaN, mib, (b, r) => b / r, '(info)', undefined);
  const mib2 = (bytes: number): string => `${fmt(bytes / MiB, 2)} MiB`;
  cmp('changed day: archive growth Blanket / restic', 'changed', (f) => f.addedBytes ?? NaN, mib2, (b, r) => b / r, '<= 0.8', (x) => x <= 0.8);
  // What the day's layer stores for each big file (uncompressed member sizes: an upper bound of its growth).
  const growth = cb ? dayLayerGrowth.get(cb) : undefined;
  for (const big of BIG_FILES) {
    const g = growth?.files.get(big.rel);
    single(
      `changed day: archive growth for ${big.name} (${big.change})`,
      g ? `${fmt(g.bytes / MiB, 3)} MiB (${g.deltaChunks}/${g.chunks} chunks deltas)` : !runBlanket ? 'skipped' : !cb ? status('changed', 'blanket') : growth ? 'not in layer' : 'n/a',
      '-',
      `<= ${big.targetText}`,
      g ? (g.bytes <= big.target ? 'ok' : 'MISSED') : '-',
    );
  }
  const blanketFigs = allFigures.filter((f) => f.tool === 'blanket' && f.run.ok && f.run.peakRssKiB !== undefined);
  if (blanketFigs.length > 0) {
    const max = blanketFigs.reduce((a, f) => (f.run.peakRssKiB! > a.run.peakRssKiB! ? f : a));
    const resticMax = allFigures.filter((f) => f.tool === 'restic' && f.run.ok && f.run.peakRssKiB !== undefined).reduce((m, f) => Math.max(m, f.run.peakRssKiB!), 0);
    single(`Blanket peak RSS (max: ${max.label})`, mib(max.run.peakRssKiB! * 1024), resticMax ? mib(resticMax * 1024) : '-', '<= 200 MiB', max.run.peakRssKiB! <= 200 * 1024 ? 'ok' : 'MISSED');
  } else {
    single('Blanket peak RSS', runBlanket ? 'n/a' : 'skipped', '-', '<= 200 MiB', '-');
  }
  const rb = okFig('blanket', 'rerun');
  const rr = okFig('restic', 'rerun');
  single(
    'bytes added by no-change re-run',
    rb ? `${rb.addedBytes} B` : runBlanket ? status('rerun', 'blanket') : 'skipped',
    rr ? `${rr.addedBytes} B` : runRestic ? status('rerun', 'restic') : 'skipped',
    '<= 16384 B',
    rb ? (rb.addedBytes! <= 16 * KiB ? 'ok' : 'MISSED') : '-',
  );
  const kr = get('blanket', 'killed-rerun');
  const full = okFig('blanket', 'initial');
  if (kr) {
    const ratio = full && kr.run.ok ? kr.run.seconds / full.run.seconds : undefined;
    single(
      `killed half-way: re-run / full backup time${killed?.finishedFirst ? ' (not killed: finished first)' : killed ? ` (killed at ${fmt(killed.killedAtSeconds, 2)} s, ${fmt((100 * killed.archiveAtKill) / killed.fullSize, 0)}% of the archive)` : ''}`,
      kr.run.ok ? (ratio !== undefined ? fmt(ratio, 2) : `${fmt(kr.run.seconds, 2)} s`) : 'FAILED',
      '-',
      '~0.5 (<= 0.6), exit 0',
      !kr.run.ok ? 'MISSED (exit != 0)' : ratio === undefined || killed?.finishedFirst ? '-' : ratio <= 0.6 ? 'ok' : 'MISSED',
    );
    const kv = get('blanket', 'killed-verify');
    if (kv) single('killed half-way: verify afterwards', kv.run.ok ? 'exit 0' : 'FAILED', '-', 'exit 0', kv.run.ok ? 'ok' : 'MISSED');
  }
  for (const m of memoryRows) {
    const b = m.backup?.run.ok ? mib(m.backup.run.peakRssKiB! * 1024) : 'FAILED';
    const r = m.restore?.run.ok ? mib(m.restore.run.peakRssKiB! * 1024) : 'FAILED';
    single(`memory: ${m.files} small files, backup / restore RSS`, `${b} / ${r}`, '-', 'flat, <= 200 MiB', '');
  }
  if (s3Rows.local?.run.ok && s3Rows.s3?.run.ok) {
    const ratio = s3Rows.local.run.seconds / s3Rows.s3.run.seconds;
    single('S3 (loopback) initial backup throughput / local', fmt(ratio, 2), '-', '>= 0.8', ratio >= 0.8 ? 'ok' : 'MISSED');
    if (s3Rows.ceiling?.run.ok) {
      // Stored bytes per second of the backup against those of plain puts: how close to the server's limit it is.
      const stored = s3Rows.local.archiveBytes ?? 0;
      const backupRate = stored / s3Rows.s3.run.seconds;
      const ceilingRate = s3Rows.ceiling.bytes / s3Rows.ceiling.run.seconds;
      single('S3 backup upload rate / plain puts (server ceiling)', `${fmt(backupRate / 1e6)} / ${fmt(ceilingRate / 1e6)} MB/s: ${fmt(backupRate / ceilingRate, 2)}`, '-', '(info)', '');
    }
  }
  if (gcRows.initial?.run.ok && gcRows.gc) {
    const ok = gcRows.gc.run.ok;
    const ratio = ok ? gcRows.gc.run.seconds / gcRows.initial.run.seconds : NaN;
    single(
      `gc of the oldest of ${gcRows.layers ?? '?'} layers / initial backup time`,
      ok ? `${fmt(gcRows.gc.run.seconds, 2)} / ${fmt(gcRows.initial.run.seconds, 2)} s: ${fmt(ratio, 3)}` : 'FAILED',
      '-',
      '< 0.10',
      ok && ratio < 0.1 ? 'ok' : 'MISSED',
    );
    const g = gcRows.result;
    if (g) {
      single('gc: bytes read / written / deleted', `${mib(Number(g.readBytes))} / ${mib(Number(g.writtenBytes))} / ${mib(Number(g.deletedBytes))}`, '-', '(info)', '');
      single('gc: dry run plans the same; newest layer restores', `${gcRows.dryRunMatches ? 'yes' : 'NO'} / ${gcRows.restoreCheck ?? '?'}`, '-', 'yes / = the tree', gcRows.dryRunMatches && gcRows.restoreCheck?.includes('= the tree') ? 'ok' : 'MISSED');
    }
  }
  if (s3Rows.reruns.length > 0) {
    const counts = s3Rows.reruns.map((r) => `${r.requests ?? '?'} for ${r.files.toLocaleString('en-US')} files`).join(', ');
    single('S3 no-change re-run requests (warm cache)', counts, '-', 'independent of file count', '');
  }
  if (rdiffResults.ran) {
    if (rdiffResults.failure) single('rdiff scenario', 'FAILED', '-', '-', rdiffResults.failure);
    const rate = (id: RdiffOpId, side: RdiffSide): number | undefined => {
      const op = rdiffResults.ops[id];
      const m = op?.median?.[side];
      return op && m ? rateMBps(op.bytes, m) : undefined;
    };
    const failedOr = (v: number | undefined, prefix = ''): string => (v !== undefined ? `${prefix}${fmt(v)} MB/s` : rdiffResults.failure ? 'n/a' : 'FAILED');
    // Judged on wall-clock MB/s; MB per cpu-second beside it (the same on an idle machine, higher when others ran).
    const floor = (name: string, id: RdiffOpId, min: number): void => {
      const v = rate(id, 'blanket');
      const op = rdiffResults.ops[id];
      const cpu = op ? cpuRate(op, 'blanket') : undefined;
      single(name, `${failedOr(v)}${cpu !== undefined ? ` (cpu: ${fmt(cpu)})` : ''}`, '-', `>= ${min} MB/s`, v === undefined ? '-' : v >= min ? 'ok' : 'MISSED');
    };
    floor('rdiff: signature throughput (1 core; MB/s wall, cpu)', 'signature', 500);
    floor('rdiff: unchanged-file delta throughput (1 core)', 'delta-unchanged', 300);
    const versus = (name: string, id: RdiffOpId): void => {
      const b = rate(id, 'blanket');
      const r = rate(id, 'rdiff');
      const x = b !== undefined && r !== undefined ? b / r : undefined;
      rows.push([name, failedOr(b), failedOr(r, 'rdiff '), x !== undefined ? fmt(x, 2) : '-', '> 1.0 (goal)', x === undefined ? '-' : x > 1 ? 'ok' : 'MISSED']);
    };
    versus('rdiff: signature, Blanket / rdiff throughput', 'signature');
    versus('rdiff: unchanged-file delta, Blanket / rdiff', 'delta-unchanged');
    versus('rdiff: edited-file delta, Blanket / rdiff', 'delta-edited');
    versus('rdiff: patch, Blanket / rdiff', 'patch');
    const c = rdiffResults.checks;
    if (!rdiffResults.failure) {
      const yn = (v: boolean | undefined): string => (v === undefined ? 'n/a' : v ? 'yes' : 'NO');
      single(
        "rdiff: signature = rdiff's / patch SHA-256 = edited file's",
        `${yn(c.signatureSame)} / ${yn(c.patchOk)}`,
        '-',
        'yes / yes',
        c.signatureSame && c.patchOk ? 'ok' : 'MISSED',
      );
    }
  }
  if (memoryRows.length === 2) {
    const [a, b] = memoryRows as [(typeof memoryRows)[0], (typeof memoryRows)[0]];
    const rat = (x?: Figure, y?: Figure): string => (x?.run.ok && y?.run.ok ? fmt(y.run.peakRssKiB! / x.run.peakRssKiB!, 2) : '-');
    single(`memory: RSS ${b.files}/${a.files} files, backup / restore`, `${rat(a.backup, b.backup)} / ${rat(a.restore, b.restore)}`, '-', '~1.0 (flat)', '');
  }

  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const [i, r] of rows.entries()) {
    log(r.map((cell, j) => (j === 0 ? pad(cell, widths[j]!) : lpad(cell, widths[j]!))).join('  '));
    if (i === 0) log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
  const failed = [...figures.values()].filter((f) => !f.run.ok);
  if (failed.length > 0) log(`\n${failed.length} run(s) FAILED: ${failed.map((f) => `${f.tool} ${f.label}`).join('; ')}`);
  if (opts.quick) log('\n(--quick: 1/10-scale corpus; ratios at this size are dominated by start-up costs and are not the targets\' figures)');
}

main().catch((e: unknown) => {
  for (const pid of active) killGroup(pid);
  console.error(e);
  process.exit(1);
});
