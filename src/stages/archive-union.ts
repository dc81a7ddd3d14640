// Read-only store that presents several independent archives of one source as one, for a restore merged by time.
//
//   archive 1: layers 1..3   ─▶ virtual layers 1..3
//   archive 2: layers 1..2   ─▶ virtual layers 4..5      (each archive's layers follow the previous archive's)
//
//   list    ─▶ every archive's indexes and packs under their virtual names, and one header
//   get     ─ pack data  ─▶ the archive's own object, as is
//           └ an index   ─▶ decoded, its layer and every pack stem it names renamed, encoded again
//
// Object names within one archive say nothing of another's, so the state reader is told which archive each
// virtual layer came from (layerOrigin) and merges them by the time their indexes were written, not by number.

import { Readable } from 'node:stream';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import {
  baseIndexStem,
  classifyObjectName,
  HEADER_OBJECT,
  indexObjectName,
  LAYERS_PREFIX,
  MAX_LAYER,
  objectNameOf,
  packObjectName,
  packStem,
  parseIndexStem,
} from '../formats/archive-layout.js';
import { withContent, type Entry } from '../formats/entry.js';
import { IndexEncoder } from '../formats/index-format.js';
import { getBuffer, ReadOnlyStore, type GetOptions, type ObjectInfo, type Store, type StoreCapabilities } from '../stores/store.js';
import { compressIndexText } from './index-compression.js';
import { decodeIndexObject } from './index-decoding.js';

/** Index objects are re-encoded for the reader only: fast compression is plenty. */
const REENCODE_LEVEL = 1;

/** Where a virtual object really is. */
export interface UnionObject {
  /** Position of its archive in the union. */
  readonly archive: number;
  /** Its name in that archive. */
  readonly name: string;
}

export class ArchiveUnion extends ReadOnlyStore {
  protected readonly readOnlyReason = 'archives merged by time are read together, for restore only';
  readonly capabilities: StoreCapabilities;
  /** First virtual layer of each archive, minus one. */
  private readonly bases: number[] = [];

  private constructor(
    private readonly archives: readonly Store[],
    /** Newest layer of each archive (0: none). */
    private readonly layerCounts: readonly number[],
  ) {
    super();
    let base = 0;
    for (const count of layerCounts) {
      this.bases.push(base);
      base += count;
    }
    if (base > MAX_LAYER) throw new BlanketError(ErrorCodes.USAGE, `the archives hold ${base} layers together, more than ${MAX_LAYER} can be merged`);
    this.capabilities = {
      atomicRename: false,
      parallelism: Math.min(...archives.map((a) => a.capabilities.parallelism)),
      checksums: [],
      exclusiveCreate: false,
    };
  }

  /** A union of `archives`, in the order given (which only breaks ties between indexes written at the same millisecond). */
  static async open(archives: readonly Store[]): Promise<ArchiveUnion> {
    if (archives.length === 0) throw new RangeError('a union needs at least one archive');
    const counts: number[] = [];
    for (const archive of archives) {
      let newest = 0;
      for await (const info of archive.list(LAYERS_PREFIX)) newest = Math.max(newest, classifyObjectName(info.name)?.id.layer ?? 0);
      counts.push(newest);
    }
    return new ArchiveUnion(archives, counts);
  }

  get location(): string {
    return this.archives.map((a) => a.location).join(' & ');
  }

  /** Which archive virtual layer `layer` came from (see CatalogOptions.layerOrigin). */
  readonly layerOrigin = (layer: number): number => {
    let archive = 0;
    while (archive + 1 < this.bases.length && this.bases[archive + 1]! < layer) archive++;
    return archive;
  };

  /** Each archive's layers and the virtual layers they appear as (in messages about layers), in the union's order. */
  layerMap(): Array<{ location: string; layers: number; firstVirtual: number }> {
    return this.archives.map((archive, i) => ({ location: archive.location, layers: this.layerCounts[i]!, firstVirtual: this.bases[i]! + 1 }));
  }

  /** Where virtual object `name` really is; undefined for a name that is no archive object (or the header). */
  resolve(name: string): UnionObject | undefined {
    const parsed = classifyObjectName(name);
    if (!parsed) return undefined;
    const archive = this.layerOrigin(parsed.id.layer);
    return { archive, name: objectNameOf(parsed.kind, { layer: parsed.id.layer - this.bases[archive]!, seq: parsed.id.seq }, parsed.base) };
  }

  /** "LOCATION: NAME" of a virtual object, for reports. */
  describe(name: string): string {
    const real = this.resolve(name);
    return real === undefined ? name : `${this.archives[real.archive]!.location}: ${real.name}`;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let headerListed = false;
    for (const [archive, store] of this.archives.entries()) {
      for await (const info of store.list(prefix)) {
        if (info.name === HEADER_OBJECT) {
          if (!headerListed) yield info;
          headerListed = true;
          continue;
        }
        const parsed = classifyObjectName(info.name);
        if (!parsed) continue;
        yield { ...info, name: objectNameOf(parsed.kind, { layer: parsed.id.layer + this.bases[archive]!, seq: parsed.id.seq }, parsed.base) };
      }
    }
  }

  async get(name: string, options: GetOptions = {}): Promise<Readable> {
    if (name === HEADER_OBJECT) return this.firstHeader(options);
    const real = this.resolveOrMissing(name);
    const store = this.archives[real.archive]!;
    if (classifyObjectName(name)!.kind !== 'index') return store.get(real.name, options);
    const bytes = await this.reencodedIndex(real.archive, classifyObjectName(real.name)!.stem, options.signal);
    const range = options.range;
    return Readable.from([range ? bytes.subarray(range.start, range.end) : bytes]);
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    if (name === HEADER_OBJECT) return this.archives[0]!.stat(name);
    const real = this.resolve(name);
    if (real === undefined) return undefined;
    const info = await this.archives[real.archive]!.stat(real.name);
    return info && { ...info, name };
  }

  async isEmpty(): Promise<boolean> {
    for (const archive of this.archives) if (!(await archive.isEmpty())) return false;
    return true;
  }

  async close(): Promise<void> {
    await Promise.all(this.archives.map((a) => a.close?.().catch(() => undefined)));
  }

  /** The virtual stem of a pack or base index stem of `archive`. */
  private virtualStem(archive: number, stem: string): string {
    const id = parseIndexStem(stem)!;
    return (id.base ? baseIndexStem : packStem)({ layer: id.layer + this.bases[archive]!, seq: id.seq });
  }

  private resolveOrMissing(name: string): UnionObject {
    const real = this.resolve(name);
    if (real === undefined) throw new BlanketError(ErrorCodes.MISSING_OBJECT, `object ${name} is in none of the archives (${this.location})`, { subject: name });
    return real;
  }

  /**
   * Index `stem` of `archive`, as the index of its virtual stem: the same segments, entries and members, with its
   * layer and every pack stem it names moved to the archive's virtual layers. Damage is reported with the
   * archive's own names.
   */
  private async reencodedIndex(archive: number, stem: string, signal: AbortSignal | undefined): Promise<Buffer> {
    const store = this.archives[archive]!;
    let index;
    try {
      index = await decodeIndexObject(stem, await getBuffer(store, indexObjectName(stem), { signal }));
    } catch (error) {
      if (!isBlanketError(error)) throw error;
      const virtual = indexObjectName(this.virtualStem(archive, stem));
      throw new BlanketError(error.code, `${store.location}: ${error.message}`, { subject: virtual, cause: error });
    }
    const move = (packStemText: string): string => this.virtualStem(archive, packStemText);
    const encoder = new IndexEncoder();
    for (const segment of index.segments) {
      encoder.openSegment(segment.first);
      for (const entry of segment.entries) encoder.addEntry(movedEntry(entry, move));
      encoder.closeSegment(segment.last);
    }
    for (const member of index.members) encoder.addMember(member.kind === 'delta' ? { ...member, baseStem: move(member.baseStem) } : member);
    const header = index.header;
    let packSize = header.packSize;
    // Indexes older than version 3 do not record their pack's size, which the encoder requires: take the store's.
    if (header.pack !== null && packSize === undefined) packSize = (await store.stat(packObjectName(header.pack)))?.size ?? 0;
    const virtual = parseIndexStem(this.virtualStem(archive, stem))!;
    return compressIndexText(
      encoder.finishParts({
        ...header,
        layer: virtual.layer,
        seq: virtual.seq,
        pack: header.pack === null ? null : move(header.pack),
        ...(packSize !== undefined && { packSize }),
      }),
      REENCODE_LEVEL,
    );
  }

  private async firstHeader(options: GetOptions): Promise<Readable> {
    let first: unknown;
    for (const archive of this.archives) {
      try {
        return await archive.get(HEADER_OBJECT, options);
      } catch (error) {
        first ??= error;
      }
    }
    throw first;
  }

}

function movedEntry(entry: Entry, move: (stem: string) => string): Entry {
  if (entry.chunks.length === 0) return entry;
  return withContent(entry, entry.hash, entry.chunks.map((chunk) => ({ ...chunk, pack: move(chunk.pack) })));
}
