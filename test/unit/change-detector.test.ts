// Change detection: the merge-join of walk and previous state, fed as data (no file system needed).

import t from 'tap';
import { createHash } from 'node:crypto';
import type { Entry } from '../../src/formats/entry.js';
import { pathToContentsPrefix, pathToKey } from '../../src/formats/path-key.js';
import { detectChanges, type BackupItem } from '../../src/stages/change-detector.js';
import type { EntryStat, WalkItem } from '../../src/stages/walker.js';

const B = (s: string): Buffer => Buffer.from(s);
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

function stat(kind: 'file' | 'dir', size: number, ino: number): EntryStat {
  return {
    ino: BigInt(ino),
    mode: BigInt(kind === 'dir' ? 0o40755 : 0o100644),
    nlink: 1n,
    uid: 0n,
    gid: 0n,
    rdev: 0n,
    size: BigInt(size),
    mtimeNs: 1_700_000_000_000_000_000n,
    ctimeNs: 1_700_000_000_000_000_000n,
    isFile: () => kind === 'file',
    isDirectory: () => kind === 'dir',
    isSymbolicLink: () => false,
    isFIFO: () => false,
    isCharacterDevice: () => false,
    isBlockDevice: () => false,
    isSocket: () => false,
  };
}

function walked(path: string, kind: 'file' | 'dir', size: number, ino: number): WalkItem {
  return { key: pathToKey(B(path)), path: B(path), stat: stat(kind, size, ino) };
}

function previous(path: string, size: number, ino: number): Entry {
  return {
    key: pathToKey(B(path)),
    kind: 'file',
    mode: 0o644,
    mtimeNs: 1_700_000_000_000_000_000n,
    ctimeNs: 1_700_000_000_000_000_000n,
    ino: BigInt(ino),
    nlink: 1,
    size,
    uid: 0,
    gid: 0,
    user: 'root',
    group: 'root',
    hash: sha(path),
    chunks: [{ hash: sha(path), size, pack: '000001/00000001' }],
    linkTarget: null,
    rdev: 0,
  };
}

async function* batches<T>(...list: T[][]): AsyncGenerator<T[]> {
  for (const batch of list) yield batch;
}

async function run(walk: WalkItem[][], state: Entry[]): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = [];
  for await (const batch of detectChanges(batches(...walk), batches(state))) {
    for (const item of batch as BackupItem[]) out.push([item.kind === 'entry' ? (item.read ? 'read' : 'entry') : item.kind, item.key]);
  }
  return out;
}

t.test('new, changed, unchanged and deleted files', async (t) => {
  const out = await run(
    [[walked('a', 'file', 5, 1), walked('c', 'file', 7, 3)], [walked('d', 'file', 9, 40)]],
    [previous('a', 5, 1), previous('b', 6, 2), previous('d', 9, 4), previous('e', 1, 5)],
  );
  t.same(out, [
    ['entry', pathToKey(B('a'))], // same stat: not read
    ['deleted', pathToKey(B('b'))],
    ['read', pathToKey(B('c'))], // new
    ['read', pathToKey(B('d'))], // another inode
    ['deleted', pathToKey(B('e'))],
  ]);
});

t.test('a directory whose contents cannot be listed keeps what the state holds below it', async (t) => {
  // Resumed after "f": d's entry is before the pointer, its contents after it. Listing d fails on descent.
  const state = [previous('d/a', 1, 10), previous('d/b', 2, 11), previous('f/g', 3, 12)];
  const unlisted: WalkItem = { unlisted: true, contentsPrefix: pathToContentsPrefix(B('d')), path: B('d') };
  t.same(await run([[unlisted], [walked('f/g', 'file', 3, 12)]], state), [
    ['unchanged', pathToKey(B('d/a'))],
    ['unchanged', pathToKey(B('d/b'))],
    ['entry', pathToKey(B('f/g'))],
  ]);
  // The same at the very end of the walk, and without the notice (how the walk read before): deleted.
  t.same(await run([[unlisted]], state.slice(0, 2)), [
    ['unchanged', pathToKey(B('d/a'))],
    ['unchanged', pathToKey(B('d/b'))],
  ]);
  t.same(await run([[walked('f/g', 'file', 3, 12)]], state), [
    ['deleted', pathToKey(B('d/a'))],
    ['deleted', pathToKey(B('d/b'))],
    ['entry', pathToKey(B('f/g'))],
  ]);
});

t.test('any batching of walk and state gives the same join, with deletions handed on in bounded batches', async (t) => {
  // A reference join over whole lists, against detectChanges fed in random batches (empty ones included).
  let seed = 7;
  const random = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
  const split = <T>(list: T[], most: number): T[][] => {
    const out: T[][] = [];
    for (let i = 0; i < list.length; ) {
      const n = Math.floor(random() * (most + 1)); // 0: an empty batch
      out.push(list.slice(i, i + n));
      i += n;
    }
    out.push([]);
    return out;
  };
  for (let round = 0; round < 40; round++) {
    const names: string[] = [];
    const count = 200 + Math.floor(random() * 3000);
    for (let i = 0; i < count; i++) names.push(`f${String(i).padStart(5, '0')}`);
    // Long stretches only in the state (deleted subtrees bigger than one handed-on batch), others only walked.
    const inWalk = new Set<string>();
    const inState = new Set<string>();
    let mode = 0;
    for (const name of names) {
      if (random() < 0.01) mode = Math.floor(random() * 4);
      const both = mode === 0 || (mode === 3 && random() < 0.5);
      if (both || mode === 1) inWalk.add(name);
      if (both || mode === 2) inState.add(name);
    }
    const sorted = names.map((n) => pathToKey(B(n))).sort();
    const byKey = new Map(names.map((n) => [pathToKey(B(n)), n]));
    const walkList = sorted.filter((k) => inWalk.has(byKey.get(k)!)).map((k, i) => walked(byKey.get(k)!, 'file', 10, i % 7 === 0 ? 999 : 1));
    const stateList = sorted.filter((k) => inState.has(byKey.get(k)!)).map((k) => previous(byKey.get(k)!, 10, 1));
    const expected: Array<[string, string]> = sorted
      .filter((k) => inWalk.has(byKey.get(k)!) || inState.has(byKey.get(k)!))
      .map((k, _i) => {
        const name = byKey.get(k)!;
        if (!inWalk.has(name)) return ['deleted', k];
        const w = walkList.find((item) => (item as { key: string }).key === k) as { stat: EntryStat };
        return [inState.has(name) && w.stat.ino === 1n ? 'entry' : 'read', k];
      });
    const out: Array<[string, string]> = [];
    let largest = 0;
    for await (const batch of detectChanges(batches(...split(walkList, 300)), batches(...split(stateList, 300)))) {
      largest = Math.max(largest, batch.length);
      for (const item of batch) out.push([item.kind === 'entry' ? (item.read ? 'read' : 'entry') : item.kind, item.key]);
    }
    t.same(out, expected, `round ${round}: ${walkList.length} walked, ${stateList.length} in the state`);
    t.ok(largest <= 1024 + 300, `round ${round}: batches stay bounded (largest ${largest})`);
  }
});

t.test('with owner names, a path recorded exactly as before comes out as a small "same" item', async (t) => {
  const owners = { user: (uid: number) => (uid === 0 ? 'root' : ''), group: (gid: number) => (gid === 0 ? 'root' : '') };
  const kinds = async (o: { user: (uid: number) => string; group: (gid: number) => string }): Promise<string[]> => {
    const out: string[] = [];
    const walk = batches([walked('a', 'file', 5, 1), walked('b', 'file', 6, 2), walked('c', 'file', 7, 3)]);
    for await (const batch of detectChanges(walk, batches([previous('a', 5, 1), previous('b', 6, 99)]), { owners: o })) {
      for (const item of batch) {
        out.push(item.kind === 'same' ? `same ${item.fileSize}` : item.kind === 'entry' ? (item.read ? 'read' : 'entry') : item.kind);
        if (item.kind === 'same') t.same(Object.keys(item).sort(), ['fileSize', 'key', 'kind'], 'holds neither walked nor previous entry');
      }
    }
    return out;
  };
  t.same(await kinds(owners), ['same 5', 'read', 'read'], 'unchanged a; b another inode; c new');
  // The owner's name changed since (same uid): the record differs, so the entry goes to the packer.
  t.same(await kinds({ ...owners, user: () => 'renamed' }), ['entry', 'read', 'read']);
});
