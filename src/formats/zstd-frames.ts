// Splits a zstd stream (RFC 8878) into whole frames without decompressing, so restore can decompress packs frame by frame in bounded memory.

import { BlanketError, ErrorCodes } from './errors.js';

const ZSTD_MAGIC = 0xfd2fb528;
/** Skippable frames use 0x184D2A50..0x184D2A5F. */
const SKIPPABLE_MAGIC = 0x184d2a50;
const MAX_BLOCK_SIZE = 128 * 1024;
const BLOCK_RLE = 1;
const BLOCK_COMPRESSED = 2;
const BLOCK_RESERVED = 3;
const DICTIONARY_ID_BYTES = [0, 1, 2, 4];
/** Indexed by the FCS flag; flag 0 means 1 byte in single-segment frames. */
const CONTENT_SIZE_BYTES = [0, 2, 4, 8];
/** Window descriptor + dictionary id + frame content size. */
const MAX_HEADER_REST = 1 + 4 + 8;

type Phase =
  | 'magic'
  | 'skippableSize'
  | 'skippableBody'
  | 'descriptor'
  | 'header'
  | 'blockHeader'
  | 'blockBody'
  | 'checksum';

/** Phases whose bytes must be parsed; the bytes of the others are only counted. */
const PARSED_PHASES: ReadonlySet<Phase> = new Set(['magic', 'skippableSize', 'descriptor', 'header', 'blockHeader']);

export interface FrameLimits {
  /** Largest frame accepted, compressed or decompressed (a memory guard against corrupt or hostile input). */
  maxFrameSize?: number;
}

/**
 * Incremental frame splitter. Returned frames may be views into pushed chunks (no copy when a frame lies
 * within one chunk), so callers must not modify chunks after pushing them.
 */
export class ZstdFrameSplitter {
  private readonly maxFrameSize: number;
  private phase: Phase = 'magic';
  /** Bytes the current phase still needs. */
  private need = 4;
  private readonly field = Buffer.alloc(MAX_HEADER_REST);
  private fieldLength = 0;
  /** Stream offsets: of the field being read, of the frame being read, of the next byte to be pushed. */
  private fieldOffset = 0;
  private frameOffset = 0;
  private offset = 0;
  /** Bytes of the current frame held from earlier chunks. */
  private parts: Buffer[] = [];
  /** How many of those bytes are views of pushed chunks (not copies). */
  private held = 0;
  private contentSizeBytes = 0;
  private hasChecksum = false;
  private lastBlock = false;
  /** Upper bound of the current frame's decompressed size. */
  private contentBound = 0;
  private failure: BlanketError | undefined;

  constructor(
    private readonly objectName?: string,
    limits: FrameLimits = {},
  ) {
    this.maxFrameSize = limits.maxFrameSize ?? Number.POSITIVE_INFINITY;
  }

  /** Returns the frames completed by `chunk`, in order; skippable frames are dropped. */
  push(chunk: Buffer): Buffer[] {
    return this.pushParts(chunk).map((parts) => (parts.length === 1 ? parts[0]! : Buffer.concat(parts)));
  }

  /**
   * Like push(), but each frame comes as views of the chunks it spans, in order, never joined: whoever copies
   * the frame somewhere anyway (into shared memory, say) need not allocate it first.
   */
  pushParts(chunk: Buffer): Buffer[][] {
    if (this.failure) throw this.failure;
    const frames: Buffer[][] = [];
    let frameStart = 0;
    let pos = 0;
    try {
      while (pos < chunk.length) {
        if (this.phase === 'magic' && this.fieldLength === 0) frameStart = pos;
        const take = Math.min(this.need, chunk.length - pos);
        if (PARSED_PHASES.has(this.phase)) chunk.copy(this.field, this.fieldLength, pos, pos + take);
        this.fieldLength += take;
        this.need -= take;
        this.offset += take;
        pos += take;
        if (this.need === 0 && this.advance()) frames.push(this.takeFrame(chunk.subarray(frameStart, pos)));
      }
      if (frameStart < chunk.length && this.inZstdFrame()) {
        this.parts.push(chunk.subarray(frameStart));
        this.held += chunk.length - frameStart;
      }
    } catch (error) {
      if (error instanceof BlanketError) this.failure = error;
      throw error;
    }
    return frames;
  }

  /** Bytes of pushed chunks the splitter still refers to: the frame under way, not yet returned. */
  get heldBytes(): number {
    return this.held;
  }

  /** Copies the bytes of the frame under way, so that no pushed chunk is referred to any more (heldBytes 0). */
  copyHeld(): void {
    if (this.held === 0) return;
    this.parts = [Buffer.concat(this.parts)];
    this.held = 0;
  }

  /** Declares the end of the stream; throws if it ends inside a frame. An empty stream is valid. */
  end(): void {
    if (this.failure) throw this.failure;
    if (this.phase !== 'magic' || this.fieldLength > 0) {
      this.failure = this.corrupt(this.offset, `stream is truncated inside the frame starting at byte ${this.frameOffset}`);
      throw this.failure;
    }
  }

  /** True while the bytes being read belong to a frame that will be returned (or may be, for a partial magic). */
  private inZstdFrame(): boolean {
    if (this.phase === 'magic') return this.fieldLength > 0;
    return this.phase !== 'skippableSize' && this.phase !== 'skippableBody';
  }

  private enter(phase: Phase, need: number): void {
    this.phase = phase;
    this.need = need;
    this.fieldLength = 0;
    this.fieldOffset = this.offset;
    if (phase === 'magic') this.frameOffset = this.offset;
  }

  /** Interprets the field just completed and moves on; returns true when that completed a zstd frame. */
  private advance(): boolean {
    const field = this.field;
    switch (this.phase) {
      case 'magic': {
        const magic = field.readUInt32LE(0);
        if (magic === ZSTD_MAGIC) {
          this.enter('descriptor', 1);
        } else if ((magic & ~0xf) >>> 0 === SKIPPABLE_MAGIC) {
          this.parts = [];
          this.held = 0;
          this.enter('skippableSize', 4);
        } else {
          throw this.corrupt(this.fieldOffset, `bad frame magic 0x${magic.toString(16).padStart(8, '0')}`);
        }
        return false;
      }
      case 'skippableSize':
        this.enter('skippableBody', field.readUInt32LE(0));
        if (this.need === 0) this.enter('magic', 4);
        return false;
      case 'skippableBody':
        this.enter('magic', 4);
        return false;
      case 'descriptor': {
        const descriptor = field[0]!;
        if (descriptor & 0x08) throw this.corrupt(this.fieldOffset, 'reserved bit set in frame header descriptor');
        const singleSegment = (descriptor & 0x20) !== 0;
        const contentSizeFlag = descriptor >> 6;
        this.contentSizeBytes = contentSizeFlag === 0 && singleSegment ? 1 : CONTENT_SIZE_BYTES[contentSizeFlag]!;
        this.hasChecksum = (descriptor & 0x04) !== 0;
        this.contentBound = 0;
        // Never empty: single-segment frames always carry a content size, the others a window descriptor.
        this.enter('header', (singleSegment ? 0 : 1) + DICTIONARY_ID_BYTES[descriptor & 3]! + this.contentSizeBytes);
        return false;
      }
      case 'header': {
        if (this.contentSizeBytes > 0) {
          const at = this.fieldLength - this.contentSizeBytes;
          const contentSize =
            this.contentSizeBytes === 8
              ? Number(field.readBigUInt64LE(at))
              : field.readUIntLE(at, this.contentSizeBytes) + (this.contentSizeBytes === 2 ? 256 : 0);
          if (contentSize > this.maxFrameSize) {
            throw this.corrupt(this.fieldOffset, `frame content size ${contentSize} exceeds the limit of ${this.maxFrameSize} bytes`);
          }
        }
        this.enter('blockHeader', 3);
        return false;
      }
      case 'blockHeader': {
        const header = field.readUIntLE(0, 3);
        const type = (header >> 1) & 3;
        const size = header >>> 3;
        if (type === BLOCK_RESERVED) throw this.corrupt(this.fieldOffset, 'reserved block type');
        if (size > MAX_BLOCK_SIZE) throw this.corrupt(this.fieldOffset, `block size ${size} exceeds the 128 KiB maximum`);
        this.lastBlock = (header & 1) === 1;
        this.contentBound += type === BLOCK_COMPRESSED ? MAX_BLOCK_SIZE : size;
        const bodySize = type === BLOCK_RLE ? 1 : size;
        if (this.offset - this.frameOffset + bodySize > this.maxFrameSize || this.contentBound > this.maxFrameSize) {
          throw this.corrupt(this.frameOffset, `frame exceeds the limit of ${this.maxFrameSize} bytes`);
        }
        this.enter('blockBody', bodySize);
        return this.need === 0 ? this.advance() : false;
      }
      case 'blockBody':
        if (!this.lastBlock) this.enter('blockHeader', 3);
        else if (this.hasChecksum) this.enter('checksum', 4);
        else return this.frameDone();
        return false;
      case 'checksum':
        return this.frameDone();
    }
  }

  private frameDone(): true {
    this.enter('magic', 4);
    return true;
  }

  private takeFrame(tail: Buffer): Buffer[] {
    if (this.parts.length === 0) return [tail];
    const frame = [...this.parts, tail];
    this.parts = [];
    this.held = 0;
    return frame;
  }

  private corrupt(offset: number, detail: string): BlanketError {
    const where = this.objectName === undefined ? '' : ` in ${this.objectName}`;
    return new BlanketError(ErrorCodes.CORRUPT_OBJECT, `Corrupt zstd data${where} at byte ${offset}: ${detail}`, {
      subject: this.objectName,
    });
  }
}

/** Splits a complete in-memory zstd stream into its frames. */
export function* splitFrames(buf: Buffer, objectName?: string): Generator<Buffer, void, undefined> {
  const splitter = new ZstdFrameSplitter(objectName);
  yield* splitter.push(buf);
  splitter.end();
}

/** The most bytes one zstd frame of `size` input bytes can take (zstd's ZSTD_COMPRESSBOUND). */
export function zstdCompressBound(size: number): number {
  return size + (size >>> 8) + (size < 128 << 10 ? ((128 << 10) - size) >>> 11 : 0);
}

/** The most bytes `size` input bytes take as independent frames of `blockSize` input bytes each. */
export function zstdFramesBound(size: number, blockSize: number): number {
  const whole = Math.floor(size / blockSize);
  const rest = size - whole * blockSize;
  return whole * zstdCompressBound(blockSize) + (rest > 0 ? zstdCompressBound(rest) : 0);
}

/** A frame that does not fit where it is to be written (a bound computed too small: a bug, not bad input). */
export class NoRoomForFrameError extends RangeError {
  constructor(frameBytes: number, offset: number, targetBytes: number) {
    super(`no room for a zstd frame of ${frameBytes} bytes at ${offset} of ${targetBytes}`);
    this.name = 'NoRoomForFrameError';
  }
}

/** Frame header of a raw frame: magic, descriptor (single segment, 4-byte content size), content size. */
const RAW_FRAME_HEADER_BYTES = 4 + 1 + 4;
const BLOCK_HEADER_BYTES = 3;

/** The size of rawZstdFrame(data) for `size` bytes of data. */
export function rawZstdFrameSize(size: number): number {
  return RAW_FRAME_HEADER_BYTES + Math.max(1, Math.ceil(size / MAX_BLOCK_SIZE)) * BLOCK_HEADER_BYTES + size;
}

/**
 * `data` as one zstd frame of raw (stored) blocks: what any zstd decoder reads back as `data`, made without
 * compressing, for content that would not shrink. At most 4 GiB - 1.
 */
export function rawZstdFrame(data: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(rawZstdFrameSize(data.length));
  writeRawZstdFrame(data, frame, 0);
  return frame;
}

/** Writes rawZstdFrame(data) into `target` at `offset` (which must have room); returns the bytes written. */
export function writeRawZstdFrame(data: Uint8Array, target: Uint8Array, offset: number): number {
  if (data.length > 0xffffffff) throw new RangeError(`a raw zstd frame holds at most 4 GiB - 1, got ${data.length} bytes`);
  const size = rawZstdFrameSize(data.length);
  if (offset + size > target.length) throw new NoRoomForFrameError(size, offset, target.length);
  const view = new DataView(target.buffer, target.byteOffset + offset, size);
  view.setUint32(0, ZSTD_MAGIC, true);
  view.setUint8(4, (2 << 6) | 0x20); // content size in 4 bytes, single segment (the window is the whole content)
  view.setUint32(5, data.length, true);
  let at = RAW_FRAME_HEADER_BYTES;
  let start = 0;
  do {
    const length = Math.min(MAX_BLOCK_SIZE, data.length - start);
    const header = (length << 3) | (start + length >= data.length ? 1 : 0); // block type 0: raw; bit 0: last
    view.setUint16(at, header & 0xffff, true);
    view.setUint8(at + 2, header >>> 16);
    target.set(data.subarray(start, start + length), offset + at + BLOCK_HEADER_BYTES);
    at += BLOCK_HEADER_BYTES + length;
    start += length;
  } while (start < data.length);
  return size;
}

/**
 * The content of one whole zstd frame whose blocks are all raw or RLE (what Blanket writes for content that does
 * not compress, and what zstd itself emits for such blocks), as views into `frame` (RLE blocks as new buffers);
 * null when it needs a real decoder: a compressed block, a checksum to verify, a dictionary, or anything that does
 * not add up (which the decoder then reports).
 */
export function storedFrameContent(frame: Buffer): Buffer[] | null {
  if (frame.length < 6 || frame.readUInt32LE(0) !== ZSTD_MAGIC) return null;
  const descriptor = frame[4]!;
  if ((descriptor & 0x0f) !== 0) return null; // a checksum, a dictionary id or the reserved bit
  const singleSegment = (descriptor & 0x20) !== 0;
  const contentSizeFlag = descriptor >> 6;
  const contentSizeBytes = contentSizeFlag === 0 && singleSegment ? 1 : CONTENT_SIZE_BYTES[contentSizeFlag]!;
  let at = 5 + (singleSegment ? 0 : 1);
  if (at + contentSizeBytes > frame.length) return null;
  let declared: number | null = null;
  if (contentSizeBytes === 8) declared = Number(frame.readBigUInt64LE(at));
  else if (contentSizeBytes > 0) declared = frame.readUIntLE(at, contentSizeBytes) + (contentSizeBytes === 2 ? 256 : 0);
  at += contentSizeBytes;
  const parts: Buffer[] = [];
  let total = 0;
  for (;;) {
    if (at + BLOCK_HEADER_BYTES > frame.length) return null;
    const header = frame.readUIntLE(at, BLOCK_HEADER_BYTES);
    at += BLOCK_HEADER_BYTES;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 0) {
      if (at + size > frame.length) return null;
      if (size > 0) parts.push(frame.subarray(at, at + size));
      at += size;
    } else if (type === BLOCK_RLE) {
      if (at + 1 > frame.length) return null;
      if (size > 0) parts.push(Buffer.alloc(size, frame[at]!));
      at += 1;
    } else {
      return null;
    }
    total += size;
    if ((header & 1) === 1) break;
  }
  if (at !== frame.length || (declared !== null && declared !== total)) return null;
  return parts;
}
