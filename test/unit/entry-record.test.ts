// The shortcut for unchanged paths: recordsAsBefore must agree with building the record and comparing.

import t from 'tap';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { sameEntry, type Entry, type EntryKind } from '../../src/formats/entry.js';
import { pathToKey } from '../../src/formats/path-key.js';
import { EMPTY_SHA256, entryFromStat, entryKind, recordsAsBefore } from '../../src/stages/entry-record.js';
import { LeanStat, type WalkedEntry } from '../../src/stages/walker.js';

const TYPE_BITS: Record<EntryKind | 'socket', number> = {
  file: constants.S_IFREG,
  dir: constants.S_IFDIR,
  symlink: constants.S_IFLNK,
  fifo: constants.S_IFIFO,
  chardev: constants.S_IFCHR,
  blockdev: constants.S_IFBLK,
  socket: constants.S_IFSOCK,
};

const owners = {
  user: (uid: number): string => (uid === 0 ? 'root' : uid === 1000 ? 'alice' : ''),
  group: (gid: number): string => (gid === 0 ? 'root' : gid === 100 ? 'users' : ''),
};

/** A small deterministic generator, so that a failure names a reproducible case. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

t.test('recordsAsBefore agrees with sameEntry(entryFromStat(...)) on unread paths', async (t) => {
  const random = rng(20261202);
  const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)]!;
  const kinds = Object.keys(TYPE_BITS) as (EntryKind | 'socket')[];
  let same = 0;
  let differ = 0;
  for (let i = 0; i < 20_000; i++) {
    const kind = pick(kinds);
    const size = kind === 'file' ? pick([0, 1, 4096, 2 ** 33]) : pick([0, 0, 0, 4096]);
    const mode = pick([0o644, 0o755, 0o4755]);
    const uid = pick([0, 1000, 4242]);
    const gid = pick([0, 100]);
    const rdev = kind === 'chardev' || kind === 'blockdev' ? pick([0, 259]) : pick([0, 0, 0, 7]);
    const target = kind === 'symlink' ? pick([Buffer.from('a'), Buffer.from('b\u00ff')]) : undefined;
    const stat = new LeanStat(
      BigInt(pick([11, 12])),
      BigInt(TYPE_BITS[kind] | mode),
      BigInt(pick([1, 2])),
      BigInt(uid),
      BigInt(gid),
      BigInt(rdev),
      BigInt(size),
      pick([1_700_000_000_123_456_789n, 1_700_000_000_123_456_790n]),
      pick([1_700_000_001_000_000_000n, 1_700_000_001_000_000_001n]),
    );
    const walked: WalkedEntry = { key: pathToKey(Buffer.from('d/x')), path: Buffer.from('d/x'), stat, ...(target && { linkTarget: target }) };
    const walkedKind = entryKind(walked);
    if (walkedKind !== (kind === 'socket' ? null : kind)) {
      t.fail(`case ${i}: entryKind ${walkedKind} for a ${kind}`);
      return;
    }
    // The previous record: this path's own record, with one or two fields perturbed (or none).
    const content = createHash('sha256').update(String(size)).digest('hex');
    const base: Entry =
      walkedKind === null
        ? entryFromStat(walked.key, walked, 'file', EMPTY_SHA256, [], owners)
        : entryFromStat(
            walked.key,
            walked,
            walkedKind,
            walkedKind === 'file' ? (size === 0 ? EMPTY_SHA256 : content) : null,
            walkedKind === 'file' && size > 0 ? [{ hash: content, size, pack: '000001/00000001' }] : [],
            owners,
          );
    const perturbations: ((e: Entry) => Entry)[] = [
      (e) => ({ ...e, kind: pick(['file', 'dir', 'symlink', 'fifo', 'chardev', 'blockdev'] as const) }),
      (e) => ({ ...e, mode: e.mode ^ 0o100 }),
      (e) => ({ ...e, mtimeNs: e.mtimeNs + 1n }),
      (e) => ({ ...e, ctimeNs: e.ctimeNs - 1n }),
      (e) => ({ ...e, ino: e.ino + 1n }),
      (e) => ({ ...e, nlink: e.nlink + 1 }),
      (e) => ({ ...e, size: e.size + 1 }),
      (e) => ({ ...e, size: 0 }),
      (e) => ({ ...e, uid: e.uid + 1 }),
      (e) => ({ ...e, gid: e.gid + 1 }),
      (e) => ({ ...e, user: e.user + 'x' }),
      (e) => ({ ...e, group: '' }),
      (e) => ({ ...e, rdev: e.rdev + 1 }),
      (e) => ({ ...e, linkTarget: e.linkTarget === null ? Buffer.from('a') : Buffer.concat([e.linkTarget, Buffer.from('z')]) }),
      (e) => ({ ...e, hash: createHash('sha256').update('other').digest('hex') }),
      (e) => ({ ...e, chunks: [] }),
    ];
    let previous = base;
    const changes = pick([0, 0, 1, 1, 2]);
    for (let c = 0; c < changes; c++) previous = pick(perturbations)(previous);
    // What the packer does without the shortcut: build the record (content carried over, as for an unread
    // file; an empty file's is the hash of nothing) and compare it with the previous one.
    const built =
      walkedKind === null
        ? null
        : entryFromStat(
            walked.key,
            walked,
            walkedKind,
            walkedKind === 'file' ? (size === 0 ? EMPTY_SHA256 : previous.hash) : null,
            walkedKind === 'file' && size > 0 ? previous.chunks : [],
            owners,
          );
    const expected = built !== null && sameEntry(built, previous);
    const actual = recordsAsBefore(walked, previous, owners);
    if (actual !== expected) {
      t.fail(`case ${i}: recordsAsBefore ${actual}, sameEntry ${expected}`, { walked: String(stat.mode), previous });
      return;
    }
    if (expected) same++;
    else differ++;
  }
  t.ok(same > 2000 && differ > 2000, `both outcomes exercised (${same} same, ${differ} different)`);
});
