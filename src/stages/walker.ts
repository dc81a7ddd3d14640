// Source tree walker: yields every entry under the backup root in path-key order, one directory at a time, resuming after a key.
//
// Order (equal to sorting all keys as strings, see formats/path-key.ts):
//
//     yield root                                   key "-"
//     stack = [root]
//     while stack not empty:
//       D = pop(stack)
//       names = readdir(D) sorted bytewise         (done before D itself was yielded, see below)
//       for name in names: lstat, yield D/name     keys P0<name>.   (P = contents prefix of D)
//       push D's child directories, reversed,      their contents P1<name>.… follow, in name order
//         so the first one is processed next
//
//   A child directory is listed right after its lstat, before it is yielded, so that a listing
//   failure can be reported on the entry itself (contentsUnknown). Listings wait on the stack
//   (bounded by MAX_PENDING_NAMES; beyond it the listing is dropped and re-read on descent). A listing
//   read on descent (dropped, or of a directory resumed into) that fails yields an UnlistedContents.
//
// Resume skip, with `after` = K (each child costs no syscall unless its fate needs one):
//
//     key(child) > K                 -> yield it (lstat, readlink); a directory is also descended
//     key(child) <= K, contents cp:
//       K < cp or K starts with cp   -> contents (partly) after K: descend if it is a directory
//                                       (Dirent type; lstat only if the type is unknown)
//       otherwise                    -> whole subtree <= K: skip, no syscall at all
//
//     e.g. K = key(a/x/1):  a b c (skipped)  a/x a/y (skipped)  a/x/1 (skipped)  a/x/2 … b/… (yielded)

import * as nodeFs from 'node:fs';
import type { BigIntStats, Dirent } from 'node:fs';
import * as nodePath from 'node:path';
import { BlanketError, ErrorCodes, errnoCode } from '../formats/errors.js';
import { BEFORE_ALL, ROOT_CONTENTS_PREFIX, ROOT_KEY, childContentsPrefix, childKey } from '../formats/path-key.js';

/** What consumers of the walk use of an entry's lstat: the fields of Node's BigIntStats they read. */
export type EntryStat = Pick<
  BigIntStats,
  'ino' | 'mode' | 'nlink' | 'uid' | 'gid' | 'rdev' | 'size' | 'mtimeNs' | 'ctimeNs' | 'isFile' | 'isDirectory' | 'isSymbolicLink' | 'isFIFO' | 'isCharacterDevice' | 'isBlockDevice' | 'isSocket'
>;

/**
 * An lstat kept with a walked entry: only the fields consumers read. Node's BigIntStats also holds the access
 * and birth times, the times in ms and four Date objects (~1.4 KB in all); the walk keeps thousands of entries
 * queued behind files being read, and these are a quarter of that.
 */
export class LeanStat implements EntryStat {
  constructor(
    readonly ino: bigint,
    readonly mode: bigint,
    readonly nlink: bigint,
    readonly uid: bigint,
    readonly gid: bigint,
    readonly rdev: bigint,
    readonly size: bigint,
    readonly mtimeNs: bigint,
    readonly ctimeNs: bigint,
  ) {
    this.typeBits = Number(mode) & S_IFMT;
  }

  /** The file type bits of mode, as a number: the is*() tests do no BigInt arithmetic. */
  private readonly typeBits: number;

  static of(stat: BigIntStats): LeanStat {
    return new LeanStat(stat.ino, stat.mode, stat.nlink, stat.uid, stat.gid, stat.rdev, stat.size, stat.mtimeNs, stat.ctimeNs);
  }

  private type(): number {
    return this.typeBits;
  }
  isFile(): boolean {
    return this.type() === S_IFREG;
  }
  isDirectory(): boolean {
    return this.type() === S_IFDIR;
  }
  isSymbolicLink(): boolean {
    return this.type() === S_IFLNK;
  }
  isFIFO(): boolean {
    return this.type() === S_IFIFO;
  }
  isCharacterDevice(): boolean {
    return this.type() === S_IFCHR;
  }
  isBlockDevice(): boolean {
    return this.type() === S_IFBLK;
  }
  isSocket(): boolean {
    return this.type() === S_IFSOCK;
  }
}

const { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO, S_IFCHR, S_IFBLK, S_IFSOCK } = nodeFs.constants;

export interface WalkedEntry {
  /** Path key (ROOT_KEY for the root itself). */
  key: string;
  /** Relative path bytes, empty for the root, components joined by "/". */
  path: Buffer;
  /** lstat of the entry (the fields consumers read). */
  stat: EntryStat;
  /** For symlinks: the link target as raw bytes. */
  linkTarget?: Buffer;
  /** A directory whose listing failed (EACCES, EIO...): its previous contents must be kept, not treated as deleted. */
  contentsUnknown?: boolean;
}

/**
 * Not an entry: the contents of a directory could not be listed when the walk came to them, after the
 * directory's own entry had gone out (or was before the resume point). Consumers keep what they knew of the
 * paths under `contentsPrefix` rather than take them as deleted.
 */
export interface UnlistedContents {
  readonly unlisted: true;
  readonly contentsPrefix: string;
  readonly path: Buffer;
}

/** What the walk yields: entries, and now and then an UnlistedContents. */
export type WalkItem = WalkedEntry | UnlistedContents;

export function isUnlisted(item: WalkItem): item is UnlistedContents {
  return (item as Partial<UnlistedContents>).unlisted === true;
}

/** A problem with one entry; `message` does not repeat the path (consumers show `path` next to it). */
export type WalkProblem = {
  kind: 'vanished' | 'unreadable' | 'excluded-root' | 'other';
  path: Buffer;
  message: string;
  code?: string;
};

/** The file-system calls the walker makes; node:fs satisfies it. Injectable for tests. */
export interface WalkFs {
  readdirSync(path: Buffer, options: { encoding: 'buffer'; withFileTypes: true }): Dirent<Buffer>[];
  lstatSync(path: Buffer, options: { bigint: true }): BigIntStats;
  readlinkSync(path: Buffer, options: { encoding: 'buffer' }): Buffer;
}

export interface WalkOptions {
  /** Absolute source directory. */
  root: string;
  /** Resume: yield only entries whose key > after (default BEFORE_ALL: everything, including the root). */
  after?: string;
  /** Consulted for each child that would be yielded or descended; excluded entries are neither. */
  isExcluded?: (relPath: Buffer, isDir: boolean) => boolean;
  /** Don't descend into directories on another device than the root (they are still yielded). */
  oneFileSystem?: boolean;
  signal?: AbortSignal;
  /** Per-entry problems; the walk goes on. Without a handler they are dropped. */
  onProblem?: (problem: WalkProblem) => void;
  /** File-system layer (default node:fs). */
  fs?: WalkFs;
}

/** How many syscalls the walker makes between returns to the event loop. */
const SYSCALLS_PER_TICK = 256;
/** Upper bound on directory names held in pre-read listings waiting on the stack. */
const MAX_PENDING_NAMES = 65536;

const SLASH = Buffer.from('/');
const EMPTY = Buffer.alloc(0);
/** Yielded by the core every SYSCALLS_PER_TICK syscalls; `walk` gives the event loop a turn on it. */
const TICK = Symbol('tick');

interface Frame {
  /** Absolute path of the directory, followed by "/". */
  absSlash: Buffer;
  /** Relative path of the directory followed by "/", empty for the root. */
  relSlash: Buffer;
  /** Relative path of the directory (for problems). */
  rel: Buffer;
  /** Contents prefix of the directory. */
  prefix: string;
  /** Sorted listing read before the directory was yielded, or null to read it on descent. */
  listing: Dirent<Buffer>[] | null;
}

/**
 * Walks the tree under `options.root` in key order. Synchronous fs calls, but the event loop gets a turn
 * every SYSCALLS_PER_TICK calls, and the AbortSignal is checked then and at every directory.
 */
export async function* walk(options: WalkOptions): AsyncGenerator<WalkItem> {
  for await (const batch of walkBatches(options)) yield* batch;
}

/**
 * The same walk in batches: the entries found between two turns of the event loop (at most SYSCALLS_PER_TICK
 * syscalls' worth). Consumers that handle a batch synchronously pay one promise per batch, not per entry.
 */
export async function* walkBatches(options: WalkOptions): AsyncGenerator<WalkItem[]> {
  let batch: WalkItem[] = [];
  for (const item of walkCore(options)) {
    if (item === TICK) {
      if (batch.length > 0) {
        yield batch;
        batch = [];
      }
      await new Promise<void>((resolve) => setImmediate(resolve));
      checkAborted(options.signal);
    } else {
      batch.push(item);
    }
  }
  if (batch.length > 0) yield batch;
}

/** The batches of walkBatches, synchronously: for a thread that does nothing else (see walk-thread.ts). */
export function* walkSyncBatches(options: WalkOptions): Generator<WalkItem[]> {
  let batch: WalkItem[] = [];
  for (const item of walkCore(options)) {
    if (item !== TICK) batch.push(item);
    else if (batch.length > 0) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

/** Same walk as `walk`, fully synchronous (never gives the event loop a turn). */
export function* walkSync(options: WalkOptions): Generator<WalkItem> {
  for (const item of walkCore(options)) if (item !== TICK) yield item;
}

function* walkCore(options: WalkOptions): Generator<WalkItem | typeof TICK> {
  const fs: WalkFs = options.fs ?? nodeFs;
  const after = options.after ?? BEFORE_ALL;
  const isExcluded = options.isExcluded;
  const onProblem = options.onProblem;
  const signal = options.signal;
  checkAborted(signal);

  let syscalls = 0;
  let pendingNames = 0;

  const problem = (kind: WalkProblem['kind'], path: Buffer, message: string, error?: unknown): void => {
    const code = errnoCode(error);
    const detail = error instanceof Error ? `: ${error.message}` : '';
    onProblem?.(code === undefined ? { kind, path, message: message + detail } : { kind, path, message: message + detail, code });
  };

  // The root: must exist and be a directory (a symlink given as the root is resolved once).
  let rootAbs = nodePath.resolve(options.root);
  let rootStat = lstatRoot(fs, rootAbs);
  if (rootStat.isSymbolicLink()) {
    try {
      rootAbs = nodeFs.realpathSync(rootAbs);
    } catch (error) {
      throw sourceError(rootAbs, error);
    }
    rootStat = lstatRoot(fs, rootAbs);
  }
  if (!rootStat.isDirectory()) {
    throw new BlanketError(ErrorCodes.SOURCE, `source ${rootAbs} is not a directory`, { subject: rootAbs });
  }
  const rootDev = rootStat.dev;
  const rootAbsBuf = Buffer.from(rootAbs);
  let rootListing: Dirent<Buffer>[];
  try {
    rootListing = readSorted(fs, rootAbsBuf);
  } catch (error) {
    throw new BlanketError(ErrorCodes.SOURCE, `cannot list source directory ${rootAbs}: ${(error as Error).message}`, {
      subject: rootAbs,
      cause: error,
    });
  }
  syscalls += 2;
  if (ROOT_KEY > after) yield { key: ROOT_KEY, path: EMPTY, stat: LeanStat.of(rootStat) };

  const stack: Frame[] = [
    {
      absSlash: rootAbs.endsWith('/') ? rootAbsBuf : Buffer.concat([rootAbsBuf, SLASH]),
      relSlash: EMPTY,
      rel: EMPTY,
      prefix: ROOT_CONTENTS_PREFIX,
      listing: rootListing,
    },
  ];

  for (let frame = stack.pop(); frame !== undefined; frame = stack.pop()) {
    checkAborted(signal);
    let listing = frame.listing;
    if (listing !== null) {
      pendingNames -= listing.length;
    } else {
      // Not read ahead: a directory resumed into (its entry is <= after), or one whose listing was dropped.
      syscalls++;
      try {
        listing = readSorted(fs, frame.absSlash.subarray(0, frame.absSlash.length - 1));
      } catch (error) {
        const code = errnoCode(error);
        if (code === 'ENOENT' || code === 'ENOTDIR') {
          problem('vanished', frame.rel, 'directory vanished during the walk', error);
        } else {
          // Its entry (if yielded at all in this walk) has already gone out, maybe already used: say it now.
          problem('unreadable', frame.rel, 'cannot list directory (its previous contents are kept)', error);
          yield { unlisted: true, contentsPrefix: frame.prefix, path: frame.rel };
        }
        continue;
      }
    }

    const childDirs: Frame[] = [];
    for (const dirent of listing) {
      const name = dirent.name;
      const key = childKey(frame.prefix, name);
      const yieldIt = key > after;
      let contentsPrefix: string | undefined;
      if (!yieldIt) {
        contentsPrefix = childContentsPrefix(frame.prefix, name);
        // Whole subtree <= after: nothing to yield or descend, and no syscall spent on it.
        if (after > contentsPrefix && !after.startsWith(contentsPrefix)) continue;
      }
      const kind = direntKind(dirent);
      if (!yieldIt && kind === 'nondir') continue;

      const abs = Buffer.concat([frame.absSlash, name]);
      const rel = frame.relSlash.length === 0 ? name : Buffer.concat([frame.relSlash, name]);
      let stat: BigIntStats | undefined;
      if (kind === 'unknown' || (!yieldIt && options.oneFileSystem === true)) {
        syscalls++;
        stat = lstatChild(fs, abs, rel, problem);
        if (stat === undefined) continue;
        if (!yieldIt && !stat.isDirectory()) continue;
      }
      const isDir = stat !== undefined ? stat.isDirectory() : kind === 'dir';
      if (isExcluded !== undefined && isExcluded(rel, isDir)) continue;

      if (!yieldIt) {
        // Resumed into: contents partly (or wholly) after `after`, entry itself not yielded.
        if (options.oneFileSystem === true && stat !== undefined && stat.dev !== rootDev) continue;
        childDirs.push(childFrame(abs, rel, contentsPrefix!, null));
        continue;
      }

      if (stat === undefined) {
        syscalls++;
        stat = lstatChild(fs, abs, rel, problem);
        if (stat === undefined) continue;
      }
      const entry: WalkedEntry = { key, path: rel, stat: LeanStat.of(stat) };

      if (stat.isSymbolicLink()) {
        syscalls++;
        try {
          entry.linkTarget = fs.readlinkSync(abs, { encoding: 'buffer' });
        } catch (error) {
          const code = errnoCode(error);
          if (code === 'ENOENT' || code === 'ENOTDIR') problem('vanished', rel, 'vanished during the walk', error);
          else problem('unreadable', rel, 'cannot read symbolic link', error);
          continue;
        }
      } else if (stat.isDirectory() && !(options.oneFileSystem === true && stat.dev !== rootDev)) {
        // List it now, so that a failure shows on the entry itself.
        syscalls++;
        let childListing: Dirent<Buffer>[] | null = null;
        let listed = true;
        try {
          childListing = readSorted(fs, abs);
        } catch (error) {
          const code = errnoCode(error);
          if (code === 'ENOENT' || code === 'ENOTDIR') {
            problem('vanished', rel, 'directory vanished during the walk', error);
            continue;
          }
          listed = false;
          entry.contentsUnknown = true;
          problem('unreadable', rel, 'cannot list directory (its previous contents are kept)', error);
        }
        if (listed) {
          // Keep the listing for the descent unless too many names are already waiting (then it is re-read).
          if (childListing !== null && pendingNames + childListing.length > MAX_PENDING_NAMES) childListing = null;
          if (childListing !== null) pendingNames += childListing.length;
          childDirs.push(childFrame(abs, rel, childContentsPrefix(frame.prefix, name), childListing));
        }
      }

      yield entry;
      if (syscalls >= SYSCALLS_PER_TICK) {
        syscalls = 0;
        yield TICK;
      }
    }
    for (let i = childDirs.length - 1; i >= 0; i--) stack.push(childDirs[i]!);
    if (syscalls >= SYSCALLS_PER_TICK) {
      syscalls = 0;
      yield TICK;
    }
  }
}

function childFrame(abs: Buffer, rel: Buffer, prefix: string, listing: Dirent<Buffer>[] | null): Frame {
  return { absSlash: Buffer.concat([abs, SLASH]), relSlash: Buffer.concat([rel, SLASH]), rel, prefix, listing };
}

function readSorted(fs: WalkFs, dir: Buffer): Dirent<Buffer>[] {
  const listing = fs.readdirSync(dir, { encoding: 'buffer', withFileTypes: true });
  listing.sort((a, b) => Buffer.compare(a.name, b.name));
  return listing;
}

function direntKind(dirent: Dirent<Buffer>): 'dir' | 'nondir' | 'unknown' {
  if (dirent.isDirectory()) return 'dir';
  if (
    dirent.isFile() ||
    dirent.isSymbolicLink() ||
    dirent.isFIFO() ||
    dirent.isSocket() ||
    dirent.isCharacterDevice() ||
    dirent.isBlockDevice()
  ) {
    return 'nondir';
  }
  return 'unknown';
}

function lstatChild(
  fs: WalkFs,
  abs: Buffer,
  rel: Buffer,
  problem: (kind: WalkProblem['kind'], path: Buffer, message: string, error?: unknown) => void,
): BigIntStats | undefined {
  try {
    return fs.lstatSync(abs, { bigint: true });
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') problem('vanished', rel, 'vanished during the walk', error);
    else if (code === 'EACCES' || code === 'EPERM' || code === 'EIO') problem('unreadable', rel, 'cannot stat', error);
    else problem('other', rel, 'cannot stat', error);
    return undefined;
  }
}

function lstatRoot(fs: WalkFs, rootAbs: string): BigIntStats {
  try {
    return fs.lstatSync(Buffer.from(rootAbs), { bigint: true });
  } catch (error) {
    throw sourceError(rootAbs, error);
  }
}

function sourceError(rootAbs: string, error: unknown): BlanketError {
  const message =
    errnoCode(error) === 'ENOENT'
      ? `source directory ${rootAbs} does not exist`
      : `cannot read source directory ${rootAbs}: ${(error as Error).message}`;
  return new BlanketError(ErrorCodes.SOURCE, message, { subject: rootAbs, cause: error });
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) {
    throw new BlanketError(ErrorCodes.ABORTED, 'walk aborted', { cause: signal.reason });
  }
}
