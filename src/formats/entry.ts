// What an index records about one path: kind, metadata and where its content lives.

import { createHash } from 'node:crypto';

export type EntryKind = 'file' | 'dir' | 'symlink' | 'fifo' | 'chardev' | 'blockdev';

/** One stored piece of a file's content: a tar member named by its SHA-256, inside a pack. */
export interface ChunkRef {
  readonly hash: string;
  readonly size: number;
  /** Stem of the pack holding the member, e.g. "000001/00000003". */
  readonly pack: string;
}

export interface Entry {
  readonly key: string;
  readonly kind: EntryKind;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  readonly mode: number;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
  readonly ino: bigint;
  readonly nlink: number;
  readonly size: number;
  readonly uid: number;
  readonly gid: number;
  readonly user: string;
  readonly group: string;
  /** The file's content hash (see contentHash); files only. */
  readonly hash: string | null;
  /** Content chunks in file order; empty for empty files and non-files. */
  readonly chunks: readonly ChunkRef[];
  /** Symlink target bytes; symlinks only. */
  readonly linkTarget: Buffer | null;
  /** Device number; character and block devices only. */
  readonly rdev: number;
}

/**
 * An Entry. Every Entry that code reads in bulk (decoded from an index, built from an lstat) comes from here, so
 * that all have one shape and one field order: V8 then keeps the code that reads them on its fast paths, where
 * entries of several shapes (object spreads, literals in different places) cost it deoptimizations and
 * recompiles in every run.
 */
export function makeEntry(
  key: string,
  kind: EntryKind,
  mode: number,
  mtimeNs: bigint,
  ctimeNs: bigint,
  ino: bigint,
  nlink: number,
  size: number,
  uid: number,
  gid: number,
  user: string,
  group: string,
  hash: string | null,
  chunks: readonly ChunkRef[],
  linkTarget: Buffer | null,
  rdev: number,
): Entry {
  return { key, kind, mode, mtimeNs, ctimeNs, ino, nlink, size, uid, gid, user, group, hash, chunks, linkTarget, rdev };
}

/** A copy of `entry` with another content hash and chunk list. */
export function withContent(e: Entry, hash: string | null, chunks: readonly ChunkRef[]): Entry {
  return makeEntry(e.key, e.kind, e.mode, e.mtimeNs, e.ctimeNs, e.ino, e.nlink, e.size, e.uid, e.gid, e.user, e.group, hash, chunks, e.linkTarget, e.rdev);
}

const KIND_CODES: Record<EntryKind, string> = {
  file: 'f',
  dir: 'd',
  symlink: 'l',
  fifo: 'p',
  chardev: 'c',
  blockdev: 'b',
};
const KINDS_BY_CODE = new Map(Object.entries(KIND_CODES).map(([kind, code]) => [code, kind as EntryKind]));

/** SHA-256 of nothing: the content hash of every empty file. */
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export function kindCode(kind: EntryKind): string {
  return KIND_CODES[kind];
}

export function kindFromCode(code: string): EntryKind | undefined {
  return KINDS_BY_CODE.get(code);
}

/**
 * True when two entries record the same thing, so a new layer need not list it again.
 * Hard-link group (ino) counts only for multiply-linked files.
 */
export function sameEntry(a: Entry, b: Entry): boolean {
  if (
    a.key !== b.key ||
    a.kind !== b.kind ||
    a.mode !== b.mode ||
    a.mtimeNs !== b.mtimeNs ||
    a.ctimeNs !== b.ctimeNs ||
    a.ino !== b.ino ||
    a.nlink !== b.nlink ||
    a.size !== b.size ||
    a.uid !== b.uid ||
    a.gid !== b.gid ||
    a.user !== b.user ||
    a.group !== b.group ||
    a.hash !== b.hash ||
    a.rdev !== b.rdev ||
    a.chunks.length !== b.chunks.length
  ) {
    return false;
  }
  if ((a.linkTarget === null) !== (b.linkTarget === null)) return false;
  if (a.linkTarget !== null && b.linkTarget !== null && !a.linkTarget.equals(b.linkTarget)) return false;
  return a.chunks.every((c, i) => c.hash === b.chunks[i]!.hash && c.pack === b.chunks[i]!.pack);
}

/**
 * A file's content hash, from the SHA-256 of each of its chunks in order: for a file of one chunk that chunk's
 * hash (the SHA-256 of the content, as `sha256sum` prints it); otherwise the SHA-256 of the chunk hashes, each
 * followed by a newline (for no chunks, an empty file, that is the SHA-256 of nothing). So a big file's hash
 * needs no second pass over its content, and `sha256sum` of each chunk, piped to `sha256sum`, checks it by hand.
 */
export function contentHash(chunkHashes: readonly string[]): string {
  if (chunkHashes.length === 1) return chunkHashes[0]!;
  const list = createHash('sha256');
  for (const hash of chunkHashes) list.update(`${hash}\n`, 'latin1');
  return list.digest('hex');
}
