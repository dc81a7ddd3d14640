// Packer: turns hashed items into packs — tar members for new content, index segments for changed paths —
// and commits each pack by writing its index only after its data object is durable.
//
//   item ─▶ clean (same as before)?  ── yes ─▶ close the open segment (a hole: state carries over)
//                                    └─ no ──▶ extend the open segment; new content ─▶ tar member
//   pack full / entries cap / stop ─▶ finish tar ─▶ await durable put ─▶ put index (the checkpoint)

import { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import { compress } from '@mongodb-js/zstd';
import type { ChunkRef, Entry, EntryKind } from '../formats/entry.js';
import { sameEntry } from '../formats/entry.js';
import { IndexEncoder, type IndexSegment } from '../formats/index-format.js';
import { indexObjectName, packObjectName, packStem } from '../formats/archive-layout.js';
import { AFTER_ALL, displayPath, keyToPath } from '../formats/path-key.js';
import type { Store } from '../stores/store.js';
import { createCompressor } from './compressor.js';
import type { ContentTable } from './content-table.js';
import type { HashedItem } from './hasher.js';
import type { Monitor } from './monitor.js';
import type { OwnerNames } from './owner-names.js';
import type { WalkedEntry } from './walker.js';

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
}

interface OpenPack {
  readonly stem: string;
  readonly tar: tarStream.Pack;
  readonly put: Promise<{ size: number }>;
  readonly members: Set<string>;
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

const TAR_BLOCK = 512;

export class Packer {
  private seq: number;
  private after: string;
  private lastKey: string;
  private encoder = new IndexEncoder();
  private segment: { first: string; last: string; entries: Entry[] } | null = null;
  private segmentCount = 0;
  private open: OpenPack | null = null;
  /** Where each chunk of a big file in progress went. */
  private readonly pendingChunks = new Map<string, ChunkRef[]>();
  readonly totals: PackerTotals = { packs: 0, indexes: 0, storedBytes: 0, newFiles: 0, changedFiles: 0, deleted: 0, unchanged: 0, newContentBytes: 0 };

  constructor(private readonly options: PackerOptions) {
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

  async add(item: HashedItem): Promise<void> {
    switch (item.kind) {
      case 'chunk': {
        const ref = await this.placeChunk(item.chunk.hash, item.chunk.size, item.chunk.data);
        const refs = this.pendingChunks.get(item.key) ?? [];
        refs.push(ref);
        this.pendingChunks.set(item.key, refs);
        await this.closeIfFull();
        return;
      }
      case 'unchanged':
        this.pendingChunks.delete(item.key);
        this.clean();
        this.totals.unchanged++;
        break;
      case 'deleted':
        this.dirty(item.key, null);
        this.totals.deleted++;
        this.options.monitor.emit({ type: 'file', path: displayPath(keyToPath(item.previous.key)), action: 'deleted', size: item.previous.size });
        break;
      case 'entry': {
        const entry = await this.buildEntry(item);
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
        if (entry.kind === 'file') {
          this.options.monitor.files++;
          this.options.monitor.bytes += entry.size;
        }
        this.options.monitor.currentPath = item.walked.path;
        break;
      }
    }
    this.lastKey = item.key;
    await this.closeIfFull();
  }

  /** Commits everything processed so far; `complete` marks the end of the tree (the layer is done). */
  async finish(complete: boolean): Promise<void> {
    await this.closePack(complete ? AFTER_ALL : this.lastKey, complete);
  }

  /** Drops the pack in flight (fatal error): its data object is never committed. */
  abort(reason: unknown): void {
    if (this.open) this.open.tar.destroy(reason instanceof Error ? reason : new Error(String(reason)));
    this.open = null;
  }

  private async buildEntry(item: Extract<HashedItem, { kind: 'entry' }>): Promise<Entry | null> {
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
        if (previous !== null && previous.hash === hash && sameChunkSizes(previous.chunks, item.chunkHashes)) {
          chunks = previous.chunks;
          this.pendingChunks.delete(item.key);
        } else if (item.inlineChunk !== null) {
          chunks = [await this.placeChunk(item.inlineChunk.hash, item.inlineChunk.size, item.inlineChunk.data)];
        } else {
          chunks = this.pendingChunks.get(item.key) ?? [];
          this.pendingChunks.delete(item.key);
        }
      }
    }
    const uid = Number(st.uid);
    const gid = Number(st.gid);
    return {
      key: item.key,
      kind,
      mode: Number(st.mode) & 0o7777,
      mtimeNs: st.mtimeNs,
      ctimeNs: st.ctimeNs,
      ino: st.ino,
      nlink: Number(st.nlink),
      size: kind === 'file' ? Number(st.size) : 0,
      uid,
      gid,
      user: this.options.owners.user(uid),
      group: this.options.owners.group(gid),
      hash,
      chunks,
      linkTarget: kind === 'symlink' ? (walked.linkTarget ?? Buffer.alloc(0)) : null,
      rdev: kind === 'chardev' || kind === 'blockdev' ? Number(st.rdev) : 0,
    };
  }

  /** Finds stored content by hash, or writes it as a member of the open pack. */
  private async placeChunk(hash: string, size: number, data: Buffer): Promise<ChunkRef> {
    if (this.open?.members.has(hash)) return { hash, size, pack: this.open.stem };
    const known = await this.options.contents.lookup(hash, this.options.signal);
    if (known !== undefined) return { hash, size, pack: known };
    const pack = this.open ?? this.openPack();
    await new Promise<void>((resolve, reject) => {
      pack.tar.entry({ name: hash, size, mode: 0o644, mtime: EPOCH, uid: 0, gid: 0, type: 'file' }, data, (error) =>
        error ? reject(error) : resolve(),
      );
    });
    pack.members.add(hash);
    pack.tarBytes += TAR_BLOCK + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
    this.encoder.addMember({ hash, size });
    this.options.contents.add(hash, pack.stem);
    this.totals.newContentBytes += size;
    return { hash, size, pack: pack.stem };
  }

  private openPack(): OpenPack {
    const stem = packStem({ layer: this.options.layer, seq: this.seq });
    const tar = tarStream.pack();
    const compressor = createCompressor({ level: this.options.compressionLevel, signal: this.options.signal });
    const source = Readable.from(tar as unknown as AsyncIterable<Buffer>, { objectMode: false, highWaterMark: 1 << 20 });
    source.on('error', (error) => compressor.destroy(error));
    source.pipe(compressor);
    const put = this.options.store.put(packObjectName(stem), compressor, { signal: this.options.signal });
    put.catch(() => undefined); // observed in closePack; avoids an unhandled rejection while still writing
    this.open = { stem, tar, put, members: new Set(), tarBytes: 0 };
    return this.open;
  }

  private dirty(key: string, entry: Entry | null): void {
    if (this.segment === null) this.segment = { first: key, last: key, entries: [] };
    this.segment.last = key;
    if (entry !== null) this.segment.entries.push(entry);
  }

  private clean(): void {
    if (this.segment === null) return;
    this.encoder.addSegment(this.segment as IndexSegment);
    this.segmentCount++;
    this.segment = null;
  }

  private async closeIfFull(): Promise<void> {
    const entries = this.encoder.entries + (this.segment?.entries.length ?? 0);
    if ((this.open !== null && this.open.tarBytes >= this.options.packSize) || entries >= this.options.maxEntries) {
      await this.closePack(this.lastKey, false);
    }
  }

  private async closePack(through: string, complete: boolean): Promise<void> {
    this.clean();
    const open = this.open;
    if (!complete && open === null && this.segmentCount === 0 && through <= this.after) return;
    let storedBytes = 0;
    if (open !== null) {
      open.tar.finalize();
      storedBytes += (await open.put).size;
      this.totals.packs++;
    }
    const stem = packStem({ layer: this.options.layer, seq: this.seq });
    const text = this.encoder.finish({ layer: this.options.layer, seq: this.seq, pack: open ? stem : null, after: this.after, through, time: Date.now() });
    const compressed = await compress(text, this.options.compressionLevel);
    storedBytes += (await this.options.store.put(indexObjectName(stem), compressed, { signal: this.options.signal })).size;
    this.totals.indexes++;
    this.totals.storedBytes += storedBytes;
    this.options.monitor.storedBytes += storedBytes;
    this.options.monitor.emit({
      type: 'pack-written',
      pack: stem,
      bytes: storedBytes,
      entries: this.encoder.entries,
      members: this.encoder.members,
      through,
      complete,
    });
    this.open = null;
    this.encoder = new IndexEncoder();
    this.segmentCount = 0;
    this.after = through;
    this.seq++;
  }
}

const EPOCH = new Date(0);
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function entryKind(walked: WalkedEntry): EntryKind | null {
  const st = walked.stat;
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'chardev';
  if (st.isBlockDevice()) return 'blockdev';
  return null;
}

function sameChunkSizes(a: readonly ChunkRef[], b: readonly { hash: string; size: number }[]): boolean {
  return a.length === b.length && a.every((c, i) => c.hash === b[i]!.hash && c.size === b[i]!.size);
}
