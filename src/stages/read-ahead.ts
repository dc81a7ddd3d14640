// Read-ahead of big files: hashes the chunks of big files that changed since the last run while the walk is still short of them.
//
//   content table load ──▶ stamps of chunked files, the latest per key (note)
//   start():  keys after the clock pointer, not excluded ──▶ lstat ──▶ changed, still a big regular file? ──▶ queue
//   queue ──▶ one chunk at a time in the worker pool (hash only: nothing stored, nothing claimed)
//   hasher reaches the file: take(key, walked stat) ──▶ its chunk hashes so far, if the file is exactly as read
//
// The walk runs on the main thread and meets changed big files wherever they lie in path order; without this
// the pool idles while the walk goes through the unchanged files before them, and the run then waits while they
// are read. A chunk whose hash the archive already holds is not read again when the file is reached, so a disk
// image with one changed block costs one chunk then. One chunk in flight leaves the walk a core of its own.

import { lstatSync } from 'node:fs';
import type { FileStamp } from '../formats/index-format.js';
import { keyToPath, splitPath } from '../formats/path-key.js';
import { matchesStamp } from './change-detector.js';
import type { PieceHash, ReadRequest } from './hash-worker.js';
import type { EntryStat } from './walker.js';

export interface ReadAheadOptions {
  /** Absolute source directory. */
  readonly root: string;
  /** The clock pointer: only files after it are walked by this run. */
  readonly after: string;
  readonly chunkSize: number;
  readonly isExcluded?: (relPath: Buffer, isDir: boolean) => boolean;
  /** Runs hashPiece (hash-worker.ts) in the pool. */
  readonly hashPiece: (request: ReadRequest) => Promise<PieceHash>;
  readonly signal?: AbortSignal;
}

export interface ReadAheadTotals {
  /** Files read ahead, in part or whole. */
  files: number;
  bytes: number;
}

/** Stamps kept (a bound on memory: 4,096 files of several chunks is far beyond any usual tree). */
const MAX_STAMPS = 4096;

interface Candidate {
  readonly key: string;
  readonly path: Buffer;
  /** The lstat the chunks are read against; a file that no longer matches it is not read ahead any further. */
  readonly stat: EntryStat;
  readonly size: number;
  /** Chunk hashes read so far (undefined: not read, or the file changed while it was read). */
  readonly hashes: (string | undefined)[];
  nextChunk: number;
  /** Taken by the hasher, or gone bad: read no further. */
  done: boolean;
}

export class ReadAhead {
  private readonly stamps = new Map<string, FileStamp>();
  private readonly queue: Candidate[] = [];
  private readonly byKey = new Map<string, Candidate>();
  private position = 0;
  private inFlight: Promise<void> | null = null;
  private closed = false;
  readonly totals: ReadAheadTotals = { files: 0, bytes: 0 };

  constructor(private readonly options: ReadAheadOptions) {}

  /** Notes stamps from an index; called in replay order, so a later stamp of a key replaces an earlier one. */
  note(files: readonly FileStamp[]): void {
    for (const file of files) {
      if (file.key <= this.options.after || file.size <= this.options.chunkSize) continue;
      if (this.stamps.size >= MAX_STAMPS && !this.stamps.has(file.key)) continue;
      this.stamps.set(file.key, file);
    }
  }

  /** Finds which noted files changed, and starts reading them, in path order. */
  start(): void {
    const rootBuf = Buffer.from(this.options.root);
    for (const stamp of [...this.stamps.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) {
      const relative = keyToPath(stamp.key);
      if (this.excluded(relative)) continue;
      const path = Buffer.concat([rootBuf, SLASH, relative]);
      let stat: EntryStat | undefined;
      try {
        stat = lstatSync(path, { bigint: true, throwIfNoEntry: false });
      } catch {
        continue; // unreadable now: the walk will say why
      }
      if (stat === undefined || !stat.isFile() || stat.size <= BigInt(this.options.chunkSize)) continue;
      if (matchesStamp(stat, stamp)) continue; // unchanged: the walk will not read it
      const candidate: Candidate = { key: stamp.key, path, stat, size: Number(stat.size), hashes: [], nextChunk: 0, done: false };
      this.queue.push(candidate);
      this.byKey.set(candidate.key, candidate);
    }
    this.stamps.clear();
    this.pump();
  }

  /**
   * The chunk hashes read ahead for the file `key`, if it is still exactly as it was when read (index i: chunk i,
   * undefined where not read). Reading it ahead stops; files before it in path order are dropped.
   */
  take(key: string, stat: EntryStat): readonly (string | undefined)[] | undefined {
    while (this.position < this.queue.length && this.queue[this.position]!.key < key) this.drop(this.queue[this.position++]!);
    const candidate = this.byKey.get(key);
    if (candidate === undefined) return undefined;
    this.drop(candidate);
    const then = candidate.stat;
    const same = stat.ino === then.ino && stat.size === then.size && stat.mtimeNs === then.mtimeNs && stat.ctimeNs === then.ctimeNs;
    return same && candidate.hashes.length > 0 ? candidate.hashes.slice() : undefined;
  }

  /** Stops reading ahead, and waits for the chunk in flight. */
  async close(): Promise<void> {
    this.closed = true;
    await this.inFlight;
  }

  private drop(candidate: Candidate): void {
    candidate.done = true;
    this.byKey.delete(candidate.key);
  }

  private excluded(relative: Buffer): boolean {
    const isExcluded = this.options.isExcluded;
    if (isExcluded === undefined) return false;
    const parts = splitPath(relative);
    let prefix: Buffer = Buffer.alloc(0);
    for (let i = 0; i < parts.length; i++) {
      prefix = i === 0 ? parts[0]! : Buffer.concat([prefix, SLASH, parts[i]!]);
      if (isExcluded(prefix, i < parts.length - 1)) return true;
    }
    return false;
  }

  /** Starts the next chunk, if any is left and none is in flight. */
  private pump(): void {
    if (this.inFlight !== null || this.closed || this.options.signal?.aborted) return;
    while (this.position < this.queue.length && this.queue[this.position]!.done) this.position++;
    const candidate = this.queue[this.position];
    if (candidate === undefined) return;
    const index = candidate.nextChunk++;
    const offset = index * this.options.chunkSize;
    const length = Math.min(this.options.chunkSize, candidate.size - offset);
    if (offset + length >= candidate.size) candidate.done = true; // its last chunk: the next file comes next
    if (index === 0) this.totals.files++;
    const stat = candidate.stat;
    const request: ReadRequest = { path: candidate.path, offset, length, ino: stat.ino, mtimeNs: stat.mtimeNs, size: candidate.size };
    this.inFlight = this.options.hashPiece(request).then(
      (result) => {
        this.inFlight = null;
        this.totals.bytes += length;
        if (result.ok && !result.changed) {
          candidate.hashes[index] = result.hash;
        } else {
          // Changed or unreadable: the walk will meet it as it is then, and read it.
          candidate.hashes.length = 0;
          this.drop(candidate);
        }
        this.pump();
      },
      () => {
        this.inFlight = null; // the pool went down (the run ends): nothing more to read ahead
        this.closed = true;
      },
    );
  }
}

const SLASH = Buffer.from('/');
