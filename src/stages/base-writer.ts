// Base writer: writes the base of a layer for gc, the whole state as of that layer in index-only objects.
//
//   state as of layer K (current base, then layers up to K), in path order (16,384 entries an object, zstd 3)
//     ─▶ base-00000001.idx.zst  (!, k1]   one segment holding every entry in its range
//     ─▶ base-00000002.idx.zst  (k1, k2]
//     ─▶ ...                    (kn, ~]
//   then gc writes the marker layers/K/base: readers start from this base and no longer read the layers before K
//
// The state comes in as gc reads the history (BaseWriter.add, the same pass), or from its own read of the state
// (writeBase). Every object is written whole (one put each) before the marker, so a gc stopped on the way leaves
// base objects that nothing reads (no marker), which the next gc deletes. Layer K's own indexes, replayed over the
// base, change nothing: the base is the state they made.

import { baseIndexStem, indexObjectName } from '../formats/archive-layout.js';
import { IndexEncoder, type IndexHeader } from '../formats/index-format.js';
import { AFTER_ALL, BEFORE_ALL } from '../formats/path-key.js';
import type { Store } from '../stores/store.js';
import { compressIndexText } from './index-compression.js';
import { readStateRecordBatches, type Catalog, type StateRecord } from './state-reader.js';

/**
 * Entries per base index: ~4.5 MiB of text, ~1 MiB compressed. Small enough that one is compressed and stored
 * while the next is gathered, and a million paths make ~60 objects.
 */
const BASE_INDEX_ENTRIES = 16_384;
/**
 * zstd level of base indexes: 3, as backup's indexes. Level 6 made them 2.5% smaller for twice the ~5 ms/MiB, and
 * the last base index is compressed after the pass, where gc waits for it (bench: ~25 ms of a 0.6 s gc).
 */
const BASE_INDEX_LEVEL = 3;

export interface BaseWriteOptions {
  /** The `time` its indexes record: when the state they hold was last looked at (the layer's last index). */
  readonly time: number;
  readonly signal?: AbortSignal;
}

export interface BaseWriteResult {
  readonly indexes: number;
  readonly entries: number;
  /** Bytes written (compressed). */
  readonly bytes: number;
}

/** Writes the base of one layer from its state, fed in path order; the caller writes the marker after finish(). */
export class BaseWriter {
  private seq = 0;
  private entries = 0;
  private bytes = 0;
  private after = BEFORE_ALL;
  private encoder = new IndexEncoder();
  private lastKey: string | null = null;
  /** The index being compressed and stored while the next fills: one at a time. */
  private pending: Promise<void> | null = null;
  /** Names of the objects put (or being put), for a caller that must take them back. */
  readonly written: string[] = [];

  constructor(
    private readonly store: Store,
    readonly layer: number,
    private readonly options: BaseWriteOptions,
  ) {}

  /** The next entries of the state, in path order. */
  async add(records: Iterable<StateRecord>): Promise<void> {
    for (const record of records) {
      if (this.lastKey === null) this.encoder.openSegment(record.key);
      this.encoder.addRecord(record);
      this.lastKey = record.key;
      this.entries++;
      if (this.encoder.entries >= BASE_INDEX_ENTRIES) await this.flush(record.key);
    }
  }

  /** Writes the last index (reaching the end of the tree; an empty state is one index of no entries), and waits for all. */
  async finish(): Promise<BaseWriteResult> {
    await this.flush(AFTER_ALL);
    await this.pending;
    this.pending = null;
    return { indexes: this.seq, entries: this.entries, bytes: this.bytes };
  }

  /** Stops without writing the rest, once the index being stored is (or failed): `written` then names all there is. */
  async abandon(): Promise<void> {
    await this.pending?.catch(() => undefined);
    this.pending = null;
  }

  private async flush(through: string): Promise<void> {
    if (this.lastKey !== null) this.encoder.closeSegment(this.lastKey);
    const header: IndexHeader = { layer: this.layer, seq: ++this.seq, pack: null, after: this.after, through, time: this.options.time, base: true };
    const text = this.encoder.finishParts(header);
    const name = indexObjectName(baseIndexStem({ layer: this.layer, seq: this.seq }));
    this.after = through;
    this.encoder = new IndexEncoder();
    this.lastKey = null;
    await this.pending; // the previous one is stored first (and its failure surfaces here)
    this.written.push(name);
    const store = async (): Promise<void> => {
      const body = await compressIndexText(text, BASE_INDEX_LEVEL);
      await this.store.put(name, body, { signal: this.options.signal });
      this.bytes += body.length;
    };
    const pending = store();
    pending.catch(() => {}); // observed when awaited (next flush or finish), not unhandled meanwhile
    this.pending = pending;
  }
}

/** Writes the base of `layer` into `store` from its own read of the state (through `catalog`); the caller writes the marker. */
export async function writeBase(store: Store, catalog: Catalog, layer: number, options: BaseWriteOptions): Promise<BaseWriteResult> {
  const writer = new BaseWriter(store, layer, options);
  for await (const batch of readStateRecordBatches(store, catalog, { layer, signal: options.signal })) await writer.add(batch);
  return writer.finish();
}
