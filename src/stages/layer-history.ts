// Layer history: for every pack member, the layers whose state needs it; what gc may delete follows from it.
//
//   an entry recorded in layer a and next recorded (changed or deleted) in layer b is in the states a .. b-1
//   (a .. newest when never recorded again); every content it names needs those layers
//   one pass over the indexes (every index object read once), in two parts:
//     the sources after S (the layer whose state the pass also writes, gc's base; none: all of them), newest
//       first (readIndexesNewestFirst): b is the oldest newer source whose segment covers the key, which
//       NewerCoverage answers, so these need no merge (a layer that changed a few stretches costs those)
//     the base and the layers up to S, merged in path order (readHistoryRecords): each path's versions, the
//       last one's b from NewerCoverage; the newest version up to S is the state as of S
//     each index's members, kept as numbers until the lifetimes are known (MemberStore)
//   then packs, newest to oldest (a delta's base is always older than the delta):
//     a delta needed in layers X needs its base in X too; a signature is needed as long as its target
//   a member's lifetime: the hull [first, last] of the layers that need it (none: never needed)
//
// So collecting every layer before K frees exactly the members whose last < K, and a pack whose members all
// have last < K can go. The hull over-approximates a lifetime with gaps, which only ever keeps more.
// Packs of layers before the base (collected, kept for members a kept layer needs) are not in that pass: their
// members are read after it.

import { isBlanketError } from '../formats/errors.js';
import { EntryBytes, EntryLine, hashWord, MEMBER_DELTA, memberWordsOf, type IndexHeader, type MemberWords, type PackMember } from '../formats/index-format.js';
import { grown } from '../formats/typed-arrays.js';
import { parseStem } from '../formats/archive-layout.js';
import { AFTER_ALL } from '../formats/path-key.js';
import type { Store } from '../stores/store.js';
import { readHistoryRecords, readIndex, readIndexesNewestFirst, type Catalog, type IndexRef, type StateOptions, type StateRecord } from './state-reader.js';

/** What a pack's members need, in layers (see the module comment). */
export interface PackLife {
  readonly stem: string;
  readonly layer: number;
  /** Size of the data object as listed (0 if the listing has none). */
  readonly packBytes: number;
  /** Whether the listing has the data object. */
  readonly listed: boolean;
  /** Its size as its index recorded (indexes of version 3 on). */
  readonly recordedBytes: number | undefined;
  /** The size of the data object a stopped rewrite by gc replaces (see IndexHeader.replacesSize). */
  readonly formerBytes: number | undefined;
  /** Size of its index object. */
  readonly indexBytes: number;
  readonly members: number;
  readonly memberBytes: number;
  /** Newest layer any member is needed in; -1 if none ever is. */
  readonly last: number;
  /** The one layer all of its needed members are needed in and no other; -1 if none or several. */
  readonly onlyLayer: number;
  /** Member bytes needed by no layer from `layer` on, by that layer: [layer, bytes] pairs ascending (for the waste of kept packs). */
  readonly deadBytesFrom: ReadonlyArray<readonly [number, number]>;
}

/** What a layer's own index objects say about it. */
export interface LayerFacts {
  readonly layer: number;
  /** When its newest index was written (Unix ms): when the layer was last worked on. */
  time: number;
  /** Whether it reached the end of the tree (an index with through "~"). */
  complete: boolean;
  indexes: number;
  indexBytes: number;
  packs: number;
  packBytes: number;
}

export interface LayerHistoryOptions extends Pick<StateOptions, 'signal' | 'onDamagedIndex' | 'onLostRange'> {
  /**
   * Receives the state as of `layer`, in path order, as the history is read: gc's base, written in the same pass
   * over the indexes instead of a second one.
   */
  readonly stateOf?: { readonly layer: number; add(records: readonly StateRecord[]): Promise<void> };
}

/** Layers that need no content: a lifetime's last when none does. */
const NEVER = -1;

/**
 * Per content, known by the first 96 bits of its hash (two contents sharing them share a lifetime, which keeps
 * more, never less): the hull of the layers that need it. An open-addressing table in typed arrays, ~40 bytes
 * a content where a Map of hex strings took twice that.
 */
class LifetimeTable {
  /** Per slot: hash words 0..2, then id + 1 (0: empty). */
  private slots: Int32Array;
  private mask: number;
  private first: Int32Array;
  private last: Int32Array;
  /** Per id: 1 when it is a chunk of a file of several chunks in the newest state. */
  private newestChunk: Uint8Array;
  count = 0;

  /** `expected`: about how many contents it will hold (sized for them, it need not grow while read). */
  constructor(expected: number) {
    let ids = 4096;
    while (ids < expected && ids < 1 << 24) ids *= 2;
    this.mask = 2 * ids - 1;
    this.slots = new Int32Array(4 * 2 * ids);
    this.first = new Int32Array(ids);
    this.last = new Int32Array(ids).fill(NEVER);
    this.newestChunk = new Uint8Array(ids);
  }

  /** The id of SHA-256 `hex`, added (needed by no layer yet) when absent and `add`; -1 when absent. */
  idOf(hex: string, add: boolean): number {
    return this.idOfWords(hashWord(hex, 0), hashWord(hex, 8), hashWord(hex, 16), add);
  }

  /** idOf, of a hash's first three 32-bit words. */
  idOfWords(w0: number, w1: number, w2: number, add: boolean): number {
    const slots = this.slots;
    for (let i = w0 & this.mask; ; i = (i + 1) & this.mask) {
      const at = i * 4;
      const id = slots[at + 3]! - 1;
      if (id < 0) {
        if (!add) return -1;
        return this.insert(at, w0, w1, w2);
      }
      if (slots[at] === w0 && slots[at + 1] === w1 && slots[at + 2] === w2) return id;
    }
  }

  need(id: number, first: number, last: number): void {
    if (this.last[id] === NEVER) {
      this.first[id] = first;
      this.last[id] = last;
    } else {
      if (first < this.first[id]!) this.first[id] = first;
      if (last > this.last[id]!) this.last[id] = last;
    }
  }

  firstOf(id: number): number {
    return this.first[id]!;
  }

  /** Newest layer that needs content `id`; NEVER if none does. */
  lastOf(id: number): number {
    return this.last[id]!;
  }

  markNewestChunk(id: number): void {
    this.newestChunk[id] = 1;
  }

  isNewestChunk(id: number): boolean {
    return this.newestChunk[id] === 1;
  }

  private insert(at: number, w0: number, w1: number, w2: number): number {
    const id = this.count++;
    if (id >= this.first.length) {
      this.first = grown(this.first, 2 * id);
      this.last = grown(this.last, 2 * id, NEVER);
      this.newestChunk = grown(this.newestChunk, 2 * id);
    }
    this.slots[at] = w0;
    this.slots[at + 1] = w1;
    this.slots[at + 2] = w2;
    this.slots[at + 3] = id + 1;
    if (this.count * 2 > this.mask + 1) this.rehash();
    return id;
  }

  /** Twice the slots, at most half full again (ids stay as they are). */
  private rehash(): void {
    const old = this.slots;
    this.mask = this.mask * 2 + 1;
    this.slots = new Int32Array(4 * (this.mask + 1));
    for (let at = 0; at < old.length; at += 4) {
      if (old[at + 3] === 0) continue;
      let i = old[at]! & this.mask;
      while (this.slots[i * 4 + 3] !== 0) i = (i + 1) & this.mask;
      for (let w = 0; w < 4; w++) this.slots[i * 4 + w] = old[at + w]!;
    }
  }
}

/** NewerCoverage's answer for a key no newer source covers. */
const UNCOVERED = 0;

/**
 * What the sources newer than the one being read covered: per stretch of keys, the oldest of them with a segment
 * covering it, i.e. the layer that records a key next after the reader's. Sorted disjoint half-open intervals
 * [lo, hi) of keys; a segment [first, last] is [first, last + "\0"), "\0" sorting before every other character.
 *
 *   newest first:  coverage empty; for source s: each entry of s at key k lives until at(k) - 1;
 *                  then s's segments overwrite the coverage with s (s is now the next record of their keys)
 *
 * Its size is that of the segments (changed stretches), not of the entries.
 */
class NewerCoverage {
  private los: string[] = [];
  private his: string[] = [];
  private layers: number[] = [];

  /**
   * Answers for keys asked in increasing order (a source's segments, a merge's keys): each search starts where the
   * last one ended and gallops, so a key costs the log of the stretches passed over, not of all of them.
   */
  reader(): { at(key: string): number; over(first: string, last: string): number | undefined } {
    let from = 0;
    const find = (key: string): number => {
      if (from > 0 && this.his[from - 1]! > key) from = 0; // asked out of order (a forged index): from the start
      from = this.firstEndingAfter(key, from);
      return from;
    };
    return {
      /** The layer covering `key`; UNCOVERED if none. */
      at: (key: string): number => {
        const i = find(key);
        return i < this.los.length && this.los[i]! <= key ? this.layers[i]! : UNCOVERED;
      },
      /** The one answer at() gives for every key of [first, last]; undefined when it is not the same for all of them. */
      over: (first: string, last: string): number | undefined => {
        const i = find(first);
        if (i < this.los.length && this.los[i]! <= first) return last < this.his[i]! ? this.layers[i]! : undefined;
        return i >= this.los.length || this.los[i]! > last ? UNCOVERED : undefined;
      },
    };
  }

  /** The segments [firsts[i], lasts[i]] of `layer` (one source, each read from its index) now answer `layer`. */
  cover(firsts: readonly string[], lasts: readonly string[], layer: number): void {
    if (firsts.length === 0) return;
    const order = firsts.map((_, i) => i);
    // A source's segments come in key order, unless an index is forged.
    if (!firsts.every((first, i) => i === 0 || firsts[i - 1]! <= first)) order.sort((a, b) => (firsts[a]! < firsts[b]! ? -1 : firsts[a]! > firsts[b]! ? 1 : 0));
    const { los, his, layers } = this;
    const next = new NewerCoverage();
    const [nextLos, nextHis, nextLayers] = [next.los, next.his, next.layers];
    /** Old stretches [from, to) into `next` as they are. */
    const copy = (from: number, to: number): void => {
      for (let i = from; i < to; i++) {
        nextLos.push(los[i]!);
        nextHis.push(his[i]!);
        nextLayers.push(layers[i]!);
      }
    };
    let old = 0;
    let coveredTo = '';
    for (const s of order) {
      const hi = lasts[s]! + '\0';
      const lo = firsts[s]! > coveredTo ? firsts[s]! : coveredTo; // segments of a forged index may overlap
      if (lo >= hi) continue;
      // Older stretches before this segment as they are (found by galloping: a source changes a few stretches);
      // one that it cuts keeps its part before it, and its tail if it reaches past it.
      const before = this.firstEndingAfter(lo, old);
      copy(old, before);
      old = before;
      if (old < los.length && los[old]! < lo) {
        next.append(los[old]!, lo, layers[old]!);
        if (his[old]! > hi) los[old] = hi;
        else old++;
      }
      next.append(lo, hi, layer); // joined to the last one when they touch (so a source's are, where they can be)
      old = this.firstEndingAfter(hi, old);
      if (old < los.length && los[old]! < hi) los[old] = hi;
      coveredTo = hi;
    }
    copy(old, los.length);
    this.los = nextLos;
    this.his = nextHis;
    this.layers = nextLayers;
  }

  /** The first stretch from `from` on that ends after `key` (the stretches' ends increase), galloping from `from`. */
  private firstEndingAfter(key: string, from: number): number {
    const his = this.his;
    if (from >= his.length || his[from]! > key) return from;
    let low = from; // his[low] <= key
    let step = 1;
    while (low + step < his.length && his[low + step]! <= key) {
      low += step;
      step *= 2;
    }
    let high = Math.min(low + step, his.length);
    low++;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (his[mid]! <= key) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  /** Adds [lo, hi) after the last stretch, joined to it when they touch and answer the same. */
  private append(lo: string, hi: string, layer: number): void {
    const n = this.los.length;
    if (n > 0 && this.layers[n - 1] === layer && this.his[n - 1]!.length === lo.length && this.his[n - 1] === lo) this.his[n - 1] = hi;
    else {
      this.los.push(lo);
      this.his.push(hi);
      this.layers.push(layer);
    }
  }
}

/**
 * The members of the packs read in the history pass, until the lifetimes are known: per member the id whose
 * lifetime it follows (its content's, or its target's for a delta or signature), its size, and for a delta its
 * base's id and pack. ~20 bytes a member.
 */
class MemberStore {
  lifeIds = new Int32Array(4096);
  baseIds = new Int32Array(4096);
  baseStems = new Int32Array(4096);
  sizes = new Float64Array(4096);
  count = 0;
  /** Stems deltas' bases are in, each once. */
  readonly stems: string[] = [];
  private readonly stemNumbers = new Map<string, number>();

  add(lifeId: number, size: number, baseId = -1, baseStem: string | null = null): void {
    if (this.count === this.sizes.length) {
      const n = this.count * 2;
      this.lifeIds = grown(this.lifeIds, n);
      this.baseIds = grown(this.baseIds, n);
      this.baseStems = grown(this.baseStems, n);
      this.sizes = grown(this.sizes, n);
    }
    let stem = -1;
    if (baseStem !== null) {
      stem = this.stemNumbers.get(baseStem) ?? -1;
      if (stem < 0) {
        stem = this.stems.length;
        this.stems.push(baseStem);
        this.stemNumbers.set(baseStem, stem);
      }
    }
    this.lifeIds[this.count] = lifeId;
    this.baseIds[this.count] = baseId;
    this.baseStems[this.count] = stem;
    this.sizes[this.count] = size;
    this.count++;
  }
}

/** An index object as the history read it: its header, and where its members are in the MemberStore. */
interface ReadIndex {
  readonly header: IndexHeader;
  readonly start: number;
  readonly end: number;
}

/** The lifetimes of all members of the archive, and per pack what they add up to. */
export class LayerHistory {
  private readonly lifetimes: LifetimeTable;
  /** Packs in written order (those of index objects only: a data object without an index is an orphan). */
  readonly packs: PackLife[] = [];
  /** Index objects without a data object, by stem, with their sizes: a pack that held nothing new. */
  readonly indexOnly: Array<{ readonly stem: string; readonly layer: number; readonly indexBytes: number }> = [];
  /** The newest layer (whose state is needed as long as the archive exists). */
  newest = 0;
  /** Needed deltas whose base pack no index lists (damage: the chain is broken): a few, for the message. */
  readonly deltaBasesUnindexed: Array<{ readonly base: string; readonly baseStem: string }> = [];
  /** Per layer (collected ones too, while index objects of theirs remain), ascending. */
  readonly layers = new Map<number, LayerFacts>();
  /** Paths in the state as of each layer, by layer (from the base's layer on). */
  readonly pathsAt = new Map<number, number>();

  /** `indexBytes`: the index objects' bytes, compressed (~70 of them a content: its E and H lines). */
  private constructor(indexBytes: number) {
    this.lifetimes = new LifetimeTable(indexBytes / 70);
  }

  static async read(store: Store, catalog: Catalog, options: LayerHistoryOptions = {}): Promise<LayerHistory> {
    let indexBytes = 0;
    for (const ref of [...catalog.indexes, ...catalog.bases.flatMap((base) => base.indexes)]) indexBytes += ref.size;
    const history = new LayerHistory(indexBytes);
    history.newest = catalog.layers[catalog.layers.length - 1] ?? 0;
    const members = new MemberStore();
    const read = new Map<string, ReadIndex>();
    await history.readEntries(store, catalog, options, members, read);
    await history.sumPacks(store, catalog, options, members, read);
    return history;
  }

  /** Layers the content `hash` is needed in, as [first, last]; undefined if none. */
  lifetimeOf(hash: string): readonly [number, number] | undefined {
    const id = this.lifetimes.idOf(hash, false);
    if (id < 0 || this.lifetimes.lastOf(id) === NEVER) return undefined;
    return [this.lifetimes.firstOf(id), this.lifetimes.lastOf(id)];
  }

  /** Whether `hash` is a chunk of a file of several chunks in the newest state (whose signature the next backup may read). */
  isChunkOfNewest(hash: string): boolean {
    const id = this.lifetimes.idOf(hash, false);
    return id >= 0 && this.lifetimes.isNewestChunk(id);
  }

  /** Whether some layer from `layer` on needs `member` (content, a delta on the chain of such, or its signature). */
  neededFrom(member: PackMember, layer: number): boolean {
    const id = this.lifetimes.idOf(member.kind === undefined ? member.hash : member.target, false);
    return id >= 0 && this.lifetimes.lastOf(id) >= layer;
  }

  /**
   * The lifetimes of the contents every path's entries name, from one read of each index object: the sources after
   * the base's layer (stateOf) newest first, each needing only what newer ones covered; then those up to it,
   * merged in path order, which gives their state (the base) too.
   */
  private async readEntries(store: Store, catalog: Catalog, options: LayerHistoryOptions, members: MemberStore, read: Map<string, ReadIndex>): Promise<void> {
    /** Paths that appear (+1) and go (-1) at a layer: summed up, the paths in each layer's state. */
    const change = new Map<number, number>();
    const words = new Int32Array(3);
    /** The entry `entry` recorded in layer `from` is in the states from..to: what it names is needed there. */
    const need = (entry: StateRecord, from: number, to: number): void => {
      if (to < from) return; // recorded again by the same layer (a base, then its own layer)
      const table = this.lifetimes;
      if (entry instanceof EntryBytes) {
        if (entry.contentChunkWords(words)) table.need(table.idOfWords(words[0]!, words[1]!, words[2]!, true), from, to);
      } else if (entry instanceof EntryLine) {
        const hash = entry.contentChunkHash();
        if (hash !== null) table.need(table.idOf(hash, true), from, to);
      } else {
        for (const chunk of entry.chunks) {
          const id = table.idOf(chunk.hash, true);
          table.need(id, from, to);
          if (to === this.newest && entry.chunks.length > 1) table.markNewestChunk(id);
        }
      }
      change.set(from, (change.get(from) ?? 0) + 1);
      change.set(to + 1, (change.get(to + 1) ?? 0) - 1);
    };
    const keepMembers = (ref: IndexRef, index: { readonly header: IndexHeader; readonly members: readonly PackMember[]; readonly memberWords?: MemberWords }): void => {
      if (index.header.base) return; // a base lists no members, and is no pack
      read.set(ref.stem, this.keep(members, index.header, index.memberWords ?? memberWordsOf(index.members)));
    };
    /** The last layer a record of `key` made in a layer before `next` (the layer that records it next) stays in. */
    const lastBefore = (next: number): number => (next === UNCOVERED ? this.newest : next - 1);

    // 1. Newest source first: an entry stays until the next newer source whose segment covers its key.
    const stateLayer = options.stateOf?.layer ?? -Infinity;
    const coverage = new NewerCoverage();
    let position = NaN;
    let newer = coverage.reader();
    let firsts: string[] = [];
    let lasts: string[] = [];
    for await (const { position: at, ref, index } of readIndexesNewestFirst(store, catalog, stateLayer, options)) {
      if (at !== position) {
        // The previous source's segments now cover their keys; this source asks from the start.
        coverage.cover(firsts, lasts, Math.ceil(position));
        [firsts, lasts, position, newer] = [[], [], at, coverage.reader()];
      }
      keepMembers(ref, index);
      const from = Math.ceil(at);
      for (const segment of index.segments) {
        firsts.push(segment.first);
        lasts.push(segment.last);
        if (segment.entries.length === 0) continue;
        const next = newer.over(segment.first, segment.last); // the same for all (the common case), or undefined
        for (const entry of segment.entries) need(entry, from, lastBefore(next ?? newer.at(entry.key)));
      }
    }
    coverage.cover(firsts, lasts, Math.ceil(position));

    // 2. The base's layer and those before it, merged: each path's versions, and the state as of that layer.
    if (options.stateOf !== undefined) {
      const state: StateRecord[] = [];
      const newer = coverage.reader();
      for await (const batch of readHistoryRecords(store, catalog, { ...options, layer: stateLayer, onIndex: keepMembers })) {
        for (const { key, versions } of batch) {
          for (let i = 0; i < versions.length; i++) {
            const { entry, layer } = versions[i]!;
            if (entry !== null) need(entry, layer, i + 1 < versions.length ? versions[i + 1]!.layer - 1 : lastBefore(newer.at(key)));
          }
          const asOfStateLayer = versions[versions.length - 1]?.entry ?? null;
          if (asOfStateLayer !== null) state.push(asOfStateLayer);
        }
        if (state.length > 0) {
          await options.stateOf.add(state);
          state.length = 0;
        }
      }
    }

    let paths = 0;
    const first = catalog.bases[0]?.layer ?? catalog.layers[0] ?? 1;
    const changes = [...change].sort((a, b) => a[0] - b[0]);
    let next = 0;
    for (let layer = Math.min(first, changes[0]?.[0] ?? first); layer <= this.newest; layer++) {
      while (next < changes.length && changes[next]![0] <= layer) paths += changes[next++]![1];
      if (layer >= first) this.pathsAt.set(layer, paths);
    }
  }

  /**
   * Every pack, newest first: its members' needs passed on to their deltas' bases, and summed up. Indexes the
   * history pass did not read (those of collected layers) are read here, their members only.
   */
  private async sumPacks(store: Store, catalog: Catalog, options: LayerHistoryOptions, members: MemberStore, read: Map<string, ReadIndex>): Promise<void> {
    const indexedStems = new Set(catalog.indexes.map((ref) => ref.stem));
    const packs: PackLife[] = [];
    /** Needed deltas whose base's pack has no index (where they are; the table knows no hashes, the index does). */
    const unindexed: Array<{ stem: string; position: number; baseStem: string }> = [];
    for (let i = catalog.indexes.length - 1; i >= 0; i--) {
      options.signal?.throwIfAborted();
      const ref = catalog.indexes[i]!;
      let index = read.get(ref.stem);
      if (index === undefined) {
        try {
          const { header, members: listed } = await readIndex(store, ref.stem, options.signal, 'members');
          index = this.keep(members, header, memberWordsOf(listed));
        } catch (error) {
          if (!options.onDamagedIndex || !isBlanketError(error)) throw error;
          options.onDamagedIndex(ref.stem, error);
          continue;
        }
      }
      const { header } = index;
      const pack = header.pack;
      const layer = ref.id.layer;
      let facts = this.layers.get(layer);
      if (facts === undefined) this.layers.set(layer, (facts = { layer, time: 0, complete: false, indexes: 0, indexBytes: 0, packs: 0, packBytes: 0 }));
      facts.time = Math.max(facts.time, header.time);
      facts.complete ||= header.through === AFTER_ALL;
      facts.indexes++;
      facts.indexBytes += ref.size;
      if (pack === null) {
        this.indexOnly.push({ stem: ref.stem, layer, indexBytes: ref.size });
        continue;
      }
      facts.packs++;
      facts.packBytes += catalog.packs.get(pack) ?? 0;
      const life = this.packLife(ref.stem, parseStem(ref.stem)!.layer, catalog.packs.get(pack) ?? 0, ref.size, members, index, indexedStems, unindexed);
      packs.push({ ...life, listed: catalog.packs.has(pack), recordedBytes: header.packSize, formerBytes: header.replacesSize });
    }
    this.packs.push(...packs.reverse());
    this.indexOnly.reverse();
    for (const { stem, position, baseStem } of unindexed) {
      const member = (await readIndex(store, stem, options.signal, 'members')).members[position];
      if (member?.kind === 'delta') this.deltaBasesUnindexed.push({ base: member.base, baseStem });
    }
    const sorted = [...this.layers.values()].sort((a, b) => a.layer - b.layer);
    this.layers.clear();
    for (const facts of sorted) this.layers.set(facts.layer, facts);
  }

  /** Adds an index's members to `members`, each by the id whose lifetime it follows; where they are. */
  private keep(members: MemberStore, header: IndexHeader, listed: MemberWords): ReadIndex {
    const table = this.lifetimes;
    const start = members.count;
    const { count, kinds, sizes, words, baseStems, stems } = listed;
    for (let i = 0; i < count; i++) {
      const at = 6 * i;
      const lifeId = table.idOfWords(words[at]!, words[at + 1]!, words[at + 2]!, true);
      if (kinds[i] !== MEMBER_DELTA) members.add(lifeId, sizes[i]!);
      else members.add(lifeId, sizes[i]!, table.idOfWords(words[at + 3]!, words[at + 4]!, words[at + 5]!, true), stems[baseStems[i]!]!);
    }
    return { header, start, end: members.count };
  }

  /** Propagates this pack's needs to its deltas' bases, and sums them up. */
  private packLife(
    stem: string,
    layer: number,
    packBytes: number,
    indexBytes: number,
    members: MemberStore,
    index: ReadIndex,
    indexedStems: ReadonlySet<string>,
    unindexed: Array<{ stem: string; position: number; baseStem: string }>,
  ): Omit<PackLife, 'listed' | 'recordedBytes' | 'formerBytes'> {
    const table = this.lifetimes;
    let last = -1;
    let onlyLayer: number | null = null;
    let memberBytes = 0;
    const dead = new Map<number, number>();
    for (let m = index.end - 1; m >= index.start; m--) {
      const size = members.sizes[m]!;
      const lifeId = members.lifeIds[m]!;
      memberBytes += size;
      const lifeLast = table.lastOf(lifeId);
      if (lifeLast === NEVER) {
        dead.set(0, (dead.get(0) ?? 0) + size);
        continue;
      }
      const lifeFirst = table.firstOf(lifeId);
      const baseId = members.baseIds[m]!;
      if (baseId >= 0) {
        // A delta: its base is needed wherever its target is.
        table.need(baseId, lifeFirst, lifeLast);
        const baseStem = members.stems[members.baseStems[m]!]!;
        if (!indexedStems.has(baseStem) && unindexed.length < 10) unindexed.push({ stem, position: m - index.start, baseStem });
      }
      last = Math.max(last, lifeLast);
      if (lifeFirst !== lifeLast) onlyLayer = -1;
      else if (onlyLayer === null) onlyLayer = lifeFirst;
      else if (onlyLayer !== lifeFirst) onlyLayer = -1;
      // Needed no more from layer last+1 on.
      dead.set(lifeLast + 1, (dead.get(lifeLast + 1) ?? 0) + size);
    }
    const deadBytesFrom = [...dead].sort((a, b) => a[0] - b[0]) as Array<[number, number]>;
    return { stem, layer, packBytes, indexBytes, members: index.end - index.start, memberBytes, last, onlyLayer: onlyLayer ?? -1, deadBytesFrom };
  }
}

/** Member bytes of `pack` that no layer from `keepFrom` on needs. */
export function deadBytes(pack: PackLife, keepFrom: number): number {
  let bytes = 0;
  for (const [from, size] of pack.deadBytesFrom) if (from <= keepFrom) bytes += size;
  return bytes;
}
