// Checksums of rdiff (librsync 2.3) signatures: rolling weak sums (RabinKarp, legacy rollsum), strong sums (BLAKE2b-256, MD4), WebAssembly SIMD kernels for both (BLAKE2b two blocks at a time), magics and errors shared by the rdiff modules.

import { createRequire } from 'node:module';
import { inflateRawSync } from 'node:zlib';
import type { IHasher } from 'hash-wasm';
import { BlanketError, ErrorCodes } from './errors.js';
import { RDIFF_KERNEL_MODULE_DEFLATED } from './rdiff-kernel-module.js';

// ---------------------------------------------------------------------------------------------------------------
// Magics (all big-endian u32 at the start of a file)

export const RDIFF_DELTA_MAGIC = 0x72730236;
/** rollsum + MD4: the pre-1.0 signature format. */
export const RDIFF_SIG_MAGIC_ROLLSUM_MD4 = 0x72730136;
/** rollsum + BLAKE2b (librsync >= 1.0). */
export const RDIFF_SIG_MAGIC_ROLLSUM_BLAKE2 = 0x72730137;
/** RabinKarp + MD4 (librsync >= 2.2). */
export const RDIFF_SIG_MAGIC_RABINKARP_MD4 = 0x72730146;
/** RabinKarp + BLAKE2b: what plain `rdiff signature` writes in 2.3.x. */
export const RDIFF_SIG_MAGIC_RABINKARP_BLAKE2 = 0x72730147;

export type RdiffWeakKind = 'rabinkarp' | 'rollsum';
export type RdiffStrongKind = 'blake2' | 'md4';

/** Full strong sum length: 32 bytes for BLAKE2b-256, 16 for MD4. */
export function rdiffStrongMaxLen(kind: RdiffStrongKind): number {
  return kind === 'md4' ? 16 : 32;
}

export function rdiffSignatureMagic(weak: RdiffWeakKind, strong: RdiffStrongKind): number {
  return 0x72730100 | (weak === 'rabinkarp' ? 0x40 : 0x30) | (strong === 'blake2' ? 0x07 : 0x06);
}

/** The checksum kinds a signature magic stands for, or undefined if it is not one of the four signature magics. */
export function rdiffSignatureKinds(magic: number): { weak: RdiffWeakKind; strong: RdiffStrongKind } | undefined {
  switch (magic >>> 0) {
    case RDIFF_SIG_MAGIC_ROLLSUM_MD4:
      return { weak: 'rollsum', strong: 'md4' };
    case RDIFF_SIG_MAGIC_ROLLSUM_BLAKE2:
      return { weak: 'rollsum', strong: 'blake2' };
    case RDIFF_SIG_MAGIC_RABINKARP_MD4:
      return { weak: 'rabinkarp', strong: 'md4' };
    case RDIFF_SIG_MAGIC_RABINKARP_BLAKE2:
      return { weak: 'rabinkarp', strong: 'blake2' };
    default:
      return undefined;
  }
}

export function hex32(v: number): string {
  return `0x${(v >>> 0).toString(16).padStart(8, '0')}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Errors

/**
 * librsync result codes, which are also rdiff's exit statuses: 103 input ended early, 104 bad magic,
 * 106 corrupt input, 108 bad parameter.
 */
export type RdiffResult = 103 | 104 | 106 | 108;

/** A malformed rdiff signature or delta, bad signature parameters, or a delta that does not fit its basis. */
export class RdiffError extends BlanketError {
  /** What `rdiff` (librsync 2.3.2) reports for the same input, as its exit status. */
  readonly rdiffResult: RdiffResult;
  /** Byte offset in the signature or delta where the problem was found, when there is one. */
  readonly offset: number | undefined;

  constructor(
    code: typeof ErrorCodes.RDIFF_SIGNATURE | typeof ErrorCodes.RDIFF_DELTA,
    rdiffResult: RdiffResult,
    message: string,
    options?: { offset?: number; subject?: string; cause?: unknown },
  ) {
    super(code, message, options);
    this.name = 'RdiffError';
    this.rdiffResult = rdiffResult;
    this.offset = options?.offset;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// RabinKarp: H(b[0..n-1]) = MULT^n + sum b[i] * MULT^(n-1-i) (mod 2^32), i.e. h = 1; h = h*MULT + byte.

export const RABINKARP_SEED = 1;
export const RABINKARP_MULT = 0x08104225;
/** MULT^-1 mod 2^32. */
export const RABINKARP_INV_MULT = 0x98f009ad;
/** (MULT - 1) * seed: added to the byte that leaves the window. */
export const RABINKARP_ADJ = 0x08104224;

const RK_M1 = RABINKARP_MULT;

/** Typed-array word reads see bytes in memory order, low byte first (true on every platform Node runs on). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
/** Below this many bytes the word-at-a-time loops are not worth their setup. */
const WORD_LOOP_MIN = 64;
/** From this many bytes on, rabinKarpUpdate copies them into the SIMD kernel (rdiffKernels, below) and sums them there. */
const RK_KERNEL_MIN = 1024;
/** ... in pieces of at most this many bytes. */
const RK_KERNEL_PIECE = 1 << 20;

/**
 * Continues a RabinKarp sum `h` over buf[start..end). Start from RABINKARP_SEED for a fresh window.
 * From RK_KERNEL_MIN bytes on, in the WebAssembly SIMD kernel where there is one (~2.5x faster). Otherwise the
 * JavaScript hot path: 16 bytes per step read as four aligned 32-bit words, as two 8-byte groups g = sum b[j]*M^(7-j)
 * that do not depend on each other or on h, then h = h*M^16 + g1*M^8 + g2; the constants are M^1..M^8 and
 * M^16 written out (module-level constants would be reloaded on every use).
 */
export function rabinKarpUpdate(h: number, buf: Uint8Array, start: number, end: number): number {
  if (end - start >= RK_KERNEL_MIN) {
    const kernels = rdiffKernels();
    if (kernels !== undefined) {
      for (let at = start; at < end; ) {
        const n = Math.min(end - at, RK_KERNEL_PIECE);
        kernels.input(n).set(buf.subarray(at, at + n));
        h = kernels.weak(h, 0, n);
        at += n;
      }
      return h >>> 0;
    }
  }
  let i = start;
  if (LITTLE_ENDIAN && end - start >= WORD_LOOP_MIN) {
    while (((buf.byteOffset + i) & 3) !== 0) {
      h = (Math.imul(h, 0x08104225) + buf[i]!) | 0;
      i++;
    }
    const words = Math.floor((end - i) / 16) * 4;
    const w = new Int32Array(buf.buffer, buf.byteOffset + i, words);
    for (let k = 0; k < words; k += 4) {
      const x = w[k]!;
      const y = w[k + 1]!;
      const z = w[k + 2]!;
      const u = w[k + 3]!;
      const g1 =
        (Math.imul(x & 255, 1692416781) +
          Math.imul((x >>> 8) & 255, 566975689) +
          Math.imul((x >>> 16) & 255, 1361102037) +
          Math.imul(x >>> 24, -104824591) +
          Math.imul(y & 255, -2054186019) +
          Math.imul((y >>> 8) & 255, -1514727079) +
          Math.imul((y >>> 16) & 255, 135283237) +
          (y >>> 24)) |
        0;
      const g2 =
        (Math.imul(z & 255, 1692416781) +
          Math.imul((z >>> 8) & 255, 566975689) +
          Math.imul((z >>> 16) & 255, 1361102037) +
          Math.imul(z >>> 24, -104824591) +
          Math.imul(u & 255, -2054186019) +
          Math.imul((u >>> 8) & 255, -1514727079) +
          Math.imul((u >>> 16) & 255, 135283237) +
          (u >>> 24)) |
        0;
      h = (Math.imul(h, 196348353) + Math.imul(g1, 2087838433) + g2) | 0;
    }
    i += words * 4;
  }
  for (; i < end; i++) h = (Math.imul(h, 0x08104225) + buf[i]!) | 0;
  return h >>> 0;
}

/** MULT^n mod 2^32 (the factor the rolling form needs for a window of n bytes). */
export function rabinKarpPow(n: number): number {
  let result = 1;
  let base = RK_M1;
  for (let e = n; e > 0; e = Math.floor(e / 2)) {
    if (e % 2 === 1) result = Math.imul(result, base);
    base = Math.imul(base, base);
  }
  return result >>> 0;
}

// ---------------------------------------------------------------------------------------------------------------
// rollsum (rsync/Adler style): s1 = sum(b+31), s2 = sum of the running s1, both mod 2^16; digest (s2 << 16) | s1.

export const ROLLSUM_CHAR_OFFSET = 31;

/** Continues a rollsum digest over buf[start..end). Start from 0 for a fresh window. */
export function rollsumUpdate(digest: number, buf: Uint8Array, start: number, end: number): number {
  // int32 wrap-around is harmless: only the low 16 bits of each accumulator count.
  let s1 = digest & 0xffff;
  let s2 = digest >>> 16;
  let i = start;
  if (LITTLE_ENDIAN && end - start >= WORD_LOOP_MIN) {
    while (((buf.byteOffset + i) & 3) !== 0) {
      s1 = (s1 + buf[i]! + ROLLSUM_CHAR_OFFSET) | 0;
      s2 = (s2 + s1) | 0;
      i++;
    }
    const words = Math.floor((end - i) / 4);
    const w = new Int32Array(buf.buffer, buf.byteOffset + i, words);
    for (let k = 0; k < words; k++) {
      const x = w[k]!;
      const b0 = x & 255;
      const b1 = (x >>> 8) & 255;
      const b2 = (x >>> 16) & 255;
      const b3 = x >>> 24;
      // four steps of s1 += b+31; s2 += s1, folded: the offset adds 4*31 to s1 and (4+3+2+1)*31 to s2.
      s2 = (s2 + (s1 << 2) + 4 * b0 + 3 * b1 + 2 * b2 + b3 + 310) | 0;
      s1 = (s1 + b0 + b1 + b2 + b3 + 124) | 0;
    }
    i += words * 4;
  }
  for (; i < end; i++) {
    s1 = (s1 + buf[i]! + ROLLSUM_CHAR_OFFSET) | 0;
    s2 = (s2 + s1) | 0;
  }
  return (((s2 & 0xffff) << 16) | (s1 & 0xffff)) >>> 0;
}

/** Weak sum of the whole window buf[start..end). */
export function rdiffWeakSum(kind: RdiffWeakKind, buf: Uint8Array, start = 0, end = buf.length): number {
  return kind === 'rabinkarp' ? rabinKarpUpdate(RABINKARP_SEED, buf, start, end) : rollsumUpdate(0, buf, start, end);
}

/**
 * A rolling weak sum over a window that can grow at the back, slide by one byte, or shrink at the front, in O(1)
 * per byte. (The delta generator inlines the same arithmetic; this class is the readable, general form.)
 */
export class RdiffRollingSum {
  /** Window length in bytes. */
  count = 0;
  private h: number;
  /** RabinKarp: MULT^count. */
  private pow = 1;

  constructor(readonly kind: RdiffWeakKind) {
    this.h = kind === 'rabinkarp' ? RABINKARP_SEED : 0;
  }

  get digest(): number {
    return this.h >>> 0;
  }

  reset(): void {
    this.count = 0;
    this.pow = 1;
    this.h = this.kind === 'rabinkarp' ? RABINKARP_SEED : 0;
  }

  /** Appends buf[start..end) at the back. */
  update(buf: Uint8Array, start = 0, end = buf.length): void {
    if (this.kind === 'rabinkarp') {
      this.h = rabinKarpUpdate(this.h, buf, start, end);
      this.pow = Math.imul(this.pow, rabinKarpPow(end - start)) >>> 0;
    } else {
      this.h = rollsumUpdate(this.h, buf, start, end);
    }
    this.count += end - start;
  }

  /** Drops `out` at the front and appends `inn` at the back; the window length stays the same. */
  rotate(out: number, inn: number): void {
    if (this.kind === 'rabinkarp') {
      this.h = (Math.imul(this.h, RK_M1) + inn - Math.imul(this.pow, out + RABINKARP_ADJ)) >>> 0;
    } else {
      const s1 = ((this.h & 0xffff) + inn - out) & 0xffff;
      const s2 = ((this.h >>> 16) + s1 - Math.imul(this.count, out + ROLLSUM_CHAR_OFFSET)) & 0xffff;
      this.h = ((s2 << 16) | s1) >>> 0;
    }
  }

  /** Drops `out` at the front; the window becomes one byte shorter. */
  rollout(out: number): void {
    if (this.kind === 'rabinkarp') {
      this.pow = Math.imul(this.pow, RABINKARP_INV_MULT) >>> 0;
      this.h = (this.h - Math.imul(this.pow, out + RABINKARP_ADJ)) >>> 0;
    } else {
      const s1 = ((this.h & 0xffff) - out - ROLLSUM_CHAR_OFFSET) & 0xffff;
      const s2 = ((this.h >>> 16) - Math.imul(this.count, out + ROLLSUM_CHAR_OFFSET)) & 0xffff;
      this.h = ((s2 << 16) | s1) >>> 0;
    }
    this.count--;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Strong sums

/**
 * The strong-hash instances (hash-wasm BLAKE2b with digest length 32, and MD4), created once and reused:
 * every call is init + update + digest in one synchronous step, so one instance can serve any number of
 * signature writers and delta generators in the same thread.
 */
export class RdiffHashes {
  constructor(
    private readonly blake2b256: IHasher,
    private readonly md4: IHasher,
  ) {}

  /** Full-length strong sum (32 bytes BLAKE2b-256, 16 bytes MD4) of data[start..end). */
  strong(kind: RdiffStrongKind, data: Uint8Array, start = 0, end = data.length): Uint8Array {
    const hasher = kind === 'blake2' ? this.blake2b256 : this.md4;
    hasher.init();
    hasher.update(start === 0 && end === data.length ? data : data.subarray(start, end));
    return hasher.digest('binary');
  }
}

let loading: Promise<RdiffHashes> | undefined;

/**
 * hash-wasm, loaded with require(): an ES import of this CommonJS bundle (280 KB) has Node scan its source for
 * export names in every thread that loads the rdiff modules, and V8 then spends ~0.1 s per thread optimizing the
 * scanner on its background threads (a sixth of a changed-day backup's CPU time went there).
 */
function loadHashWasm(): typeof import('hash-wasm') {
  return createRequire(import.meta.url)('hash-wasm') as typeof import('hash-wasm');
}

/** Loads the WebAssembly hashers once per process (later calls return the same instance). */
export function loadRdiffHashes(): Promise<RdiffHashes> {
  if (loading === undefined) {
    const { createBLAKE2b, createMD4 } = loadHashWasm();
    loading = Promise.all([createBLAKE2b(256), createMD4()]).then(([blake, md4]) => new RdiffHashes(blake, md4));
  }
  return loading;
}

// ---------------------------------------------------------------------------------------------------------------
// WebAssembly SIMD kernels: BLAKE2b-256 of two blocks at once, and RabinKarp sums
//
// BLAKE2b is ~3/4 of the time of a signature and of a delta of an unchanged file. hash-wasm's is scalar (as fast as
// OpenSSL's C on one block); with 128-bit SIMD two blocks of the same length are hashed in one pass, the two 64-bit
// lanes of every vector holding the same state word of the two blocks, at ~1.7x the bytes per second. The module is
// generated below (a few hundred bytes of emitter, no toolchain); its results are checked against hash-wasm's
// BLAKE2b and rabinKarpUpdate by test/unit/rdiff.test.ts (signatures and deltas byte for byte against rdiff's).
// Where WebAssembly SIMD is missing, rdiffKernels() returns undefined and the callers keep to hash-wasm.

const WASM_I32 = 0x7f;
const WASM_I64 = 0x7e;
const WASM_V128 = 0x7b;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(v: bigint): number[] {
  const out: number[] = [];
  for (;;) {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    if ((v === 0n && (b & 0x40) === 0) || (v === -1n && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

/** One WebAssembly function body, written instruction by instruction (stack machine). */
class WasmFunction {
  private readonly localTypes: number[] = [];
  readonly code: number[] = [];

  constructor(
    readonly params: readonly number[],
    readonly results: readonly number[],
  ) {}

  local(type: number): number {
    this.localTypes.push(type);
    return this.params.length + this.localTypes.length - 1;
  }

  op(...bytes: number[]): this {
    for (const b of bytes) this.code.push(b);
    return this;
  }

  get(i: number): this {
    return this.op(0x20, ...uleb(i));
  }

  set(i: number): this {
    return this.op(0x21, ...uleb(i));
  }

  tee(i: number): this {
    return this.op(0x22, ...uleb(i));
  }

  i32(v: number): this {
    return this.op(0x41, ...sleb(BigInt(v | 0)));
  }

  i64(v: bigint): this {
    return this.op(0x42, ...sleb(BigInt.asIntN(64, v)));
  }

  /** A SIMD instruction (0xfd prefix) with its immediates. */
  simd(code: number, ...immediates: number[]): this {
    return this.op(0xfd, ...uleb(code), ...immediates);
  }

  /** v128.load / v128.store at address + offset (no alignment promised). */
  load128(offset: number): this {
    return this.simd(0x00, 0, ...uleb(offset));
  }

  encode(): number[] {
    const groups: [number, number][] = [];
    for (const t of this.localTypes) {
      const last = groups[groups.length - 1];
      if (last && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    const body = [...uleb(groups.length), ...groups.flatMap(([n, t]) => [...uleb(n), t]), ...this.code, 0x0b];
    return [...uleb(body.length), ...body];
  }
}

function wasmModule(functions: readonly WasmFunction[], exportNames: readonly string[], memoryPages: number): Uint8Array<ArrayBuffer> {
  const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
  const name = (s: string): number[] => [...uleb(s.length), ...Array.from(s, (c) => c.charCodeAt(0))];
  const section = (id: number, bytes: number[]): number[] => [id, ...uleb(bytes.length), ...bytes];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(functions.map((f) => [0x60, ...vec(f.params.map((t) => [t])), ...vec(f.results.map((t) => [t]))]))),
    ...section(3, vec(functions.map((_, i) => uleb(i)))),
    ...section(5, vec([[0x00, ...uleb(memoryPages)]])),
    ...section(7, vec([[...name('memory'), 0x02, 0], ...exportNames.map((n, i) => [...name(n), 0x00, ...uleb(i)])])),
    ...section(10, vec(functions.map((f) => f.encode()))),
  ]);
}

/** Module memory: the two zero-padded final chunks of a BLAKE2b pair. */
const KERNEL_SCRATCH = 0;
/** Module memory: the two digests of the last pair (lane A at +0, lane B at +32). */
const KERNEL_DIGESTS = 256;
/** Module memory: the input area. */
const KERNEL_INPUT = 1024;

const BLAKE2B_IV = [
  0x6a09e667f3bcc908n, 0xbb67ae8584caa73bn, 0x3c6ef372fe94f82bn, 0xa54ff53a5f1d36f1n,
  0x510e527fade682d1n, 0x9b05688c2b3e6c1fn, 0x1f83d9abfb41bd6bn, 0x5be0cd19137e2179n,
];
const BLAKE2B_SIGMA = [
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
  [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
  [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
  [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
  [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
  [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
  [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
  [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
  [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
  [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];

/**
 * blake2x2(a, b, len): BLAKE2b-256 (unkeyed) of memory[a, a+len) into memory[KERNEL_DIGESTS, +32) and of
 * memory[b, b+len) into [KERNEL_DIGESTS+32, +32). 128-byte chunks, the last one (1..128 bytes, or the empty
 * message's zero chunk) copied zero-padded into the scratch area and compressed with the final flag.
 */
function blake2x2Function(): WasmFunction {
  const f = new WasmFunction([WASM_I32, WASM_I32, WASM_I32], []);
  const [pA, pB, len] = [0, 1, 2];
  const off = f.local(WASM_I32);
  const last = f.local(WASM_I32);
  const isLast = f.local(WASM_I32);
  const srcA = f.local(WASM_I32);
  const srcB = f.local(WASM_I32);
  const h = Array.from({ length: 8 }, () => f.local(WASM_V128));
  const v = Array.from({ length: 16 }, () => f.local(WASM_V128));
  const m = Array.from({ length: 16 }, () => f.local(WASM_V128));
  const t = f.local(WASM_V128);
  const a16 = f.local(WASM_V128);
  const add = (): WasmFunction => f.simd(0xce); // i64x2.add
  const xor = (): WasmFunction => f.simd(0x51); // v128.xor
  const splat = (x: bigint): WasmFunction => f.i64(x).simd(0x12); // i64x2.splat
  const shuffle = (lanes: readonly number[]): WasmFunction => f.simd(0x0d, ...lanes); // i8x16.shuffle
  // Rotations right of each 64-bit lane: by 32 and 16 bits byte shuffles (pshufd; pshuflw + pshufhw), by 24
  // (x >>> 24) | (x << 40) (as a shuffle V8 rebuilds the pshufb mask at every use: ~8% slower), by 63 (x + x) ^ (x >>> 63).
  const ROTR32 = [4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11];
  const ROTR16 = [2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9];

  // Parameter block of BLAKE2b-256 without key: digest length 32, fanout 1, depth 1.
  for (let i = 0; i < 8; i++) splat(i === 0 ? BLAKE2B_IV[0]! ^ 0x01010020n : BLAKE2B_IV[i]!).set(h[i]!);
  // last = offset of the final chunk = len == 0 ? 0 : (len - 1) & ~127
  f.i32(0).get(len).i32(1).op(0x6b).i32(~127).op(0x71).get(len).op(0x45).op(0x1b).set(last);
  f.i32(0).set(off);
  f.op(0x03, 0x40); // loop
  f.get(off).get(last).op(0x46).set(isLast);
  f.get(isLast).op(0x04, 0x40); // if: the final chunk, zero-padded, from the scratch area
  f.i32(KERNEL_SCRATCH).i32(0).i32(256).op(0xfc, 11, 0); // memory.fill
  f.i32(KERNEL_SCRATCH).get(pA).get(off).op(0x6a).get(len).get(off).op(0x6b).op(0xfc, 10, 0, 0); // memory.copy
  f.i32(KERNEL_SCRATCH + 128).get(pB).get(off).op(0x6a).get(len).get(off).op(0x6b).op(0xfc, 10, 0, 0);
  f.i32(KERNEL_SCRATCH).set(srcA).i32(KERNEL_SCRATCH + 128).set(srcB);
  f.op(0x05); // else
  f.get(pA).get(off).op(0x6a).set(srcA).get(pB).get(off).op(0x6a).set(srcB);
  f.op(0x0b);
  // Message words: m[i] = (word i of A, word i of B).
  for (let j = 0; j < 8; j++) {
    f.get(srcA).load128(16 * j).set(a16);
    f.get(a16).get(srcB).load128(16 * j).tee(t);
    shuffle([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]).set(m[2 * j]!);
    f.get(a16).get(t);
    shuffle([8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31]).set(m[2 * j + 1]!);
  }
  for (let i = 0; i < 8; i++) f.get(h[i]!).set(v[i]!);
  for (let i = 0; i < 4; i++) splat(BLAKE2B_IV[i]!).set(v[8 + i]!);
  // v12 = IV4 ^ t, t = bytes so far: len for the final chunk, else off + 128 (the high counter word stays 0).
  splat(BLAKE2B_IV[4]!).get(isLast).op(0x04, WASM_I64).get(len).op(0xad).op(0x05).get(off).i32(128).op(0x6a).op(0xad).op(0x0b);
  f.simd(0x12);
  xor().set(v[12]!);
  splat(BLAKE2B_IV[5]!).set(v[13]!);
  // v14 = IV6 ^ (final ? ~0 : 0)
  splat(BLAKE2B_IV[6]!).i64(0n).get(isLast).op(0xad).op(0x7d).simd(0x12);
  xor().set(v[14]!);
  splat(BLAKE2B_IV[7]!).set(v[15]!);
  const G = (a: number, b: number, c: number, d: number, x: number, y: number): void => {
    const [va, vb, vc, vd] = [v[a]!, v[b]!, v[c]!, v[d]!];
    // a = (a + m) + b: a + m does not wait for b (~3% faster than (a + b) + m).
    f.get(va).get(m[x]!);
    add().get(vb);
    add().tee(va).get(vd);
    xor().tee(t).get(t);
    shuffle(ROTR32).set(vd).get(vc).get(vd);
    add().tee(vc).get(vb);
    xor().tee(t).i32(24).simd(0xcd).get(t).i32(40).simd(0xcb); // i64x2.shr_u, i64x2.shl
    f.simd(0x50).set(vb).get(va).get(m[y]!); // v128.or
    add().get(vb);
    add().tee(va).get(vd);
    xor().tee(t).get(t);
    shuffle(ROTR16).set(vd).get(vc).get(vd);
    add().tee(vc).get(vb);
    xor().tee(t).get(t);
    add().get(t).i32(63).simd(0xcd); // i64x2.shr_u
    xor().set(vb);
  };
  for (let r = 0; r < 12; r++) {
    const s = BLAKE2B_SIGMA[r % 10]!;
    G(0, 4, 8, 12, s[0]!, s[1]!);
    G(1, 5, 9, 13, s[2]!, s[3]!);
    G(2, 6, 10, 14, s[4]!, s[5]!);
    G(3, 7, 11, 15, s[6]!, s[7]!);
    G(0, 5, 10, 15, s[8]!, s[9]!);
    G(1, 6, 11, 12, s[10]!, s[11]!);
    G(2, 7, 8, 13, s[12]!, s[13]!);
    G(3, 4, 9, 14, s[14]!, s[15]!);
  }
  for (let i = 0; i < 8; i++) {
    f.get(h[i]!).get(v[i]!);
    xor().get(v[i + 8]!);
    xor().set(h[i]!);
  }
  f.get(off).i32(128).op(0x6a).set(off);
  f.get(isLast).op(0x45).op(0x0d, 0); // br_if loop (not the final chunk yet)
  f.op(0x0b); // end loop
  // Digest: the low 4 words, lane A then lane B (v128.store64_lane).
  for (let i = 0; i < 4; i++) {
    f.i32(0).get(h[i]!).simd(0x5b, 3, ...uleb(KERNEL_DIGESTS + 8 * i), 0);
    f.i32(0).get(h[i]!).simd(0x5b, 3, ...uleb(KERNEL_DIGESTS + 32 + 8 * i), 1);
  }
  return f;
}

/**
 * rk(h, p, len) = rabinKarpUpdate(h, memory, p, p + len): 32 bytes per step in 32 lanes (8 vectors of 4 u32),
 * each its own Horner sum S_j = S_j * M^32 + b[32k + j]; then h * M^(32K) + sum S_j * M^(31-j), then byte by byte.
 */
function rabinKarpFunction(): WasmFunction {
  const f = new WasmFunction([WASM_I32, WASM_I32, WASM_I32], [WASM_I32]);
  const [h0, p, len] = [0, 1, 2];
  const end32 = f.local(WASM_I32);
  const end = f.local(WASM_I32);
  const h = f.local(WASM_I32);
  const pw = f.local(WASM_I32);
  const acc = Array.from({ length: 8 }, () => f.local(WASM_V128));
  const x = [f.local(WASM_V128), f.local(WASM_V128)];
  const m32 = f.local(WASM_V128);
  const M32 = rabinKarpPow(32) | 0;
  f.i32(M32).simd(0x11).set(m32); // i32x4.splat
  f.i32(1).set(pw);
  f.get(p).get(len).i32(~31).op(0x71).op(0x6a).set(end32);
  f.get(p).get(len).op(0x6a).set(end);
  f.op(0x02, 0x40); // block
  f.get(p).get(end32).op(0x46).op(0x0d, 0);
  f.op(0x03, 0x40); // loop
  f.get(p).load128(0).set(x[0]!);
  f.get(p).load128(16).set(x[1]!);
  for (let half = 0; half < 2; half++) {
    // bytes 0-3, 4-7, 8-11, 12-15 of x widened to u32 lanes: extend_{low,high}_i8x16_u, then _i16x8_u
    const widen = [
      [0x89, 0xa9],
      [0x89, 0xaa],
      [0x8a, 0xa9],
      [0x8a, 0xaa],
    ] as const;
    widen.forEach(([to16, to32], q) => {
      const a = acc[4 * half + q]!;
      f.get(a).get(m32).simd(0xb5); // i32x4.mul
      f.get(x[half]!).simd(to16).simd(to32);
      f.simd(0xae).set(a); // i32x4.add
    });
  }
  f.get(pw).i32(M32).op(0x6c).set(pw);
  f.get(p).i32(32).op(0x6a).tee(p).get(end32).op(0x47).op(0x0d, 0);
  f.op(0x0b, 0x0b); // end loop, end block
  for (let k = 0; k < 8; k++) {
    const powers = new Uint8Array(new Uint32Array([0, 1, 2, 3].map((l) => rabinKarpPow(31 - 4 * k - l))).buffer);
    f.get(acc[k]!).simd(0x0c, ...powers).simd(0xb5); // v128.const, i32x4.mul
    if (k > 0) f.simd(0xae);
  }
  const sum = x[0]!;
  f.set(sum).get(sum).get(sum).get(sum);
  f.simd(0x0d, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7).simd(0xae).set(sum);
  f.get(sum).get(sum).get(sum);
  f.simd(0x0d, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11).simd(0xae).simd(0x1b, 0); // i32x4.extract_lane 0
  f.get(h0).get(pw).op(0x6c).op(0x6a).set(h);
  f.op(0x02, 0x40);
  f.get(p).get(end).op(0x46).op(0x0d, 0);
  f.op(0x03, 0x40);
  f.get(h).i32(RK_M1).op(0x6c).get(p).op(0x2d, 0, 0).op(0x6a).set(h); // h = h * M + byte (i32.load8_u)
  f.get(p).i32(1).op(0x6a).tee(p).get(end).op(0x47).op(0x0d, 0);
  f.op(0x0b, 0x0b);
  f.get(h);
  return f;
}

/**
 * The SIMD kernels of this thread (one module instance per thread). Callers copy their bytes into input(), then
 * call weak / strong2 on offsets in it. Internal to the rdiff modules.
 */
export class RdiffKernels {
  /** Largest input area the kernels grow to; callers with more bytes stay with hash-wasm. */
  static readonly MAX_INPUT = 32 << 20;
  private readonly memory: WebAssembly.Memory;
  private readonly blake2x2: (a: number, b: number, len: number) => void;
  private readonly rk: (h: number, p: number, len: number) => number;
  private bytes: Uint8Array;
  private capacity: number;

  constructor(instance: WebAssembly.Instance) {
    const e = instance.exports as { memory: WebAssembly.Memory; blake2x2: RdiffKernels['blake2x2']; rk: RdiffKernels['rk'] };
    this.memory = e.memory;
    this.blake2x2 = e.blake2x2;
    this.rk = e.rk;
    this.bytes = new Uint8Array(this.memory.buffer);
    this.capacity = this.bytes.length - KERNEL_INPUT;
  }

  /** The input area's first `length` bytes (length <= MAX_INPUT), to copy data into; valid until the next input(). */
  input(length: number): Uint8Array {
    if (length > this.capacity) {
      const need = KERNEL_INPUT + length - this.bytes.length;
      this.memory.grow(Math.ceil(need / 65536));
      this.bytes = new Uint8Array(this.memory.buffer);
      this.capacity = this.bytes.length - KERNEL_INPUT;
    }
    return this.bytes.subarray(KERNEL_INPUT, KERNEL_INPUT + length);
  }

  /** rabinKarpUpdate(h, input, offset, offset + length). */
  weak(h: number, offset: number, length: number): number {
    return this.rk(h, KERNEL_INPUT + offset, length) >>> 0;
  }

  /**
   * BLAKE2b-256 of input[a, a+length) and of input[b, b+length): 64 bytes, the first digest then the second (a view,
   * valid until the next call).
   */
  strong2(a: number, b: number, length: number): Uint8Array {
    this.blake2x2(KERNEL_INPUT + a, KERNEL_INPUT + b, length);
    return this.bytes.subarray(KERNEL_DIGESTS, KERNEL_DIGESTS + 64);
  }
}

/**
 * The kernels' module, generated: the source of the bytes that rdiff-kernel-module.ts holds ready (generating takes
 * ~35 ms of cold JavaScript per thread); a test checks that the two agree.
 */
export function generateRdiffKernelModule(): Uint8Array<ArrayBuffer> {
  return wasmModule([blake2x2Function(), rabinKarpFunction()], ['blake2x2', 'rk'], 32);
}

let kernels: RdiffKernels | null | undefined;

/** This thread's SIMD kernels, made on first use; undefined where WebAssembly SIMD is not available. */
export function rdiffKernels(): RdiffKernels | undefined {
  if (kernels === undefined) {
    kernels = null;
    try {
      const bytes = inflateRawSync(Buffer.from(RDIFF_KERNEL_MODULE_DEFLATED, 'base64'));
      if (typeof WebAssembly === 'object' && WebAssembly.validate(bytes)) {
        kernels = new RdiffKernels(new WebAssembly.Instance(new WebAssembly.Module(bytes), {}));
      }
    } catch {
      kernels = null;
    }
  }
  return kernels ?? undefined;
}

/** The parts, one after the other, in one array (the part itself when there is only one). */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
