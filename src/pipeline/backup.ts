// The backup pipeline: walker → change detection → hash pool → packer (→ compressor → store), resumable at the clock pointer.
//
//   clock pointer P (last key committed in the open layer, or a new layer)
//   walk(after P) ─┐
//                  ├─ detectChanges ─▶ hashContents (piscina) ─▶ Packer ─▶ packs + indexes in the store
//   state(after P) ┘
//
// Each pack's index is written after its data is durable, so a kill at any moment loses at most the pack in
// flight. A budget (time, bytes) or a stop request ends the run cleanly after the pack in flight is committed.

import { setMaxListeners } from 'node:events';
import { stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Piscina } from 'piscina';
import { BlanketError, ErrorCodes, errnoCode, isBlanketError } from '../formats/errors.js';
import { AFTER_ALL, BEFORE_ALL, displayPath, keyToPath, ROOT_KEY } from '../formats/path-key.js';
import { packObjectName } from '../formats/archive-layout.js';
import type { Store } from '../stores/store.js';
import { acquireLock } from '../stages/archive-lock.js';
import { detectChanges } from '../stages/change-detector.js';
import { ContentTable, type MemberLoadResult } from '../stages/content-table.js';
import { createExcludeMatcher } from '../stages/exclude.js';
import { FrameRing } from '../stages/frame-ring.js';
import { tarBytesOf, type PackedBatch, type PackTask, type PieceHash, type ReadRequest } from '../stages/hash-worker.js';
import { hashContents, type HashedItem, type TaskOutput } from '../stages/hasher.js';
import { DEFAULT_BLOCK_SIZE } from '../stages/compressor.js';
import { zstdFramesBound } from '../formats/zstd-frames.js';
import { Monitor } from '../stages/monitor.js';
import { OwnerNames } from '../stages/owner-names.js';
import { Packer, type PackerTotals } from '../stages/packer.js';
import { ReadAhead } from '../stages/read-ahead.js';
import { readCatalog, readClockPointer, readStateRecordBatches } from '../stages/state-reader.js';
import { WalkThread } from '../stages/walk-thread.js';
import { walkBatches, type WalkProblem } from '../stages/walker.js';
import { startPool } from '../stages/worker-threads.js';
import { ensureArchive } from './archive.js';
import { DEFAULT_PACK_SIZE } from './defaults.js';
import { SignatureFetcher, type ChunkRdiff } from '../stages/delta.js';
import type { Entry } from '../formats/entry.js';

export interface BackupOptions {
  readonly source: string;
  readonly store: Store;
  readonly monitor: Monitor;
  /** Tar bytes per pack before compression (default 64 MiB). */
  readonly packSize?: number;
  readonly maxTimeMs?: number;
  readonly maxBytes?: number;
  readonly excludes?: readonly string[];
  readonly paranoid?: boolean;
  readonly compressionLevel?: number;
  readonly workers?: number;
  /** Create the archive when the location is absent or an empty folder. */
  readonly create?: boolean;
  /** Lease of the archive lock (default DEFAULT_LOCK_LEASE_MS; tests shorten it). */
  readonly lockLeaseMs?: number;
  /**
   * The local cache folder (e.g. ~/.cache/blanket): rdiff signatures of big files' chunks are kept under
   * archives/ID/signatures, and changed chunks stored as deltas against them. Without it, no signatures or deltas.
   */
  readonly cacheRoot?: string;
}

export type StopReason = 'complete' | 'max-time' | 'max-bytes' | 'stop-requested';

export interface BackupResult extends PackerTotals {
  readonly layer: number;
  readonly complete: boolean;
  readonly stoppedBy: StopReason;
  /** Last path covered by this layer so far (display form), or null if the layer is complete. */
  readonly through: string | null;
  readonly resumedAfter: string | null;
  readonly warnings: number;
  /** Bytes of changed big files hashed ahead of the walk (read-ahead.ts). */
  readonly readAheadBytes: number;
  readonly elapsedMs: number;
}

export { DEFAULT_PACK_SIZE } from './defaults.js';
/**
 * Frames written by the workers and not yet taken by the store: with the hasher's 16 MiB of reads in flight it
 * keeps both cores busy (measured: 32 MiB was no faster, and 16 MiB more resident), and it has room for the
 * largest task (a 2 MiB batch plus a 4 MiB file).
 */
const FRAME_RING_BYTES = 16 << 20;
/**
 * Entries per index. An index's text is built in memory and every reader holds one parsed index per layer:
 * 8,192 entries (~1.5 MiB of text, ~6 MiB parsed). A restore of 250,000 small files peaked at 199–208 MiB with
 * 16,384, and at 190 MiB with 8,192; the packs of such a tree get smaller (about 12 MiB instead of 23).
 */
const MAX_ENTRIES_PER_INDEX = 8_192;

export class BackupRun {
  private stopReason: StopReason | null = null;
  private readonly controller = new AbortController();

  constructor(private readonly options: BackupOptions) {
    // Every task in flight (worker reads, store requests) listens for the abort: many at once is normal.
    setMaxListeners(0, this.controller.signal);
  }

  /** Ends the run cleanly after committing what was processed so far. */
  requestStop(reason: StopReason = 'stop-requested'): void {
    this.stopReason ??= reason;
  }

  /** Tears the pipeline down at once; the pack in flight is not committed. */
  abort(reason: unknown = new BlanketError(ErrorCodes.ABORTED, 'backup aborted')): void {
    this.controller.abort(reason);
  }

  /**
   * Hands items to the packer from `start` on, synchronously (the per-item loop stays out of run(), which V8
   * would otherwise optimize whole): stops at the batch's end, at a stop request, or after an item the packer
   * must finish first (its promise is `pending`).
   */
  private addItems(packer: Packer, batch: readonly HashedItem[], start: number): { next: number; pending?: Promise<void> } {
    for (let i = start; i < batch.length; i++) {
      if (this.stopReason !== null) return { next: i };
      const pending = packer.add(batch[i]!);
      if (pending) return { next: i + 1, pending };
      this.checkMaxBytes();
    }
    return { next: batch.length };
  }

  private checkMaxBytes(): void {
    if (this.options.maxBytes !== undefined && this.options.monitor.storedBytes >= this.options.maxBytes) this.requestStop('max-bytes');
  }

  async run(): Promise<BackupResult> {
    const { store, monitor } = this.options;
    const signal = this.controller.signal;
    const source = path.resolve(this.options.source);
    const packSize = this.options.packSize ?? DEFAULT_PACK_SIZE;
    const chunkSize = Math.min(4 << 20, Math.max(64 << 10, Math.floor(packSize / 2)));
    // Reading, hashing and compressing happen in the workers; the main thread only walks, merges and writes.
    const workers = this.options.workers ?? Math.max(1, Math.min(4, os.availableParallelism()));
    const compressionLevel = this.options.compressionLevel ?? 3;

    // A source that cannot be backed up fails before anything is written: a mistyped path must not leave an archive behind.
    await checkSource(source);
    await ensureArchive(store, this.options.create ?? false);
    // Renewed while the run lasts; a run that loses it (judged dead by another machine) stops writing at once.
    const lock = await acquireLock(store, 'backup', { monitor, onLost: (error) => this.abort(error), ...(this.options.lockLeaseMs !== undefined ? { leaseMs: this.options.lockLeaseMs } : {}) });
    const stopTicker = monitor.startTicker();
    const timer =
      this.options.maxTimeMs !== undefined ? setTimeout(() => this.requestStop('max-time'), this.options.maxTimeMs) : undefined;
    timer?.unref();
    let pool: Promise<Piscina> | undefined;
    let packer: Packer | undefined;
    let readAhead: ReadAhead | undefined;
    let walkThread: WalkThread | null = null;
    try {
      // Only under the lock: leftovers swept now cannot be another live run's writes in flight.
      await store.cleanup();
      // Started (and even loaded) on the first read, so a run in which nothing changed spends no time on threads.
      const workerPool = (): Promise<Piscina> =>
        (pool ??= import('piscina').then(
          ({ Piscina }) =>
            startPool(Piscina, {
              filename: new URL('../stages/hash-worker.js', import.meta.url).href,
              minThreads: workers,
              maxThreads: workers,
              // A second task reads and hashes while the first one's frames compress in the libuv pool.
              concurrentTasksPerWorker: 2,
              idleTimeout: 1000,
            }),
        ));
      const catalog = await readCatalog(store);
      let signatures: SignatureFetcher | undefined;
      const signatureCache =
        this.options.cacheRoot !== undefined && catalog.header !== null ? path.join(this.options.cacheRoot, 'archives', catalog.header.id, 'signatures') : undefined;
      // A catalog with no layer past the first is a first pass (new or resumed) unless layer 1 is complete, which
      // only the pointer tells. A first pass reads every file it reaches, so its threads start before the pointer
      // is read (~50 ms sooner; they take ~0.15 s to start, and the content table loads in one of them).
      const likelyFirstPass = catalog.layers.every((layer) => layer === 1);
      if (likelyFirstPass) void workerPool().catch(() => undefined);
      // The walk thread is started while the previous state is read (a thread takes ~0.1 s to start), and only
      // for an incremental run: a first pass walks on this thread (see below), and would only pay for starting it.
      if (!this.options.paranoid && !likelyFirstPass) walkThread = new WalkThread();
      const pointer = await readClockPointer(store, catalog, signal);
      if (!this.options.paranoid && pointer.layer > 1) walkThread ??= new WalkThread();
      const isExcluded = this.options.excludes?.length ? createExcludeMatcher([...this.options.excludes]) : undefined;
      // Big files that changed are hashed while the walk is still short of them (not in paranoid runs: they read everything).
      readAhead = this.options.paranoid
        ? undefined
        : new ReadAhead({
            root: source,
            after: pointer.after,
            chunkSize,
            isExcluded,
            hashPiece: async (request: ReadRequest) => (await (await workerPool()).run(request, { name: 'hashPiece', signal })) as PieceHash,
            signal,
          });
      // Loaded before the first read (and only if anything is read): workers skip content the archive holds.
      const contents = new ContentTable();
      const frames = new FrameRing(FRAME_RING_BYTES);
      let contentsLoaded: Promise<void> | undefined;
      const loadContents = (): Promise<void> =>
        (contentsLoaded ??= contents
          .load(store, catalog, {
            signal,
            onChunkedFiles: readAhead && ((files) => readAhead!.note(files)),
            // Parsed in a worker: the walk keeps the main thread meanwhile.
            run: async (task) => (await (await workerPool()).run(task, { name: 'loadMembers', signal })) as MemberLoadResult,
          })
          .then(() => readAhead?.start()));
      // The first layer has no earlier state to compare with: every file is read, so the threads start now, and
      // the content table loads while the walk reaches the first files (on a resumed first pass the table holds
      // what the earlier runs stored: the first tasks would otherwise wait for it). A failure surfaces in the
      // first task, which waits for the same promise.
      if (pointer.layer === 1) {
        void workerPool().catch(() => undefined);
        void loadContents().catch(() => undefined);
      }
      const resumedAfter = pointer.after === BEFORE_ALL ? null : pointer.after;
      monitor.emit({ type: 'started', command: 'backup', archive: store.location, layer: pointer.layer, resumedAfter: resumedAfter && describeKey(resumedAfter) });
      const onProblem = (problem: WalkProblem): void =>
        monitor.warn(problem.kind, `${displayPath(problem.path)}: ${problem.message}`, { path: displayPath(problem.path) });
      // An incremental run mostly compares: its walk's syscalls then overlap, on the other core, the merge with
      // the previous state. A first pass is bound by reading and compressing in the pool, where one more busy
      // thread only costs (CPU and ~30 MiB), so it walks here.
      const incremental = walkThread;
      const walked = incremental
        ? incremental.walk({ root: source, after: pointer.after, excludes: this.options.excludes, signal, onProblem })
        : walkBatches({ root: source, after: pointer.after, isExcluded, signal, onProblem });
      const previous = readStateRecordBatches(store, catalog, { after: pointer.after, signal });
      // A pack the listing lacks is lost: its content is read and stored again, and never referred to.
      const packExists = (stem: string): boolean => catalog.packs.has(stem);
      const owners = new OwnerNames();
      const items = detectChanges(walked, previous, {
        paranoid: this.options.paranoid,
        packExists,
        owners,
        onMissingPack: (stem) =>
          monitor.warn('missing-pack', `pack ${packObjectName(stem)} is missing from the archive: the files whose content it held are read and stored again`, {
            object: packObjectName(stem),
          }),
      });
      const hashed = hashContents(items, {
        root: source,
        runTask: async (requests, task): Promise<TaskOutput> => {
          await loadContents();
          contents.reserve(requests.length);
          // Room for the frames if nothing is deduplicated and nothing compresses.
          const region = await frames.reserve(zstdFramesBound(tarBytesOf(requests), DEFAULT_BLOCK_SIZE), signal);
          const packTask: PackTask = { requests, task, table: contents.buffer, level: compressionLevel, ring: frames.buffer, ringOffset: region.offset, ringLength: region.length };
          let out: PackedBatch;
          try {
            out = (await (await workerPool()).run(packTask, { signal })) as PackedBatch;
          } catch (error) {
            frames.release(region);
            throw error;
          }
          return { results: out.results, tarBytes: out.tarBytes, frames: frames.view(region, out.framesLength), release: () => frames.release(region) };
        },
        monitor,
        chunkSize,
        // A big file's chunks are signed, and a changed one is stored as a delta against the previous version's.
        ...(signatureCache !== undefined && {
          chunkRdiff: async (item: { key: string; previous: Entry | null }, index: number): Promise<ChunkRdiff> => {
            const previous = item.previous?.kind === 'file' ? item.previous : undefined;
            const base = previous?.chunks[index];
            if (!base || !catalog.packs.has(base.pack)) return { signatureCache };
            // Signatures this machine lacks come from the archive (a pass over the file's packs, once per file).
            await (signatures ??= new SignatureFetcher(store, signatureCache, signal)).ensure(item.key, previous!);
            return { signatureCache, base: { hash: base.hash, stem: base.pack } };
          },
        }),
        // Chunks read ahead whose content the archive holds (or an earlier task stores) are not read again.
        knownChunks: readAhead && ((key, stat) => readAhead!.take(key, stat)?.map((hash) => (hash !== undefined && contents.has(hash) ? hash : undefined))),
        // Threads and the content table get ready while the walk goes on to the first batch's end.
        onFirstRead: () => {
          void workerPool().catch(() => undefined);
          return loadContents();
        },
        // A task's members go into one pack whole, so a task is kept well below the pack size.
        batchBytes: Math.min(2 << 20, Math.max(16 << 10, Math.floor(packSize / 8))),
        signal,
      });
      packer = new Packer({
        // Packs and indexes are written only while the lock is surely held.
        store: lock.guard(store),
        layer: pointer.layer,
        firstSeq: pointer.seq,
        after: pointer.after,
        packSize,
        maxEntries: MAX_ENTRIES_PER_INDEX,
        compressionLevel,
        contents,
        owners,
        packExists,
        monitor,
        signal,
      });
      let reachedEnd = true;
      items: for await (const batch of hashed) {
        for (let position = 0; position < batch.length; ) {
          if (this.stopReason !== null) {
            reachedEnd = false;
            break items;
          }
          const taken = this.addItems(packer, batch, position);
          position = taken.next;
          if (taken.pending) {
            await taken.pending;
            this.checkMaxBytes();
          }
        }
      }
      if (this.stopReason !== null) reachedEnd = false;
      await readAhead?.close();
      await packer.finish(reachedEnd);
      const through = packer.committedThrough;
      return {
        ...packer.totals,
        layer: packer.currentLayer,
        complete: through === AFTER_ALL,
        stoppedBy: reachedEnd ? 'complete' : (this.stopReason ?? 'stop-requested'),
        through: through === AFTER_ALL ? null : describeKey(through),
        resumedAfter: resumedAfter && describeKey(resumedAfter),
        warnings: monitor.warnings,
        readAheadBytes: readAhead?.totals.bytes ?? 0,
        elapsedMs: Date.now() - monitor.startedAt,
      };
    } catch (error) {
      packer?.abort(error);
      if (signal.aborted && !isBlanketError(error)) throw signal.reason;
      throw error;
    } finally {
      if (timer) clearTimeout(timer);
      stopTicker();
      await readAhead?.close();
      await walkThread?.close();
      await (await pool?.catch(() => undefined))?.destroy();
      await lock.release();
    }
  }
}

async function checkSource(source: string): Promise<void> {
  let st;
  try {
    st = await stat(source);
  } catch (error) {
    const message =
      errnoCode(error) === 'ENOENT' ? `source directory ${source} does not exist` : `cannot read source directory ${source}: ${(error as Error).message}`;
    throw new BlanketError(ErrorCodes.SOURCE, message, { subject: source, cause: error });
  }
  if (!st.isDirectory()) throw new BlanketError(ErrorCodes.SOURCE, `source ${source} is not a directory`, { subject: source });
}

function describeKey(key: string): string {
  if (key === ROOT_KEY) return '/';
  if (key === BEFORE_ALL) return '(start)';
  return displayPath(keyToPath(key));
}
