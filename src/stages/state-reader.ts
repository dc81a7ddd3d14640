// Reads the archive: its catalog of packs, single indexes, and the merged state as of a layer, streamed in path order.
//
// The state as of layer N is what replaying every pack of layers 1..N in written order gives, where each
// index's segments replace their key ranges and holes keep what was there. Within one layer, packs cover
// ranges that follow each other, so each layer is one sorted stream of segments. The merge walks all layers
// at once, never loading more than one index per layer:
//
//   layer 1  [S...........................................]   (first full pass)
//   layer 2        [S..]           [S.]        [S......]     (only changed stretches)
//   layer 3                 [S]                         [S]
//   for key k (smallest next entry key of any layer):
//       winner = newest layer with a segment containing k
//       emit winner's entry for k if it has one (no entry there = k deleted in that layer)
//       advance every layer past k

import { decompress } from '@mongodb-js/zstd';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { type Entry } from '../formats/entry.js';
import { decodeIndex, type IndexSegment, type PackIndex } from '../formats/index-format.js';
import {
  classifyObjectName,
  comparePackIds,
  decodeHeader,
  HEADER_OBJECT,
  indexObjectName,
  LAYERS_PREFIX,
  type ArchiveHeader,
  type PackId,
} from '../formats/archive-layout.js';
import { AFTER_ALL, BEFORE_ALL } from '../formats/path-key.js';
import { getBuffer, type Store } from '../stores/store.js';

/** Largest compressed index object read; indexes are capped well below this by the packer. */
const MAX_INDEX_OBJECT_BYTES = 256 << 20;

export interface IndexRef {
  readonly id: PackId;
  readonly stem: string;
  readonly size: number;
}

export interface Catalog {
  readonly header: ArchiveHeader;
  /** Every index object, in written order. */
  readonly indexes: readonly IndexRef[];
  /** Pack data objects present, by stem, with their sizes. */
  readonly packs: ReadonlyMap<string, number>;
  /** Layer numbers present, ascending. */
  readonly layers: readonly number[];
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

export async function readCatalog(store: Store): Promise<Catalog> {
  const header = await readArchiveHeader(store);
  const indexes: IndexRef[] = [];
  const packs = new Map<string, number>();
  for await (const info of store.list(LAYERS_PREFIX)) {
    const parsed = classifyObjectName(info.name);
    if (!parsed) continue;
    if (parsed.kind === 'index') indexes.push({ id: parsed.id, stem: parsed.stem, size: info.size });
    else packs.set(parsed.stem, info.size);
  }
  indexes.sort((a, b) => comparePackIds(a.id, b.id));
  const layers = [...new Set(indexes.map((i) => i.id.layer))];
  return { header, indexes, packs, layers };
}

export async function readIndex(store: Store, stem: string, signal?: AbortSignal): Promise<PackIndex> {
  const name = indexObjectName(stem);
  const compressed = await getBuffer(store, name, { signal });
  if (compressed.length > MAX_INDEX_OBJECT_BYTES) {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `index ${name} is implausibly large (${compressed.length} bytes)`, { subject: name });
  }
  let text: Buffer;
  try {
    text = await decompress(compressed);
  } catch (cause) {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `index ${name} is not valid zstd data: ${(cause as Error).message}`, {
      subject: name,
      cause,
    });
  }
  const index = decodeIndex(text, name);
  const [layer, seq] = stem.split('/').map(Number) as [number, number];
  if (index.header.layer !== layer || index.header.seq !== seq) {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `index ${name} claims to be layer ${index.header.layer} pack ${index.header.seq}`, {
      subject: name,
    });
  }
  return index;
}

/** Index refs of one layer, in order. */
export function layerIndexes(catalog: Catalog, layer: number): IndexRef[] {
  return catalog.indexes.filter((i) => i.id.layer === layer);
}

/**
 * Position of the first index of a layer whose range reaches past `after`: ranges are increasing,
 * so a binary search reads O(log n) indexes instead of all of them.
 */
async function firstIndexAfter(
  store: Store,
  refs: readonly IndexRef[],
  after: string,
  options: Pick<StateOptions, 'signal' | 'onDamagedIndex'>,
): Promise<number> {
  if (after === BEFORE_ALL) return 0;
  let lo = 0;
  let hi = refs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const index = await readIndexOrReport(store, refs[mid]!.stem, options);
    if (index === null) return lo; // damaged: scan from here instead; segments before `after` are dropped anyway
    if (index.header.through <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** One layer's segments, in key order, loaded one index at a time. */
class LayerCursor {
  private queue: IndexSegment[] = [];
  private coverage = 0;
  private entrySegment = 0;
  private entryIndex = 0;
  private exhausted = false;
  private nextRef: number;

  constructor(
    private readonly store: Store,
    private readonly refs: readonly IndexRef[],
    startRef: number,
    private readonly after: string,
    private readonly options: Pick<StateOptions, 'signal' | 'onDamagedIndex'>,
  ) {
    this.nextRef = startRef;
  }

  /** Makes queue[position] available; false if the layer has no more segments. */
  private async load(position: number): Promise<boolean> {
    while (position >= this.queue.length) {
      if (this.exhausted || this.nextRef >= this.refs.length) {
        this.exhausted = true;
        return false;
      }
      const index = await readIndexOrReport(this.store, this.refs[this.nextRef++]!.stem, this.options);
      if (index === null) continue;
      for (const segment of index.segments) if (segment.last > this.after) this.queue.push(segment);
    }
    return true;
  }

  /** The next entry of this layer (key > after), or undefined at the end. */
  async peek(): Promise<Entry | undefined> {
    for (;;) {
      const segment = this.queue[this.entrySegment];
      if (segment === undefined) {
        if (!(await this.load(this.entrySegment))) return undefined;
        continue;
      }
      const entries = segment.entries;
      while (this.entryIndex < entries.length && entries[this.entryIndex]!.key <= this.after) this.entryIndex++;
      if (this.entryIndex < entries.length) return entries[this.entryIndex];
      this.entrySegment++;
      this.entryIndex = 0;
    }
  }

  advance(): void {
    this.entryIndex++;
  }

  /** Whether a segment of this layer contains `key`. Keys asked must not decrease. */
  async covers(key: string): Promise<boolean> {
    for (;;) {
      const segment = this.queue[this.coverage];
      if (segment === undefined) {
        if (!(await this.load(this.coverage))) return false;
        continue;
      }
      if (segment.last >= key) return segment.first <= key;
      this.coverage++;
      if (this.coverage >= 256 && this.coverage <= this.entrySegment) {
        this.queue = this.queue.slice(this.coverage);
        this.entrySegment -= this.coverage;
        this.coverage = 0;
      }
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
}

/** Reads an index, or reports it damaged and returns null when a damage handler is given. */
async function readIndexOrReport(store: Store, stem: string, options: Pick<StateOptions, 'signal' | 'onDamagedIndex'>): Promise<PackIndex | null> {
  try {
    return await readIndex(store, stem, options.signal);
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
  const after = options.after ?? BEFORE_ALL;
  const through = options.through ?? AFTER_ALL;
  const newest = options.layer ?? Infinity;
  const cursors: LayerCursor[] = [];
  for (const layer of catalog.layers) {
    if (layer > newest) continue;
    const refs = layerIndexes(catalog, layer);
    const start = await firstIndexAfter(store, refs, after, options);
    cursors.push(new LayerCursor(store, refs, start, after, options));
  }
  let live = cursors.slice();
  for (;;) {
    options.signal?.throwIfAborted();
    let key: string | undefined;
    const heads: (Entry | undefined)[] = [];
    for (const cursor of live) {
      const head = await cursor.peek();
      heads.push(head);
      if (head !== undefined && (key === undefined || head.key < key)) key = head.key;
    }
    if (key === undefined || key > through) return;
    let winner: Entry | undefined;
    for (let i = cursors.length - 1; i >= 0; i--) {
      if (await cursors[i]!.covers(key)) {
        const head = await cursors[i]!.peek();
        if (head !== undefined && head.key === key) winner = head;
        break;
      }
    }
    const stillLive: LayerCursor[] = [];
    live.forEach((cursor, i) => {
      const head = heads[i];
      if (head === undefined) return;
      if (head.key === key) cursor.advance();
      stillLive.push(cursor);
    });
    live = stillLive;
    if (winner !== undefined) yield winner;
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
  const index = await readIndex(store, last.stem, signal);
  if (index.header.through === AFTER_ALL) return { layer: last.id.layer + 1, seq: 1, after: BEFORE_ALL };
  return { layer: last.id.layer, seq: last.id.seq + 1, after: index.header.through };
}
