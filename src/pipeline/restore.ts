// The restore pipeline: merged indexes → plan (which members of which packs) → fetch only those packs → DEST.
//
//   for each batch of the state (path order; 1,000 files, then twice as many each time, up to 5,000):
//     dir      → make it (metadata once its subtree is written, so later writes don't disturb its mtime)
//     file     → in a directory this run made? new.  else already in DEST with the same SHA-256? skip.
//                else: wanted[pack][hash] += (file, offset)  (a file of several chunks: temp file made now)
//     hardlink → after its first name is written; symlink, fifo → after the batch's files
//   batch planned → its packs join the queue; restore workers (stages/pack-restorer.ts) decode each pack and
//     write its members into DEST (temp name, metadata, rename), while the next batch is planned:
//
//     plan N+1 ──────────────┐ plan N+2 …
//     write N  ──┐ write N+1 ┴──────── …          (N+1's packs start as soon as N's are all taken)
//                complete N: links, symlinks, specials, directory metadata  (N+2 is planned only after it)
//
//   A symlink of batch N is made while batch N+1's files may be written: it must not replace a directory that
//   N+1 planned anything in (completeBatch refuses it), or those files would be written through it.
//   Pack missing/damaged → its files are reported by name and the rest still restored.
//
// Nothing is written outside DEST: see stages/destination.ts.

import { createReadStream, lstatSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { createHash } from 'node:crypto';
import { errnoCode, isBlanketError } from '../formats/errors.js';
import type { Entry } from '../formats/entry.js';
import { displayPath, keyToContentsPrefix, keyToPath, pathToKey, ROOT_KEY } from '../formats/path-key.js';
import { HEADER_OBJECT, indexObjectName, packObjectName } from '../formats/archive-layout.js';
import type { BlanketError } from '../formats/errors.js';
import type { Store } from '../stores/store.js';
import { createdAs, Destination, TempFile, type CreatedAs, type Metadata } from '../stages/destination.js';
import type { Monitor } from '../stages/monitor.js';
import { OwnerNames } from '../stages/owner-names.js';
import { handOn, PackRestorer, type PackRestoreHandlers, type RestoreTarget } from '../stages/pack-restorer.js';
import { DeltaRestorer, REBUILT_TOGETHER } from '../stages/delta-restorer.js';
import { writeContent } from '../stages/restore-worker.js';
import { describeLostRange, readCatalog } from '../stages/state-reader.js';
import { assertLayerExists, readSubtrees } from './inspect.js';

export interface RestoreOptions {
  readonly store: Store;
  readonly destination: string;
  /** Subtrees to restore (relative to the backup root); empty = everything. */
  readonly paths: readonly Buffer[];
  readonly layer?: number;
  /** Create device nodes (only honoured as root). */
  readonly devices?: boolean;
  readonly monitor: Monitor;
  readonly signal?: AbortSignal;
  /** Restore workers: each decodes one pack at a time and writes its files (default: one per core, at most 4). */
  readonly workers?: number;
  /** Packs fetched at once (default: one per worker). */
  readonly packConcurrency?: number;
  /** Several archives merged by time (stages/archive-union.ts): which archive each of `store`'s layers came from. */
  readonly layerOrigin?: (layer: number) => number;
  /** Files planned per batch (default 5,000, after smaller first ones): fewer hold less memory, but a pack may be read in part more than once. */
  readonly batchFiles?: number;
}

export interface RestoreResult {
  restoredFiles: number;
  restoredBytes: number;
  skippedFiles: number;
  failedFiles: number;
  dirs: number;
  symlinks: number;
  hardLinks: number;
  specials: number;
  packsFetched: number;
  packsTotal: number;
  damagedObjects: string[];
  elapsedMs: number;
}

const BATCH_FILES = 5_000;
/**
 * The first batches are smaller (1,000 files, then twice as many each time up to BATCH_FILES), so the workers
 * start writing early while the planning gets ahead of them.
 */
const FIRST_BATCH_FILES = 1_000;
const BATCH_BYTES = 4 * 2 ** 30; // not 4 << 30: that is 0 in 32-bit shift arithmetic (a batch per file)

/**
 * One file of a batch waiting for its content. A batch holds up to BATCH_FILES of them, so a job keeps only what
 * it needs, in strings of its own: not the entry, whose strings are slices of its index line and would keep that
 * line alive too. A one-piece file's path and temporary name are made only when its content arrives.
 */
class FileJob {
  readonly size: number;
  readonly pieces: number;
  remaining: number;
  failed = false;
  /**
   * The temporary file's absolute path, as a latin1 string (what the worker gets), once named: not a TempFile or a
   * Buffer, since a small Buffer keeps its 8 KiB pool slab alive.
   */
  private tempName: string | null;

  constructor(
    readonly id: number,
    /** The entry's key, as a string of its own. */
    readonly key: string,
    entry: Entry,
    readonly meta: Metadata,
    /** How open() makes the file, in its directory (made by this run or not). */
    readonly created: CreatedAs,
    private readonly dest: Destination,
    temp: TempFile | null,
  ) {
    this.size = entry.size;
    this.pieces = entry.chunks.length;
    this.remaining = this.pieces;
    this.tempName = temp && temp.path.toString('latin1');
  }

  get path(): Buffer {
    return keyToPath(this.key);
  }

  get temp(): TempFile {
    return new TempFile(Buffer.from(this.named(), 'latin1'), this.pieces > 1);
  }

  /** Where a restore worker writes the piece at `offset`: a one-piece file is also renamed into place there. */
  targetAt(offset: number, size: number): RestoreTarget {
    const path = this.pieces === 1 ? this.path : null; // decoded once for both names
    const final = path && this.dest.absolute(path).toString('latin1');
    return { id: this.id, temp: this.named(path), final, offset, size, meta: this.meta, created: this.created };
  }

  /** The temporary name, chosen now if not yet. */
  private named(path: Buffer | null = null): string {
    return (this.tempName ??= this.dest.tempFor(path ?? this.path).path.toString('latin1'));
  }
}

interface Target {
  readonly job: FileJob;
  readonly offset: number;
  /** Size the index declares for this chunk: content of another size would leave holes or overlaps. */
  readonly size: number;
}

/** Files planned together: their packs are fetched once for all of them. */
class Batch {
  /** Files waiting for content; a job's number is its place here. */
  readonly jobs: FileJob[] = [];
  /** pack → content hash → where it goes. */
  readonly wanted = new Map<string, Map<string, Target[]>>();
  /** Hard links, symlinks and special files: made once the batch's files are written. */
  readonly deferred: Entry[] = [];
  bytes = 0;
  /** The last entry of the state assigned to this batch. */
  lastKey: string | null = null;
  /** Keys of the files and directories planned (their parents made in DEST), in path order. */
  private readonly keys: string[] = [];
  /** The batch planned after this one. */
  next: Batch | null = null;
  /** Resolves when the queue has handed every pack of this batch to a worker. */
  readonly allTaken: Promise<void>;
  markAllTaken!: () => void;
  /** Resolves when the batch's files, links and directories are all done. */
  completed: Promise<void> = Promise.resolve();
  /** Work the workers' reports start on the main thread (finishing large files, blocked renames). */
  private readonly pending = new Set<Promise<void>>();

  constructor(readonly number: number) {
    this.allTaken = new Promise((resolve) => (this.markAllTaken = resolve));
  }

  track(work: Promise<void>): void {
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }

  /** Its files are written: the plan for them is not needed any more (only its links and directories are). */
  releaseFiles(): void {
    this.jobs.length = 0;
    this.wanted.clear();
  }

  /** Completed: nothing of it is needed any more (a later batch's closures may still refer to the batch itself). */
  release(): void {
    this.releaseFiles();
    this.deferred.length = 0;
    this.keys.length = 0;
    this.next = null;
  }

  /** Waits for the work tracked (which never rejects: failures are reported where they happen). */
  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.all(this.pending);
  }

  plan(key: string): void {
    this.keys.push(key);
  }

  /** Whether anything planned lies below `key` (which then must stay a directory). */
  plansBelow(key: string): boolean {
    const prefix = keyToContentsPrefix(key);
    // Keys compare in path order, and a subtree is one range of them: the first key from `prefix` on decides.
    let low = 0;
    let high = this.keys.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.keys[middle]! < prefix) low = middle + 1;
      else high = middle;
    }
    return this.keys[low]?.startsWith(prefix) ?? false;
  }
}

export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const { store, monitor, signal } = options;
  const started = Date.now();
  // The layers do not need the header: a damaged one is reported, and everything restored all the same.
  const headerDamage: BlanketError[] = [];
  const catalog = await readCatalog(store, { onDamagedHeader: (error) => headerDamage.push(error), ...(options.layerOrigin && { layerOrigin: options.layerOrigin }) });
  // Nothing is created in DEST for a layer that does not exist.
  assertLayerExists(catalog, options.layer);
  /** Paths asked for that the state has not shown yet: what is left at the end is not in the archive. */
  const notSeen = new Map(options.paths.map((path) => [pathToKey(path), path]));
  const dest = await Destination.open(options.destination);
  const threads = options.workers ?? Math.max(1, Math.min(4, availableParallelism()));
  const restorer = new PackRestorer(threads);
  const deltaRestorer = new DeltaRestorer(store, signal);
  const isRoot = process.getuid?.() === 0;
  /** New files are created with their final permissions when the umask keeps them (one chmod less per file). */
  const umask = process.umask();
  const owners = new OwnerNames();
  const result: RestoreResult = {
    restoredFiles: 0,
    restoredBytes: 0,
    skippedFiles: 0,
    failedFiles: 0,
    dirs: 0,
    symlinks: 0,
    hardLinks: 0,
    specials: 0,
    packsFetched: 0,
    packsTotal: catalog.packs.size,
    damagedObjects: [],
    elapsedMs: 0,
  };
  monitor.emit({ type: 'started', command: 'restore', archive: store.location, layer: options.layer });
  const stopTicker = monitor.startTicker();

  const damaged = new Set<string>();
  const reportDamage = (object: string, message: string): void => {
    if (damaged.has(object)) return;
    damaged.add(object);
    monitor.warn('damaged-object', message, { object });
  };
  for (const error of headerDamage) reportDamage(HEADER_OBJECT, `${error.message}; restoring from the layers without it`);
  const lostRanges = new Set<string>();

  // A batch holds thousands of files and most share an owner and a way of being created: one object each.
  const ownerObjects = new Map<string, { uid: number; gid: number }>();
  const ownerOf = (uid: number, gid: number): { uid: number; gid: number } => {
    const id = `${uid}:${gid}`;
    let owner = ownerObjects.get(id);
    if (!owner) ownerObjects.set(id, (owner = { uid, gid }));
    return owner;
  };
  const createdObjects = new Map<string, CreatedAs>();
  const createdFor = (meta: Metadata, inNewDirectory: boolean): CreatedAs => {
    // Under a setgid DEST, new files take its group (see Destination.rootSetgid): their owner is set explicitly.
    const created = createdAs(meta, inNewDirectory && !dest.rootSetgid, umask);
    const id = `${created.mode}:${created.modeIsFinal}:${created.ownerIsFinal}`;
    let shared = createdObjects.get(id);
    if (!shared) createdObjects.set(id, (shared = created));
    return shared;
  };
  const metadataOf = (entry: Entry): Metadata => ({
    mode: entry.mode,
    mtimeNs: entry.mtimeNs,
    owner: isRoot ? ownerOf(owners.uidOf(entry.user) ?? entry.uid, owners.gidOf(entry.group) ?? entry.gid) : null,
  });

  const fail = (path: Buffer, message: string): void => {
    result.failedFiles++;
    monitor.warn('restore-failed', `${displayPath(path)}: ${message}`, { path: displayPath(path) });
    monitor.emit({ type: 'file', path: displayPath(path), action: 'failed', size: 0 });
  };

  /** Hard-link groups: the key of the first restored name of each (inode, content) pair (a key: see dirs). */
  const linkGroups = new Map<string, string>();
  /**
   * Directories waiting for their metadata until everything below them is written (creating entries inside a
   * directory changes its mtime): kept by key (a string), not by path, since a small Buffer is a slice of an
   * 8 KiB pool slab that it would keep alive (20,000 directories held ~170 MiB that way).
   */
  let dirs: Array<{ key: string; contents: string; meta: Metadata; ownerIsFinal: boolean }> = [];
  /**
   * Sets the metadata of the waiting directories whose subtree is done: in path order a subtree is one range of
   * keys (those starting with its contents prefix), and every entry up to `past` is written (null: the end).
   * So only directories whose subtree is still ahead wait, not every directory of the tree.
   */
  const flushDirs = async (past: string | null): Promise<void> => {
    // Taken out of the list before the first await: the planning of the next batch adds to it meanwhile.
    const ready: typeof dirs = [];
    const waiting: typeof dirs = [];
    for (const dir of dirs) (past === null || (past > dir.contents && !past.startsWith(dir.contents)) ? ready : waiting).push(dir);
    dirs = waiting;
    for (const dir of ready.reverse()) {
      const path = dir.key === ROOT_KEY ? Buffer.alloc(0) : keyToPath(dir.key);
      try {
        await dest.setMetadata(path, dir.meta, dir.ownerIsFinal);
      } catch (error) {
        fail(path, (error as Error).message);
      }
    }
  };
  const packsFetched = new Set<string>();

  /** The batch being planned, and the one before it (being written, or done), if any. */
  let batch = new Batch(0);
  let previous: Batch | null = null;

  /** Gives a file its metadata (unless `written` with it) and moves it into place. */
  const finishJob = async (job: FileJob, written = false): Promise<void> => {
    try {
      if (!written) await job.temp.finish(job.meta);
      await dest.replace(job.temp.path, job.path);
      placed(job);
    } catch (error) {
      await job.temp.discard();
      fail(job.path, (error as Error).message);
    }
  };

  const placed = (job: FileJob): void => {
    result.restoredFiles++;
    result.restoredBytes += job.size;
    monitor.files++;
    monitor.bytes += job.size;
    monitor.emit({ type: 'file', path: displayPath(job.path), action: 'restored', size: job.size });
  };
  const markFailed = (job: FileJob, message: string): void => {
    if (job.failed || job.remaining === 0) return;
    job.failed = true;
    void job.temp.discard();
    fail(job.path, message);
  };
  const handlersFor = (current: Batch): PackRestoreHandlers => ({
    written: (ids) => {
      for (const id of ids) {
        const job = current.jobs[id]!;
        if (job.failed) continue;
        if (job.pieces === 1) {
          job.remaining = 0;
          placed(job);
        } else if (--job.remaining === 0) {
          current.track(finishJob(job));
        }
      }
    },
    blocked: (ids) => {
      for (const id of ids) {
        const job = current.jobs[id]!;
        job.remaining = 0;
        current.track(finishJob(job, true));
      }
    },
    failed: (id, message) => markFailed(current.jobs[id]!, message),
  });

  /** Has a worker write what batch `current` needs from pack `stem`. */
  const writePack = async (current: Batch, stem: string): Promise<void> => {
    const object = packObjectName(stem);
    const targets = current.wanted.get(stem)!;
    if (!catalog.packs.has(stem)) {
      reportDamage(object, `pack ${object} is missing from the archive`);
      for (const list of targets.values()) for (const target of list) markFailed(target.job, `its pack ${object} is missing`);
      return;
    }
    const members = new Map<string, RestoreTarget[]>();
    for (const [hash, list] of targets) {
      const live = list.filter((target) => !target.job.failed);
      if (live.length > 0) members.set(hash, live.map((target) => target.job.targetAt(target.offset, target.size)));
    }
    if (members.size === 0) return; // every file that needed it failed already
    packsFetched.add(stem);
    // Content the pack stores as deltas is rebuilt here (from its chain), the rest written by the workers.
    const rebuilt = await takeDeltas(stem, members);
    const read = members.size > 0 ? await restorer.restore(store, stem, members, handlersFor(current), signal) : { delivered: new Set<string>(), badMembers: [], error: null };
    const rebuiltNow = [...rebuilt];
    for (let at = 0; at < rebuiltNow.length; at += REBUILT_TOGETHER) {
      const group = rebuiltNow.slice(at, at + REBUILT_TOGETHER);
      const forget = await deltaRestorer.prefetch(group.map(([hash]) => ({ hash, stem })));
      for (const [hash, list] of group) await writeRebuilt(current, stem, hash, list);
      forget();
    }
    const lacking = [...members.keys()].filter((hash) => !read.delivered.has(hash)).length;
    if (read.error) reportDamage(object, read.error.message);
    else if (read.badMembers.length > 0) reportDamage(object, `pack ${object} holds ${read.badMembers.length} damaged members`);
    else if (lacking > 0) reportDamage(object, `pack ${object} lacks ${lacking} members that the indexes refer to`);
    for (const [hash, list] of targets) {
      if (read.delivered.has(hash) || rebuilt.has(hash)) continue;
      for (const target of list) markFailed(target.job, `content ${hash.slice(0, 16)}… in ${object} is missing or damaged`);
    }
  };
  const queue = new PackQueue(options.packConcurrency ?? threads, writePack);

  /** Takes out of `members` the content pack `stem` stores as deltas (none if its index cannot be read: its lack is reported then). */
  const takeDeltas = async (stem: string, members: Map<string, RestoreTarget[]>): Promise<Map<string, RestoreTarget[]>> => {
    const taken = new Map<string, RestoreTarget[]>();
    let deltas;
    try {
      deltas = await deltaRestorer.deltasOf(stem);
    } catch (error) {
      if (!isBlanketError(error)) throw error;
      return taken;
    }
    if (deltas.size === 0) return taken;
    for (const [hash, list] of members) {
      if (!deltas.has(hash)) continue;
      taken.set(hash, list);
      members.delete(hash);
    }
    return taken;
  };

  /** Rebuilds content `hash` of pack `stem` from its deltas and writes it to its targets; damage fails only those. */
  const writeRebuilt = async (current: Batch, stem: string, hash: string, list: RestoreTarget[]): Promise<void> => {
    const handlers = handlersFor(current);
    let bytes: Buffer;
    try {
      bytes = await deltaRestorer.content(hash, stem, list[0]!.size);
    } catch (error) {
      if (!isBlanketError(error)) throw error;
      reportDamage(error.subject ?? packObjectName(stem), error.message);
      for (const target of list) handlers.failed(target.id, `its content ${hash.slice(0, 16)}… cannot be rebuilt: ${error.message}`);
      return;
    }
    writeContent(packObjectName(stem), hash, bytes, list, (report) => handOn(report, handlers));
  };

  /**
   * Completes the batch whose packs are written: its hard links, symlinks and special files (which need their
   * files and directories in place), then the metadata of the directories it finished. The batch after it is
   * planned or written meanwhile: its directories exist but its files may not be written yet, so nothing may take
   * the place of a directory it needs, or its files would be written through whatever replaced it.
   */
  const completeBatch = async (done: Batch): Promise<void> => {
    for (const entry of done.deferred) {
      if (done.next?.plansBelow(entry.key)) {
        fail(keyToPath(entry.key), 'not restored: the archive also lists entries below this path, so it must stay a directory');
        continue;
      }
      await restoreDeferred(entry);
    }
    if (done.lastKey !== null) await flushDirs(done.lastKey);
    done.release();
  };

  /**
   * The batch being planned is complete: its packs join the queue once the previous batch's have all been taken,
   * and the next batch is planned once the previous one is completed (so at most two are held).
   */
  const startBatch = async (): Promise<void> => {
    const full = batch;
    const before = previous;
    if (before) await before.allTaken;
    full.next = new Batch(full.number + 1);
    full.completed = (async () => {
      await queue.add(full);
      await full.settled();
      full.releaseFiles();
      if (before) await before.completed;
      await completeBatch(full);
    })();
    full.completed.catch(() => undefined); // awaited below, or at the end
    if (before) await before.completed;
    previous = full;
    batch = full.next;
  };

  const restoreDeferred = async (entry: Entry): Promise<void> => {
    const path = keyToPath(entry.key);
    try {
      if (entry.kind === 'symlink') {
        await dest.symlink(path, entry.linkTarget!, metadataOf(entry));
        result.symlinks++;
      } else if (entry.kind === 'file') {
        const first = keyToPath(linkGroups.get(linkGroupId(entry))!);
        await dest.hardLink(path, first);
        result.hardLinks++;
      } else if (entry.kind === 'fifo' || entry.kind === 'chardev' || entry.kind === 'blockdev') {
        await dest.special(path, entry.kind, entry.rdev, metadataOf(entry));
        result.specials++;
      }
    } catch (error) {
      fail(path, (error as Error).message);
    }
  };

  try {
    for await (const entry of readSubtrees(store, catalog, {
      layer: options.layer,
      subtrees: options.paths,
      signal,
      onDamagedIndex: (stem, error) => reportDamage(indexObjectName(stem), error.message),
      onLostRange: (range) => {
        const objects = range.stems.map(indexObjectName);
        for (const object of objects) {
          const present = catalog.indexes.some((ref) => indexObjectName(ref.stem) === object);
          reportDamage(object, present ? `index ${object} does not continue the index before it` : `index ${object} is missing`);
        }
        const text = `${describeLostRange(range)} with ${objects.join(', ')}: those paths are missing or restored as of an older layer`;
        if (range.after === range.through || lostRanges.has(text)) return;
        lostRanges.add(text);
        monitor.warn('lost-range', text, { object: objects[0] });
      },
      onOutdated: (entry, range) => {
        const path = entry.key === ROOT_KEY ? '/' : displayPath(keyToPath(entry.key));
        monitor.warn('outdated', `${path}: restored as of an older layer and may be out of date: ${describeLostRange(range)}`, { path });
      },
    })) {
      signal?.throwIfAborted();
      const path = entry.key === ROOT_KEY ? Buffer.alloc(0) : keyToPath(entry.key);
      monitor.currentPath = path;
      notSeen.delete(entry.key);
      batch.lastKey = entry.key;
      switch (entry.kind) {
        case 'dir':
          try {
            const parentIsNew = await dest.ensureParents(path);
            const made = await dest.ensureDirectory(path);
            const key = ownCopy(entry.key);
            batch.plan(key);
            const meta = metadataOf(entry);
            // Made by this run in a directory it made (so no setgid group came with it), as its owner: no chown.
            const ownerIsFinal = path.length > 0 && made && parentIsNew && dest.ownerOfNewEntries(meta.owner);
            dirs.push({ key, contents: ownCopy(keyToContentsPrefix(entry.key)), meta, ownerIsFinal });
            result.dirs++;
          } catch (error) {
            fail(path, (error as Error).message);
          }
          break;
        case 'symlink':
          batch.deferred.push(entry);
          break;
        case 'chardev':
        case 'blockdev':
          if (!options.devices || !isRoot) {
            monitor.warn('device-skipped', `${displayPath(path)}: device node not restored (needs --devices, as root)`, { path: displayPath(path) });
            break;
          }
          batch.deferred.push(entry);
          break;
        case 'fifo':
          batch.deferred.push(entry);
          break;
        case 'file': {
          if (entry.nlink > 1) {
            const group = linkGroupId(entry);
            if (linkGroups.has(group)) {
              batch.deferred.push(entry);
              break;
            }
            linkGroups.set(group, ownCopy(entry.key));
          }
          try {
            // Parents first: a symlink in DEST where the archive has a directory is replaced before anything looks
            // through it (else the file "already restored" could be one outside DEST, and get its metadata set).
            const parentIsNew = await dest.ensureParents(path);
            const key = ownCopy(entry.key);
            batch.plan(key);
            if (!parentIsNew && (await alreadyRestored(dest.absolute(path), entry))) {
              await dest.setMetadata(path, metadataOf(entry));
              result.skippedFiles++;
              monitor.emit({ type: 'file', path: displayPath(path), action: 'skipped', size: entry.size });
              break;
            }
            // Parents are in place (above); a file of several pieces is created now, to take them at any offset.
            const temp = entry.chunks.length > 1 ? await dest.createTemp(path, entry.chunks.length) : null;
            const meta = metadataOf(entry);
            const job = new FileJob(batch.jobs.length, key, entry, meta, createdFor(meta, parentIsNew), dest, temp);
            if (entry.chunks.length === 0) {
              await finishJob(job);
              break;
            }
            if (batch.number === 0 && batch.jobs.length === 0) restorer.warmUp(); // content ahead: the threads boot meanwhile
            batch.jobs.push(job);
            let offset = 0;
            for (const chunk of entry.chunks) {
              let byHash = batch.wanted.get(chunk.pack);
              if (!byHash) batch.wanted.set(chunk.pack, (byHash = new Map()));
              let targets = byHash.get(chunk.hash);
              if (!targets) byHash.set(ownCopy(chunk.hash), (targets = [])); // not a slice of the entry's index line
              targets.push({ job, offset, size: chunk.size });
              offset += chunk.size;
            }
            batch.bytes += entry.size;
          } catch (error) {
            fail(path, (error as Error).message);
          }
          const limit = Math.min(options.batchFiles ?? BATCH_FILES, FIRST_BATCH_FILES * 2 ** Math.min(batch.number, 10));
          if (batch.jobs.length >= limit || batch.bytes >= BATCH_BYTES) await startBatch();
          break;
        }
      }
    }
    await startBatch();
    await previous!.completed;
    await flushDirs(null);
    for (const path of notSeen.values()) fail(path, `not in the archive${options.layer !== undefined ? ` as of layer ${options.layer}` : ''}`);
  } finally {
    stopTicker();
    queue.close();
    await (previous as Batch | null)?.completed.catch(() => undefined); // failed before the end: let the writes stop
    await restorer.close();
  }
  result.packsFetched = packsFetched.size;
  result.damagedObjects = [...damaged].sort();
  result.elapsedMs = Date.now() - started;
  if (result.damagedObjects.length > 0 && result.failedFiles === 0) {
    // Damage that cost no file in this request is still worth an exit status: the archive needs attention.
    monitor.warn('damaged-object', `${result.damagedObjects.length} archive objects are damaged; run blanket verify`, {});
  }
  return result;
}

/** A string of its own: a key sliced from its index line would keep the whole line alive as long as it is kept. */
function ownCopy(text: string): string {
  return Buffer.from(text, 'latin1').toString('latin1');
}

function linkGroupId(entry: Entry): string {
  return `${entry.ino}:${entry.hash}:${entry.size}`;
}

/** True when DEST already holds a regular file with exactly this content: every chunk has its SHA-256. */
async function alreadyRestored(abs: Buffer, entry: Entry): Promise<boolean> {
  let st;
  try {
    st = lstatSync(abs, { throwIfNoEntry: false }); // the usual answer, "absent", without building an exception
  } catch (error) {
    if (errnoCode(error) === 'ENOTDIR') return false;
    throw error;
  }
  if (st === undefined || !st.isFile() || st.size !== entry.size) return false;
  let chunk = 0;
  let left = entry.chunks[0]?.size ?? 0;
  let hash = createHash('sha256');
  const stream = createReadStream(abs);
  try {
    for await (const data of stream) {
      let part = data as Buffer;
      while (part.length > 0) {
        if (chunk >= entry.chunks.length) return false; // grew since the lstat
        const take = Math.min(left, part.length);
        hash.update(part.subarray(0, take));
        part = part.subarray(take);
        left -= take;
        if (left > 0) continue;
        if (hash.digest('hex') !== entry.chunks[chunk]!.hash) return false;
        hash = createHash('sha256');
        left = entry.chunks[++chunk]?.size ?? 0;
      }
    }
  } finally {
    stream.destroy();
  }
  return chunk === entry.chunks.length;
}

/**
 * The packs of successive batches, written by a fixed number of fetchers in the order queued: a batch's packs
 * start as soon as a fetcher is free, so the workers do not wait at the end of each batch.
 */
class PackQueue {
  private readonly items: Array<{ batch: Batch; stem: string; last: boolean; done: () => void; failed: (error: unknown) => void }> = [];
  private readonly idle: Array<() => void> = [];
  private fetchers: Promise<void>[] | null = null;
  private closed = false;

  constructor(
    private readonly concurrency: number,
    private readonly write: (batch: Batch, stem: string) => Promise<void>,
  ) {}

  /** Queues every pack the batch needs (in pack order); resolves when all are written, rejects on the first fatal error. */
  async add(batch: Batch): Promise<void> {
    const stems = [...batch.wanted.keys()].sort();
    if (stems.length === 0) {
      batch.markAllTaken();
      return;
    }
    this.fetchers ??= Array.from({ length: this.concurrency }, () => this.fetch());
    const written = stems.map(
      (stem, i) =>
        new Promise<void>((done, failed) => this.items.push({ batch, stem, last: i === stems.length - 1, done, failed })),
    );
    for (const wake of this.idle.splice(0)) wake();
    await Promise.all(written);
  }

  /** No more batches: the fetchers end once the queue is empty. */
  close(): void {
    this.closed = true;
    for (const wake of this.idle.splice(0)) wake();
  }

  private async fetch(): Promise<void> {
    for (;;) {
      const item = this.items.shift();
      if (!item) {
        if (this.closed) return;
        await new Promise<void>((resolve) => this.idle.push(resolve));
        continue;
      }
      if (item.last) item.batch.markAllTaken();
      try {
        await this.write(item.batch, item.stem);
        item.done();
      } catch (error) {
        item.failed(error);
      }
    }
  }
}
