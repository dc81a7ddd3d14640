// Checksums of rdiff (librsync 2.3) signatures: rolling weak sums (RabinKarp, legacy rollsum), strong sums (BLAKE2b-256, MD4), magics and errors shared by the rdiff modules.

import { createBLAKE2b, createMD4, type IHasher } from 'hash-wasm';
import { BlanketError, ErrorCodes } from './errors.js';

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

/**
 * Continues a RabinKarp sum `h` over buf[start..end). Start from RABINKARP_SEED for a fresh window.
 * Hot path: 16 bytes per step read as four aligned 32-bit words, as two 8-byte groups g = sum b[j]*M^(7-j)
 * that do not depend on each other or on h, then h = h*M^16 + g1*M^8 + g2; the constants are M^1..M^8 and
 * M^16 written out (module-level constants would be reloaded on every use).
 */
export function rabinKarpUpdate(h: number, buf: Uint8Array, start: number, end: number): number {
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

/** Loads the WebAssembly hashers once per process (later calls return the same instance). */
export function loadRdiffHashes(): Promise<RdiffHashes> {
  loading ??= Promise.all([createBLAKE2b(256), createMD4()]).then(([blake, md4]) => new RdiffHashes(blake, md4));
  return loading;
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
