// The restore pipeline: merged indexes → plan (which members of which packs) → fetch only those packs → DEST.
//
//   for each batch of the state (path order, bounded):
//     dir      → make it (metadata at the very end, so later writes don't disturb its mtime)
//     file     → already in DEST with the same SHA-256? skip.  else: temp file, and for every chunk
//                 wanted[pack][hash] += (file, offset)
//     hardlink → after its first name is written; symlink, fifo → after the batch's files
//     fetch each wanted pack (a few at once): member → checked hash → written to every (file, offset)
//     file complete → owner, mode, mtime → rename into place;  pack missing/damaged → its files are
//     reported by name and the rest still restored
//
// Nothing is written outside DEST: see stages/destination.ts.

import { createReadStream, lstatSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { errnoCode } from '../formats/errors.js';
import type { Entry } from '../formats/entry.js';
import { displayPath, keyToContentsPrefix, keyToPath, pathToKey, ROOT_KEY } from '../formats/path-key.js';
import { HEADER_OBJECT, indexObjectName, packObjectName } from '../formats/archive-layout.js';
import type { BlanketError } from '../formats/errors.js';
import type { Store } from '../stores/store.js';
import { Destination, type Metadata, type TempFile } from '../stages/destination.js';
import type { Monitor } from '../stages/monitor.js';
import { OwnerNames } from '../stages/owner-names.js';
import { readPack } from '../stages/pack-reader.js';
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
  /** Packs fetched at once. */
  readonly packConcurrency?: number;
  /** File writes in flight at once. */
  readonly writeConcurrency?: number;
  /** Files planned per batch (default 20,000): fewer hold less memory, but a pack may then be read more than once. */
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

const BATCH_FILES = 20_000;
const BATCH_BYTES = 4 * 2 ** 30; // not 4 << 30: that is 0 in 32-bit shift arithmetic (a batch per file)

/**
 * One file of a batch waiting for its content. A batch holds up to BATCH_FILES of them, so a job keeps only what
 * it needs, in strings of its own: not the entry, whose strings are slices of its index line and would keep that
 * line alive too. A one-piece file's path and temporary name are made only when its content arrives.
 */
class FileJob {
  readonly key: string;
  readonly size: number;
  readonly pieces: number;
  remaining: number;
  failed = false;
  private tempFile: TempFile | null;

  constructor(
    entry: Entry,
    readonly meta: Metadata,
    private readonly dest: Destination,
    temp: TempFile | null,
  ) {
    this.key = ownCopy(entry.key);
    this.size = entry.size;
    this.pieces = entry.chunks.length;
    this.remaining = this.pieces;
    this.tempFile = temp;
  }

  get path(): Buffer {
    return keyToPath(this.key);
  }

  get temp(): TempFile {
    return (this.tempFile ??= this.dest.tempFor(this.path));
  }
}

interface Target {
  readonly job: FileJob;
  readonly offset: number;
  /** Size the index declares for this chunk: content of another size would leave holes or overlaps. */
  readonly size: number;
}

export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const { store, monitor, signal } = options;
  const started = Date.now();
  // The layers do not need the header: a damaged one is reported, and everything restored all the same.
  const headerDamage: BlanketError[] = [];
  const catalog = await readCatalog(store, { onDamagedHeader: (error) => headerDamage.push(error) });
  // Nothing is created in DEST for a layer that does not exist.
  assertLayerExists(catalog, options.layer);
  /** Paths asked for that the state has not shown yet: what is left at the end is not in the archive. */
  const notSeen = new Map(options.paths.map((path) => [pathToKey(path), path]));
  const dest = await Destination.open(options.destination);
  const isRoot = process.getuid?.() === 0;
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

  const metadataOf = (entry: Entry): Metadata => ({
    mode: entry.mode,
    mtimeNs: entry.mtimeNs,
    owner: isRoot ? { uid: owners.uidOf(entry.user) ?? entry.uid, gid: owners.gidOf(entry.group) ?? entry.gid } : null,
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
  let dirs: Array<{ key: string; contents: string; meta: Metadata }> = [];
  /**
   * Sets the metadata of the waiting directories whose subtree is done: in path order a subtree is one range of
   * keys (those starting with its contents prefix), and every entry up to `past` is written (null: the end).
   * So only directories whose subtree is still ahead wait, not every directory of the tree.
   */
  const flushDirs = async (past: string | null): Promise<void> => {
    const waiting: typeof dirs = [];
    for (let i = dirs.length - 1; i >= 0; i--) {
      const dir = dirs[i]!;
      if (past !== null && !(past > dir.contents && !past.startsWith(dir.contents))) {
        waiting.push(dir);
        continue;
      }
      const path = dir.key === ROOT_KEY ? Buffer.alloc(0) : keyToPath(dir.key);
      try {
        await dest.setMetadata(path, dir.meta);
      } catch (error) {
        fail(path, (error as Error).message);
      }
    }
    dirs = waiting.reverse();
  };
  const packsFetched = new Set<string>();

  let batchFiles = 0;
  let wanted = new Map<string, Map<string, Target[]>>();
  let deferred: Entry[] = [];
  let batchBytes = 0;
  const limiter = new Limiter(options.writeConcurrency ?? 8);

  const finishJob = async (job: FileJob, written = false): Promise<void> => {
    try {
      if (!written) await job.temp.finish(job.meta);
      await dest.replace(job.temp.path, job.path);
      result.restoredFiles++;
      result.restoredBytes += job.size;
      monitor.files++;
      monitor.bytes += job.size;
      monitor.emit({ type: 'file', path: displayPath(job.path), action: 'restored', size: job.size });
    } catch (error) {
      await job.temp.discard();
      fail(job.path, (error as Error).message);
    }
  };

  const runBatch = async (): Promise<void> => {
    const packs = [...wanted.keys()].sort();
    const concurrency = options.packConcurrency ?? 2;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < packs.length) {
        const stem = packs[next++]!;
        const targets = wanted.get(stem)!;
        if (!catalog.packs.has(stem)) {
          reportDamage(packObjectName(stem), `pack ${packObjectName(stem)} is missing from the archive`);
        } else {
          packsFetched.add(stem);
          const read = await readPack(store, stem, {
            wants: (hash) => targets.has(hash),
            signal,
            onMember: async (hash, parts, size) => {
              for (const target of targets.get(hash)!) {
                if (target.job.failed) continue;
                await limiter.run(async () => {
                  try {
                    if (size !== target.size) {
                      throw new Error(`content ${hash.slice(0, 16)}… in ${packObjectName(stem)} holds ${size} bytes, the index says ${target.size}`);
                    }
                    if (target.job.pieces === 1) {
                      target.job.remaining = 0;
                      target.job.temp.writeWhole(parts, target.job.meta);
                      await finishJob(target.job, true);
                    } else {
                      await target.job.temp.write(parts, target.offset, target.job.remaining === 1);
                      if (--target.job.remaining === 0) await finishJob(target.job);
                    }
                  } catch (error) {
                    if (target.job.failed) return;
                    target.job.failed = true;
                    await target.job.temp.discard();
                    fail(target.job.path, (error as Error).message);
                  }
                });
              }
            },
          });
          await limiter.idle();
          const lacking = [...targets.keys()].filter((hash) => !read.delivered.has(hash)).length;
          if (read.error) reportDamage(packObjectName(stem), read.error.message);
          else if (read.badMembers.length > 0) reportDamage(packObjectName(stem), `pack ${packObjectName(stem)} holds ${read.badMembers.length} damaged members`);
          else if (lacking > 0) reportDamage(packObjectName(stem), `pack ${packObjectName(stem)} lacks ${lacking} members that the indexes refer to`);
          for (const [hash, list] of targets) {
            if (read.delivered.has(hash)) continue;
            for (const target of list) markFailed(target.job, `content ${hash.slice(0, 16)}… in ${packObjectName(stem)} is missing or damaged`);
          }
          continue;
        }
        for (const list of targets.values()) for (const target of list) markFailed(target.job, `its pack ${packObjectName(stem)} is missing`);
      }
    };
    const markFailed = (job: FileJob, message: string): void => {
      if (job.failed || job.remaining === 0) return;
      job.failed = true;
      void job.temp.discard();
      fail(job.path, message);
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, packs.length) }, worker));
    await limiter.idle();
    // Hard links and symlinks need their files (and all directories) in place first.
    for (const entry of deferred) await restoreDeferred(entry);
    batchFiles = 0;
    wanted = new Map();
    deferred = [];
    batchBytes = 0;
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
      switch (entry.kind) {
        case 'dir':
          try {
            await dest.ensureDirectory(path);
            dirs.push({ key: ownCopy(entry.key), contents: ownCopy(keyToContentsPrefix(entry.key)), meta: metadataOf(entry) });
            result.dirs++;
          } catch (error) {
            fail(path, (error as Error).message);
          }
          break;
        case 'symlink':
          deferred.push(entry);
          break;
        case 'chardev':
        case 'blockdev':
          if (!options.devices || !isRoot) {
            monitor.warn('device-skipped', `${displayPath(path)}: device node not restored (needs --devices, as root)`, { path: displayPath(path) });
            break;
          }
          deferred.push(entry);
          break;
        case 'fifo':
          deferred.push(entry);
          break;
        case 'file': {
          if (entry.nlink > 1) {
            const group = linkGroupId(entry);
            if (linkGroups.has(group)) {
              deferred.push(entry);
              break;
            }
            linkGroups.set(group, ownCopy(entry.key));
          }
          try {
            // Parents first: a symlink in DEST where the archive has a directory is replaced before anything looks
            // through it (else the file "already restored" could be one outside DEST, and get its metadata set).
            await dest.ensureParents(path);
            if (await alreadyRestored(dest.absolute(path), entry)) {
              await dest.setMetadata(path, metadataOf(entry));
              result.skippedFiles++;
              monitor.emit({ type: 'file', path: displayPath(path), action: 'skipped', size: entry.size });
              break;
            }
            // Parents are in place (above); a file of several pieces is created now, to take them at any offset.
            const job = new FileJob(entry, metadataOf(entry), dest, entry.chunks.length > 1 ? await dest.createTemp(path, entry.chunks.length) : null);
            if (entry.chunks.length === 0) {
              await finishJob(job);
              break;
            }
            batchFiles++;
            let offset = 0;
            for (const chunk of entry.chunks) {
              let byHash = wanted.get(chunk.pack);
              if (!byHash) wanted.set(chunk.pack, (byHash = new Map()));
              let targets = byHash.get(chunk.hash);
              if (!targets) byHash.set(ownCopy(chunk.hash), (targets = [])); // not a slice of the entry's index line
              targets.push({ job, offset, size: chunk.size });
              offset += chunk.size;
            }
            batchBytes += entry.size;
          } catch (error) {
            fail(path, (error as Error).message);
          }
          if (batchFiles >= (options.batchFiles ?? BATCH_FILES) || batchBytes >= BATCH_BYTES) {
            await runBatch();
            await flushDirs(entry.key);
          }
          break;
        }
      }
    }
    await runBatch();
    await flushDirs(null);
    for (const path of notSeen.values()) fail(path, `not in the archive${options.layer !== undefined ? ` as of layer ${options.layer}` : ''}`);
  } finally {
    stopTicker();
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

/** Runs at most `limit` tasks at once; run() waits for a free slot (backpressure on the pack reader). */
class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  private readonly idleWaiters: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async run(task: () => Promise<void>): Promise<void> {
    while (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    void task().finally(() => {
      this.active--;
      this.waiting.shift()?.();
      if (this.active === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
    });
  }

  async idle(): Promise<void> {
    if (this.active === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }
}
