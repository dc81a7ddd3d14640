// Read-only store over several copies of one archive: each object is read from a copy that has it intact.
//
//   list  ─▶ the union of every reachable copy's listing (a copy that cannot be listed is left out, and noted)
//   get   ─ checked names (indexes, header) ─▶ the first copy whose bytes pass the check (the rest noted)
//         └ others (pack data) ─▶ the first copy that lists it, from the preferred one on; a missing one ─▶ the next
//
// Pack data cannot be checked whole before it is read (its members are checked as they are decoded), so the
// caller makes several passes: after each, it marks the objects found damaged (markDamaged), and the next pass
// reads those from another copy. A restore skips what it already restored, so a later pass reads only what an
// earlier one could not give; a file whose pieces are damaged in different copies comes whole from the mix.

import { Readable } from 'node:stream';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { getBuffer, ReadOnlyStore, type GetOptions, type ObjectInfo, type Store, type StoreCapabilities } from './store.js';

export interface MeshOptions {
  /** Names whose bytes are checked (small, self-checking objects: indexes, the header). */
  readonly checked: (name: string) => boolean;
  /** Why `bytes` are not an intact `name`, or null if they are. */
  readonly check: (name: string, bytes: Buffer) => Promise<string | null>;
}

/** Something a copy could not give: noted, for the report. */
export interface CopyProblem {
  readonly copy: string;
  readonly object: string;
  readonly problem: string;
}

export class MeshStore extends ReadOnlyStore {
  protected readonly readOnlyReason = 'several copies are read together, for restore only';
  readonly capabilities: StoreCapabilities;
  /** Objects a copy lacked or had damaged, and copies that could not be listed. */
  readonly problems: CopyProblem[] = [];
  /** Which copy each object was last read from. */
  readonly servedBy = new Map<string, string>();
  /** "copy index:name" of objects found damaged in that copy. */
  private readonly damaged = new Set<string>();
  /** name → indexes of the copies that list it. */
  private readonly holders = new Map<string, number[]>();
  /** Copies whose listing failed (what they lack is unknown). */
  private readonly unlisted = new Set<number>();
  /** Checked objects: the copy whose bytes passed. */
  private readonly chosen = new Map<string, number>();

  constructor(
    private readonly copies: readonly Store[],
    private readonly options: MeshOptions,
  ) {
    super();
    if (copies.length === 0) throw new RangeError('a mesh needs at least one copy');
    this.capabilities = {
      atomicRename: false,
      parallelism: Math.min(...copies.map((c) => c.capabilities.parallelism)),
      checksums: [],
      exclusiveCreate: false,
    };
  }

  get location(): string {
    return this.copies.map((c) => c.location).join(' + ');
  }

  /**
   * The copy `name` was last read from had it damaged: later reads take it from another copy (the damaged one only
   * when no other has it). False if that was known already (no progress to be had from another pass).
   */
  markDamaged(name: string, problem: string): boolean {
    const location = this.servedBy.get(name);
    const copy = this.copies.findIndex((c) => c.location === location);
    if (copy < 0 || this.damaged.has(`${copy}:${name}`)) return false;
    this.damaged.add(`${copy}:${name}`);
    this.note(copy, name, problem);
    return this.copies.some((_, i) => i !== copy && !this.damaged.has(`${i}:${name}`) && (this.holders.get(name)?.includes(i) ?? true));
  }

  async get(name: string, options: GetOptions = {}): Promise<Readable> {
    if (this.options.checked(name)) {
      const bytes = await this.checkedBytes(name);
      const range = options.range;
      return Readable.from([range ? bytes.subarray(range.start, range.end) : bytes]);
    }
    let missing: unknown;
    for (const copy of this.order(name)) {
      try {
        const stream = await this.copies[copy]!.get(name, options);
        this.servedBy.set(name, this.copies[copy]!.location);
        return stream;
      } catch (error) {
        if (!isBlanketError(error, ErrorCodes.MISSING_OBJECT) && !isBlanketError(error, ErrorCodes.STORE_IO)) throw error;
        this.note(copy, name, error.message);
        missing ??= error;
      }
    }
    throw missing ?? new BlanketError(ErrorCodes.MISSING_OBJECT, `object ${name} is in none of the copies (${this.location})`, { subject: name });
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    for (const copy of this.order(name)) {
      const info = await this.copies[copy]!.stat(name).catch(() => undefined);
      if (info !== undefined) return info;
    }
    return undefined;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const seen = new Map<string, ObjectInfo>();
    let listed = 0;
    for (const [index, copy] of this.copies.entries()) {
      try {
        for await (const info of copy.list(prefix)) {
          const holders = this.holders.get(info.name) ?? [];
          if (!holders.includes(index)) holders.push(index);
          this.holders.set(info.name, holders);
          if (!seen.has(info.name)) seen.set(info.name, info);
        }
        listed++;
      } catch (error) {
        if (!isBlanketError(error)) throw error;
        this.unlisted.add(index);
        this.note(index, prefix || '.', `cannot be listed: ${error.message}`);
      }
    }
    if (listed === 0) throw new BlanketError(ErrorCodes.STORE_IO, `none of the copies could be listed (${this.location})`, { subject: this.location });
    // What a copy lacks is worth knowing (to repair it), though another copy makes up for it.
    for (const name of seen.keys()) {
      const holders = this.holders.get(name)!;
      for (let copy = 0; copy < this.copies.length; copy++) if (!holders.includes(copy) && !this.unlisted.has(copy)) this.note(copy, name, 'missing');
    }
    yield* seen.values();
  }

  async isEmpty(): Promise<boolean> {
    for (const copy of this.copies) if (!(await copy.isEmpty().catch(() => true))) return false;
    return true;
  }

  async close(): Promise<void> {
    await Promise.all(this.copies.map((c) => c.close?.().catch(() => undefined)));
  }

  /** The bytes of a checked object from the first copy where they pass; if none does, the first copy's (the reader reports the damage). */
  private async checkedBytes(name: string): Promise<Buffer> {
    const known = this.chosen.get(name);
    if (known !== undefined) return getBuffer(this.copies[known]!, name);
    let first: { bytes: Buffer; copy: number } | undefined;
    let missing: unknown;
    for (const copy of this.order(name)) {
      let bytes: Buffer;
      try {
        bytes = await getBuffer(this.copies[copy]!, name);
      } catch (error) {
        if (!isBlanketError(error)) throw error;
        this.note(copy, name, error.message);
        missing ??= error;
        continue;
      }
      const problem = await this.options.check(name, bytes);
      if (problem === null) {
        this.chosen.set(name, copy);
        this.servedBy.set(name, this.copies[copy]!.location);
        return bytes;
      }
      this.note(copy, name, problem);
      first ??= { bytes, copy };
    }
    if (first === undefined) throw missing;
    this.servedBy.set(name, this.copies[first.copy]!.location);
    return first.bytes;
  }

  /**
   * Copies to try for `name`, in the order given: those that listed it and did not have it damaged, then those
   * that did not list it (in case the listing was stale), then those that had it damaged.
   */
  private order(name: string): number[] {
    const all = this.copies.map((_, i) => i);
    const holders = this.holders.get(name);
    const rank = (i: number): number => (this.damaged.has(`${i}:${name}`) ? 2 : holders === undefined || holders.includes(i) ? 0 : 1);
    return all.sort((x, y) => rank(x) - rank(y) || x - y);
  }

  private note(copy: number, object: string, problem: string): void {
    const location = this.copies[copy]!.location;
    if (!this.problems.some((p) => p.copy === location && p.object === object && p.problem === problem)) this.problems.push({ copy: location, object, problem });
  }

}
