// rdiff (librsync 2.3) delta files: command encoding and incremental decoding, and an incremental, bounded-memory delta generator using rdiff's greedy block matcher.

import { ErrorCodes } from './errors.js';
import {
  concatBytes,
  RABINKARP_ADJ,
  RABINKARP_INV_MULT,
  RABINKARP_MULT,
  RABINKARP_SEED,
  RDIFF_DELTA_MAGIC,
  ROLLSUM_CHAR_OFFSET,
  type RdiffHashes,
  RdiffError,
  type RdiffResult,
  hex32,
  rabinKarpPow,
  rabinKarpUpdate,
  rdiffKernels,
  RdiffKernels,
  rollsumUpdate,
} from './rdiff-checksums.js';
import { RdiffMatchTable, type RdiffSignature } from './rdiff-signature.js';

export const RDIFF_OP_END = 0x00;
/** Opcodes 0x01..0x40: literal of that many bytes, no length field. */
export const RDIFF_OP_LITERAL_MAX_IMMEDIATE = 0x40;
/** 0x41..0x44: literal with a 1/2/4/8-byte length. */
export const RDIFF_OP_LITERAL_N1 = 0x41;
/** 0x45..0x54: copy; 0x45 + 4*p + l with p, l = 0..3 selecting 1/2/4/8-byte position and length. */
export const RDIFF_OP_COPY_N1_N1 = 0x45;
export const RDIFF_OP_COPY_N8_N8 = 0x54;
/** rdiff cuts literal runs into commands of at most this many bytes. */
export const RDIFF_MAX_LITERAL = 32768;

const WIDTHS = [1, 2, 4, 8] as const;
const TWO32 = 2 ** 32;

/** Smallest field width (1, 2, 4 or 8 bytes) that holds v, as rdiff picks it. */
export function rdiffIntWidth(v: number): 1 | 2 | 4 | 8 {
  if (v < 0x100) return 1;
  if (v < 0x10000) return 2;
  if (v < TWO32) return 4;
  return 8;
}

function widthIndex(w: 1 | 2 | 4 | 8): number {
  return w === 1 ? 0 : w === 2 ? 1 : w === 4 ? 2 : 3;
}

function checkCount(what: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`rdiff delta: ${what} ${v} is not a non-negative safe integer`);
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding

/**
 * Writes delta commands into 64 KiB output buffers. Command forms are the ones rdiff 2.3.2 writes: literal
 * 1..64 -> one opcode byte, then 0x41/0x42/0x43 (0x44 beyond 4 GiB); copy -> smallest widths per field.
 */
export class RdiffDeltaEncoder {
  private static readonly SIZE = 64 * 1024;
  private buf = new Uint8Array(RdiffDeltaEncoder.SIZE);
  private n = 0;
  private ready: Uint8Array[] = [];
  private ended = false;
  /** Bytes written so far, including the magic. */
  length = 0;

  constructor() {
    this.u(RDIFF_DELTA_MAGIC, 4);
  }

  /** LITERAL command carrying data[start..end) (must not be empty). */
  literal(data: Uint8Array, start = 0, end = data.length): void {
    const len = end - start;
    if (len <= 0) throw new RangeError('rdiff delta: a LITERAL command must not be empty');
    this.literalHeader(len);
    this.bytes(data, start, end);
  }

  /** Header of a LITERAL command of `len` bytes; the caller then supplies exactly `len` data bytes via bytes(). */
  literalHeader(len: number): void {
    checkCount('literal length', len);
    if (len === 0) throw new RangeError('rdiff delta: a LITERAL command must not be empty');
    if (len <= RDIFF_OP_LITERAL_MAX_IMMEDIATE) {
      this.u(len, 1);
      return;
    }
    const w = rdiffIntWidth(len);
    this.u(RDIFF_OP_LITERAL_N1 + widthIndex(w), 1);
    this.u(len, w);
  }

  /** COPY command: basis bytes [position, position + length). */
  copy(position: number, length: number): void {
    checkCount('copy position', position);
    checkCount('copy length', length);
    if (length === 0) throw new RangeError('rdiff delta: a COPY command must not be empty');
    const pw = rdiffIntWidth(position);
    const lw = rdiffIntWidth(length);
    this.u(RDIFF_OP_COPY_N1_N1 + 4 * widthIndex(pw) + widthIndex(lw), 1);
    this.u(position, pw);
    this.u(length, lw);
  }

  /** END command; nothing may follow. */
  end(): void {
    if (this.ended) return;
    this.u(RDIFF_OP_END, 1);
    this.ended = true;
  }

  /** Raw bytes (literal data). Copies them: `data` may be reused afterwards. */
  bytes(data: Uint8Array, start = 0, end = data.length): void {
    const len = end - start;
    this.length += len;
    if (len <= this.buf.length - this.n) {
      this.buf.set(data.subarray(start, end), this.n);
      this.n += len;
      return;
    }
    this.flushBuffer();
    if (len <= this.buf.length / 2) {
      this.buf.set(data.subarray(start, end), 0);
      this.n = len;
    } else {
      this.ready.push(data.slice(start, end));
    }
  }

  /** Output completed since the last take(), in order. */
  take(): Uint8Array[] {
    if (this.n > 0) {
      if (this.n >= this.buf.length / 2) {
        this.ready.push(this.buf.subarray(0, this.n));
        this.buf = new Uint8Array(RdiffDeltaEncoder.SIZE);
      } else {
        this.ready.push(this.buf.slice(0, this.n));
      }
      this.n = 0;
    }
    const out = this.ready;
    this.ready = [];
    return out;
  }

  private flushBuffer(): void {
    if (this.n === 0) return;
    this.ready.push(this.buf.subarray(0, this.n));
    this.buf = new Uint8Array(RdiffDeltaEncoder.SIZE);
    this.n = 0;
  }

  /** Big-endian unsigned integer of `width` bytes (v < 2^53). */
  private u(v: number, width: number): void {
    if (this.buf.length - this.n < width) this.flushBuffer();
    this.length += width;
    const b = this.buf;
    let at = this.n;
    if (width === 8) {
      const hi = Math.floor(v / TWO32);
      b[at++] = hi >>> 24;
      b[at++] = (hi >>> 16) & 0xff;
      b[at++] = (hi >>> 8) & 0xff;
      b[at++] = hi & 0xff;
      width = 4;
      v = v % TWO32;
    }
    for (let shift = (width - 1) * 8; shift >= 0; shift -= 8) b[at++] = Math.floor(v / 2 ** shift) & 0xff;
    this.n = at;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding

/** One step of a delta, as the decoder finds it. `offset` is the delta offset of the command's opcode. */
export type RdiffDeltaEvent =
  /** (Part of) a LITERAL command's data: a view of the pushed chunk; one command may arrive in several parts. */
  | { type: 'literal'; data: Uint8Array; offset: number }
  | { type: 'copy'; position: number; length: number; offset: number }
  | { type: 'end'; offset: number };

type DecoderState = 'magic' | 'opcode' | 'params' | 'literal' | 'done';

/**
 * Incremental delta parser: push bytes in chunks of any size, get commands back. Accepts every command form
 * (all literal/copy widths); rejects as rdiff 2.3.2 does, with its result code in `rdiffResult`: bad magic 104;
 * reserved opcode 0x55..0xFF, zero-length LITERAL/COPY, or an 8-byte field >= 2^63 -> 106; input ending before
 * END (in the magic, a command, literal data, or between commands) -> 103 from end(). Bytes after END are
 * ignored, as rdiff ignores them (counted in `trailingBytes`). Memory: O(1); literal data is never buffered.
 */
export class RdiffDeltaDecoder {
  private state: DecoderState = 'magic';
  private readonly field = new Uint8Array(16);
  private fieldLen = 0;
  private fieldNeed = 4;
  private op = 0;
  private opOffset = 0;
  private literalTotal = 0;
  private literalLeft = 0;
  /** Delta bytes consumed so far. */
  offset = 0;
  /** Bytes after the END command (ignored). */
  trailingBytes = 0;
  private failure: RdiffError | undefined;

  /** `subject` names the delta in error messages. */
  constructor(private readonly subject?: string) {}

  /** True once END has been read. */
  get finished(): boolean {
    return this.state === 'done';
  }

  push(chunk: Uint8Array): RdiffDeltaEvent[] {
    if (this.failure) throw this.failure;
    try {
      return this.pushInner(chunk);
    } catch (e) {
      if (e instanceof RdiffError) this.failure = e;
      throw e;
    }
  }

  /** Call when the delta has no more bytes: throws (103) unless END was reached. */
  end(): void {
    if (this.failure) throw this.failure;
    switch (this.state) {
      case 'done':
        return;
      case 'magic':
        throw this.fail(103, `ends after ${this.offset} bytes, inside its 4-byte magic`, this.offset);
      case 'opcode':
        throw this.fail(103, `ends at offset ${this.offset} without an END command`, this.offset);
      case 'params':
        throw this.fail(
          103,
          `ends at offset ${this.offset}, inside the ${this.opName()} command at offset ${this.opOffset} (${this.fieldLen} of ${this.fieldNeed} parameter bytes present)`,
          this.opOffset,
        );
      case 'literal':
        throw this.fail(
          103,
          `ends at offset ${this.offset}, inside the LITERAL command at offset ${this.opOffset} (${this.literalTotal - this.literalLeft} of ${this.literalTotal} data bytes present)`,
          this.opOffset,
        );
    }
  }

  private fail(rdiffResult: RdiffResult, message: string, offset: number): RdiffError {
    const where = this.subject ? `rdiff delta ${this.subject}` : 'rdiff delta';
    this.failure = new RdiffError(ErrorCodes.RDIFF_DELTA, rdiffResult, `${where}: ${message}`, { offset, subject: this.subject });
    return this.failure;
  }

  private opName(): string {
    return this.op <= 0x44 ? 'LITERAL' : 'COPY';
  }

  private pushInner(chunk: Uint8Array): RdiffDeltaEvent[] {
    const events: RdiffDeltaEvent[] = [];
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      switch (this.state) {
        case 'magic':
        case 'params': {
          const take = Math.min(this.fieldNeed - this.fieldLen, n - i);
          this.field.set(chunk.subarray(i, i + take), this.fieldLen);
          this.fieldLen += take;
          i += take;
          this.offset += take;
          if (this.fieldLen < this.fieldNeed) break;
          if (this.state === 'magic') {
            const magic = ((this.field[0]! << 24) | (this.field[1]! << 16) | (this.field[2]! << 8) | this.field[3]!) >>> 0;
            if (magic !== RDIFF_DELTA_MAGIC) throw this.fail(104, `bad magic ${hex32(magic)}: not an rdiff delta (expected ${hex32(RDIFF_DELTA_MAGIC)})`, 0);
            this.state = 'opcode';
          } else {
            this.command(events);
          }
          break;
        }
        case 'opcode': {
          const op = chunk[i]!;
          this.opOffset = this.offset;
          this.op = op;
          i++;
          this.offset++;
          if (op === RDIFF_OP_END) {
            events.push({ type: 'end', offset: this.opOffset });
            this.state = 'done';
          } else if (op <= RDIFF_OP_LITERAL_MAX_IMMEDIATE) {
            this.literalTotal = this.literalLeft = op;
            this.state = 'literal';
          } else if (op <= RDIFF_OP_COPY_N8_N8) {
            this.fieldNeed = op < RDIFF_OP_COPY_N1_N1 ? WIDTHS[op - RDIFF_OP_LITERAL_N1]! : WIDTHS[(op - RDIFF_OP_COPY_N1_N1) >> 2]! + WIDTHS[(op - RDIFF_OP_COPY_N1_N1) & 3]!;
            this.fieldLen = 0;
            this.state = 'params';
          } else {
            throw this.fail(106, `reserved opcode 0x${op.toString(16).padStart(2, '0')} at offset ${this.opOffset}`, this.opOffset);
          }
          break;
        }
        case 'literal': {
          const take = Math.min(this.literalLeft, n - i);
          events.push({ type: 'literal', data: chunk.subarray(i, i + take), offset: this.opOffset });
          i += take;
          this.offset += take;
          this.literalLeft -= take;
          if (this.literalLeft === 0) this.state = 'opcode';
          break;
        }
        case 'done':
          this.trailingBytes += n - i;
          this.offset += n - i;
          i = n;
          break;
      }
    }
    return events;
  }

  /** Decodes the parameters of the command in `field`. */
  private command(events: RdiffDeltaEvent[]): void {
    const op = this.op;
    if (op < RDIFF_OP_COPY_N1_N1) {
      const len = this.readField(0, this.fieldNeed, 'length', 'LITERAL');
      if (len === 0) throw this.fail(106, `LITERAL command of length 0 at offset ${this.opOffset}`, this.opOffset);
      this.literalTotal = this.literalLeft = len;
      this.state = 'literal';
      return;
    }
    const pw = WIDTHS[(op - RDIFF_OP_COPY_N1_N1) >> 2]!;
    const lw = WIDTHS[(op - RDIFF_OP_COPY_N1_N1) & 3]!;
    const position = this.readField(0, pw, 'position', 'COPY');
    const length = this.readField(pw, lw, 'length', 'COPY');
    if (length === 0) throw this.fail(106, `COPY command of length 0 at offset ${this.opOffset}`, this.opOffset);
    events.push({ type: 'copy', position, length, offset: this.opOffset });
    this.state = 'opcode';
  }

  /** Big-endian field; 8-byte fields are signed in librsync, so >= 2^63 is corrupt. Exact below 2^53. */
  private readField(at: number, width: number, what: string, command: string): number {
    const f = this.field;
    if (width === 8 && f[at]! >= 0x80) {
      throw this.fail(106, `${command} command at offset ${this.opOffset} has a negative ${what} (8-byte field >= 2^63)`, this.opOffset);
    }
    let v = 0;
    for (let k = 0; k < width; k++) v = v * 256 + f[at + k]!;
    return v;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Generator

export interface RdiffDeltaOptions {
  /** Longest LITERAL command written while matching; rdiff's value, 32768, by default. */
  maxLiteral?: number;
}

const GOLDEN = 0x9e3779b1;
/** Against a signature with no blocks rdiff cuts literals at its input buffer size (= block_len); we cap that. */
const MAX_EMPTY_SIGNATURE_LITERAL = 1 << 20;

/** Weak sum of the window where the last roll stopped (second result of rollRabinKarp / rollRollsum). */
let rolled = 0;

/**
 * The miss path's inner loop: makes new[pos] literal and slides the window one byte, repeatedly, until the
 * filter admits the window at the new position or `limit` is reached; returns that position (sum in `rolled`).
 * A free function with everything in arguments, so the JIT keeps it all in registers.
 */
function rollRabinKarp(buf: Uint8Array, pos: number, limit: number, L: number, weak: number, pow: number, filter: Int32Array, filterShift: number): number {
  for (;;) {
    weak = (Math.imul(weak, RABINKARP_MULT) + buf[pos + L]! - Math.imul(pow, buf[pos]! + RABINKARP_ADJ)) | 0;
    pos++;
    if (pos >= limit) break;
    const f = Math.imul(weak, GOLDEN) >>> filterShift;
    if ((filter[f >>> 5]! >>> (f & 31)) & 1) break;
  }
  rolled = weak >>> 0;
  return pos;
}

function rollRollsum(buf: Uint8Array, pos: number, limit: number, L: number, weak: number, filter: Int32Array, filterShift: number): number {
  let s1 = weak & 0xffff;
  let s2 = weak >>> 16;
  for (;;) {
    const out = buf[pos]!;
    s1 = (s1 + buf[pos + L]! - out) & 0xffff;
    s2 = (s2 + s1 - Math.imul(L, out + ROLLSUM_CHAR_OFFSET)) & 0xffff;
    pos++;
    if (pos >= limit) break;
    const f = Math.imul((s2 << 16) | s1, GOLDEN) >>> filterShift;
    if ((filter[f >>> 5]! >>> (f & 31)) & 1) break;
  }
  rolled = ((s2 << 16) | s1) >>> 0;
  return pos;
}

/*
 * The greedy matcher (rdiff 2.3's; FORMAT.md section 6), streaming:
 *
 *   pos = 0; weak = none
 *   while pos + L < size:                          # a whole block and one more byte are available
 *     if weak == none: weak = weak_sum(new[pos .. pos+L))            # from scratch, after a match
 *     if table has weak and block k has strong == strong(new[pos .. pos+L)):
 *       flush literal; COPY k*L, L (extends the pending COPY if it ends at k*L); pos += L; weak = none
 *     else:
 *       flush pending COPY; literal += new[pos] (cut at 32768)
 *       weak = roll(weak, out = new[pos], in = new[pos+L]); pos += 1
 *   at end of input (tail): window = new[pos .. size), shrinking from the front on each miss, same test;
 *   flush; END
 *
 * Matches point at the lowest block with equal sums. Speed: after a match the next block's weak sum is computed
 * in one go (block by block through unchanged data); after a miss a tight loop rolls byte by byte until a bit
 * filter over the signature's weak sums admits a window, and only then probes the table. Memory: the window
 * (L + 1 bytes) plus at most one pending literal (<= 32768 bytes), in one buffer compacted as it fills.
 */

/**
 * Incremental delta generator: push the new file in chunks of any size, get delta bytes back. With the same
 * signature it writes byte for byte what `rdiff delta` 2.3.2 writes (any delta that patches correctly is valid,
 * but this one is also identical), except against a signature with no blocks and block_len > 1 MiB.
 */
export class RdiffDeltaGenerator {
  private readonly table: RdiffMatchTable;
  private readonly sig: RdiffSignature;
  private readonly enc = new RdiffDeltaEncoder();
  private readonly maxLiteral: number;
  private buf: Uint8Array;
  /** buf[0 .. dataEnd) holds new-file bytes not yet fully processed, starting with the pending literal. */
  private dataEnd = 0;
  /** Start of the current window in buf. */
  private pos = 0;
  /** Start of the pending literal in buf (== pos when there is none). */
  private litStart = 0;
  private haveWeak = false;
  private weak = 0;
  private copyPos = 0;
  private copyLen = 0;
  private ended = false;
  /** MULT^block_len, for rolling RabinKarp. */
  private readonly rkPow: number;
  /** The SIMD kernels, for signatures with BLAKE2b (see scan()). */
  private readonly kernels: RdiffKernels | undefined;
  /** scan() waits for two whole windows after a match (the buffer holds them without growing). */
  private readonly pairAhead: boolean;
  /** New-file offset of buf[0]. */
  private bufBase = 0;
  /** The window after the last one summed in a pair: its new-file offset (-1 = none), weak sum and strong sum. */
  private aheadAt = -1;
  private aheadWeak = 0;
  private aheadHasStrong = false;
  private readonly aheadStrong = new Uint8Array(32);
  private readonly pairStrong = new Uint8Array(32);
  /** New-file bytes pushed so far. */
  inputLength = 0;

  constructor(
    private readonly hashes: RdiffHashes,
    signature: RdiffSignature | RdiffMatchTable,
    options: RdiffDeltaOptions = {},
  ) {
    this.table = signature instanceof RdiffMatchTable ? signature : new RdiffMatchTable(signature);
    this.sig = this.table.signature;
    this.maxLiteral = options.maxLiteral ?? RDIFF_MAX_LITERAL;
    if (!Number.isSafeInteger(this.maxLiteral) || this.maxLiteral < 1) throw new RangeError(`maxLiteral ${this.maxLiteral} must be a positive integer`);
    const L = this.sig.blockLen;
    this.rkPow = rabinKarpPow(L);
    const want = this.sig.blockCount === 0 ? Math.min(L, MAX_EMPTY_SIGNATURE_LITERAL) : L + 1 + this.maxLiteral;
    this.buf = new Uint8Array(Math.max(256 * 1024, Math.min(2 * want, 8 << 20)));
    this.kernels = this.sig.strong === 'blake2' && this.sig.blockCount > 0 && 2 * L <= RdiffKernels.MAX_INPUT ? rdiffKernels() : undefined;
    this.pairAhead = this.kernels !== undefined && 2 * (2 * L + 1) <= this.buf.length;
  }

  /** Bytes of new-file buffer currently allocated (bounded by about 2 * (block_len + maxLiteral), min 256 KiB). */
  get bufferCapacity(): number {
    return this.buf.length;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.ended) throw new Error('RdiffDeltaGenerator.push() after end()');
    this.inputLength += chunk.length;
    let off = 0;
    while (off < chunk.length) {
      if (this.dataEnd === this.buf.length) this.makeRoom();
      const n = Math.min(this.buf.length - this.dataEnd, chunk.length - off);
      this.buf.set(off === 0 && n === chunk.length ? chunk : chunk.subarray(off, off + n), this.dataEnd);
      this.dataEnd += n;
      off += n;
      if (this.sig.blockCount === 0) this.literalsOnly(false);
      else this.scan(false);
    }
    return this.enc.take();
  }

  end(): Uint8Array[] {
    if (this.ended) return [];
    this.ended = true;
    if (this.sig.blockCount === 0) this.literalsOnly(true);
    else {
      this.scan(true);
      this.tail();
    }
    this.flushCopy();
    if (this.pos > this.litStart) this.emitLiteral(this.litStart, this.pos);
    this.enc.end();
    return this.enc.take();
  }

  /** Drops processed bytes from the front of the buffer, growing it if that frees less than half. */
  private makeRoom(): void {
    const keep = this.litStart;
    if (keep > 0) {
      this.buf.copyWithin(0, keep, this.dataEnd);
      this.bufBase += keep;
      this.dataEnd -= keep;
      this.pos -= keep;
      this.litStart = 0;
    }
    if (this.dataEnd > this.buf.length / 2) {
      const grown = new Uint8Array(this.buf.length * 2);
      grown.set(this.buf.subarray(0, this.dataEnd));
      this.buf = grown;
    }
  }

  /** Signature without blocks: everything is literal, cut like rdiff cuts it (at block_len). */
  private literalsOnly(final: boolean): void {
    const piece = Math.min(this.sig.blockLen, MAX_EMPTY_SIGNATURE_LITERAL);
    while (this.dataEnd - this.litStart >= piece) {
      this.emitLiteral(this.litStart, this.litStart + piece);
      this.litStart += piece;
    }
    this.pos = final ? this.dataEnd : this.litStart;
  }

  /**
   * Phase 1: windows of exactly block_len with at least one more byte after them. With the SIMD kernels, a window
   * summed from scratch (at the start, after a match) is summed with the next one, the window after it if it
   * matches: both weak sums, and if both are in the table both strong sums in one BLAKE2b pass; the second is kept
   * for when the scan gets there. Before `final` it then waits for two windows' bytes (pairAhead).
   */
  private scan(final: boolean): void {
    const L = this.sig.blockLen;
    const buf = this.buf;
    const end = this.dataEnd;
    const rabinKarp = this.sig.weak === 'rabinkarp';
    const { slotWeak, slotHead, mask, shift, filter, filterShift } = this.table;
    const maxLiteral = this.maxLiteral;
    const kernels = this.kernels;
    let pos = this.pos;
    let weak = this.weak;
    let haveWeak = this.haveWeak;
    while (pos + L < end) {
      /** The window's strong sum, when it was summed ahead. */
      let strong: Uint8Array | undefined;
      if (!haveWeak) {
        const at = this.bufBase + pos;
        if (at === this.aheadAt) {
          weak = this.aheadWeak;
          if (this.aheadHasStrong) strong = this.aheadStrong;
        } else if (kernels !== undefined && pos + 2 * L <= end) {
          const input = kernels.input(2 * L);
          input.set(buf.subarray(pos, pos + 2 * L));
          weak = rabinKarp ? kernels.weak(RABINKARP_SEED, 0, L) : rollsumUpdate(0, input, 0, L);
          this.aheadWeak = rabinKarp ? kernels.weak(RABINKARP_SEED, L, L) : rollsumUpdate(0, input, L, 2 * L);
          this.aheadAt = at + L;
          this.aheadHasStrong = this.table.firstWithWeak(weak) >= 0 && this.table.firstWithWeak(this.aheadWeak) >= 0;
          if (this.aheadHasStrong) {
            const sums = kernels.strong2(0, L, L);
            this.pairStrong.set(sums.subarray(0, 32));
            this.aheadStrong.set(sums.subarray(32, 64));
            strong = this.pairStrong;
          }
        } else if (this.pairAhead && !final) {
          break;
        } else {
          weak = rabinKarp ? rabinKarpUpdate(RABINKARP_SEED, buf, pos, pos + L) : rollsumUpdate(0, buf, pos, pos + L);
        }
        haveWeak = true;
      }
      const hash = Math.imul(weak, GOLDEN);
      const f = hash >>> filterShift;
      if ((filter[f >>> 5]! >>> (f & 31)) & 1) {
        let s = hash >>> shift;
        let head = slotHead[s]!;
        while (head !== 0 && slotWeak[s] !== weak) {
          s = (s + 1) & mask;
          head = slotHead[s]!;
        }
        if (head !== 0) {
          const block = this.strongMatch(head - 1, pos, pos + L, strong);
          if (block >= 0) {
            if (pos > this.litStart) this.emitLiteral(this.litStart, pos);
            this.addCopy(block * L, L);
            pos += L;
            this.litStart = pos;
            haveWeak = false;
            continue;
          }
        }
      }
      // Miss: new[pos] becomes literal; slide the window one byte, then keep sliding in the tight loop below
      // while the filter rules every window out (no literal flush is due before `limit`).
      if (this.copyLen > 0) this.flushCopy();
      else if (pos - this.litStart >= maxLiteral) {
        this.emitLiteral(this.litStart, this.litStart + maxLiteral);
        this.litStart += maxLiteral;
      }
      const limit = Math.min(end - L, this.litStart + maxLiteral);
      pos = rabinKarp
        ? rollRabinKarp(buf, pos, limit, L, weak, this.rkPow, filter, filterShift)
        : rollRollsum(buf, pos, limit, L, weak, filter, filterShift);
      weak = rolled;
    }
    this.pos = pos;
    this.weak = weak;
    this.haveWeak = haveWeak;
  }

  /** Phase 2, at the end of input: the window is new[pos .. end), shrinking from the front on each miss. */
  private tail(): void {
    const buf = this.buf;
    const end = this.dataEnd;
    const rabinKarp = this.sig.weak === 'rabinkarp';
    let pos = this.pos;
    let count = end - pos;
    let weak = this.weak;
    let pow: number;
    if (this.haveWeak) {
      // The rolled window is new[pos .. pos + L) and pos + L == end.
      pow = this.rkPow;
    } else {
      weak = rabinKarp ? rabinKarpUpdate(RABINKARP_SEED, buf, pos, end) : rollsumUpdate(0, buf, pos, end);
      pow = rabinKarpPow(count);
    }
    while (pos < end) {
      const first = this.table.firstWithWeak(weak);
      if (first >= 0) {
        const block = this.strongMatch(first, pos, end, undefined);
        if (block >= 0) {
          if (pos > this.litStart) this.emitLiteral(this.litStart, pos);
          this.addCopy(block * this.sig.blockLen, count);
          pos = end;
          this.litStart = pos;
          break;
        }
      }
      if (this.copyLen > 0) this.flushCopy();
      else if (pos - this.litStart >= this.maxLiteral) {
        this.emitLiteral(this.litStart, this.litStart + this.maxLiteral);
        this.litStart += this.maxLiteral;
      }
      const out = buf[pos]!;
      if (rabinKarp) {
        pow = Math.imul(pow, RABINKARP_INV_MULT) >>> 0;
        weak = (weak - Math.imul(pow, out + RABINKARP_ADJ)) >>> 0;
      } else {
        const s1 = ((weak & 0xffff) - out - ROLLSUM_CHAR_OFFSET) & 0xffff;
        const s2 = ((weak >>> 16) - Math.imul(count, out + ROLLSUM_CHAR_OFFSET)) & 0xffff;
        weak = ((s2 << 16) | s1) >>> 0;
      }
      count--;
      pos++;
    }
    this.pos = pos;
    this.haveWeak = false;
  }

  /**
   * The lowest block in the chain starting at `first` whose strong sum matches buf[start..end) (whose full strong
   * sum is `known`, if given), or -1.
   */
  private strongMatch(first: number, start: number, end: number, known: Uint8Array | undefined): number {
    const { strongSums, strongLen, strong } = this.sig;
    const sum = known ?? this.hashes.strong(strong, this.buf, start, end);
    const next = this.table.next;
    for (let b = first; b >= 0; b = next[b]! - 1) {
      let i = 0;
      const base = b * strongLen;
      while (i < strongLen && strongSums[base + i] === sum[i]) i++;
      if (i === strongLen) return b;
    }
    return -1;
  }

  private addCopy(position: number, length: number): void {
    if (this.copyLen > 0 && this.copyPos + this.copyLen === position) {
      this.copyLen += length;
      return;
    }
    this.flushCopy();
    this.copyPos = position;
    this.copyLen = length;
  }

  private flushCopy(): void {
    if (this.copyLen === 0) return;
    this.enc.copy(this.copyPos, this.copyLen);
    this.copyLen = 0;
  }

  private emitLiteral(start: number, end: number): void {
    this.enc.literalHeader(end - start);
    this.enc.bytes(this.buf, start, end);
  }
}

/** Delta of a whole in-memory new file against a parsed signature. */
export function rdiffDelta(hashes: RdiffHashes, signature: RdiffSignature | RdiffMatchTable, newFile: Uint8Array, options?: RdiffDeltaOptions): Uint8Array {
  const gen = new RdiffDeltaGenerator(hashes, signature, options);
  return concatBytes([...gen.push(newFile), ...gen.end()]);
}
