// Reads the archive: its catalog of packs, single indexes, and the merged state as of a layer, streamed in path order.
//
// The state as of layer N is what replaying every pack of layers 1..N in written order gives, where each
// index's segments replace their key ranges and holes keep what was there. Within one layer, packs cover
// ranges that follow each other, so each layer is one sorted stream of segments. The merge walks all layers
// at once, never holding more than one index per layer (and the next, read ahead: its bytes, and the text of its
// first frame within a budget):
//
//   layer 1  [S...........................................]   (first full pass)
//   layer 2        [S..]           [S.]        [S......]     (only changed stretches)
//   layer 3                 [S]                         [S]
//   for key k (smallest next entry key of any layer):
//       winner = newest layer with a segment containing k
//       emit winner's entry for k if it has one (no entry there = k deleted in that layer)
//       advance every layer past k
//
// Several independent archives of one source (stages/archive-union.ts) are merged by time: the catalog's
// layerOrigin says which archive each layer came from; within one archive the newest layer still wins, and
// between archives the one that looked at k last (its newest index whose range holds k; see winnerOf).

import { zstdDecompress as decompress } from './zstd.js';
import { checkedHeader, decodeCursorIndex, decodeIndexObject, indexFrames, MAX_INDEX_FRAME_BYTES, type CursorParts, type StateRecord } from './index-decoding.js';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { type Entry } from '../formats/entry.js';
import { EntryLine, IndexDecoder, type IndexHeader, type IndexParts, type PackIndex } from '../formats/index-format.js';
import {
  classifyObjectName,
  comparePackIds,
  decodeHeader,
  HEADER_OBJECT,
  indexObjectName,
  LAYERS_PREFIX,
  baseIndexStem,
  packStem,
  parseIndexStem,
  type ArchiveHeader,
  type PackId,
} from '../formats/archive-layout.js';
import { AFTER_ALL, BEFORE_ALL, displayPath, keyToPath, ROOT_KEY } from '../formats/path-key.js';
import { getBuffer, type Store } from '../stores/store.js';

export type { StateRecord };

export interface IndexRef {
  readonly id: PackId;
  readonly stem: string;
  readonly size: number;
}

/** A layer's base (written by gc): index objects that together hold the whole state before that layer. */
export interface LayerBase {
  readonly layer: number;
  /** Its index objects, in order (seq 1, 2, ...). */
  readonly indexes: readonly IndexRef[];
}

export interface Catalog {
  /** Null only when read with onDamagedHeader and the header is damaged or missing. */
  readonly header: ArchiveHeader | null;
  /**
   * Every index object of a layer (not the base indexes), in written order: those of collected layers (before the
   * base) too, which are read only for the members of their packs.
   */
  readonly indexes: readonly IndexRef[];
  /**
   * The newest complete base (one per archive when several are merged), ascending: the state is its indexes, then
   * the layers from its layer on. Empty: no gc yet.
   */
  readonly bases: readonly LayerBase[];
  /** Base index objects of layers without a marker: left by a gc that was stopped; readers ignore them. */
  readonly strayBaseIndexes: readonly IndexRef[];
  /** Base markers older than `base` (left by a gc that was stopped): nothing reads them. */
  readonly oldBaseMarkers: readonly number[];
  /**
   * Layers with no index object left between the first one read (1, or the base's) and the newest: damage, since
   * every layer before the newest was complete. What such a layer recorded is lost.
   */
  readonly missingLayers: readonly number[];
  /** Pack data objects present, by stem, with their sizes. */
  readonly packs: ReadonlyMap<string, number>;
  /** The checksums the store's listing reports for pack data objects, by stem (none if it reports none). */
  readonly packChecksums: ReadonlyMap<string, string>;
  /** Layer numbers present, ascending, from the base's layer on (the layers before it are collected). */
  readonly layers: readonly number[];
  /** Where the ranges of the indexes read through this catalog so far end, by stem: each is read once to find a range's start. */
  readonly throughs: Map<string, string>;
  /** Several archives merged (see CatalogOptions.layerOrigin): which archive each layer came from. */
  readonly layerOrigin?: (layer: number) => number;
}

export async function readArchiveHeader(store: Store): Promise<ArchiveHeader> {
  let bytes: Buffer;
  try {
    bytes = await getBuffer(store, HEADER_OBJECT);
  } catch (error) {
    if (isBlanketError(error, ErrorCodes.MISSING_OBJECT)) {
      throw new BlanketError(ErrorCodes.NOT_AN_ARCHIVE, `${store.location} is not a Blanket archive (no ${HEADER_OBJECT})`, {
        subject: store.location,
      });
    }
    throw error;
  }
  return decodeHeader(bytes);
}

export interface CatalogOptions {
  /**
   * Called when blanket.json is damaged, or missing from a folder that holds layers: the layers do not need the
   * header, so readers that only read (verify, restore) go on with `header` null. Without it, that is an error.
   * A header of a newer format version is never tolerated.
   */
  readonly onDamagedHeader?: (error: BlanketError) => void;
  /**
   * The store presents several independent archives of one source as one (stages/archive-union.ts): which archive
   * each layer came from. Their states are merged by time rather than by layer number.
   */
  readonly layerOrigin?: (layer: number) => number;
}

export async function readCatalog(store: Store, options: CatalogOptions = {}): Promise<Catalog> {
  let header: ArchiveHeader | null = null;
  try {
    header = await readArchiveHeader(store);
  } catch (error) {
    const tolerable =
      options.onDamagedHeader !== undefined &&
      (isBlanketError(error, ErrorCodes.CORRUPT_OBJECT) || (isBlanketError(error, ErrorCodes.NOT_AN_ARCHIVE) && (await holdsLayers(store))));
    if (!tolerable) throw error;
    const missing = error.subject !== HEADER_OBJECT; // readArchiveHeader names the location when there is no header
    options.onDamagedHeader!(
      missing ? new BlanketError(ErrorCodes.MISSING_OBJECT, `the archive header ${HEADER_OBJECT} is missing`, { subject: HEADER_OBJECT }) : error,
    );
  }
  const indexes: IndexRef[] = [];
  const baseIndexes: IndexRef[] = [];
  const markers: number[] = [];
  const packs = new Map<string, number>();
  const packChecksums = new Map<string, string>();
  for await (const info of store.list(LAYERS_PREFIX)) {
    const parsed = classifyObjectName(info.name);
    if (!parsed) continue;
    if (parsed.kind === 'index') (parsed.base ? baseIndexes : indexes).push({ id: parsed.id, stem: parsed.stem, size: info.size });
    else if (parsed.kind === 'base-marker') markers.push(parsed.id.layer);
    else {
      packs.set(parsed.stem, info.size);
      if (info.checksum !== undefined) packChecksums.set(parsed.stem, info.checksum);
    }
  }
  indexes.sort((a, b) => comparePackIds(a.id, b.id));
  baseIndexes.sort((a, b) => comparePackIds(a.id, b.id));
  markers.sort((a, b) => a - b);
  // Per archive (several when merged), the newest marker names its base.
  const origin = options.layerOrigin ?? ((): number => 0);
  const baseLayers = new Map<number, number>();
  for (const layer of markers) baseLayers.set(origin(layer), layer);
  const bases = [...baseLayers.values()].map((layer) => ({ layer, indexes: baseIndexes.filter((ref) => ref.id.layer === layer) }));
  const strayBaseIndexes = baseIndexes.filter((ref) => baseLayers.get(origin(ref.id.layer)) !== ref.id.layer);
  const layers = [...new Set(indexes.map((i) => i.id.layer))].filter((layer) => layer >= (baseLayers.get(origin(layer)) ?? 0));
  const missingLayers: number[] = [];
  for (let i = 0; i < layers.length; i++) {
    // Each archive's layers start at 1, or at its base; within one archive they follow each other.
    const layer = layers[i]!;
    const previous = i > 0 && origin(layers[i - 1]!) === origin(layer) ? layers[i - 1]! : (baseLayers.get(origin(layer)) ?? firstLayerOf(origin(layer), origin)) - 1;
    for (let gap = previous + 1; gap < layer; gap++) missingLayers.push(gap);
  }
  return {
    header,
    indexes,
    bases,
    strayBaseIndexes,
    oldBaseMarkers: markers.filter((layer) => baseLayers.get(origin(layer)) !== layer),
    missingLayers,
    packs,
    packChecksums,
    layers,
    throughs: new Map(),
    ...(options.layerOrigin && { layerOrigin: options.layerOrigin }),
  };
}

/** The first layer number of archive `archive` (virtual numbers of a union are consecutive per archive). */
function firstLayerOf(archive: number, origin: (layer: number) => number): number {
  let layer = 1;
  while (origin(layer) < archive) layer++;
  return layer;
}

/** Whether `layer` was collected by gc: it lies before the base, so no state as of it can be read. */
export function isCollectedLayer(catalog: Catalog, layer: number): boolean {
  const origin = catalog.layerOrigin ?? ((): number => 0);
  return catalog.bases.some((base) => origin(base.layer) === origin(layer) && layer < base.layer);
}

/** Reads and checks one index; `parts` says which of its lines are parsed (see IndexDecoder). */
export async function readIndex(store: Store, stem: string, signal?: AbortSignal, parts: Exclude<IndexParts, 'records'> = 'all'): Promise<PackIndex> {
  return decodeIndexObject(stem, await getBuffer(store, indexObjectName(stem), { signal }), parts);
}

/**
 * The header of index object `stem` from its first lines, checked field by field and against its name but not
 * against the checksum at its end: for a guess that a full read of the same index checks later (gc's choice of the
 * layer to keep from). A full read when the first frame does not hold the header and the line after it.
 */
export async function readIndexHeader(store: Store, stem: string, signal?: AbortSignal): Promise<IndexHeader> {
  const compressed = await fetchIndexObject(store, stem, signal);
  const first = indexFrames(stem, compressed)[0];
  const text = first === undefined ? null : await decompress(first).catch(() => null);
  const body = text === null ? -1 : Math.min(...['\nS\t', '\nH\t', '\nend\t'].map((start) => text.indexOf(start) >>> 0));
  const lineEnd = text === null || body >= text.length ? -1 : text.indexOf(0x0a, body + 1);
  if (text !== null && lineEnd >= 0) {
    const decoder = new IndexDecoder(indexObjectName(stem), 'members');
    decoder.push(text.subarray(0, lineEnd + 1));
    const header = decoder.headerSoFar();
    if (header !== null) return checkedHeader(stem, header);
  }
  return (await decodeIndexObject(stem, compressed, 'members')).header;
}

/** The compressed bytes of index object `stem` (what a cursor reads ahead). */
function fetchIndexObject(store: Store, stem: string, signal: AbortSignal | undefined): Promise<Buffer> {
  return getBuffer(store, indexObjectName(stem), { signal });
}

/** Whether the store holds any index object (a folder with layers but no header is a damaged archive). */
async function holdsLayers(store: Store): Promise<boolean> {
  for await (const info of store.list(LAYERS_PREFIX)) if (classifyObjectName(info.name)?.kind === 'index') return true;
  return false;
}

/** Index refs of one layer, in order. */
export function layerIndexes(catalog: Catalog, layer: number): IndexRef[] {
  return catalog.indexes.filter((i) => i.id.layer === layer);
}

/**
 * Position of the first index of a layer whose range reaches past `after`: ranges are increasing, so a binary
 * search reads O(log n) indexes instead of all of them. The last index is tried first: a run that resumes a
 * partial layer starts after it, and the clock pointer was read from it (catalog.throughs).
 */
async function firstIndexAfter(
  store: Store,
  catalog: Catalog,
  refs: readonly IndexRef[],
  after: string,
  options: Pick<StateOptions, 'signal' | 'onDamagedIndex'>,
): Promise<number> {
  if (after === BEFORE_ALL) return 0;
  const throughOf = async (ref: IndexRef): Promise<string | null> => {
    const known = catalog.throughs.get(ref.stem);
    if (known !== undefined) return known;
    const index = await readIndexOrReport(ref.stem, async () => decodeCursorIndex(ref.stem, await fetchIndexObject(store, ref.stem, options.signal), 'entries', null), options);
    if (index === null) return null;
    catalog.throughs.set(ref.stem, index.header.through);
    return index.header.through;
  };
  const last = await throughOf(refs[refs.length - 1]!);
  if (last !== null && last <= after) return refs.length;
  let lo = 0;
  let hi = refs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const through = await throughOf(refs[mid]!);
    if (through === null) return lo; // damaged: scan from here instead; segments before `after` are dropped anyway
    if (through <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** A segment as a cursor holds it: entries it has handed on are cleared, so they need not outlive their use. */
interface HeldSegment {
  readonly first: string;
  readonly last: string;
  readonly entries: (StateRecord | undefined)[];
}

/** One layer's segments, in key order, loaded one index at a time. */
class LayerCursor {
  private queue: HeldSegment[] = [];
  /** The ranges of the indexes read (see rangeTime), from rangePosition on. */
  private ranges: Array<{ readonly after: string; readonly through: string; readonly time: number }> = [];
  private rangePosition = 0;
  private coverage = 0;
  private entrySegment = 0;
  private entryIndex = 0;
  private exhausted = false;
  private nextRef: number;
  /** The next index, being fetched (and prepared: see IndexAhead) while this one is read (one per layer). */
  private ahead: IndexAhead | null = null;
  private readonly chain: IndexChain;
  /** Stretches of this layer whose record is lost, as found so far (in key order). */
  readonly lost: LostRange[] = [];

  constructor(
    private readonly store: Store,
    private readonly refs: readonly IndexRef[],
    startRef: number,
    private readonly after: string,
    /** A newer layer exists, so this one was complete. */
    private readonly complete: boolean,
    private readonly options: Pick<StateOptions, 'signal' | 'onDamagedIndex' | 'onLostRange' | 'onIndex'>,
    /** Which lines are read, and how (see CursorParts). */
    private readonly parts: CursorParts,
    /** Text the cursors of one merge may hold decompressed ahead, together. */
    private readonly budget: ReadAheadBudget,
  ) {
    this.nextRef = startRef;
    const previous = startRef > 0 ? refs[startRef - 1]!.id.seq : 0;
    this.chain = IndexChain.of(
      refs,
      (range) => {
        this.lost.push(range);
        options.onLostRange?.(range);
      },
      previous,
    );
  }

  /**
   * Starts fetching the layer's next index object, so that it is there when the merge asks for it: the store's
   * latency overlaps the parsing of other indexes. (Only its bytes: decompressed, it is checked frame by frame.)
   */
  readAhead(): void {
    const ref = this.refs[this.nextRef];
    if (ref === undefined || this.ahead !== null) return;
    this.ahead = new IndexAhead(this.store, ref, this.parts, this.budget, this.options.signal);
  }

  /** A lost stretch of this layer that holds `key`, if any. */
  lostRangeOf(key: string): LostRange | undefined {
    return this.lost.find((range) => range.after < key && key <= range.through);
  }

  /** Reads the layer's next index (or finds it has none left): what NEEDS_LOAD asks for. */
  async loadMore(): Promise<void> {
    if (this.exhausted) return;
    if (this.nextRef >= this.refs.length) {
      this.chain.end(this.complete);
      this.exhausted = true;
      return;
    }
    const ref = this.refs[this.nextRef++]!;
    const ahead = this.ahead?.ref === ref ? this.ahead : new IndexAhead(this.store, ref, this.parts, this.budget, this.options.signal);
    this.ahead = null;
    this.readAhead();
    const index = await ahead.take(this.options);
    this.chain.next(ref, index?.header ?? null);
    if (index === null) return;
    this.options.onIndex?.(ref, index);
    const { after, through, time } = index.header;
    if (through > this.after) this.ranges.push({ after, through, time });
    // The index's own arrays: nothing else holds them.
    for (const segment of index.segments) if (segment.last > this.after) this.queue.push(segment as HeldSegment);
  }

  /**
   * The next entry of this layer (key > after), undefined at the end, or NEEDS_LOAD when the next index must
   * be read first (loadMore). Synchronous, as the merge asks every layer for every key.
   */
  peek(): StateRecord | undefined | typeof NEEDS_LOAD {
    for (;;) {
      const segment = this.queue[this.entrySegment];
      if (segment === undefined) {
        if (this.exhausted) return undefined;
        return NEEDS_LOAD;
      }
      const entries = segment.entries;
      while (this.entryIndex < entries.length && entries[this.entryIndex]!.key <= this.after) this.entryIndex++;
      if (this.entryIndex < entries.length) return entries[this.entryIndex];
      // Every entry of this segment is consumed: keep only its bounds (coverage may still need them), so that
      // memory holds one index's entries per layer however far the stream has gone.
      if (entries.length > 0) this.queue[this.entrySegment] = { first: segment.first, last: segment.last, entries: [] };
      this.entrySegment++;
      this.entryIndex = 0;
    }
  }

  /** Past the entry peek() gave: an index holds tens of thousands, and a consumer may be slow with them (restore). */
  advance(): void {
    this.queue[this.entrySegment]!.entries[this.entryIndex++] = undefined;
  }

  /** Whether a segment of this layer contains `key`, or NEEDS_LOAD (see peek). Keys asked must not decrease. */
  covers(key: string): boolean | typeof NEEDS_LOAD {
    const segment = this.segmentFrom(key);
    return segment === NEEDS_LOAD ? NEEDS_LOAD : segment !== undefined && segment.first <= key;
  }

  /**
   * This layer's first segment that ends at or after `key` (it contains key when its first is <= key), undefined
   * if none is left, or NEEDS_LOAD (see peek). Keys asked must not decrease.
   */
  segmentFrom(key: string): HeldSegment | undefined | typeof NEEDS_LOAD {
    for (;;) {
      const segment = this.queue[this.coverage];
      if (segment === undefined) {
        if (this.exhausted) return undefined;
        return NEEDS_LOAD;
      }
      if (segment.last >= key) return segment;
      this.coverage++;
      if (this.coverage >= 256 && this.coverage <= this.entrySegment) {
        this.queue = this.queue.slice(this.coverage);
        this.entrySegment -= this.coverage;
        this.coverage = 0;
      }
    }
  }

  /**
   * When this layer last looked at `key`: the time of its index whose range (after, through] holds it, whether or
   * not a segment does (a hole is "unchanged", which is knowledge too); -Infinity if none does; or NEEDS_LOAD.
   * Keys asked must not decrease.
   */
  rangeTime(key: string): number | typeof NEEDS_LOAD {
    for (;;) {
      const range = this.ranges[this.rangePosition];
      if (range === undefined) return this.exhausted ? -Infinity : NEEDS_LOAD;
      if (range.through >= key) return range.after < key ? range.time : -Infinity;
      this.rangePosition++;
      if (this.rangePosition >= 256) {
        this.ranges = this.ranges.slice(this.rangePosition);
        this.rangePosition = 0;
      }
    }
  }
}

/** Returned by a cursor that must read its next index before it can answer. */
const NEEDS_LOAD = Symbol('needs-load');

/** Decompressed text the cursors of one merge may hold read ahead, together (a frame counts at its limit until done). */
const READ_AHEAD_TEXT_BYTES = 48 << 20;

/**
 * The read-ahead's decompressed text, bounded across the cursors of one merge: a layer's next index has its first
 * frame (an index's first MiB or so: often all of it) decompressed in the libuv pool while the merge parses
 * others, unless that would pass the budget; a frame is reserved at its limit until its size is known.
 */
class ReadAheadBudget {
  private used = 0;

  /** The first frame of index object `stem` decompressed, or null when the budget has no room (or anything is wrong). */
  async decompressFirstFrame(stem: string, compressed: Buffer): Promise<Buffer | null> {
    if (this.used + MAX_INDEX_FRAME_BYTES > READ_AHEAD_TEXT_BYTES) return null;
    const frame = indexFrames(stem, compressed)[0];
    if (frame === undefined) return null;
    this.used += MAX_INDEX_FRAME_BYTES;
    let text: Buffer | null = null;
    try {
      text = await decompress(frame);
      return text;
    } finally {
      this.used -= MAX_INDEX_FRAME_BYTES - (text?.length ?? 0);
    }
  }

  /** Text read ahead that is no longer held. */
  release(bytes: number): void {
    this.used -= bytes;
  }
}

/**
 * An index object read ahead: fetched, and its first frame decompressed within the budget, while other indexes
 * are parsed; take() decodes it (a cursor's next index, or readIndexesNewestFirst's).
 */
class IndexAhead {
  private readonly bytes: Promise<Buffer>;
  private readonly firstText: Promise<Buffer | null>;

  constructor(
    store: Store,
    readonly ref: IndexRef,
    private readonly parts: CursorParts,
    private readonly budget: ReadAheadBudget,
    signal: AbortSignal | undefined,
  ) {
    this.bytes = fetchIndexObject(store, ref.stem, signal);
    this.bytes.catch(() => undefined); // its error is taken when it is awaited (take), or never if the read stops first
    // Any trouble here is left for take() to meet (and report) as it reads the object again.
    this.firstText = this.bytes.then((compressed) => budget.decompressFirstFrame(ref.stem, compressed)).catch(() => null);
  }

  /** The index, checked; or null when it is missing or damaged and a handler took that (see readIndexOrReport). */
  async take(options: Pick<StateOptions, 'signal' | 'onDamagedIndex'>): Promise<PackIndex<StateRecord> | null> {
    const firstText = await this.firstText;
    try {
      return await readIndexOrReport(this.ref.stem, async () => decodeCursorIndex(this.ref.stem, await this.bytes, this.parts, firstText), options);
    } finally {
      if (firstText !== null) this.budget.release(firstText.length);
    }
  }
}

export interface StateOptions {
  /** Newest layer included (default: all). */
  readonly layer?: number;
  /** Only keys greater than this. */
  readonly after?: string;
  /** Only keys up to and including this. */
  readonly through?: string;
  readonly signal?: AbortSignal;
  /**
   * Called for an index that is missing or damaged; that index is then skipped (its range keeps the older
   * state), so the rest of the archive stays readable. Without it, such an index is an error.
   */
  readonly onDamagedIndex?: (stem: string, error: BlanketError) => void;
  /** Called once for each stretch of a layer whose record is lost: indexes missing, or damaged (see onDamagedIndex). */
  readonly onLostRange?: (range: LostRange) => void;
  /** Called before yielding an entry that comes from an older layer because a newer layer's record of it is lost. */
  readonly onOutdated?: (entry: Entry, range: LostRange) => void;
  /**
   * Called with each index object as the merge reads it (each once, in no particular order across layers): its
   * header, and for readHistoryRecords its members too, which are read then only when this is given.
   */
  readonly onIndex?: (ref: IndexRef, index: PackIndex<StateRecord>) => void;
}

/** A stretch of one layer whose record is lost, because indexes are missing or damaged. */
export interface LostRange {
  readonly layer: number;
  /** The missing or damaged index objects (or the one that does not continue its predecessor). */
  readonly stems: readonly string[];
  /** Keys k with after < k <= through ("~": to the end of the tree) are not known as of that layer. */
  readonly after: string;
  readonly through: string;
}

/** "paths after A through B" for messages. */
export function describeLostRange(range: LostRange): string {
  const describe = (key: string): string =>
    key === BEFORE_ALL ? '(start)' : key === AFTER_ALL ? '(end)' : key === ROOT_KEY ? '/' : displayPath(keyToPath(key));
  if (range.after === range.through) return `layer ${range.layer} recorded no paths there (only chunks of a big file), so no path is lost`;
  return `what layer ${range.layer} recorded for paths after ${describe(range.after)} through ${describe(range.through)} is lost`;
}

/**
 * Follows one layer's indexes in written order, which form a chain: sequence numbers 1, 2, 3... without gaps,
 * each range starting where the previous one ended, and a layer that a newer one follows ending at "~".
 * A missing or damaged index breaks the chain; what lies between its intact neighbours is lost.
 */
export class IndexChain {
  private through: string | null;
  private broken: string[] = [];

  /** `previousSeq`: the index just before the first one fed (0: the chain is followed from its start). */
  constructor(
    private readonly layer: number,
    private readonly onLost: (range: LostRange) => void,
    private previousSeq = 0,
    /** Names the layer's index objects (base indexes have their own names). */
    private readonly stemOf: (id: PackId) => string = packStem,
  ) {
    this.through = previousSeq === 0 ? BEFORE_ALL : null;
  }

  /** The chain of a layer's (or a base's) index objects `refs`, followed from after sequence number `previousSeq`. */
  static of(refs: readonly IndexRef[], onLost: (range: LostRange) => void, previousSeq = 0): IndexChain {
    return new IndexChain(refs[0]!.id.layer, onLost, previousSeq, parseIndexStem(refs[0]!.stem)?.base ? baseIndexStem : packStem);
  }

  /** The next index object of the layer, with its header, or null when it could not be read. */
  next(ref: IndexRef, header: IndexHeader | null): void {
    for (let seq = this.previousSeq + 1; seq < ref.id.seq; seq++) this.broken.push(this.stemOf({ layer: this.layer, seq }));
    this.previousSeq = ref.id.seq;
    if (header === null) {
      this.broken.push(ref.stem);
      return;
    }
    const continues = this.through === null || header.after === this.through;
    if (this.broken.length > 0 || !continues) {
      this.onLost({ layer: this.layer, stems: this.broken.length > 0 ? this.broken : [ref.stem], after: this.through ?? BEFORE_ALL, through: header.after });
    }
    this.broken = [];
    this.through = header.through;
  }

  /** The end of the layer's indexes; `complete` when a newer layer exists, so this one reached the end of the tree. */
  end(complete: boolean): void {
    if (this.broken.length === 0 && (!complete || this.through === AFTER_ALL)) return;
    const stems = this.broken.length > 0 ? this.broken : [this.stemOf({ layer: this.layer, seq: this.previousSeq + 1 })];
    this.onLost({ layer: this.layer, stems, after: this.through ?? BEFORE_ALL, through: AFTER_ALL });
    this.broken = [];
  }
}

/** Decodes an index (`decode`), or reports it damaged and returns null when a damage handler is given. */
async function readIndexOrReport(
  stem: string,
  decode: () => Promise<PackIndex<StateRecord>>,
  options: Pick<StateOptions, 'signal' | 'onDamagedIndex'>,
): Promise<PackIndex<StateRecord> | null> {
  try {
    return await decode();
  } catch (error) {
    if (options.onDamagedIndex && (isBlanketError(error, ErrorCodes.CORRUPT_OBJECT) || isBlanketError(error, ErrorCodes.MISSING_OBJECT))) {
      options.onDamagedIndex(stem, error);
      return null;
    }
    throw error;
  }
}

/** The archive state as of a layer, in path order, one entry per existing path. */
export async function* readState(store: Store, catalog: Catalog, options: StateOptions = {}): AsyncGenerator<Entry> {
  for await (const batch of readStateBatches(store, catalog, options)) yield* batch;
}

/** Entries the state is handed on in: one await per batch instead of several per entry. */
const STATE_BATCH = 256;

/** readState in batches of up to STATE_BATCH entries (for consumers that take many entries at a time). */
export function readStateBatches(store: Store, catalog: Catalog, options: StateOptions = {}): AsyncGenerator<Entry[]> {
  return stateBatches(store, catalog, options, false) as AsyncGenerator<Entry[]>; // without records, every record is an Entry
}

/** readStateBatches whose E lines (other than chunked files') come as EntryLines, parsed only when needed. */
export function readStateRecordBatches(store: Store, catalog: Catalog, options: StateOptions = {}): AsyncGenerator<StateRecord[]> {
  return stateBatches(store, catalog, options, true);
}

/** A base or layer whose indexes a read follows: a base sits half a layer before its own layer. */
interface Source {
  /** The layer, or for a base its layer - 0.5 (it holds the state just before that layer's records). */
  readonly position: number;
  readonly refs: readonly IndexRef[];
  /** A newer layer of its archive exists, so this one reached the end of the tree. */
  readonly complete: boolean;
}

/**
 * The base(s) and layers at the positions `include` takes, oldest first; those of them that lost every index
 * (a marker without its base, a layer without indexes) are reported instead (see StateOptions.onDamagedIndex).
 */
function stateSources(catalog: Catalog, options: StateOptions, include: (position: number) => boolean): Source[] {
  const origin = catalog.layerOrigin ?? ((): number => 0);
  /** Newest layer of each archive: the others were complete, since a newer one followed them. */
  const lastLayers = new Map<number, number>();
  for (const layer of catalog.layers) lastLayers.set(origin(layer), layer);
  const lostWhole = (layer: number, stem: string, message: string): void => {
    const error = new BlanketError(ErrorCodes.MISSING_OBJECT, message, { subject: indexObjectName(stem) });
    if (!options.onDamagedIndex) throw error;
    options.onDamagedIndex(stem, error);
    options.onLostRange?.({ layer, stems: [stem], after: BEFORE_ALL, through: AFTER_ALL });
  };
  // A base holds the state as of its layer: it is replayed just before that layer (which then changes nothing), as
  // a complete layer, and the layers before it are not read.
  for (const base of catalog.bases) {
    if (base.indexes.length > 0 || !include(base.layer - 0.5)) continue;
    // A marker without its base: what the base held is lost (everything a newer layer did not record since).
    const stem = baseIndexStem({ layer: base.layer, seq: 1 });
    lostWhole(base.layer, stem, `the base of layer ${base.layer} has no index objects (${indexObjectName(stem)} is missing)`);
  }
  for (const layer of catalog.missingLayers) {
    if (!include(layer)) continue;
    const stem = packStem({ layer, seq: 1 });
    lostWhole(layer, stem, `layer ${layer} has no index object left (${indexObjectName(stem)} is missing)`);
  }
  const sources: Source[] = [];
  for (const base of catalog.bases) if (base.indexes.length > 0 && include(base.layer - 0.5)) sources.push({ position: base.layer - 0.5, refs: base.indexes, complete: true });
  for (const layer of catalog.layers) {
    if (include(layer)) sources.push({ position: layer, refs: layerIndexes(catalog, layer), complete: layer !== lastLayers.get(origin(layer)) });
  }
  return sources.sort((a, b) => a.position - b.position);
}

/** The cursors of the base(s) and layers that make up the state as of options.layer, oldest first. */
async function openCursors(
  store: Store,
  catalog: Catalog,
  options: StateOptions,
  parts: CursorParts,
): Promise<{ cursors: LayerCursor[]; origins: number[]; layers: number[] }> {
  const after = options.after ?? BEFORE_ALL;
  const newest = options.layer ?? Infinity;
  const origin = catalog.layerOrigin ?? ((): number => 0);
  const cursors: LayerCursor[] = [];
  const origins: number[] = [];
  const layers: number[] = [];
  const budget = new ReadAheadBudget();
  for (const source of stateSources(catalog, options, (position) => position <= newest)) {
    const start = await firstIndexAfter(store, catalog, source.refs, after, options);
    cursors.push(new LayerCursor(store, source.refs, start, after, source.complete, options, parts, budget));
    origins.push(origin(Math.ceil(source.position)));
    layers.push(source.position);
  }
  // Every layer's first index at once, rather than one after another as the merge first asks for each.
  for (const cursor of cursors) cursor.readAhead();
  return { cursors, origins, layers };
}

/** An index object as readIndexesNewestFirst reads it. */
export interface SourceIndex {
  /** Its layer, or for a base index its layer - 0.5. */
  readonly position: number;
  readonly ref: IndexRef;
  readonly index: PackIndex<StateRecord>;
}

/** Index objects fetched ahead of the one being read by readIndexesNewestFirst. */
const NEWEST_FIRST_AHEAD = 4;

/**
 * Every index of the base and layers at positions after `newerThan`, newest source first, each source's indexes
 * in written order, read as 'history' (E lines as EntryBytes, H lines as MemberWords). One archive only. What a
 * source's records mean for gc's lifetimes depends only on what newer sources covered (stages/layer-history.ts),
 * so these need no merge. Damage is reported as readState reports it; a lost stretch of a source yields nothing.
 */
export async function* readIndexesNewestFirst(store: Store, catalog: Catalog, newerThan: number, options: StateOptions = {}): AsyncGenerator<SourceIndex> {
  if (catalog.layerOrigin) throw new RangeError('the history of several archives merged is not defined');
  const sources = stateSources(catalog, options, (position) => position > newerThan).reverse();
  const queue = sources.flatMap((source) => source.refs.map((ref) => ({ source, ref })));
  const budget = new ReadAheadBudget();
  /** The reads started, in queue order: the one to decode next first. */
  const ahead: IndexAhead[] = [];
  let started = 0;
  const startMore = (): void => {
    while (ahead.length < NEWEST_FIRST_AHEAD && started < queue.length) ahead.push(new IndexAhead(store, queue[started++]!.ref, 'history', budget, options.signal));
  };
  let chain: IndexChain | null = null;
  startMore();
  for (const { source, ref } of queue) {
    options.signal?.throwIfAborted();
    const current = ahead.shift()!;
    startMore();
    if (source.refs[0] === ref) chain = IndexChain.of(source.refs, (range) => options.onLostRange?.(range));
    const index = await current.take(options);
    chain!.next(ref, index?.header ?? null);
    if (source.refs[source.refs.length - 1] === ref) chain!.end(source.complete);
    if (index !== null) yield { position: source.position, ref, index };
  }
}

async function* stateBatches(store: Store, catalog: Catalog, options: StateOptions, records: boolean): AsyncGenerator<StateRecord[]> {
  const { cursors, origins } = await openCursors(store, catalog, options, records ? 'records' : 'entries');
  const through = options.through ?? AFTER_ALL;
  const merge = catalog.layerOrigin ? new UnionStateMerge(cursors, origins, through, options.onOutdated) : new StateMerge(cursors, through, options.onOutdated);
  yield* drain(merge, options.signal);
}

/** Batches of a merge, each index a cursor asks for read in between. */
async function* drain<T>(merge: CursorMerge<T> | SweepMerge<T>, signal: AbortSignal | undefined): AsyncGenerator<T[]> {
  let batch: T[] = [];
  for (;;) {
    signal?.throwIfAborted();
    const outcome = merge.fill(batch);
    if (outcome === 'end') {
      if (batch.length > 0) yield batch;
      return;
    }
    if (outcome === 'full') {
      yield batch;
      batch = [];
    } else {
      await outcome.loadMore();
    }
  }
}

/**
 * What the merges of the layers' cursors share: the smallest next key of the cursors still live, and moving past
 * it. Synchronous: a merge stops where a cursor must read its next index, and the caller (drain) reads it and asks
 * again. (The per-entry loop lives here rather than in the async generator, which V8 would otherwise have to
 * optimize whole, with all its suspension points, at several times the cost.)
 */
abstract class CursorMerge<T> {
  private live: LayerCursor[];
  private readonly heads: (StateRecord | undefined)[] = [];

  constructor(protected readonly cursors: readonly LayerCursor[]) {
    this.live = cursors.slice();
  }

  /** Appends the next records to `batch`: 'full' once it holds STATE_BATCH, 'end', or the cursor that must read first. */
  abstract fill(batch: T[]): 'full' | 'end' | LayerCursor;

  /** The smallest next key of the live cursors (undefined: none left), or the cursor that must read first. */
  protected nextKey(): string | undefined | LayerCursor {
    const { heads } = this;
    let key: string | undefined;
    heads.length = 0;
    for (const cursor of this.live) {
      const head = cursor.peek();
      if (head === NEEDS_LOAD) return cursor;
      heads.push(head);
      if (head !== undefined && (key === undefined || head.key < key)) key = head.key;
    }
    return key;
  }

  /** Moves the cursors whose next key is `key` (the one nextKey gave) past it, and drops those at their end. */
  protected advancePast(key: string): void {
    const { heads } = this;
    let ended = false;
    for (let i = 0; i < this.live.length; i++) {
      const head = heads[i];
      if (head === undefined) ended = true;
      else if (head.key === key) this.live[i]!.advance();
    }
    if (ended) this.live = this.live.filter((_, i) => heads[i] !== undefined);
  }
}

/**
 * A merge that asks, for each key, only the layers whose segments may hold it: a layer that changed a few
 * stretches sleeps through the rest of the tree, so a key costs the layers that recorded near it, not all of them.
 *
 *   awake:    cursors whose next segment may contain the keys ahead, oldest layer first
 *   sleeping: cursors whose next segment starts after the current key, in a heap by that segment's first key
 *   next key: k = the smallest next entry of the awake cursors, once every sleeper whose segment starts at or
 *             before k is woken (its entries lie in its segments, so none of a sleeper's is smaller)
 *   covering: the awake cursors with a segment containing k; an awake one whose next segment starts after k
 *             goes to sleep, one with no segment left is dropped
 *
 * Nothing moves for a key until every awake cursor could answer for it (a load in between picks up there), and
 * moving a cursor between awake and sleeping for a key is the same however often that key is asked.
 */
abstract class SweepMerge<T> {
  private awake: number[];
  /** Sleeping cursors: a binary min-heap of their wake keys, and the cursor positions alongside. */
  private readonly sleepKeys: string[] = [];
  private readonly sleepers: number[] = [];
  /** The cursors whose segments contain the key nextKey gave, oldest first. */
  protected readonly covering: number[] = [];
  /** Each awake cursor's next record, by cursor, as nextKey saw it (for the covering ones, until advancePast). */
  protected readonly heads: (StateRecord | undefined)[] = [];
  private readonly segments: (HeldSegment | undefined)[] = [];

  constructor(protected readonly cursors: readonly LayerCursor[]) {
    this.awake = cursors.map((_, i) => i);
  }

  abstract fill(batch: T[]): 'full' | 'end' | LayerCursor;

  /** The next key (undefined: none left), its covering cursors in `covering`; or the cursor that must read first. */
  protected nextKey(): string | undefined | LayerCursor {
    const { cursors, awake, segments, heads } = this;
    let key: string | undefined;
    for (;;) {
      key = undefined;
      for (const i of awake) {
        const head = cursors[i]!.peek();
        if (head === NEEDS_LOAD) return cursors[i]!;
        heads[i] = head;
        if (head !== undefined && (key === undefined || head.key < key)) key = head.key;
      }
      if (this.sleepKeys.length === 0 || (key !== undefined && this.sleepKeys[0]! > key)) break;
      while (this.sleepKeys.length > 0 && (key === undefined || this.sleepKeys[0]! <= key)) this.wake();
    }
    if (key === undefined) return undefined;
    segments.length = 0;
    for (const i of awake) {
      const segment = cursors[i]!.segmentFrom(key);
      if (segment === NEEDS_LOAD) return cursors[i]!;
      segments.push(segment);
    }
    // Every awake cursor answered: now they move.
    const covering = this.covering;
    covering.length = 0;
    let kept = 0;
    for (let a = 0; a < awake.length; a++) {
      const i = awake[a]!;
      const segment = segments[a];
      if (segment === undefined) continue;
      if (segment.first <= key) {
        covering.push(i);
        awake[kept++] = i;
      } else {
        // An entry outside its layer's segments (a damaged or forged index) is passed over, never waited on.
        const head = heads[i];
        if (head !== undefined && head.key === key) cursors[i]!.advance();
        this.sleep(i, segment.first);
      }
    }
    awake.length = kept;
    return key;
  }

  /** Moves the covering cursors whose next entry is `key` past it (only they can have one there). */
  protected advancePast(key: string): void {
    for (const i of this.covering) {
      const head = this.heads[i];
      if (head !== undefined && head.key === key) this.cursors[i]!.advance();
    }
  }

  private sleep(cursor: number, wakeKey: string): void {
    const keys = this.sleepKeys;
    const cursors = this.sleepers;
    let at = keys.length;
    keys.push(wakeKey);
    cursors.push(cursor);
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (keys[parent]! <= wakeKey) break;
      keys[at] = keys[parent]!;
      cursors[at] = cursors[parent]!;
      at = parent;
    }
    keys[at] = wakeKey;
    cursors[at] = cursor;
  }

  /** The sleeper with the smallest wake key joins the awake cursors, in layer order. */
  private wake(): void {
    const keys = this.sleepKeys;
    const cursors = this.sleepers;
    const woken = cursors[0]!;
    const lastKey = keys.pop()!;
    const lastCursor = cursors.pop()!;
    if (keys.length > 0) {
      let at = 0;
      for (;;) {
        let child = 2 * at + 1;
        if (child >= keys.length) break;
        if (child + 1 < keys.length && keys[child + 1]! < keys[child]!) child++;
        if (keys[child]! >= lastKey) break;
        keys[at] = keys[child]!;
        cursors[at] = cursors[child]!;
        at = child;
      }
      keys[at] = lastKey;
      cursors[at] = lastCursor;
    }
    const awake = this.awake;
    let at = awake.length;
    awake.push(woken);
    while (at > 0 && awake[at - 1]! > woken) {
      awake[at] = awake[at - 1]!;
      at--;
    }
    awake[at] = woken;
  }
}

/** Reports `winner` (of cursor `winnerAt`) as outdated when a newer layer of its archive, up to `newestAt`, lost the stretch holding it. */
function reportOutdated(
  cursors: readonly LayerCursor[],
  winnerAt: number,
  newestAt: number,
  key: string,
  winner: StateRecord,
  onOutdated: NonNullable<StateOptions['onOutdated']>,
): void {
  for (let i = newestAt; i > winnerAt; i--) {
    const lost = cursors[i]!.lostRangeOf(key);
    if (lost) {
      onOutdated(winner instanceof EntryLine ? winner.entry() : winner, lost);
      return;
    }
  }
}

/** The merge of one archive's cursors into the state: per key, the record of the newest layer with a segment containing it. */
class StateMerge extends SweepMerge<StateRecord> {
  constructor(
    cursors: readonly LayerCursor[],
    private readonly through: string,
    private readonly onOutdated: StateOptions['onOutdated'],
  ) {
    super(cursors);
  }

  /**
   * Appends the next entries to `batch`: 'full' once it holds STATE_BATCH, 'end' at the end of the state, or
   * the cursor that must read its next index first.
   */
  fill(batch: StateRecord[]): 'full' | 'end' | LayerCursor {
    const { cursors, covering } = this;
    for (;;) {
      const key = this.nextKey();
      if (key instanceof LayerCursor) return key;
      if (key === undefined || key > this.through) return 'end';
      let winner: StateRecord | undefined;
      const winnerAt = covering.length > 0 ? covering[covering.length - 1]! : -1;
      if (winnerAt >= 0) {
        const head = this.heads[winnerAt];
        if (head !== undefined && head.key === key) winner = head;
      }
      // Newer layers sleeping past `key` have read the index holding their next segment, so their lost stretches
      // up to `key` are known.
      if (winner !== undefined && this.onOutdated) reportOutdated(cursors, winnerAt, cursors.length - 1, key, winner, this.onOutdated);
      this.advancePast(key);
      if (winner !== undefined) {
        batch.push(winner);
        if (batch.length >= STATE_BATCH) return 'full';
      }
    }
  }
}

/**
 * The merge of several archives' cursors into one state (by time; see winnerOf). Every cursor is asked about
 * every key, as an archive's freshness for a key needs all of its layers.
 */
class UnionStateMerge extends CursorMerge<StateRecord> {
  /** The first cursor of each cursor's archive (an archive's layers are consecutive). */
  private readonly originStart: number[];

  constructor(
    cursors: readonly LayerCursor[],
    /** The archive of each cursor. */
    origins: readonly number[],
    private readonly through: string,
    private readonly onOutdated: StateOptions['onOutdated'],
  ) {
    super(cursors);
    const start: number[] = [];
    for (let i = 0; i < origins.length; i++) start.push(i > 0 && origins[i - 1] === origins[i] ? start[i - 1]! : i);
    if (new Set(origins).size !== new Set(start).size) throw new RangeError("an archive's layers must be consecutive");
    this.originStart = start;
  }

  /**
   * The cursor whose record of `key` wins, or -1 if none covers it; NEEDS_LOAD via the cursor that must read first.
   *
   *   per archive, its state (its newest layer with a segment that covers key) and its freshness (the time of its
   *   newest index whose range holds key); the freshest archive's state wins (ties: the archive listed later).
   *   Its state may be "no such path" (-1) though an older archive has one.
   */
  private winnerOf(key: string): number | LayerCursor {
    const { cursors, originStart } = this;
    let winner = -1;
    let winnerTime = -Infinity;
    for (let newest = cursors.length - 1; newest >= 0; newest = originStart[newest]! - 1) {
      const oldest = originStart[newest]!;
      let time = -Infinity;
      for (let i = newest; i >= oldest && time === -Infinity; i--) {
        const known = cursors[i]!.rangeTime(key);
        if (known === NEEDS_LOAD) return cursors[i]!;
        time = known;
      }
      if (time === -Infinity || time <= winnerTime) continue;
      winnerTime = time;
      winner = -1;
      for (let i = newest; i >= oldest; i--) {
        const covered = cursors[i]!.covers(key);
        if (covered === NEEDS_LOAD) return cursors[i]!;
        if (covered) {
          winner = i;
          break;
        }
      }
    }
    return winner;
  }

  /** As StateMerge.fill. Nothing moves for a key until every cursor could answer for it. */
  fill(batch: StateRecord[]): 'full' | 'end' | LayerCursor {
    const { cursors } = this;
    for (;;) {
      const key = this.nextKey();
      if (key instanceof LayerCursor) return key;
      if (key === undefined || key > this.through) return 'end';
      let winner: StateRecord | undefined;
      const winnerAt = this.winnerOf(key);
      if (winnerAt instanceof LayerCursor) return winnerAt;
      if (winnerAt >= 0) {
        const head = cursors[winnerAt]!.peek();
        if (head === NEEDS_LOAD) return cursors[winnerAt]!;
        if (head !== undefined && head.key === key) winner = head;
      }
      // Every newer layer of the winner's archive was asked whether it covers `key`, so its lost stretches up to
      // `key` are known.
      if (winner !== undefined && this.onOutdated) {
        reportOutdated(cursors, winnerAt, this.originStart.lastIndexOf(this.originStart[winnerAt]!), key, winner, this.onOutdated);
      }
      this.advancePast(key);
      if (winner !== undefined) {
        batch.push(winner);
        if (batch.length >= STATE_BATCH) return 'full';
      }
    }
  }
}

/** One path's versions across the base and the layers, oldest first (see readHistory). */
export interface PathHistory<E extends StateRecord = Entry> {
  readonly key: string;
  /**
   * Each layer that recorded the path (its segment covers it), with its entry, or null where it recorded the path's
   * deletion. A base counts as its own layer (it holds the state as of that layer), just before that layer's record.
   */
  readonly versions: ReadonlyArray<{ readonly layer: number; readonly entry: E | null }>;
}

/**
 * Every path any layer recorded, in path order, with all its versions (for gc: which layers' states need which
 * content). One archive only; layers lost to damage are reported as by readState's handlers.
 */
export function readHistory(store: Store, catalog: Catalog, options: StateOptions = {}): AsyncGenerator<PathHistory[]> {
  return historyBatches(store, catalog, options, false) as AsyncGenerator<PathHistory[]>; // without records, every record is an Entry
}

/** readHistory whose E lines (other than chunked files') come as EntryLines, parsed only when needed. */
export function readHistoryRecords(store: Store, catalog: Catalog, options: StateOptions = {}): AsyncGenerator<PathHistory<StateRecord>[]> {
  return historyBatches(store, catalog, options, true);
}

async function* historyBatches(store: Store, catalog: Catalog, options: StateOptions, records: boolean): AsyncGenerator<PathHistory<StateRecord>[]> {
  if (catalog.layerOrigin) throw new RangeError('the history of several archives merged is not defined');
  const { cursors, layers } = await openCursors(store, catalog, options, !records ? 'entries' : options.onIndex ? 'history' : 'records');
  yield* drain(new HistoryMerge(cursors, layers.map((layer) => Math.ceil(layer))), options.signal);
}

/** The merge of the layers' cursors into the history: every covering layer's record of each key, not only the newest. */
class HistoryMerge extends SweepMerge<PathHistory<StateRecord>> {
  constructor(
    cursors: readonly LayerCursor[],
    private readonly layers: readonly number[],
  ) {
    super(cursors);
  }

  fill(batch: PathHistory<StateRecord>[]): 'full' | 'end' | LayerCursor {
    const { covering, heads } = this;
    for (;;) {
      const key = this.nextKey();
      if (key instanceof LayerCursor) return key;
      if (key === undefined) return 'end';
      const versions: Array<{ layer: number; entry: StateRecord | null }> = [];
      for (const i of covering) {
        const head = heads[i];
        versions.push({ layer: this.layers[i]!, entry: head !== undefined && head.key === key ? head : null });
      }
      this.advancePast(key);
      batch.push({ key, versions });
      if (batch.length >= STATE_BATCH) return 'full';
    }
  }
}

/** The newest layer and how far it got: where the next backup run starts. */
export interface ClockPointer {
  /** Layer the next run writes to. */
  readonly layer: number;
  /** Next pack sequence number in that layer. */
  readonly seq: number;
  /** Keys up to and including this are already covered in that layer. */
  readonly after: string;
}

export async function readClockPointer(store: Store, catalog: Catalog, signal?: AbortSignal): Promise<ClockPointer> {
  const last = catalog.indexes[catalog.indexes.length - 1];
  if (last === undefined) return { layer: 1, seq: 1, after: BEFORE_ALL };
  const index = await readIndex(store, last.stem, signal, 'members'); // its header is all that is needed
  catalog.throughs.set(last.stem, index.header.through);
  if (index.header.through === AFTER_ALL) return { layer: last.id.layer + 1, seq: 1, after: BEFORE_ALL };
  return { layer: last.id.layer, seq: last.id.seq + 1, after: index.header.through };
}
