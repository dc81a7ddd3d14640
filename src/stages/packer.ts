// Packer: turns hashed items into packs — the workers' compressed tar members for new content, index segments
// for changed paths — and commits each pack by writing its index only after its data object is durable.
//
//   stored content ─▶ append its frames to the open pack; record each member (H line, content table)
//   item ─▶ clean (same as before)?  ── yes ─▶ close the open segment (a hole: state carries over)
//                                    └─ no ──▶ extend the open segment (content by hash: this pack or earlier)
//   pack full / entries cap / stop ─▶ end of tar ─▶ await durable put ─▶ put index (the checkpoint)

import type { ChunkRef, Entry } from '../formats/entry.js';
import { EMPTY_SHA256, sameEntry } from '../formats/entry.js';
import { IndexEncoder, STORE_CHECKSUM_PATTERN, type IndexHeader } from '../formats/index-format.js';
import { indexObjectName, packObjectName, packStem } from '../formats/archive-layout.js';
import { AFTER_ALL, displayPath, keyToPath } from '../formats/path-key.js';
import type { ObjectInfo, Store } from '../stores/store.js';
import { END_OF_TAR_SIZE } from '../formats/tar-member.js';
import { compressFrames } from './compressor.js';
import { compressIndexText } from './index-compression.js';
import type { ContentTable } from './content-table.js';
import type { HashedItem, StoredContent } from './hasher.js';
import type { Monitor } from './monitor.js';
import type { OwnerNames } from './owner-names.js';
import { entryFromStat, entryKind } from './entry-record.js';

export interface PackerOptions {
  readonly store: Store;
  readonly layer: number;
  readonly firstSeq: number;
  /** Clock pointer at the start of this run. */
  readonly after: string;
  /** Tar bytes (before compression) after which a pack is closed. */
  readonly packSize: number;
  /** Most entries one index may list. */
  readonly maxEntries: number;
  readonly compressionLevel: number;
  readonly contents: ContentTable;
  readonly owners: OwnerNames;
  readonly monitor: Monitor;
  readonly signal?: AbortSignal;
  /** Whether a pack's data object is in the archive: content read again is not referred to a missing pack. */
  readonly packExists?: (stem: string) => boolean;
}

interface OpenPack {
  readonly stem: string;
  /** The pack object's bytes on their way to the store. */
  readonly data: PackBody;
  readonly put: Promise<ObjectInfo>;
  tarBytes: number;
}

export interface PackerTotals {
  packs: number;
  indexes: number;
  storedBytes: number;
  newFiles: number;
  changedFiles: number;
  deleted: number;
  unchanged: number;
  newContentBytes: number;
}

export class Packer {
  private seq: number;
  private after: string;
  private lastKey: string;
  private encoder = new IndexEncoder();
  /** Last key of the open segment (null: none is open); its entries are in the encoder already. */
  private segmentLast: string | null = null;
  private segmentCount = 0;
  private open: OpenPack | null = null;
  /** Where each chunk of a big file in progress went. */
  private readonly pendingChunks = new Map<string, ChunkRef[]>();
  /** The frame that ends every pack's tar (1024 zero bytes), compressed once. */
  private endOfTar: Promise<Buffer> | undefined;
  /** The last pack being committed (its data finishing, then its index): the next index waits for it. */
  private closing: Promise<void> = Promise.resolve();
  /** Rejects when a commit fails, and never resolves otherwise: raced with the open pack's writes. */
  private commitFailed: Promise<never> = new Promise<never>(() => undefined);
  /** Set when a commit has failed: the next append throws it rather than fill a pack that cannot follow. */
  private commitError: { readonly error: unknown } | null = null;
  readonly totals: PackerTotals = { packs: 0, indexes: 0, storedBytes: 0, newFiles: 0, changedFiles: 0, deleted: 0, unchanged: 0, newContentBytes: 0 };

  private readonly packExists: (stem: string) => boolean;

  constructor(private readonly options: PackerOptions) {
    this.packExists = options.packExists ?? ((): boolean => true);
    this.seq = options.firstSeq;
    this.after = options.after;
    this.lastKey = options.after;
  }

  /** Keys up to this are committed in the archive. */
  get committedThrough(): string {
    return this.after;
  }

  get currentLayer(): number {
    return this.options.layer;
  }

  /** Takes one item; returns a promise only when there is something to wait for (most items need none). */
  add(item: HashedItem): Promise<void> | undefined {
    switch (item.kind) {
      case 'stored':
        return this.append(item.content).then(() => this.closeIfFull());
      case 'chunk': {
        const ref = this.stored(item.chunk.hash, item.chunk.size);
        const refs = this.pendingChunks.get(item.key) ?? [];
        refs.push(ref);
        this.pendingChunks.set(item.key, refs);
        return this.closeIfFull();
      }
      case 'unchanged':
        this.pendingChunks.delete(item.key);
        this.clean();
        this.totals.unchanged++;
        break;
      case 'same':
        this.clean();
        this.totals.unchanged++;
        this.walked(item.key, item.fileSize);
        break;
      case 'deleted':
        this.dirty(item.key, null);
        this.totals.deleted++;
        this.options.monitor.emit({ type: 'file', path: displayPath(keyToPath(item.previous.key)), action: 'deleted', size: item.previous.size });
        break;
      case 'entry': {
        const entry = this.buildEntry(item);
        if (entry === null) {
          this.clean();
          break;
        }
        if (item.previous !== null && sameEntry(entry, item.previous)) {
          this.clean();
          this.totals.unchanged++;
        } else {
          this.dirty(item.key, entry);
          if (entry.kind === 'file') {
            if (item.previous === null) this.totals.newFiles++;
            else this.totals.changedFiles++;
            this.options.monitor.emit({ type: 'file', path: displayPath(item.walked.path), action: item.previous === null ? 'new' : 'changed', size: entry.size });
          }
        }
        this.walked(item.key, entry.kind === 'file' ? entry.size : null);
        break;
      }
    }
    this.lastKey = item.key;
    return this.closeIfFull();
  }

  /** Commits everything processed so far; `complete` marks the end of the tree (the layer is done). */
  async finish(complete: boolean): Promise<void> {
    await this.closePack(complete ? AFTER_ALL : this.lastKey, complete);
    await this.closing;
  }

  /** Drops the pack in flight (fatal error): its data object is never committed. */
  abort(reason: unknown): void {
    if (this.open) this.open.data.fail(reason instanceof Error ? reason : new Error(String(reason)));
    this.open = null;
  }

  private buildEntry(item: Extract<HashedItem, { kind: 'entry' }>): Entry | null {
    const walked = item.walked;
    const kind = entryKind(walked);
    if (kind === null) {
      this.options.monitor.warn('unsupported', `${displayPath(walked.path)}: sockets are not backed up`, { path: displayPath(walked.path) });
      return null;
    }
    const st = walked.stat;
    let hash: string | null = null;
    let chunks: readonly ChunkRef[] = [];
    if (kind === 'file') {
      if (st.size === 0n) {
        hash = EMPTY_SHA256;
      } else if (!item.read) {
        // Unchanged by stat: the previous entry's content is still right.
        hash = item.previous!.hash;
        chunks = item.previous!.chunks;
      } else {
        hash = item.contentHash;
        const previous = item.previous;
        if (previous !== null && previous.hash === hash && sameChunkSizes(previous.chunks, item.chunkHashes) && previous.chunks.every((c) => this.packExists(c.pack))) {
          chunks = previous.chunks;
          this.pendingChunks.delete(item.key);
        } else if (item.inlineChunk !== null) {
          chunks = [this.stored(item.inlineChunk.hash, item.inlineChunk.size)];
        } else {
          chunks = this.pendingChunks.get(item.key) ?? [];
          this.pendingChunks.delete(item.key);
        }
      }
    }
    return entryFromStat(item.key, walked, kind, hash, chunks, this.options.owners);
  }

  /** Progress for a path the walk found: a file (`fileSize` not null) counts with its size. */
  private walked(key: string, fileSize: number | null): void {
    const monitor = this.options.monitor;
    if (fileSize !== null) {
      monitor.files++;
      monitor.bytes += fileSize;
    }
    monitor.currentKey = key;
  }

  /** Where content read in this run is stored: the hash workers stored it earlier in this run, or it was already. */
  private stored(hash: string, size: number): ChunkRef {
    const pack = this.options.contents.lookup(hash);
    if (pack === undefined) throw new Error(`internal error: content ${hash} was read but is in no pack`);
    return { hash, size, pack };
  }

  /** Appends a task's compressed members to the open pack, waiting while the store is behind. */
  private async append(content: StoredContent): Promise<void> {
    if (this.commitError !== null) throw this.commitError.error;
    const pack = this.open ?? this.openPack();
    // A failed put (this pack's, or the commit of the one before) stops taking chunks: its error is the one to report.
    await Promise.race([pack.data.send(content.frames, content.release), pack.put, this.commitFailed]);
    pack.tarBytes += content.tarBytes;
    for (const member of content.members) {
      this.encoder.addMember(member);
      this.options.contents.record(member.hash, pack.stem);
      // A delta stores its target's content: where that is, and the chain a delta of it would extend.
      if (member.kind === 'delta') this.options.contents.record(member.target, pack.stem, { depth: member.depth, bytes: member.chainBytes });
      // Content new to the archive, whole or as a delta (its size either way); signatures are not content.
      if (member.kind !== 'signature') this.totals.newContentBytes += member.kind === 'delta' ? member.targetSize : member.size;
    }
  }

  private openPack(): OpenPack {
    const stem = packStem({ layer: this.options.layer, seq: this.seq });
    const data = new PackBody();
    const put = this.options.store.put(packObjectName(stem), data, { signal: this.options.signal });
    put.catch(() => undefined); // observed in closePack; avoids an unhandled rejection while still writing
    this.open = { stem, data, put, tarBytes: 0 };
    return this.open;
  }

  private dirty(key: string, entry: Entry | null): void {
    if (this.segmentLast === null) this.encoder.openSegment(key);
    this.segmentLast = key;
    if (entry !== null) this.encoder.addEntry(entry);
  }

  private clean(): void {
    if (this.segmentLast === null) return;
    this.encoder.closeSegment(this.segmentLast);
    this.segmentCount++;
    this.segmentLast = null;
  }

  private closeIfFull(): Promise<void> | undefined {
    const entries = this.encoder.entries;
    if ((this.open !== null && this.open.tarBytes >= this.options.packSize) || entries >= this.options.maxEntries) {
      return this.closePack(this.lastKey, false);
    }
    return undefined;
  }

  /**
   * Ends the open pack and commits it in the background: its data object, then its index once the previous
   * pack's index is in place (indexes appear in sequence order; the clock pointer never skips a pack). The next
   * pack fills meanwhile, so the workers never wait for a commit's fsyncs and renames; the caller waits only for
   * the commit before this one, so at most two packs are ever in flight, the older one only while its index is
   * written. For the last pack (`complete`, or a stop) finish() waits for the commit itself.
   */
  private closePack(through: string, complete: boolean): Promise<void> | undefined {
    this.clean();
    const open = this.open;
    if (!complete && open === null && this.segmentCount === 0 && through <= this.after) return undefined;
    const stem = packStem({ layer: this.options.layer, seq: this.seq });
    const header = { layer: this.options.layer, seq: this.seq, pack: open ? stem : null, after: this.after, through };
    const encoder = this.encoder;
    this.open = null;
    this.encoder = new IndexEncoder();
    this.segmentCount = 0;
    this.after = through;
    this.seq++;
    const previous = this.closing;
    const commit = this.commit(stem, header, encoder, open, previous, complete);
    this.closing = commit;
    this.commitFailed = commit.then(() => new Promise<never>(() => undefined));
    this.commitFailed.catch((error: unknown) => (this.commitError ??= { error })); // thrown by append() and finish()
    return previous;
  }

  private async commit(
    stem: string,
    header: Omit<IndexHeader, 'time'>,
    encoder: IndexEncoder,
    open: OpenPack | null,
    previous: Promise<void>,
    complete: boolean,
  ): Promise<void> {
    let storedBytes = 0;
    let packData: Pick<IndexHeader, 'packSize' | 'packChecksum'> = {};
    if (open !== null) {
      this.endOfTar ??= compressFrames(Buffer.alloc(END_OF_TAR_SIZE), this.options.compressionLevel).then((frames) => Buffer.concat(frames));
      open.data.end(await this.endOfTar);
      const stored = await open.put;
      storedBytes += stored.size;
      // Recorded so that a quick verify can check the object from a listing, without reading it.
      packData = { packSize: stored.size, ...(stored.checksum !== undefined && STORE_CHECKSUM_PATTERN.test(stored.checksum) ? { packChecksum: stored.checksum } : {}) };
      this.totals.packs++;
    }
    const text = encoder.finishParts({ ...header, ...packData, time: Date.now() });
    const compressed = await compressIndexText(text, this.options.compressionLevel);
    await previous;
    storedBytes += (await this.options.store.put(indexObjectName(stem), compressed, { signal: this.options.signal })).size;
    this.totals.indexes++;
    this.totals.storedBytes += storedBytes;
    this.options.monitor.storedBytes += storedBytes;
    this.options.monitor.emit({
      type: 'pack-written',
      pack: stem,
      bytes: storedBytes,
      entries: encoder.entries,
      members: encoder.members,
      through: header.through,
      complete,
    });
  }
}

/**
 * The open pack's bytes as the store pulls them: each task's frames as they are (borrowed from the frame ring),
 * released as soon as the store asks for the next chunk, which means it is done with the last one.
 */
class PackBody implements AsyncIterable<Uint8Array> {
  private readonly queue: Array<{ chunk: Uint8Array; release?: () => void }> = [];
  private ended = false;
  private failure: Error | null = null;
  private wakeReader: (() => void) | undefined;
  private wakeWriter: (() => void) | undefined;

  /** Queues a chunk; resolves once the store is at most two chunks behind. */
  async send(chunk: Uint8Array, release?: () => void): Promise<void> {
    if (this.failure) throw this.failure;
    this.queue.push({ chunk, release });
    this.wake();
    while (this.queue.length > QUEUED_CHUNKS && this.failure === null) await new Promise<void>((resolve) => (this.wakeWriter = resolve));
    if (this.failure) throw this.failure;
  }

  end(last?: Uint8Array): void {
    if (last) this.queue.push({ chunk: last });
    this.ended = true;
    this.wake();
  }

  fail(error: Error): void {
    this.failure ??= error;
    this.wake();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (;;) {
      while (this.queue.length === 0 && !this.ended && this.failure === null) await new Promise<void>((resolve) => (this.wakeReader = resolve));
      if (this.failure) throw this.failure;
      const next = this.queue.shift();
      if (next === undefined) return;
      this.wake();
      try {
        yield next.chunk;
      } finally {
        next.release?.();
      }
    }
  }

  private wake(): void {
    const reader = this.wakeReader;
    const writer = this.wakeWriter;
    this.wakeReader = this.wakeWriter = undefined;
    reader?.();
    writer?.();
  }
}

/** Chunks a pack body holds for the store beyond the one it is writing. */
const QUEUED_CHUNKS = 2;

function sameChunkSizes(a: readonly ChunkRef[], b: readonly { hash: string; size: number }[]): boolean {
  return a.length === b.length && a.every((c, i) => c.hash === b[i]!.hash && c.size === b[i]!.size);
}
