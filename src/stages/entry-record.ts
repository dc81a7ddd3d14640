// What an index records for a walked path: the record built from its lstat, and whether it is still the one
// the previous state holds.

import { EMPTY_SHA256, makeEntry, type ChunkRef, type Entry, type EntryKind } from '../formats/entry.js';
import type { OwnerNames } from './owner-names.js';
import type { WalkedEntry } from './walker.js';

/** The record of a walked path whose content (for a file) is `hash` in `chunks`. */
export function entryFromStat(
  key: string,
  walked: WalkedEntry,
  kind: EntryKind,
  hash: string | null,
  chunks: readonly ChunkRef[],
  owners: Pick<OwnerNames, 'user' | 'group'>,
): Entry {
  const st = walked.stat;
  const uid = Number(st.uid);
  const gid = Number(st.gid);
  return makeEntry(
    key,
    kind,
    Number(st.mode) & 0o7777,
    st.mtimeNs,
    st.ctimeNs,
    st.ino,
    Number(st.nlink),
    kind === 'file' ? Number(st.size) : 0,
    uid,
    gid,
    owners.user(uid),
    owners.group(gid),
    hash,
    chunks,
    kind === 'symlink' ? (walked.linkTarget ?? Buffer.alloc(0)) : null,
    kind === 'chardev' || kind === 'blockdev' ? Number(st.rdev) : 0,
  );
}

/**
 * Whether a path whose content was not read (so its content is the previous record's) records exactly what
 * `previous` does: sameEntry(entryFromStat(...), previous) without building the entry, for the many unchanged
 * paths of an incremental run. Compares the lstat, the owner names and the link target with the record.
 */
export function recordsAsBefore(walked: WalkedEntry, previous: Entry, owners: Pick<OwnerNames, 'user' | 'group'>): boolean {
  const st = walked.stat;
  if (st.mtimeNs !== previous.mtimeNs || st.ctimeNs !== previous.ctimeNs || st.ino !== previous.ino) return false;
  if (Number(st.nlink) !== previous.nlink || (Number(st.mode) & 0o7777) !== previous.mode) return false;
  const kind = entryKind(walked);
  if (kind !== previous.kind) return false;
  const uid = Number(st.uid);
  const gid = Number(st.gid);
  if (uid !== previous.uid || gid !== previous.gid) return false;
  if (owners.user(uid) !== previous.user || owners.group(gid) !== previous.group) return false;
  const isDevice = kind === 'chardev' || kind === 'blockdev';
  if (previous.rdev !== (isDevice ? Number(st.rdev) : 0)) return false;
  if (kind !== 'file') {
    if (previous.size !== 0 || previous.hash !== null || previous.chunks.length > 0) return false;
    if (kind !== 'symlink') return previous.linkTarget === null;
    return walked.linkTarget !== undefined && previous.linkTarget !== null && walked.linkTarget.equals(previous.linkTarget);
  }
  if (previous.linkTarget !== null) return false;
  if (Number(st.size) !== previous.size) return false;
  // An empty file's record is the hash of nothing and no chunks, whatever the previous one said.
  return previous.size !== 0 || (previous.hash === EMPTY_SHA256 && previous.chunks.length === 0);
}

export function entryKind(walked: WalkedEntry): EntryKind | null {
  const st = walked.stat;
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'chardev';
  if (st.isBlockDevice()) return 'blockdev';
  return null;
}
