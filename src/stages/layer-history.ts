// Layer history: for every pack member, the layers whose state needs it; what gc may delete follows from it.
//
//   for each path, its versions across the base and the layers (readHistory), oldest first:
//     an entry recorded in layer a and next recorded (changed or deleted) in layer b is in the states a .. b-1
//     (a .. newest when never recorded again); every content it names needs those layers
//   packs, newest to oldest (a delta's base is always older than the delta):
//     a delta needed in layers X needs its base in X too; a signature is needed as long as its target
//   a member's lifetime: the hull [first, last] of the layers that need it (none: never needed)
//
// So collecting every layer before K frees exactly the members whose last < K, and a pack whose members all
// have last < K can go. The hull over-approximates a lifetime with gaps, which only ever keeps more.

import { isBlanketError } from '../formats/errors.js';
import { EntryLine, type PackMember } from '../formats/index-format.js';
import { parseStem } from '../formats/archive-layout.js';
import { AFTER_ALL } from '../formats/path-key.js';
import type { Store } from '../stores/store.js';
import { readHistoryRecords, readIndex, type Catalog, type StateOptions, type StateRecord } from './state-reader.js';

/** Layers fit in 20 bits (MAX_LAYER 999,999): a lifetime is first * 2^20 + last, one number per member. */
const LAYER_BITS = 2 ** 20;
/** Hash characters a member is known by: 96 bits. Two members sharing them share a lifetime, which keeps more, never less. */
const HASH_KEY_LENGTH = 24;

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

/** The lifetimes of all members of the archive, and per pack what they add up to. */
export class LayerHistory {
  private readonly lifetimes = new Map<string, number>();
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
  /** The chunks of files of several chunks in the newest state (keys as in lifetimes): the only delta bases a backup uses. */
  private readonly newestChunks = new Set<string>();

  private constructor() {}

  static async read(store: Store, catalog: Catalog, options: LayerHistoryOptions = {}): Promise<LayerHistory> {
    const history = new LayerHistory();
    history.newest = catalog.layers[catalog.layers.length - 1] ?? 0;
    await history.readEntries(store, catalog, options);
    await history.readMembers(store, catalog, options);
    return history;
  }

  /** Layers the content `hash` is needed in, as [first, last]; undefined if none. */
  lifetimeOf(hash: string): readonly [number, number] | undefined {
    const life = this.lifetimes.get(hash.slice(0, HASH_KEY_LENGTH));
    return life === undefined ? undefined : [Math.floor(life / LAYER_BITS), life % LAYER_BITS];
  }

  /** Whether `hash` is a chunk of a file of several chunks in the newest state (whose signature the next backup may read). */
  isChunkOfNewest(hash: string): boolean {
    return this.newestChunks.has(hash.slice(0, HASH_KEY_LENGTH));
  }

  /** Whether some layer from `layer` on needs `member` (content, a delta on the chain of such, or its signature). */
  neededFrom(member: PackMember, layer: number): boolean {
    const life = this.lifetimeOf(member.kind === undefined ? member.hash : member.target);
    return life !== undefined && life[1] >= layer;
  }

  private need(hash: string, first: number, last: number): void {
    const key = hash.slice(0, HASH_KEY_LENGTH);
    const known = this.lifetimes.get(key);
    if (known !== undefined) {
      first = Math.min(first, Math.floor(known / LAYER_BITS));
      last = Math.max(last, known % LAYER_BITS);
    }
    this.lifetimes.set(key, first * LAYER_BITS + last);
  }

  private async readEntries(store: Store, catalog: Catalog, options: LayerHistoryOptions): Promise<void> {
    /** Paths that appear (+1) and go (-1) at a layer: summed up, the paths in each layer's state. */
    const change = new Map<number, number>();
    const add = (layer: number, n: number): void => void change.set(layer, (change.get(layer) ?? 0) + n);
    const stateLayer = options.stateOf?.layer ?? -1;
    const state: StateRecord[] = [];
    for await (const batch of readHistoryRecords(store, catalog, options)) {
      for (const { versions } of batch) {
        let asOfStateLayer: StateRecord | null = null;
        for (let i = 0; i < versions.length; i++) {
          const entry = versions[i]!.entry;
          const from = versions[i]!.layer;
          if (from <= stateLayer) asOfStateLayer = entry;
          if (entry === null) continue;
          const to = i + 1 < versions.length ? versions[i + 1]!.layer - 1 : this.newest;
          if (to < from) continue; // recorded again by the same layer (a base, then its own layer)
          if (entry instanceof EntryLine) {
            const hash = entry.contentChunkHash();
            if (hash !== null) this.need(hash, from, to);
          } else {
            for (const chunk of entry.chunks) this.need(chunk.hash, from, to);
            if (to === this.newest && entry.chunks.length > 1) for (const chunk of entry.chunks) this.newestChunks.add(chunk.hash.slice(0, HASH_KEY_LENGTH));
          }
          add(from, 1);
          add(to + 1, -1);
        }
        if (asOfStateLayer !== null) state.push(asOfStateLayer);
      }
      if (state.length > 0) {
        await options.stateOf!.add(state);
        state.length = 0;
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

  /** Stems of the packs some index lists. */
  private readonly indexedStems = new Set<string>();

  private async readMembers(store: Store, catalog: Catalog, options: LayerHistoryOptions): Promise<void> {
    const packs: PackLife[] = [];
    for (const ref of catalog.indexes) this.indexedStems.add(ref.stem);
    for (let i = catalog.indexes.length - 1; i >= 0; i--) {
      options.signal?.throwIfAborted();
      const ref = catalog.indexes[i]!;
      let index;
      try {
        index = await readIndex(store, ref.stem, options.signal, 'members');
      } catch (error) {
        if (!options.onDamagedIndex || !isBlanketError(error)) throw error;
        options.onDamagedIndex(ref.stem, error);
        continue;
      }
      const pack = index.header.pack;
      const layer = ref.id.layer;
      let facts = this.layers.get(layer);
      if (facts === undefined) this.layers.set(layer, (facts = { layer, time: 0, complete: false, indexes: 0, indexBytes: 0, packs: 0, packBytes: 0 }));
      facts.time = Math.max(facts.time, index.header.time);
      facts.complete ||= index.header.through === AFTER_ALL;
      facts.indexes++;
      facts.indexBytes += ref.size;
      if (pack !== null) {
        facts.packs++;
        facts.packBytes += catalog.packs.get(pack) ?? 0;
      }
      if (pack === null) {
        this.indexOnly.push({ stem: ref.stem, layer: ref.id.layer, indexBytes: ref.size });
        continue;
      }
      const life = this.packLife(ref.stem, parseStem(ref.stem)!.layer, catalog.packs.get(pack) ?? 0, ref.size, index.members);
      packs.push({ ...life, listed: catalog.packs.has(pack), recordedBytes: index.header.packSize, formerBytes: index.header.replacesSize });
    }
    this.packs.push(...packs.reverse());
    this.indexOnly.reverse();
    const sorted = [...this.layers.values()].sort((a, b) => a.layer - b.layer);
    this.layers.clear();
    for (const facts of sorted) this.layers.set(facts.layer, facts);
  }

  /** Propagates this pack's needs to its deltas' bases, and sums them up. */
  private packLife(
    stem: string,
    layer: number,
    packBytes: number,
    indexBytes: number,
    members: readonly PackMember[],
  ): Omit<PackLife, 'listed' | 'recordedBytes' | 'formerBytes'> {
    let last = -1;
    let onlyLayer: number | null = null;
    let memberBytes = 0;
    const dead = new Map<number, number>();
    for (let m = members.length - 1; m >= 0; m--) {
      const member = members[m]!;
      memberBytes += member.size;
      let life: readonly [number, number] | undefined;
      if (member.kind === 'delta') {
        life = this.lifetimeOf(member.target);
        if (life !== undefined) this.need(member.base, life[0], life[1]);
        if (life !== undefined && !this.indexedStems.has(member.baseStem) && this.deltaBasesUnindexed.length < 10) {
          this.deltaBasesUnindexed.push({ base: member.base, baseStem: member.baseStem });
        }
      } else if (member.kind === 'signature') {
        life = this.lifetimeOf(member.target);
      } else {
        life = this.lifetimeOf(member.hash);
      }
      if (life === undefined) {
        dead.set(0, (dead.get(0) ?? 0) + member.size);
        continue;
      }
      last = Math.max(last, life[1]);
      if (life[0] !== life[1]) onlyLayer = -1;
      else if (onlyLayer === null) onlyLayer = life[0];
      else if (onlyLayer !== life[0]) onlyLayer = -1;
      // Needed no more from layer last+1 on.
      dead.set(life[1] + 1, (dead.get(life[1] + 1) ?? 0) + member.size);
    }
    const deadBytesFrom = [...dead].sort((a, b) => a[0] - b[0]) as Array<[number, number]>;
    return { stem, layer, packBytes, indexBytes, members: members.length, memberBytes, last, onlyLayer: onlyLayer ?? -1, deadBytesFrom };
  }
}

/** Member bytes of `pack` that no layer from `keepFrom` on needs. */
export function deadBytes(pack: PackLife, keepFrom: number): number {
  let bytes = 0;
  for (const [from, size] of pack.deadBytesFrom) if (from <= keepFrom) bytes += size;
  return bytes;
}
