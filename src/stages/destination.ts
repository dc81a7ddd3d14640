// The only code that writes a restore destination: every path stays below DEST and no symlink is ever followed.
//
// Paths come from validated keys (no "", ".", ".." or NUL components). Parent directories are checked with
// lstat (or were made by us) before anything is created in them; whatever is in the way of a directory the
// archive wants (a symlink, a file) is removed, never followed. Files are written to a temporary name opened
// with O_EXCL|O_NOFOLLOW and renamed into place; symlinks are created the same way, after everything else.

import {
  chmodSync,
  closeSync,
  constants as fsConstants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  promises as fsp,
  renameSync,
  unlinkSync,
  utimesSync,
  writevSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { BlanketError, ErrorCodes, errnoCode } from '../formats/errors.js';
import { displayPath } from '../formats/path-key.js';

const run = promisify(execFile);
const SLASH = Buffer.from('/');
const TEMP_PREFIX = '.blanket-tmp-';

export interface Metadata {
  readonly mode: number;
  readonly mtimeNs: bigint;
  /** Numeric owner to set, or null to leave ownership alone (not root). */
  readonly owner: { uid: number; gid: number } | null;
}

/** Directories remembered as checked (real directories, not symlinks) before the memory is cleared. */
const MAX_VERIFIED_DIRS = 4096;

export class Destination {
  private readonly rootBuf: Buffer;
  /** Temporary names: one random token per restore and a counter (a random name per file cost ~8 µs each). */
  private readonly tempToken = randomBytes(6).toString('hex');
  private tempCounter = 0;
  /**
   * Directories checked (real directories, not symlinks) or made by this run, by their path as latin1; true for those
   * this run made, which held nothing else then: a name in one of them cannot predate this restore.
   */
  private readonly verifiedDirs = new Map<string, boolean>();

  constructor(
    readonly root: string,
    /** DEST held nothing when the restore began. */
    private readonly rootFresh = false,
    /**
     * DEST has the setgid bit: every directory made in it inherits the bit, and every file made in those takes
     * DEST's group, not this process's, so no new file's owner can be assumed.
     */
    readonly rootSetgid = false,
  ) {
    this.rootBuf = Buffer.from(root);
  }

  static async open(root: string): Promise<Destination> {
    await fsp.mkdir(root, { recursive: true });
    const real = await fsp.realpath(root);
    const st = await fsp.lstat(real);
    if (!st.isDirectory()) throw new BlanketError(ErrorCodes.USAGE, `restore destination ${root} is not a directory`, { subject: root });
    const dir = await fsp.opendir(real);
    const empty = (await dir.read()) === null;
    await dir.close();
    return new Destination(real, empty, (st.mode & 0o2000) !== 0); // S_ISGID
  }

  absolute(relative: Buffer): Buffer {
    return relative.length === 0 ? this.rootBuf : Buffer.concat([this.rootBuf, SLASH, relative]);
  }

  /**
   * Makes sure every parent of `relative` is a real directory inside DEST. True when the innermost one was made
   * by this run (or is DEST, empty at the start): then nothing by the name `relative` predates this restore.
   */
  async ensureParents(relative: Buffer): Promise<boolean> {
    // The parent alone: once it is verified, so were its own parents (and forgetting one forgets all below it).
    const slash = relative.lastIndexOf(0x2f);
    return slash < 0 ? this.rootFresh : this.ensureDirectory(relative.subarray(0, slash), 0o700);
  }

  /**
   * Makes `relative` a real directory (creating it, or replacing a non-directory in the way). True when this run
   * made it (as far as the bounded memory of checked directories knows).
   */
  async ensureDirectory(relative: Buffer, createMode = 0o700): Promise<boolean> {
    if (relative.length === 0) return this.rootFresh;
    const id = relative.toString('latin1');
    const known = this.verifiedDirs.get(id);
    if (known !== undefined) return known;
    const parentFresh = await this.ensureParents(relative);
    const abs = this.absolute(relative);
    // Nothing can be in the way in a directory this run made: no lstat first (unless this run made it already, and
    // the bounded memory forgot: EEXIST, then checked as any other). Synchronous calls, as in placeFile: a
    // thread-pool round trip (~0.2 ms) each held the planning of a restore up by ~0.4 s per 2,000 directories.
    let made = false;
    if (parentFresh) {
      try {
        mkdirSync(abs, createMode);
        made = true;
      } catch (error) {
        if (errnoCode(error) !== 'EEXIST') throw error;
      }
    }
    if (!made) {
      const st = lstatSync(abs, { throwIfNoEntry: false });
      if (st === undefined || !st.isDirectory()) {
        if (st !== undefined) unlinkSync(abs); // a symlink or file where the archive has a directory: replace it, never follow it
        mkdirSync(abs, createMode);
        made = true;
      }
    }
    // A cache (of lstats saved), not a record of the tree: bounded, so memory does not grow with the tree.
    if (this.verifiedDirs.size >= MAX_VERIFIED_DIRS) this.verifiedDirs.clear();
    this.verifiedDirs.set(id, made);
    return made;
  }

  private nextTempName(): string {
    return `${this.tempToken}-${(this.tempCounter++).toString(36)}`;
  }

  /** A temporary file beside `relative` (created now only when `pieces` > 1); write its content, then finish(). */
  async createTemp(relative: Buffer, pieces: number): Promise<TempFile> {
    await this.ensureParents(relative);
    const temp = this.tempFor(relative);
    if (pieces > 1) await temp.create();
    return temp;
  }

  /** A temporary name in the directory of `relative`, whose parents must be in place (ensureParents); no file yet. */
  tempFor(relative: Buffer): TempFile {
    const slash = relative.lastIndexOf(0x2f);
    const parent = slash < 0 ? Buffer.alloc(0) : relative.subarray(0, slash);
    // absolute(parent) is DEST itself for a top-level file: the temporary name goes inside it, never beside it.
    return new TempFile(Buffer.concat([this.absolute(parent), SLASH, Buffer.from(TEMP_PREFIX + this.nextTempName())]));
  }

  /** Moves a finished temporary file (or symlink) into place, replacing whatever is there. */
  async replace(tempAbs: Buffer, relative: Buffer): Promise<void> {
    const target = this.absolute(relative);
    if (!placeFile(tempAbs, target)) {
      // A directory is in the way: the archive says this path is not a directory any more. But if this run made it a
      // directory for entries the archive lists below it, the archive contradicts itself (e.g. a symlink "a" and a
      // file "a/x"): keep the directory, or later work on those entries (metadata, hard links) would go through
      // whatever replaced it.
      if (this.verifiedDirs.has(relative.toString('latin1'))) {
        throw new BlanketError(ErrorCodes.UNSAFE_ENTRY, 'not restored: the archive also lists entries below this path, so it must stay a directory', {
          subject: displayPath(relative),
        });
      }
      await fsp.rm(target, { recursive: true, force: true });
      this.forgetDirsUnder(relative);
      await fsp.rename(tempAbs, target);
    }
  }

  async symlink(relative: Buffer, target: Buffer, meta: Metadata): Promise<void> {
    await this.ensureParents(relative);
    const temp = Buffer.concat([this.absolute(relative), Buffer.from('.' + TEMP_PREFIX + this.nextTempName())]);
    await fsp.symlink(target, temp);
    try {
      if (meta.owner) await fsp.lchown(temp, meta.owner.uid, meta.owner.gid);
      const seconds = nsToSeconds(meta.mtimeNs);
      await fsp.lutimes(temp, seconds, seconds);
      await this.replace(temp, relative);
    } catch (error) {
      await fsp.rm(temp, { force: true });
      throw error;
    }
  }

  /** Hard link `relative` to the already restored `existing`. */
  async hardLink(relative: Buffer, existing: Buffer): Promise<void> {
    await this.ensureParents(relative);
    const source = await fsp.lstat(this.absolute(existing));
    const current = await fsp.lstat(this.absolute(relative)).catch((error: unknown) => {
      if (errnoCode(error) === 'ENOENT' || errnoCode(error) === 'ENOTDIR') return null;
      throw error;
    });
    // Already a name of that inode: rename(2) onto it would do nothing and leave the temporary link behind.
    if (current !== null && current.dev === source.dev && current.ino === source.ino) return;
    const temp = Buffer.concat([this.absolute(relative), Buffer.from('.' + TEMP_PREFIX + this.nextTempName())]);
    await fsp.link(this.absolute(existing), temp);
    try {
      await this.replace(temp, relative);
    } catch (error) {
      await fsp.rm(temp, { force: true });
      throw error;
    }
  }

  /** FIFOs and device nodes (Node has no mknod: the coreutils commands do it). */
  async special(relative: Buffer, kind: 'fifo' | 'chardev' | 'blockdev', rdev: number, meta: Metadata): Promise<void> {
    await this.ensureParents(relative);
    // execFile arguments are strings (re-encoded as UTF-8), so raw-byte names cannot pass through them:
    // create under an ASCII temporary name in DEST's root, then rename into place.
    const asciiTemp = Buffer.concat([this.rootBuf, SLASH, Buffer.from(TEMP_PREFIX + this.nextTempName())]);
    if (kind === 'fifo') await run('mkfifo', ['-m', '600', asciiTemp.toString()]);
    else await run('mknod', ['-m', '600', asciiTemp.toString(), kind === 'chardev' ? 'c' : 'b', String(major(rdev)), String(minor(rdev))]);
    try {
      applyMetadata(asciiTemp, meta);
      await this.replace(asciiTemp, relative);
    } catch (error) {
      await fsp.rm(asciiTemp, { force: true });
      throw error;
    }
  }

  /**
   * Sets mode, owner and mtime of a directory or file in place (directories: at the very end). `ownerIsFinal`:
   * made by this run with the owner it is to have (see ownerOfNewEntries), so no chown.
   */
  async setMetadata(relative: Buffer, meta: Metadata, ownerIsFinal = false): Promise<void> {
    applyMetadata(this.absolute(relative), ownerIsFinal ? { ...meta, owner: null } : meta);
  }

  /**
   * Whether an entry this run makes in a directory it made (not DEST's own setgid group) gets `owner` without a
   * chown: the owner is this process's.
   */
  ownerOfNewEntries(owner: Metadata['owner']): boolean {
    return owner === null || (!this.rootSetgid && isProcessOwner(owner));
  }

  private forgetDirsUnder(relative: Buffer): void {
    const prefix = relative.toString('latin1');
    for (const id of this.verifiedDirs.keys()) if (id === prefix || id.startsWith(prefix + '/')) this.verifiedDirs.delete(id);
  }
}

/** `parts` without their first `count` bytes (after a short write). */
function skipBytes(parts: readonly Buffer[], count: number): readonly Buffer[] {
  let i = 0;
  while (i < parts.length && count >= parts[i]!.length) count -= parts[i++]!.length;
  if (i === parts.length) return [];
  return count === 0 ? parts.slice(i) : [parts[i]!.subarray(count), ...parts.slice(i + 1)];
}

/**
 * Moves a written temporary file to its final name: false, with nothing done, when a directory (or, through a
 * parent, a non-directory) is in the way, which only Destination.replace may resolve. Synchronous: a rename is
 * one quick syscall, and a thread-pool round trip per file dominated restore time.
 */
export function placeFile(tempAbs: Buffer, finalAbs: Buffer): boolean {
  try {
    renameSync(tempAbs, finalAbs);
    return true;
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR') return false;
    throw error;
  }
}

/** How a new file comes out of open(2), so that calls which would change nothing are left out. */
export interface CreatedAs {
  /** Permissions passed to open(): the final ones when the umask keeps them all and no special bit is set, else 0o600. */
  readonly mode: number;
  /** open() gives the final mode: no chmod. */
  readonly modeIsFinal: boolean;
  /** open() gives the final owner (this process's, in a directory this run made, without setgid): no chown. */
  readonly ownerIsFinal: boolean;
}

const PROCESS_UID = process.geteuid?.();
const PROCESS_GID = process.getegid?.();

function isProcessOwner(owner: { readonly uid: number; readonly gid: number }): boolean {
  return owner.uid === PROCESS_UID && owner.gid === PROCESS_GID;
}

/** What open() will make of a new file with `meta` under `umask`, in a directory this run made or not. */
export function createdAs(meta: Metadata, inNewDirectory: boolean, umask: number): CreatedAs {
  const permissions = meta.mode & 0o777;
  const modeIsFinal = (meta.mode & 0o7777) === permissions && (permissions & umask) === 0;
  const owner = meta.owner;
  const ownerIsFinal = owner === null || (inNewDirectory && isProcessOwner(owner));
  return { mode: modeIsFinal ? permissions : 0o600, modeIsFinal, ownerIsFinal };
}

/**
 * Creates a temporary file (O_EXCL, never through a symlink) for a one-piece file and returns its descriptor.
 * Synchronous calls: for small files they cost less than the round trips of asynchronous ones.
 */
export function openNewFile(tempAbs: Buffer, created: CreatedAs): number {
  return openSync(tempAbs, fsConstants.O_WRONLY | fsConstants.O_NOFOLLOW | fsConstants.O_CREAT | fsConstants.O_EXCL, created.mode);
}

/** Opens a file created earlier (TempFile.create) for pieces written at their offsets. */
export function openForPieces(tempAbs: Buffer): number {
  return openSync(tempAbs, fsConstants.O_WRONLY | fsConstants.O_NOFOLLOW);
}

/** Gives a file opened by openNewFile its owner, mode and mtime, and closes it. */
export function finishNewFile(fd: number, meta: Metadata, created: CreatedAs): void {
  try {
    setMetadata(fd, meta, created);
  } finally {
    closeSync(fd);
  }
}

/** Writes `parts` at `offset` with writev, never joined. */
export function writeAllAt(fd: number, parts: readonly Buffer[], offset: number): void {
  for (let rest = parts, at = offset; rest.length > 0; ) {
    const written = writevSync(fd, rest as Buffer[], at);
    if (written === 0) throw new Error('the file system took no bytes');
    at += written;
    rest = skipBytes(rest, written);
  }
}

/**
 * A temporary file beside its final name. A one-piece file is made by openNewFile and finishNewFile (in a
 * restore worker); a file of several chunks is created up front (its chunks may arrive from different packs at
 * once), its pieces written through openForPieces, and finished here.
 */
export class TempFile {
  constructor(
    readonly path: Buffer,
    /** The file exists already (create() was called for it). */
    private created = false,
  ) {}

  /** Creates the (empty) file now, for pieces written later at their offsets. */
  async create(): Promise<void> {
    const handle = await fsp.open(this.path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
    this.created = true;
    await handle.close();
  }

  /** Sets owner, mode and mtime (creating the file if nothing was written: an empty file) and closes it. */
  async finish(meta: Metadata): Promise<void> {
    const create = this.created ? 0 : fsConstants.O_CREAT | fsConstants.O_EXCL;
    const handle = await fsp.open(this.path, fsConstants.O_WRONLY | fsConstants.O_NOFOLLOW | create, 0o600);
    this.created = true;
    try {
      setMetadata(handle.fd, meta);
    } finally {
      await handle.close();
    }
  }

  async discard(): Promise<void> {
    await fsp.rm(this.path, { force: true });
  }
}

/** Owner, mode, mtime of an open file (chown first: it clears setuid/setgid bits, which chmod then sets). */
function setMetadata(fd: number, meta: Metadata, created?: CreatedAs): void {
  if (meta.owner && created?.ownerIsFinal !== true) fchownSync(fd, meta.owner.uid, meta.owner.gid);
  if (created?.modeIsFinal !== true) fchmodSync(fd, meta.mode);
  const seconds = nsToSeconds(meta.mtimeNs);
  futimesSync(fd, seconds, seconds);
}

/** Synchronous, as placeFile: three quick syscalls, which thread-pool round trips made ~0.6 ms. */
function applyMetadata(abs: Buffer, meta: Metadata): void {
  // chown first: it clears setuid/setgid bits, which chmod then sets.
  if (meta.owner) lchownSync(abs, meta.owner.uid, meta.owner.gid);
  chmodSync(abs, meta.mode);
  const seconds = nsToSeconds(meta.mtimeNs);
  utimesSync(abs, seconds, seconds);
}

/**
 * Node takes times as seconds in a double and truncates to whole microseconds, so nanoseconds cannot be set
 * from Node (a platform limit); half a microsecond of bias makes the truncation land on the right microsecond.
 */
export function nsToSeconds(ns: bigint): number {
  const seconds = ns / 1_000_000_000n;
  const micros = (ns % 1_000_000_000n) / 1000n;
  return Number(seconds) + (Number(micros) + 0.5) / 1e6;
}

function major(rdev: number): number {
  return ((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
}

function minor(rdev: number): number {
  return (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
}
