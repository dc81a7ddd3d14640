// Restores content that a pack stores as an rdiff delta: rebuilt from the chunk at the root of its chain of deltas.
//
//   content X in pack P (as an entry says) ─▶ P's H lines: a delta member D of X? (read once per pack)
//     no  ─▶ X is an ordinary member: the pack restorer writes it
//     yes ─▶ base ← content(D.base, D.baseStem)          (the same, one level down: at most MAX_DELTA_DEPTH)
//            X ← rdiff patch(base, D's bytes), at most D.targetSize bytes ─▶ SHA-256 must be X
//
// A chunk is at most a few MiB, so a chain is rebuilt in memory, one level at a time. Members are fetched with
// the pack reader, which checks each against the SHA-256 that names it; a damaged or missing link is an error
// naming the object, and fails only the content that needed it.

import { createHash } from 'node:crypto';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { packObjectName } from '../formats/archive-layout.js';
import type { DeltaMember } from '../formats/index-format.js';
import { applyRdiffPatch } from '../formats/rdiff-patch.js';
import type { Store } from '../stores/store.js';
import { MAX_DELTA_DEPTH } from './delta.js';
import { readMembers } from './pack-reader.js';
import { readIndex } from './state-reader.js';

/** Packs whose delta lists are kept (a pack's list is small: its deltas only). */
const KEPT_LISTS = 256;

/** Contents rebuilt together (their chains' members read in one pass per pack): ~9 × 4 MiB of members each at most. */
export const REBUILT_TOGETHER = 8;

export class DeltaRestorer {
  private readonly lists = new Map<string, ReadonlyMap<string, DeltaMember>>();
  /** Members read ahead by prefetch(), by "stem hash", each taken (and dropped) by its one use. */
  private readonly fetched = new Map<string, Buffer>();

  constructor(
    private readonly store: Store,
    private readonly signal?: AbortSignal,
  ) {}

  /** The delta members of pack `stem`, by the content they rebuild. An unreadable index is an error naming it. */
  async deltasOf(stem: string): Promise<ReadonlyMap<string, DeltaMember>> {
    const known = this.lists.get(stem);
    if (known !== undefined) return known;
    const index = await readIndex(this.store, stem, this.signal, 'members');
    const deltas = new Map<string, DeltaMember>();
    for (const member of index.members) if (member.kind === 'delta') deltas.set(member.target, member);
    if (this.lists.size >= KEPT_LISTS) this.lists.delete(this.lists.keys().next().value!);
    this.lists.set(stem, deltas);
    return deltas;
  }

  /**
   * Reads ahead every member the chains of `contents` need, one pass over each pack that holds any (instead of
   * one per member): up to REBUILT_TOGETHER contents at a time. What cannot be read is left for content() to
   * find, and report. Returns what drops the members nothing used (content that failed earlier in its chain).
   */
  async prefetch(contents: ReadonlyArray<{ readonly hash: string; readonly stem: string }>): Promise<() => void> {
    const keys: string[] = [];
    const wanted = new Map<string, Set<string>>(); // stem → member hashes
    const want = (stem: string, hash: string): void => void (wanted.get(stem) ?? wanted.set(stem, new Set()).get(stem)!).add(hash);
    for (const content of contents) {
      let { hash, stem } = content;
      for (let depth = 0; depth <= MAX_DELTA_DEPTH; depth++) {
        let delta;
        try {
          delta = (await this.deltasOf(stem)).get(hash);
        } catch (error) {
          if (isBlanketError(error)) break;
          throw error;
        }
        if (delta === undefined) {
          want(stem, hash);
          break;
        }
        want(stem, delta.hash);
        ({ base: hash, baseStem: stem } = delta);
      }
    }
    for (const [stem, hashes] of wanted) {
      const { members } = await readMembers(this.store, stem, hashes, this.signal);
      for (const [hash, bytes] of members) {
        this.fetched.set(`${stem} ${hash}`, bytes);
        keys.push(`${stem} ${hash}`);
      }
    }
    return () => {
      for (const key of keys) this.fetched.delete(key);
    };
  }

  /**
   * Content `hash` from pack `stem`, rebuilt through its deltas where it is stored as one. `size`, when known,
   * is checked (a base's is not recorded with the delta on it: its SHA-256 is all there is to check).
   */
  async content(hash: string, stem: string, size: number | undefined, depth = 0): Promise<Buffer> {
    const delta = (await this.deltasOf(stem)).get(hash);
    if (delta === undefined) return this.member(stem, hash, size);
    size ??= delta.targetSize;
    if (depth >= MAX_DELTA_DEPTH || delta.targetSize !== size) {
      throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `the delta of ${hash.slice(0, 16)}… in ${packObjectName(stem)} does not fit its chain (depth ${depth + 1}, ${delta.targetSize} bytes for ${size})`, {
        subject: packObjectName(stem),
      });
    }
    const base = await this.content(delta.base, delta.baseStem, undefined, depth + 1);
    const patch = await this.member(stem, delta.hash, delta.size);
    let rebuilt: Uint8Array;
    try {
      rebuilt = applyRdiffPatch(base, patch, { maxOutputLength: size, subject: packObjectName(stem) });
    } catch (error) {
      if (!isBlanketError(error)) throw error;
      throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `the delta of ${hash.slice(0, 16)}… in ${packObjectName(stem)} cannot be applied: ${error.message}`, {
        subject: packObjectName(stem),
        cause: error,
      });
    }
    const bytes = Buffer.from(rebuilt.buffer, rebuilt.byteOffset, rebuilt.byteLength);
    if (bytes.length !== size || createHash('sha256').update(bytes).digest('hex') !== hash) {
      throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `the delta of ${hash.slice(0, 16)}… in ${packObjectName(stem)} rebuilds other content than it names`, {
        subject: packObjectName(stem),
      });
    }
    return bytes;
  }

  /** Member `hash` of pack `stem`, whole and checked. */
  private async member(stem: string, hash: string, size: number | undefined): Promise<Buffer> {
    const ahead = this.fetched.get(`${stem} ${hash}`);
    if (ahead !== undefined) {
      this.fetched.delete(`${stem} ${hash}`);
      if (size === undefined || ahead.length === size) return ahead;
    }
    const { members, read } = await readMembers(this.store, stem, new Set([hash]), this.signal);
    const name = packObjectName(stem);
    const bytes = members.get(hash);
    if (bytes === undefined) {
      const why = read.error?.message ?? (read.badMembers.includes(hash) ? 'it is damaged' : 'it is not there');
      throw new BlanketError(read.error?.code ?? ErrorCodes.CORRUPT_OBJECT, `member ${hash.slice(0, 16)}… of ${name} cannot be read: ${why}`, { subject: name });
    }
    if (size !== undefined && bytes.length !== size) throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `member ${hash.slice(0, 16)}… of ${name} holds ${bytes.length} bytes, ${size} expected`, { subject: name });
    return bytes;
  }
}
