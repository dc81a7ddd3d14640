// Which pack holds each stored content hash: one table in shared memory, read and claimed by the hash workers,
// so that content already stored (or being stored by an earlier task) is never read into a pack again.
//
//   slot (8 × int32): state · hash words 0..3 (first 128 bits) · claim · pack · chain
//     state  0 empty → 1 being filled (by one CAS winner) → 2 ready; slots are never removed
//     claim  0 = stored before this task set (loaded from indexes, or recorded by the packer);
//            n = task n stores it (tasks are numbered in the order their first item leaves the hasher)
//     pack   1 + position in the stem list, 0 while not yet written
//     chain  content stored as an rdiff delta: depth << 24 | bytes of its chain of deltas (0: stored whole)
//
//   worker, task n, content h:  absent ─▶ claim it (n), store it
//                               claim 0 or ≤ n ─▶ skip: an earlier task (or this one) stores it, and its data
//                                               reaches the packer before any item of task n
//                               claim > n ─▶ store it too (a later task raced ahead: a rare duplicate)
//
// The main thread grows the table (a new buffer, handed to the tasks that follow); a claim made in the old
// buffer during the copy can be lost, which costs at most one duplicate member, never a wrong reference.

import { indexObjectName } from '../formats/archive-layout.js';
import { BlanketError, type ErrorCode, isBlanketError } from '../formats/errors.js';
import type { FileStamp } from '../formats/index-format.js';
import { getBuffer, type Store } from '../stores/store.js';
import { decodeIndexObject } from './index-decoding.js';
import type { Catalog, IndexRef } from './state-reader.js';
import { collectOldGarbage } from './gc-hints.js';

const SLOT_INTS = 8;
const HEADER_INTS = 8;
const STATE = 0;
const CLAIM = 5;
const PACK = 6;
const CHAIN = 7;
const EMPTY = 0;
const FILLING = 1;
const READY = 2;
const MIN_CAPACITY = 1 << 12;

/** Content stored as an rdiff delta: `depth` deltas from content stored whole, `bytes` of them together. */
export interface DeltaChain {
  readonly depth: number;
  readonly bytes: number;
}

/** Chains longer than this (or deeper than 255) are not recorded: they are never extended anyway. */
const CHAIN_BYTES_MASK = (1 << 24) - 1;

function encodeChain(chain: DeltaChain): number {
  return chain.depth < 1 || chain.depth > 255 || chain.bytes > CHAIN_BYTES_MASK ? (255 << 24) | CHAIN_BYTES_MASK : (chain.depth << 24) | chain.bytes;
}

/** The first 128 bits of a SHA-256 as four 32-bit words (plenty to tell contents apart). */
export type HashWords = readonly [number, number, number, number];

export function hashWordsOfHex(hex: string): HashWords {
  return [parseInt(hex.slice(0, 8), 16) | 0, parseInt(hex.slice(8, 16), 16) | 0, parseInt(hex.slice(16, 24), 16) | 0, parseInt(hex.slice(24, 32), 16) | 0];
}

export function hashWordsOfDigest(digest: Buffer): HashWords {
  return [digest.readInt32BE(0), digest.readInt32BE(4), digest.readInt32BE(8), digest.readInt32BE(12)];
}

/** The table's slots in one SharedArrayBuffer: what a worker sees. */
export class SharedContentSet {
  private readonly slots: Int32Array;
  private readonly mask: number;
  /** Set by find(): whether its last call inserted the slot. */
  private inserted = false;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.slots = new Int32Array(buffer);
    this.mask = (this.slots.length - HEADER_INTS) / SLOT_INTS - 1;
  }

  static create(capacity: number): SharedContentSet {
    const slotCount = 2 ** Math.ceil(Math.log2(Math.max(MIN_CAPACITY, capacity)));
    return new SharedContentSet(new SharedArrayBuffer((HEADER_INTS + slotCount * SLOT_INTS) * 4));
  }

  get capacity(): number {
    return this.mask + 1;
  }

  get count(): number {
    return Atomics.load(this.slots, 0);
  }

  /** Whether the last setPack or claim inserted its slot. */
  get lastInserted(): boolean {
    return this.inserted;
  }

  /** True when task `task` must store this content itself (see the table above). */
  claim(words: HashWords, task: number): boolean {
    const base = this.find(words, task);
    if (base < 0) return true; // full: store it rather than wait for the main thread to grow the table
    const claim = Atomics.load(this.slots, base + CLAIM);
    return claim === task ? this.inserted : claim > task;
  }

  /** Pack number recorded for `words` (0: none yet, or absent). */
  packOf(words: HashWords): number {
    const base = this.locate(words);
    return base < 0 ? 0 : Atomics.load(this.slots, base + PACK);
  }

  /** The delta chain of `words` (see DeltaChain): none when it is stored whole, or absent. */
  chainOf(words: HashWords): DeltaChain | undefined {
    const base = this.locate(words);
    const value = base < 0 ? 0 : Atomics.load(this.slots, base + CHAIN);
    return value === 0 ? undefined : { depth: value >>> 24, bytes: value & CHAIN_BYTES_MASK };
  }

  /** Records that `words` is stored as a delta at the end of `chain` (its slot must exist: setPack first). */
  setChain(words: HashWords, chain: DeltaChain): void {
    const base = this.locate(words);
    if (base < 0) return;
    Atomics.store(this.slots, base + CHAIN, encodeChain(chain));
  }

  /** Whether `words` is in the table: stored before, or claimed by a task already started. */
  has(words: HashWords): boolean {
    return this.locate(words) >= 0;
  }

  /** Records the pack of `words`, inserting it with claim 0 when absent; false when the table is full. */
  setPack(words: HashWords, pack: number, onlyIfNew = false): boolean {
    const base = this.find(words, 0);
    if (base < 0) return false;
    if (!onlyIfNew || this.inserted) Atomics.store(this.slots, base + PACK, pack);
    return true;
  }

  /** Copies every ready slot (claim and pack) into `target`. */
  copyInto(target: SharedContentSet): void {
    const slots = this.slots;
    for (let i = 0; i <= this.mask; i++) {
      const base = HEADER_INTS + i * SLOT_INTS;
      if (Atomics.load(slots, base + STATE) !== READY) continue;
      const words: HashWords = [slots[base + 1]!, slots[base + 2]!, slots[base + 3]!, slots[base + 4]!];
      const at = target.find(words, Atomics.load(slots, base + CLAIM));
      Atomics.store(target.slots, at + PACK, Atomics.load(slots, base + PACK));
      Atomics.store(target.slots, at + CHAIN, Atomics.load(slots, base + CHAIN));
    }
  }

  /**
   * Slot base of `words`, inserting it with `claim` when absent; -1 when the table is full. A concurrent
   * inserter of the same slot is at most a few stores from done, so waiting for it is a short spin.
   */
  private find(words: HashWords, claim: number): number {
    const slots = this.slots;
    this.inserted = false;
    let i = words[0] & this.mask;
    for (let probes = 0; probes <= this.mask; probes++, i = (i + 1) & this.mask) {
      const base = HEADER_INTS + i * SLOT_INTS;
      let state = Atomics.load(slots, base + STATE);
      if (state === EMPTY) {
        if (Atomics.compareExchange(slots, base + STATE, EMPTY, FILLING) === EMPTY) {
          slots[base + 1] = words[0];
          slots[base + 2] = words[1];
          slots[base + 3] = words[2];
          slots[base + 4] = words[3];
          slots[base + CLAIM] = claim;
          slots[base + PACK] = 0;
          slots[base + CHAIN] = 0;
          Atomics.store(slots, base + STATE, READY);
          Atomics.add(slots, 0, 1);
          this.inserted = true;
          return base;
        }
        state = Atomics.load(slots, base + STATE);
      }
      while (state === FILLING) state = Atomics.load(slots, base + STATE);
      if (this.holds(base, words)) return base;
    }
    return -1;
  }

  /**
   * Slot base of `words`, or -1; never inserts. A slot still being filled cannot be the one sought: what the
   * main thread looks up was inserted (and made ready) before it asks.
   */
  private locate(words: HashWords): number {
    let i = words[0] & this.mask;
    for (let probes = 0; probes <= this.mask; probes++, i = (i + 1) & this.mask) {
      const base = HEADER_INTS + i * SLOT_INTS;
      const state = Atomics.load(this.slots, base + STATE);
      if (state === EMPTY) return -1;
      if (state === READY && this.holds(base, words)) return base;
    }
    return -1;
  }

  private holds(base: number, words: HashWords): boolean {
    const slots = this.slots;
    return slots[base + 1] === words[0] && slots[base + 2] === words[1] && slots[base + 3] === words[2] && slots[base + 4] === words[3];
  }
}

/** `set`, or a copy twice as large (or more) when `more` insertions would fill it over half. */
function withRoom(set: SharedContentSet, more: number): SharedContentSet {
  if ((set.count + more) * 2 <= set.capacity) return set;
  let capacity = set.capacity * 2;
  while ((set.count + more) * 2 > capacity) capacity *= 2;
  const grown = SharedContentSet.create(capacity);
  set.copyInto(grown);
  return grown;
}

/** Compressed index bytes handed to one load task (a bound on the memory they take), and indexes per task. */
const LOAD_GROUP_BYTES = 8 << 20;
const LOAD_GROUP_INDEXES = 64;

export interface ContentLoadOptions {
  readonly signal?: AbortSignal;
  readonly onChunkedFiles?: (files: readonly FileStamp[]) => void;
  /** Runs loadMembers, e.g. in a worker (default: here). */
  readonly run?: (task: MemberLoad) => Promise<MemberLoadResult>;
}

/** A load task: index objects to add to the table, in replay order. */
export interface MemberLoad {
  readonly table: SharedArrayBuffer;
  /** Pack stems numbered so far: stem i is pack number i + 1. */
  readonly stems: readonly string[];
  /** Packs the archive holds: content of any other pack is not there to refer to, and is not added. */
  readonly presentPacks: readonly string[];
  readonly indexes: readonly { readonly stem: string; readonly bytes: Uint8Array }[];
}

export interface MemberLoadResult {
  /** The table, or a larger copy of it when it had to grow. */
  readonly table: SharedArrayBuffer;
  /** Pack stems numbered by this task, after the ones it was given. */
  readonly newStems: readonly string[];
  readonly chunkedFiles: readonly FileStamp[];
  /** A damaged index (errors are returned, not thrown: a thrown error loses its code on the way out of a worker). */
  readonly error?: { readonly code: ErrorCode; readonly message: string; readonly subject: string | undefined };
}

/** Decodes the indexes of `task` (members only) into its table: runs in a worker of the pool, or on the main thread. */
export async function loadMembers(task: MemberLoad): Promise<MemberLoadResult> {
  let set = new SharedContentSet(task.table);
  const stemIds = new Map(task.stems.map((stem, i) => [stem, i + 1]));
  const newStems: string[] = [];
  const present = new Set(task.presentPacks);
  const chunkedFiles: FileStamp[] = [];
  try {
    for (const { stem, bytes } of task.indexes) {
      const index = await decodeIndexObject(stem, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 'members');
      for (const file of index.chunkedFiles) chunkedFiles.push(file);
      // Content of a pack missing from the archive is not there to refer to: it is stored again when read.
      const pack = index.header.pack;
      if (pack === null || !present.has(pack)) continue;
      set = withRoom(set, index.members.length);
      let id = stemIds.get(pack);
      if (id === undefined) {
        newStems.push(pack);
        id = task.stems.length + newStems.length;
        stemIds.set(pack, id);
      }
      for (const member of index.members) {
        set.setPack(hashWordsOfHex(member.hash), id, true);
        // A delta stores its target's content: that content is in this pack too, at the end of a chain.
        if (member.kind === 'delta' && set.setPack(hashWordsOfHex(member.target), id, true) && set.lastInserted) {
          set.setChain(hashWordsOfHex(member.target), { depth: member.depth, bytes: member.chainBytes });
        }
      }
    }
  } catch (error) {
    if (!isBlanketError(error)) throw error;
    return { table: set.buffer, newStems, chunkedFiles, error: { code: error.code, message: error.message, subject: error.subject } };
  }
  return { table: set.buffer, newStems, chunkedFiles };
}

/** The main thread's side: records where content went, answers where it is, and grows the shared set. */
export class ContentTable {
  private set = SharedContentSet.create(MIN_CAPACITY);
  private readonly stems: string[] = [];
  private readonly stemIds = new Map<string, number>();

  /**
   * Adds everything the archive's committed indexes list as members (their H lines only are parsed), by tasks
   * of `run` (loadMembers in a worker of the pool, so the walk keeps the main thread), or here. The stamps of
   * chunked files each index lists go to `onChunkedFiles`, in the order the indexes replay. Indexes are read
   * from the store a group at a time, the next group while a task parses the last one.
   */
  async load(store: Store, catalog: Catalog, options: ContentLoadOptions = {}): Promise<void> {
    const run = options.run ?? loadMembers;
    const presentPacks = [...catalog.packs.keys()];
    const dispatch = async (indexes: { stem: string; bytes: Uint8Array }[]): Promise<void> => {
      const result = await run({ table: this.set.buffer, stems: this.stems, presentPacks, indexes });
      if (result.error) throw new BlanketError(result.error.code, result.error.message, { subject: result.error.subject });
      if (result.table !== this.set.buffer) {
        this.set = new SharedContentSet(result.table);
        collectOldGarbage();
      }
      for (const stem of result.newStems) this.stemId(stem);
      if (result.chunkedFiles.length > 0) options.onChunkedFiles?.(result.chunkedFiles);
    };
    // A group's objects are read all at once: one at a time, each read would wait for the walk's next batch.
    const read = (refs: readonly IndexRef[]): Promise<{ stem: string; bytes: Uint8Array }[]> =>
      Promise.all(refs.map(async (ref) => ({ stem: ref.stem, bytes: await getBuffer(store, indexObjectName(ref.stem), { signal: options.signal }) })));
    let running: Promise<void> = Promise.resolve();
    for (let start = 0; start < catalog.indexes.length; ) {
      let end = start;
      let bytes = 0;
      while (end < catalog.indexes.length && end - start < LOAD_GROUP_INDEXES && (end === start || bytes + catalog.indexes[end]!.size <= LOAD_GROUP_BYTES)) {
        bytes += catalog.indexes[end++]!.size;
      }
      const group = await read(catalog.indexes.slice(start, end));
      start = end;
      await running; // the table the last task left is the one the next one fills
      running = dispatch(group);
      running.catch(() => undefined); // handled when awaited: not an unhandled rejection while the next group is read
    }
    await running;
  }

  /** The buffer to hand to the tasks dispatched next. */
  get buffer(): SharedArrayBuffer {
    return this.set.buffer;
  }

  get size(): number {
    return this.set.count;
  }

  /** Makes room for `more` insertions at under half full, moving to a buffer twice as large when needed. */
  reserve(more: number): void {
    const room = withRoom(this.set, more);
    if (room === this.set) return;
    this.set = room;
    // The old table (up to half of a 250,000-file run's peak growth) is freed now, not at some later collection.
    collectOldGarbage();
  }

  /** Whether `hash` is stored, or claimed by a task already started (so its member reaches the packer first). */
  has(hash: string): boolean {
    return this.set.has(hashWordsOfHex(hash));
  }

  /** Pack stem holding `hash`, if recorded. */
  lookup(hash: string): string | undefined {
    const pack = this.set.packOf(hashWordsOfHex(hash));
    return pack === 0 ? undefined : this.stems[pack - 1];
  }

  /**
   * Records that `hash` is now stored in pack `stem` (its data goes out before any index refers to it), as a delta
   * at the end of `chain` if given.
   */
  record(hash: string, stem: string, chain?: DeltaChain): void {
    this.reserve(1);
    const words = hashWordsOfHex(hash);
    this.set.setPack(words, this.stemId(stem));
    if (chain) this.set.setChain(words, chain);
  }

  private stemId(stem: string): number {
    let id = this.stemIds.get(stem);
    if (id === undefined) {
      this.stems.push(stem);
      id = this.stems.length;
      this.stemIds.set(stem, id);
    }
    return id;
  }
}
