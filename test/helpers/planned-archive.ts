// Random archives of index objects only, and the naive models of what they hold: the state as of a layer by
// replaying segments in written order, and each path's history (for the state reader's and gc's tests).
import { compress } from '@mongodb-js/zstd';
import { IndexEncoder } from '../../src/formats/index-format.js';
import { encodeHeader, indexObjectName, packStem } from '../../src/formats/archive-layout.js';
import type { Entry } from '../../src/formats/entry.js';
import { AFTER_ALL, BEFORE_ALL, pathToKey } from '../../src/formats/path-key.js';
import { LocalStore } from '../../src/stores/local.js';

export class Prng {
  constructor(private state: number) {}
  next(): number {
    this.state = (this.state * 1103515245 + 12345) >>> 0;
    return this.state / 2 ** 32;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** A directory entry, told apart by its mtime (`version`). */
export function dirEntry(key: string, version: number): Entry {
  return {
    key,
    kind: 'dir',
    mode: 0o755,
    mtimeNs: BigInt(version),
    ctimeNs: 0n,
    ino: 1n,
    nlink: 1,
    size: 0,
    uid: 0,
    gid: 0,
    user: '',
    group: '',
    hash: null,
    chunks: [],
    linkTarget: null,
    rdev: 0,
  };
}

export interface PlannedIndex {
  layer: number;
  seq: number;
  after: string;
  through: string;
  segments: { first: string; last: string; entries: Entry[] }[];
}

/** A random archive: layers of indexes with contiguous ranges, random segments with random entries (made by `entry`). */
export function planArchive(rng: Prng, universe: string[], maxLayers = 5, entry: (key: string, version: number) => Entry = dirEntry): PlannedIndex[] {
  const plan: PlannedIndex[] = [];
  let version = 1;
  const layers = 2 + rng.int(maxLayers - 1);
  for (let layer = 1; layer <= layers; layer++) {
    const partial = layer === layers && rng.next() < 0.5;
    const cuts = [...new Set(Array.from({ length: rng.int(2 + Math.floor(universe.length / 6)) }, () => rng.int(universe.length)))].sort((a, b) => a - b);
    let after = BEFORE_ALL;
    let seq = 1;
    const bounds = [...cuts.map((c) => universe[c]!), partial ? universe[rng.int(universe.length)]! : AFTER_ALL];
    for (const through of bounds) {
      if (!(through > after)) continue;
      const inRange = universe.filter((k) => k > after && k <= through);
      const segments: PlannedIndex['segments'] = [];
      let i = 0;
      while (i < inRange.length) {
        i += rng.int(4); // a hole
        if (i >= inRange.length) break;
        const length = 1 + rng.int(layer === 1 ? inRange.length : 4);
        const run = inRange.slice(i, i + length);
        const entries = run.filter(() => rng.next() < 0.7).map((k) => entry(k, version++));
        segments.push({ first: run[0]!, last: run[run.length - 1]!, entries });
        i += length + 1;
      }
      plan.push({ layer, seq: seq++, after, through, segments });
      after = through;
    }
  }
  return plan;
}

/** The model: replay segments in written order. */
export function replay(plan: PlannedIndex[], upToLayer: number): Map<string, Entry> {
  const state = new Map<string, Entry>();
  for (const index of plan) {
    if (index.layer > upToLayer) break;
    for (const segment of index.segments) {
      for (const key of [...state.keys()]) if (key >= segment.first && key <= segment.last) state.delete(key);
      for (const e of segment.entries) state.set(e.key, e);
    }
  }
  return state;
}

export async function writeArchive(dir: string, plan: PlannedIndex[], times: readonly number[] = []): Promise<LocalStore> {
  const store = new LocalStore(dir);
  await store.put('blanket.json', encodeHeader({ format: 'blanket', version: 1, id: '0'.repeat(32), created: new Date(0).toISOString() }));
  for (const [i, index] of plan.entries()) {
    const encoder = new IndexEncoder();
    for (const segment of index.segments) encoder.addSegment(segment);
    const text = encoder.finish({ layer: index.layer, seq: index.seq, pack: null, after: index.after, through: index.through, time: times[i] ?? 0 });
    await store.put(indexObjectName(packStem(index)), await compress(text), { durable: false });
  }
  return store;
}

/** The model of readHistory: per key any entry names, every layer whose segment covers it, with its entry or null. */
export function historyModel(plan: PlannedIndex[], keys: readonly string[]): Array<[string, Array<[number, bigint | null]>]> {
  const versions = new Map<string, Array<[number, bigint | null]>>(keys.map((k) => [k, []]));
  for (const index of plan) {
    for (const segment of index.segments) {
      for (const key of keys) {
        if (key < segment.first || key > segment.last) continue;
        versions.get(key)!.push([index.layer, segment.entries.find((e) => e.key === key)?.mtimeNs ?? null]);
      }
    }
  }
  return [...versions].filter(([, v]) => v.some(([, e]) => e !== null)).sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

/** Keys of a small tree, in order. */
export const universe = (() => {
  const paths = ['a', 'b', 'a/x', 'a/y', 'a/x/1', 'a/x/2', 'b/z', 'c', 'c/d', 'c/d/e', 'a-b', 'a-b/q', '.h', 'z', 'z/z/z'];
  return [...new Set(['', ...paths].map((p) => pathToKey(Buffer.from(p))))].sort();
})();

