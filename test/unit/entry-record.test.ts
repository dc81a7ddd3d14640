// The shortcut for unchanged paths: recordsAsBefore must agree with building the record and comparing.

import t from 'tap';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { EMPTY_SHA256, sameEntry, type Entry, type EntryKind } from '../../src/formats/entry.js';
import { AFTER_ALL, BEFORE_ALL, pathToKey } from '../../src/formats/path-key.js';
import { decodeIndex, IndexDecoder, IndexEncoder } from '../../src/formats/index-format.js';
import { detectChanges, type BackupItem } from '../../src/stages/change-detector.js';
import type { StateRecord } from '../../src/stages/state-reader.js';
import { entryFromStat, entryKind, recordsAsBefore } from '../../src/stages/entry-record.js';
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

t.test('an E line compared as text (records reads) gives the change detector the same items as the parsed entry', async (t) => {
  // Every (walked path, previous record) pair of the test above, the record written into an index and read back
  // both ways: as an Entry, and as an EntryLine that the detector compares as text and parses only when it differs.
  const random = rng(20261203);
  const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)]!;
  const kinds = Object.keys(TYPE_BITS) as (EntryKind | 'socket')[];
  const missingPack = '000001/00000009';
  const outcomes = new Map<string, number>();
  let rejected = 0;
  for (let i = 0; i < 8_000; i++) {
    const kind = pick(kinds);
    const size = kind === 'file' ? pick([0, 1, 4096, 2 ** 33]) : pick([0, 0, 0, 4096]);
    const uid = pick([0, 1000, 4242]);
    const gid = pick([0, 100]);
    const rdev = kind === 'chardev' || kind === 'blockdev' ? pick([0, 259]) : pick([0, 0, 0, 7]);
    const target = kind === 'symlink' ? pick([Buffer.from('a'), Buffer.from('b\u00ff'), Buffer.from('%x y')]) : undefined;
    const stat = new LeanStat(
      BigInt(pick([11, 12])),
      BigInt(TYPE_BITS[kind] | pick([0o644, 0o755, 0o4755])),
      BigInt(pick([1, 2])),
      BigInt(uid),
      BigInt(gid),
      BigInt(rdev),
      BigInt(size),
      pick([1_700_000_000_123_456_789n, 1_700_000_000_123_456_790n, -5n]),
      pick([1_700_000_001_000_000_000n, 1_700_000_001_000_000_001n]),
    );
    const path = Buffer.from('d/x');
    const walked: WalkedEntry = { key: pathToKey(path), path, stat, ...(target && { linkTarget: target }) };
    const walkedKind = entryKind(walked) ?? 'file';
    const content = createHash('sha256').update(String(size)).digest('hex');
    const pack = pick(['000001/00000001', '000001/00000001', missingPack]);
    let previous = entryFromStat(
      walked.key,
      walked,
      walkedKind,
      walkedKind === 'file' ? (size === 0 ? EMPTY_SHA256 : content) : null,
      walkedKind === 'file' && size > 0 ? [{ hash: content, size, pack }] : [],
      owners,
    );
    const perturbations: ((e: Entry) => Entry)[] = [
      (e) => ({ ...e, kind: pick(['file', 'dir', 'symlink', 'fifo', 'chardev', 'blockdev'] as const) }),
      (e) => ({ ...e, mode: e.mode ^ 0o100 }),
      (e) => ({ ...e, mtimeNs: e.mtimeNs + 1n }),
      (e) => ({ ...e, ctimeNs: e.ctimeNs - 1n }),
      (e) => ({ ...e, ino: e.ino + 1n }),
      (e) => ({ ...e, nlink: e.nlink + 1 }),
      (e) => ({ ...e, size: e.size + 1, chunks: e.chunks.map((c) => ({ ...c, size: c.size + 1 })) }),
      (e) => ({ ...e, uid: e.uid + 1 }),
      (e) => ({ ...e, gid: e.gid + 1 }),
      (e) => ({ ...e, user: e.user + 'x' }),
      (e) => ({ ...e, group: '' }),
      (e) => ({ ...e, rdev: e.rdev + 1 }),
      (e) => ({ ...e, linkTarget: e.linkTarget === null ? Buffer.from('a') : Buffer.concat([e.linkTarget, Buffer.from('z')]) }),
      (e) => ({ ...e, hash: e.hash === null ? null : EMPTY_SHA256 === e.hash ? content : EMPTY_SHA256 }),
    ];
    const changes = pick([0, 0, 1, 1, 2]);
    for (let c = 0; c < changes; c++) previous = pick(perturbations)(previous);
    // An index holding the record; a perturbation the writer or reader refuses is no record at all.
    let bytes: Buffer;
    let asEntry: Entry;
    let asRecord: StateRecord;
    try {
      const encoder = new IndexEncoder();
      encoder.addSegment({ first: walked.key, last: walked.key, entries: [previous] });
      bytes = encoder.finish({ layer: 1, seq: 1, pack: '000001/00000001', packSize: 0, after: BEFORE_ALL, through: AFTER_ALL, time: 0 });
      asEntry = decodeIndex(bytes, 'test').segments[0]!.entries[0]!;
      const decoder = new IndexDecoder('test', 'records');
      decoder.push(bytes);
      asRecord = decoder.endRecords().segments[0]!.entries[0]!;
    } catch {
      rejected++;
      continue;
    }
    const run = async (record: StateRecord): Promise<BackupItem[]> => {
      const items: BackupItem[] = [];
      const options = { owners, packExists: (stem: string) => stem !== missingPack, paranoid: i % 50 === 0 };
      for await (const batch of detectChanges(once([walked]), once([record]), options)) items.push(...batch);
      return items;
    };
    const fromEntry = await run(asEntry);
    const fromRecord = await run(asRecord);
    const describe = (items: BackupItem[]): string =>
      items.map((item) => (item.kind === 'entry' ? `entry read=${item.read} previous=${item.previous === null ? '-' : describeEntry(item.previous)}` : item.kind)).join(',');
    if (describe(fromRecord) !== describe(fromEntry)) {
      t.fail(`case ${i}: as text ${describe(fromRecord)}, parsed ${describe(fromEntry)}`, { line: bytes.toString('latin1').split('\n').find((l) => l.startsWith('E\t')) });
      return;
    }
    const outcome = fromEntry.map((item) => (item.kind === 'entry' ? `entry/${item.read}` : item.kind)).join(',');
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  t.ok((outcomes.get('same') ?? 0) > 1000 && (outcomes.get('entry/false') ?? 0) > 500 && (outcomes.get('entry/true') ?? 0) > 200, `outcomes exercised: ${JSON.stringify(Object.fromEntries(outcomes))}, ${rejected} refused records`);
});

async function* once<T>(batch: T[]): AsyncGenerator<T[]> {
  yield batch;
}

function describeEntry(e: Entry): string {
  return JSON.stringify(e, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array || (v as { type?: string })?.type === 'Buffer' ? Buffer.from(v as Uint8Array).toString('hex') : v));
}

t.test('an E line that only its parse would refuse is never taken as unchanged', async (t) => {
  // Lines the writer never produces, made by hand with a matching checksum: a records read keeps them as text,
  // and the detector must parse them even where the lstat fields match: it then refuses them, naming the index,
  // or (an empty file recorded with some other hash, which a read accepts) records the path again.
  const path = Buffer.from('d/x');
  const key = pathToKey(path);
  const dirStat = new LeanStat(11n, BigInt(constants.S_IFDIR | 0o755), 2n, 0n, 0n, 0n, 0n, 5n, 6n);
  const fileStat = new LeanStat(12n, BigInt(constants.S_IFREG | 0o644), 1n, 0n, 0n, 0n, 0n, 5n, 6n);
  const hash = createHash('sha256').update('x').digest('hex');
  const cases: { name: string; stat: LeanStat; kind: EntryKind; content: string; refused: boolean }[] = [
    { name: 'a directory with a content hash', stat: dirStat, kind: 'dir', content: `${hash}\t-`, refused: true },
    { name: 'a directory with a content location', stat: dirStat, kind: 'dir', content: `-\t000001/00000001`, refused: true },
    { name: 'an empty file with some other hash', stat: fileStat, kind: 'file', content: `${hash}\t-`, refused: false },
    { name: 'an empty file with a location', stat: fileStat, kind: 'file', content: `${EMPTY_SHA256}\t000001/00000001`, refused: true },
  ];
  for (const c of cases) {
    const walked: WalkedEntry = { key, path, stat: c.stat };
    const good = entryFromStat(key, walked, c.kind, c.kind === 'file' ? EMPTY_SHA256 : null, [], owners);
    const encoder = new IndexEncoder();
    encoder.addSegment({ first: key, last: key, entries: [good] });
    const text = encoder.finish({ layer: 1, seq: 1, pack: null, after: BEFORE_ALL, through: AFTER_ALL, time: 0 }).toString('latin1');
    const expected = c.kind === 'file' ? `${EMPTY_SHA256}\t-` : '-\t-';
    t.ok(text.includes(`\t${expected}\t-\t0\n`), `${c.name}: the written line holds ${expected}`);
    const altered = text.replace(`\t${expected}\t-\t0\n`, `\t${c.content}\t-\t0\n`);
    const body = altered.slice(0, altered.lastIndexOf('end\t'));
    const bytes = Buffer.from(body + `end\t${createHash('sha256').update(Buffer.from(body, 'latin1')).digest('hex')}\n`, 'latin1');
    const decoder = new IndexDecoder('layers/000001/00000001.idx.zst', 'records');
    decoder.push(bytes);
    const record = decoder.endRecords().segments[0]!.entries[0]!;
    const items: BackupItem[] = [];
    if (!c.refused) {
      t.doesNotThrow(() => decodeIndex(bytes, 'layers/000001/00000001.idx.zst'), `${c.name}: accepted by a full read`);
      for await (const batch of detectChanges(once([walked]), once([record]), { owners })) items.push(...batch);
      t.same(
        items.map((item) => `${item.kind}${item.kind === 'entry' ? `/${item.read}/${item.previous?.hash}` : ''}`),
        [`entry/false/${hash}`],
        `${c.name}: recorded again, from the parsed line`,
      );
      continue;
    }
    t.throws(() => decodeIndex(bytes, 'layers/000001/00000001.idx.zst'), { code: 'BLANKET_E_CORRUPT_OBJECT' }, `${c.name}: refused by a full read`);
    await t.rejects(
      (async () => {
        for await (const batch of detectChanges(once([walked]), once([record]), { owners })) items.push(...batch);
      })(),
      { code: 'BLANKET_E_CORRUPT_OBJECT', message: /layers\/000001\/00000001\.idx\.zst \(line \d+\)/ },
      `${c.name}: refused by the detector, naming the index and line`,
    );
  }
});
