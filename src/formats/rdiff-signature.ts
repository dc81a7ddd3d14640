// rdiff (librsync 2.3) signature files: parameters chosen as `rdiff signature` does, an incremental writer, and an incremental validating reader whose result indexes into the delta generator's lookup table.

import { ErrorCodes } from './errors.js';
import {
  concatBytes,
  RABINKARP_SEED,
  type RdiffHashes,
  type RdiffStrongKind,
  type RdiffWeakKind,
  RdiffError,
  type RdiffResult,
  hex32,
  rdiffSignatureKinds,
  rdiffSignatureMagic,
  rdiffStrongMaxLen,
  rdiffKernels,
  rdiffWeakSum,
  RdiffKernels,
  rollsumUpdate,
} from './rdiff-checksums.js';

export const RDIFF_SIGNATURE_HEADER_LEN = 12;
/** rdiff reads block_len and strong_len as signed 32-bit numbers; larger values are rejected. */
export const RDIFF_MAX_BLOCK_LEN = 0x7fffffff;

export interface RdiffSignatureOptions {
  /** Weak sum; default 'rabinkarp' (rdiff's default). `rdiff --rollsum=rollsum` = 'rollsum'. */
  weak?: RdiffWeakKind;
  /** Strong sum; default 'blake2' (rdiff's default). `rdiff --hash=md4` = 'md4'. */
  strong?: RdiffStrongKind;
  /** `rdiff -b`: 0 or undefined picks it from the basis size. */
  blockLen?: number;
  /** `rdiff -S`: 0 or undefined = the hash's full length, -1 = the computed minimum safe length. */
  strongLen?: number;
}

export interface RdiffSignatureParams {
  magic: number;
  weak: RdiffWeakKind;
  strong: RdiffStrongKind;
  blockLen: number;
  strongLen: number;
}

/** A parsed signature: one weak sum and one truncated strong sum per basis block. */
export interface RdiffSignature extends RdiffSignatureParams {
  blockCount: number;
  /** weakSums[k] = weak sum of block k. */
  weakSums: Uint32Array;
  /** Strong sum of block k = strongSums[k*strongLen .. (k+1)*strongLen). */
  strongSums: Uint8Array;
}

function paramError(message: string): RdiffError {
  return new RdiffError(ErrorCodes.RDIFF_SIGNATURE, 108, message);
}

/** floor(log2(v)) for v >= 1, 0 for v <= 1 (librsync's rs_long_ln2); exact for all safe integers. */
function ln2(v: number): number {
  let n = 0;
  for (let x = Math.floor(v); x > 1; x = Math.floor(x / 2)) n++;
  return n;
}

function isqrt(v: number): number {
  const big = BigInt(v);
  let r = BigInt(Math.floor(Math.sqrt(v)));
  while (r * r > big) r--;
  while ((r + 1n) * (r + 1n) <= big) r++;
  return Number(r);
}

/**
 * librsync's minimum safe strong sum length for a basis of `basisSize` bytes (undefined: unknown size, e.g. a pipe):
 * 2 + floor((floor(log2(size + 2^24)) + floor(log2(floor(size / blockLen) + 1)) + 7) / 8).
 */
export function rdiffMinStrongLen(basisSize: number | undefined, blockLen: number): number {
  if (basisSize === undefined) return 12;
  return 2 + Math.floor((ln2(basisSize + 2 ** 24) + ln2(Math.floor(basisSize / blockLen) + 1) + 7) / 8);
}

/** block_len as `rdiff signature` picks it: 256 up to 64 KiB, else isqrt(size) rounded down to a multiple of 128; 2048 if unknown. */
export function rdiffDefaultBlockLen(basisSize: number | undefined): number {
  if (basisSize === undefined) return 2048;
  if (basisSize <= 65536) return 256;
  return isqrt(basisSize) & ~127;
}

/**
 * Signature parameters exactly as librsync 2.3's rs_sig_args picks them for `rdiff signature` with the same
 * options. `basisSize` undefined means unknown (rdiff reading a pipe). Throws (rdiff exit 108) for a strong
 * length above the hash's maximum; a length below the safe minimum is allowed, as in rdiff (which only warns).
 */
export function rdiffSignatureParams(basisSize: number | undefined, options: RdiffSignatureOptions = {}): RdiffSignatureParams {
  const weak = options.weak ?? 'rabinkarp';
  const strong = options.strong ?? 'blake2';
  if (basisSize !== undefined && !(Number.isSafeInteger(basisSize) && basisSize >= 0)) {
    throw paramError(`invalid basis size ${basisSize}`);
  }
  let blockLen = options.blockLen ?? 0;
  if (!Number.isInteger(blockLen) || blockLen < 0 || blockLen > RDIFF_MAX_BLOCK_LEN) {
    throw paramError(`invalid block length ${blockLen} (must be 1..${RDIFF_MAX_BLOCK_LEN}, or 0 to pick from the basis size)`);
  }
  if (blockLen === 0) blockLen = rdiffDefaultBlockLen(basisSize);
  const max = rdiffStrongMaxLen(strong);
  let strongLen = options.strongLen ?? 0;
  if (strongLen === 0) strongLen = max;
  else if (strongLen === -1) strongLen = rdiffMinStrongLen(basisSize, blockLen);
  if (!Number.isInteger(strongLen) || strongLen < 1 || strongLen > max) {
    throw paramError(
      `invalid strong sum length ${options.strongLen} for ${strong === 'md4' ? 'MD4' : 'BLAKE2b'} (must be 1..${max}, 0 for ${max}, or -1 for the safe minimum)`,
    );
  }
  return { magic: rdiffSignatureMagic(weak, strong), weak, strong, blockLen, strongLen };
}

function checkParams(p: RdiffSignatureParams): void {
  const kinds = rdiffSignatureKinds(p.magic);
  if (!kinds || kinds.weak !== p.weak || kinds.strong !== p.strong) {
    throw paramError(`signature magic ${hex32(p.magic)} does not match ${p.weak}/${p.strong}`);
  }
  if (!Number.isInteger(p.blockLen) || p.blockLen < 1 || p.blockLen > RDIFF_MAX_BLOCK_LEN) throw paramError(`invalid block length ${p.blockLen}`);
  const max = rdiffStrongMaxLen(p.strong);
  if (!Number.isInteger(p.strongLen) || p.strongLen < 1 || p.strongLen > max) throw paramError(`invalid strong sum length ${p.strongLen}`);
}

function writeU32(out: Uint8Array, at: number, v: number): void {
  out[at] = v >>> 24;
  out[at + 1] = (v >>> 16) & 0xff;
  out[at + 2] = (v >>> 8) & 0xff;
  out[at + 3] = v & 0xff;
}

// ---------------------------------------------------------------------------------------------------------------
// Writer

/** Blocks summed per call of the SIMD path: about this many bytes' worth (at least two blocks). */
const KERNEL_BATCH_BYTES = 1 << 20;

/**
 * Incremental signature writer: push basis bytes in chunks of any size, get signature bytes back. Whole blocks
 * inside a chunk are summed in place; only a block that straddles chunks is copied (at most one block held).
 * With BLAKE2b and the SIMD kernels (rdiffKernels), whole blocks are copied into the kernels' memory instead, about
 * 1 MiB at a time, and hashed two at a time.
 */
export class RdiffSignatureWriter {
  readonly params: RdiffSignatureParams;
  private headerDone = false;
  private ended = false;
  private partial: Uint8Array | undefined;
  private partialLen = 0;
  private readonly kernels: RdiffKernels | undefined;
  /** Basis bytes seen so far. */
  basisLength = 0;

  constructor(
    private readonly hashes: RdiffHashes,
    params: RdiffSignatureParams,
  ) {
    checkParams(params);
    this.params = { ...params };
    this.kernels = params.strong === 'blake2' && 2 * params.blockLen <= RdiffKernels.MAX_INPUT ? rdiffKernels() : undefined;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.ended) throw new Error('RdiffSignatureWriter.push() after end()');
    const L = this.params.blockLen;
    this.basisLength += chunk.length;
    let off = 0;
    // Blocks completed by this chunk: the straddling one (if any) plus the whole ones inside the chunk.
    let fill = 0;
    if (this.partialLen > 0) fill = Math.min(L - this.partialLen, chunk.length);
    const straddleDone = this.partialLen > 0 && this.partialLen + fill === L;
    const whole = Math.floor((chunk.length - fill) / L);
    const records = (straddleDone ? 1 : 0) + whole;
    const recLen = 4 + this.params.strongLen;
    const headerLen = this.headerDone ? 0 : RDIFF_SIGNATURE_HEADER_LEN;
    if (records === 0 && headerLen === 0) {
      this.stash(chunk, 0, chunk.length);
      return [];
    }
    const out = new Uint8Array(headerLen + records * recLen);
    let at = this.header(out);
    if (this.kernels !== undefined && records > 0) {
      // The records' bytes are the held partial block and then chunk[0, used).
      const used = records * L - this.partialLen;
      this.recordsWithKernels(this.kernels, out, at, chunk, records);
      this.partialLen = 0;
      this.stash(chunk, used, chunk.length);
      return [out];
    }
    if (this.partialLen > 0) {
      this.stash(chunk, 0, fill);
      off = fill;
      if (straddleDone) {
        at = this.record(out, at, this.partial!, 0, L);
        this.partialLen = 0;
      }
    }
    for (let k = 0; k < whole; k++, off += L) at = this.record(out, at, chunk, off, off + L);
    this.stash(chunk, off, chunk.length);
    return out.length > 0 ? [out] : [];
  }

  end(): Uint8Array[] {
    if (this.ended) return [];
    this.ended = true;
    const out = new Uint8Array((this.headerDone ? 0 : RDIFF_SIGNATURE_HEADER_LEN) + (this.partialLen > 0 ? 4 + this.params.strongLen : 0));
    let at = this.header(out);
    if (this.partialLen > 0) at = this.record(out, at, this.partial!, 0, this.partialLen);
    this.partial = undefined;
    this.partialLen = 0;
    return out.length > 0 ? [out] : [];
  }

  private header(out: Uint8Array): number {
    if (this.headerDone) return 0;
    this.headerDone = true;
    writeU32(out, 0, this.params.magic);
    writeU32(out, 4, this.params.blockLen);
    writeU32(out, 8, this.params.strongLen);
    return RDIFF_SIGNATURE_HEADER_LEN;
  }

  private record(out: Uint8Array, at: number, data: Uint8Array, start: number, end: number): number {
    const { weak, strong, strongLen } = this.params;
    writeU32(out, at, rdiffWeakSum(weak, data, start, end));
    const sum = this.hashes.strong(strong, data, start, end);
    out.set(strongLen === sum.length ? sum : sum.subarray(0, strongLen), at + 4);
    return at + 4 + strongLen;
  }

  /**
   * Writes `records` records from out[at] on, for the blocks made of the held partial block followed by chunk:
   * in batches copied into the kernels' input, two blocks per BLAKE2b call (an odd last one through hash-wasm).
   */
  private recordsWithKernels(kernels: RdiffKernels, out: Uint8Array, at: number, chunk: Uint8Array, records: number): void {
    const { weak, strongLen, blockLen: L } = this.params;
    const rabinKarp = weak === 'rabinkarp';
    const batch = Math.max(2, Math.floor(KERNEL_BATCH_BYTES / L));
    let from = 0; // next chunk byte to copy
    for (let done = 0; done < records; ) {
      const n = Math.min(batch, records - done);
      const input = kernels.input(n * L);
      let filled = 0;
      if (done === 0 && this.partialLen > 0) {
        input.set(this.partial!.subarray(0, this.partialLen), 0);
        filled = this.partialLen;
      }
      input.set(chunk.subarray(from, from + n * L - filled), filled);
      from += n * L - filled;
      for (let k = 0; k < n; k += 2) {
        const off = k * L;
        writeU32(out, at, rabinKarp ? kernels.weak(RABINKARP_SEED, off, L) : rollsumUpdate(0, input, off, off + L));
        if (k + 1 < n) {
          const sums = kernels.strong2(off, off + L, L);
          out.set(sums.subarray(0, strongLen), at + 4);
          at += 4 + strongLen;
          writeU32(out, at, rabinKarp ? kernels.weak(RABINKARP_SEED, off + L, L) : rollsumUpdate(0, input, off + L, off + 2 * L));
          out.set(sums.subarray(32, 32 + strongLen), at + 4);
        } else {
          out.set(this.hashes.strong('blake2', input, off, off + L).subarray(0, strongLen), at + 4);
        }
        at += 4 + strongLen;
      }
      done += n;
    }
  }

  /** Keeps chunk[start..end) as (the start of) the block straddling into the next chunk. */
  private stash(chunk: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (n === 0) return;
    const need = this.partialLen + n;
    if (!this.partial || this.partial.length < need) {
      // Grow towards one block; never more.
      const size = Math.min(this.params.blockLen, Math.max(need, (this.partial?.length ?? 0) * 2, 4096));
      const grown = new Uint8Array(size);
      if (this.partial) grown.set(this.partial.subarray(0, this.partialLen));
      this.partial = grown;
    }
    this.partial.set(chunk.subarray(start, end), this.partialLen);
    this.partialLen = need;
  }
}

/** Signature of a whole in-memory basis, with parameters picked from its size as `rdiff signature` would. */
export function rdiffSignature(hashes: RdiffHashes, basis: Uint8Array, options: RdiffSignatureOptions = {}): Uint8Array {
  const writer = new RdiffSignatureWriter(hashes, rdiffSignatureParams(basis.length, options));
  return concatBytes([...writer.push(basis), ...writer.end()]);
}

// ---------------------------------------------------------------------------------------------------------------
// Reader

function sigError(rdiffResult: RdiffResult, message: string, offset: number | undefined, subject: string | undefined): RdiffError {
  const where = subject ? `rdiff signature ${subject}` : 'rdiff signature';
  return new RdiffError(ErrorCodes.RDIFF_SIGNATURE, rdiffResult, `${where}: ${message}`, { offset, subject });
}

/**
 * Incremental signature reader. Accepts and rejects exactly what rdiff 2.3.2 accepts and rejects, checking in
 * the same order (so the reported rdiffResult is rdiff's exit status too):
 * block_len <= 0 (as signed) -> corrupt (106); strong_len < 0 or > 32 -> corrupt (106); unknown magic -> 104;
 * strong_len above the hash's length (17..32 with MD4) -> 108; strong_len 0 means the hash's full length (a
 * librsync quirk); a file shorter than its 12-byte header -> 103; a partial record at the end: 1-3 bytes are
 * ignored, 4 or more (a weak sum with a cut strong sum) -> 103.
 */
export class RdiffSignatureReader {
  private readonly head = new Uint8Array(RDIFF_SIGNATURE_HEADER_LEN);
  private headLen = 0;
  private params: RdiffSignatureParams | undefined;
  private recLen = 0;
  private readonly rec = new Uint8Array(4 + 32);
  private recFill = 0;
  private count = 0;
  private weakSums = new Uint32Array(0);
  private strongSums = new Uint8Array(0);
  private offset = 0;
  private failure: RdiffError | undefined;
  private result: RdiffSignature | undefined;

  /** `subject` names the signature in error messages. */
  constructor(private readonly subject?: string) {}

  push(chunk: Uint8Array): void {
    if (this.failure) throw this.failure;
    if (this.result) throw new Error('RdiffSignatureReader.push() after end()');
    try {
      this.pushInner(chunk);
    } catch (e) {
      if (e instanceof RdiffError) this.failure = e;
      throw e;
    }
  }

  end(): RdiffSignature {
    if (this.failure) throw this.failure;
    if (this.result) return this.result;
    if (!this.params) {
      throw (this.failure = sigError(103, `ends after ${this.headLen} bytes, inside its ${RDIFF_SIGNATURE_HEADER_LEN}-byte header`, this.headLen, this.subject));
    }
    if (this.recFill >= 4) {
      throw (this.failure = sigError(
        103,
        `truncated block record at offset ${this.offset - this.recFill}: ${this.recFill} of ${this.recLen} bytes (the strong sum is cut short)`,
        this.offset - this.recFill,
        this.subject,
      ));
    }
    // 1-3 stray bytes after the last record: rdiff ignores them, and so do we.
    this.result = {
      ...this.params,
      blockCount: this.count,
      weakSums: this.weakSums.slice(0, this.count),
      strongSums: this.strongSums.slice(0, this.count * this.params.strongLen),
    };
    this.weakSums = new Uint32Array(0);
    this.strongSums = new Uint8Array(0);
    return this.result;
  }

  private pushInner(chunk: Uint8Array): void {
    let off = 0;
    if (!this.params) {
      const n = Math.min(RDIFF_SIGNATURE_HEADER_LEN - this.headLen, chunk.length);
      this.head.set(chunk.subarray(0, n), this.headLen);
      this.headLen += n;
      this.offset += n;
      off = n;
      this.checkHeader();
      if (!this.params) return;
    }
    const recLen = this.recLen;
    const strongLen = this.params.strongLen;
    if (this.recFill > 0) {
      const n = Math.min(recLen - this.recFill, chunk.length - off);
      this.rec.set(chunk.subarray(off, off + n), this.recFill);
      this.recFill += n;
      off += n;
      this.offset += n;
      if (this.recFill < recLen) return;
      this.reserve(1);
      this.addRecord(this.rec, 0, strongLen);
      this.recFill = 0;
    }
    const whole = Math.floor((chunk.length - off) / recLen);
    this.reserve(whole);
    for (let k = 0; k < whole; k++, off += recLen) this.addRecord(chunk, off, strongLen);
    this.offset += whole * recLen;
    const rest = chunk.length - off;
    this.rec.set(chunk.subarray(off), 0);
    this.recFill = rest;
    this.offset += rest;
  }

  private addRecord(src: Uint8Array, at: number, strongLen: number): void {
    this.weakSums[this.count] = ((src[at]! << 24) | (src[at + 1]! << 16) | (src[at + 2]! << 8) | src[at + 3]!) >>> 0;
    this.strongSums.set(src.subarray(at + 4, at + 4 + strongLen), this.count * strongLen);
    this.count++;
  }

  private reserve(more: number): void {
    const need = this.count + more;
    if (need <= this.weakSums.length) return;
    const size = Math.max(need, this.weakSums.length * 2, 64);
    const weak = new Uint32Array(size);
    weak.set(this.weakSums.subarray(0, this.count));
    this.weakSums = weak;
    const strong = new Uint8Array(size * this.params!.strongLen);
    strong.set(this.strongSums.subarray(0, this.count * this.params!.strongLen));
    this.strongSums = strong;
  }

  private checkHeader(): void {
    const h = this.head;
    const dv = new DataView(h.buffer, h.byteOffset, h.byteLength);
    // librsync's order: block_len as soon as it is read, then strong_len, then magic and strong_len vs the hash.
    if (this.headLen < 8) return;
    const blockLen = dv.getInt32(4);
    if (blockLen <= 0) throw sigError(106, `block length ${blockLen} (header bytes 4-7) is bogus: it must be 1..${RDIFF_MAX_BLOCK_LEN}`, 4, this.subject);
    if (this.headLen < RDIFF_SIGNATURE_HEADER_LEN) return;
    const strongLenField = dv.getInt32(8);
    if (strongLenField < 0 || strongLenField > 32) {
      throw sigError(106, `strong sum length ${strongLenField} (header bytes 8-11) is implausible: it must be 0..32`, 8, this.subject);
    }
    const magic = dv.getUint32(0);
    const kinds = rdiffSignatureKinds(magic);
    if (!kinds) {
      throw sigError(104, `bad magic ${hex32(magic)}: not an rdiff signature (expected 0x72730136, 0x72730137, 0x72730146 or 0x72730147)`, 0, this.subject);
    }
    const max = rdiffStrongMaxLen(kinds.strong);
    if (strongLenField > max) {
      throw sigError(108, `strong sum length ${strongLenField} is too long for ${kinds.strong === 'md4' ? 'MD4' : 'BLAKE2b'} (at most ${max})`, 8, this.subject);
    }
    // strong_len 0 means the hash's full length: what rdiff does with it (never written by rdiff or by us).
    const strongLen = strongLenField === 0 ? max : strongLenField;
    this.params = { magic, weak: kinds.weak, strong: kinds.strong, blockLen, strongLen };
    this.recLen = 4 + strongLen;
  }
}

/** Parses a whole signature held in memory. */
export function parseRdiffSignature(bytes: Uint8Array, subject?: string): RdiffSignature {
  const reader = new RdiffSignatureReader(subject);
  reader.push(bytes);
  return reader.end();
}

// ---------------------------------------------------------------------------------------------------------------
// Lookup table for the delta generator

const GOLDEN = 0x9e3779b1;

/**
 * Open-addressing hash table from weak sum to the chain of blocks with that weak sum (in block order, with
 * blocks whose weak and strong sums both repeat an earlier block left out, so a match always names the lowest
 * such block, as librsync's does). Typed arrays only: no per-block objects.
 */
export class RdiffMatchTable {
  /** Slot -> weak sum stored there (valid when slotHead != 0). */
  readonly slotWeak: Uint32Array;
  /** Slot -> first block index + 1 of the chain, 0 = empty slot. */
  readonly slotHead: Int32Array;
  /** Block index -> next block index + 1 in the same chain, 0 = end. */
  readonly next: Int32Array;
  readonly mask: number;
  /** slot = Math.imul(weak, 0x9e3779b1) >>> shift. */
  readonly shift: number;
  /**
   * Bit filter over the same hash, ~32 bits per block: bit (Math.imul(weak, 0x9e3779b1) >>> filterShift) is set
   * iff some block may have this weak sum. Almost every window of a changed region misses it, so the per-byte test
   * is a well-predicted branch on a small array (a half-full slot table alone mispredicts every other byte).
   */
  readonly filter: Int32Array;
  readonly filterShift: number;

  constructor(readonly signature: RdiffSignature) {
    const { blockCount, weakSums, strongSums, strongLen } = signature;
    let bits = 4;
    while (bits < 30 && 2 ** bits < blockCount * 2) bits++;
    const size = 2 ** bits;
    this.slotWeak = new Uint32Array(size);
    this.slotHead = new Int32Array(size);
    this.next = new Int32Array(blockCount);
    this.mask = size - 1;
    this.shift = 32 - bits;
    let filterBits = 10;
    while (filterBits < 31 && 2 ** filterBits < blockCount * 32) filterBits++;
    this.filter = new Int32Array(2 ** (filterBits - 5));
    this.filterShift = 32 - filterBits;
    const tail = new Int32Array(size); // slot -> last block index + 1 of its chain
    for (let k = 0; k < blockCount; k++) {
      const w = weakSums[k]!;
      const f = Math.imul(w, GOLDEN) >>> this.filterShift;
      this.filter[f >>> 5] = this.filter[f >>> 5]! | (1 << (f & 31));
      let s = Math.imul(w, GOLDEN) >>> this.shift;
      while (this.slotHead[s] !== 0 && this.slotWeak[s] !== w) s = (s + 1) & this.mask;
      if (this.slotHead[s] === 0) {
        this.slotWeak[s] = w;
        this.slotHead[s] = k + 1;
        tail[s] = k + 1;
        continue;
      }
      let duplicate = false;
      for (let b = this.slotHead[s]! - 1; b >= 0; b = this.next[b]! - 1) {
        if (sameBytes(strongSums, b * strongLen, strongSums, k * strongLen, strongLen)) {
          duplicate = true;
          break;
        }
      }
      if (duplicate) continue;
      this.next[tail[s]! - 1] = k + 1;
      tail[s] = k + 1;
    }
  }

  /** First block (index) of the chain for weak sum `weak`, or -1 if no block has it. */
  firstWithWeak(weak: number): number {
    const w = weak >>> 0;
    let s = Math.imul(w, GOLDEN) >>> this.shift;
    for (;;) {
      const head = this.slotHead[s]!;
      if (head === 0) return -1;
      if (this.slotWeak[s] === w) return head - 1;
      s = (s + 1) & this.mask;
    }
  }

  /** Lowest block whose weak sum is `weak` and whose stored strong sum equals the first strongLen bytes of `strong`, or -1. */
  find(weak: number, strong: Uint8Array): number {
    const { strongSums, strongLen } = this.signature;
    for (let b = this.firstWithWeak(weak); b >= 0; b = this.next[b]! - 1) {
      if (sameBytes(strongSums, b * strongLen, strong, 0, strongLen)) return b;
    }
    return -1;
  }
}

function sameBytes(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}
