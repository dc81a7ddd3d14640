// Base writer: writes the base of a layer for gc, the whole state as of that layer in index-only objects.
//
//   state as of layer K (current base, then layers up to K), in path order
//     ─▶ base-00000001.idx.zst  (!, k1]   one segment holding every entry in its range
//     ─▶ base-00000002.idx.zst  (k1, k2]
//     ─▶ ...                    (kn, ~]
//   then gc writes the marker layers/K/base: readers start from this base and no longer read the layers before K
//
// Every object is written whole (one put each) before the marker, so a gc stopped on the way leaves base
// objects that nothing reads (no marker), which the next gc deletes. Layer K's own indexes, replayed over the
// base, change nothing: the base is the state they made.

import { baseIndexStem, indexObjectName } from '../formats/archive-layout.js';
import { IndexEncoder, type IndexHeader } from '../formats/index-format.js';
import { AFTER_ALL, BEFORE_ALL } from '../formats/path-key.js';
import type { Store } from '../stores/store.js';
import { compressIndexText } from './packer.js';
import { readStateBatches, type Catalog } from './state-reader.js';

/** Entries per base index: ~1.5 MiB of text per 8,192, so ~12 MiB here (readers take frames of up to 16 MiB and 256 MiB in all). */
const BASE_INDEX_ENTRIES = 65_536;
/** zstd level of base indexes: written once, read by every later run. */
const BASE_INDEX_LEVEL = 9;

export interface BaseWriteOptions {
  /** The `time` its indexes record: when the state they hold was last looked at (the layer's last index). */
  readonly time: number;
  readonly signal?: AbortSignal;
  /** Called after each base index is written, with its compressed size. */
  readonly onWritten?: (name: string, bytes: number) => void;
}

export interface BaseWriteResult {
  readonly indexes: number;
  readonly entries: number;
  /** Bytes written (compressed). */
  readonly bytes: number;
}

/** Writes the base of `layer` into `store` (read through `catalog`); the caller writes the marker afterwards. */
export async function writeBase(store: Store, catalog: Catalog, layer: number, options: BaseWriteOptions): Promise<BaseWriteResult> {
  let seq = 0;
  let entries = 0;
  let bytes = 0;
  let after = BEFORE_ALL;
  let encoder = new IndexEncoder();
  let lastKey: string | null = null;
  const flush = async (through: string): Promise<void> => {
    if (lastKey !== null) encoder.closeSegment(lastKey);
    const header: IndexHeader = { layer, seq: ++seq, pack: null, after, through, time: options.time, base: true };
    const body = await compressIndexText(encoder.finishParts(header), BASE_INDEX_LEVEL);
    const name = indexObjectName(baseIndexStem({ layer, seq }));
    await store.put(name, body, { signal: options.signal });
    options.onWritten?.(name, body.length);
    bytes += body.length;
    after = through;
    encoder = new IndexEncoder();
    lastKey = null;
  };
  for await (const batch of readStateBatches(store, catalog, { layer, signal: options.signal })) {
    for (const entry of batch) {
      if (lastKey === null) encoder.openSegment(entry.key);
      encoder.addEntry(entry);
      lastKey = entry.key;
      entries++;
      if (encoder.entries >= BASE_INDEX_ENTRIES) await flush(entry.key);
    }
  }
  // The last one reaches the end of the tree (an empty state is one index of no entries).
  await flush(AFTER_ALL);
  return { indexes: seq, entries, bytes };
}
