// Applies an rdiff (librsync 2.3) delta to a basis, incrementally: delta bytes in, new-file bytes out, reading the basis through a caller-supplied positioned reader.

import { ErrorCodes } from './errors.js';
import { concatBytes, RdiffError } from './rdiff-checksums.js';
import { RdiffDeltaDecoder, type RdiffDeltaEvent } from './rdiff-delta.js';

/** Random access to the basis (old file). `read` must return exactly `length` bytes (a view is fine). */
export interface RdiffBasis {
  readonly size: number;
  read(position: number, length: number): Uint8Array;
}

/** Like RdiffBasis, for readers that wait (e.g. FileHandle.read). */
export interface RdiffAsyncBasis {
  readonly size: number;
  read(position: number, length: number): Uint8Array | Promise<Uint8Array>;
}

/** A whole basis held in memory: reads are views, no copies. */
export function rdiffBufferBasis(basis: Uint8Array): RdiffBasis {
  return { size: basis.length, read: (position, length) => basis.subarray(position, position + length) };
}

export interface RdiffPatchOptions {
  /** Names the delta in error messages. */
  subject?: string;
  /** Largest single basis read; a longer COPY is read in pieces (default 1 MiB). */
  maxReadLength?: number;
  /**
   * Most output bytes the delta may produce (default: no limit). A caller that knows the result's size sets it, so
   * that a damaged delta is an error at once instead of gigabytes of output.
   */
  maxOutputLength?: number;
}

/*
 * Patching, as rdiff does it (FORMAT.md section 7):
 *
 *   expect magic 72 73 02 36
 *   loop: read command
 *     END              -> done (anything after END is ignored)
 *     LITERAL n, data  -> output data (n >= 1)
 *     COPY pos, n      -> require n >= 1 and pos + n <= basis size; output basis[pos .. pos+n)
 *   input ends before END -> error
 *
 * Copies read only the basis, never the output, so they may repeat and overlap in any order. The output is
 * written strictly in order, in pieces: literal data as views of the pushed delta chunk (use each piece before
 * pushing the next chunk if chunks are reused), copies as the basis reader returns them, at most maxReadLength
 * bytes per read.
 */
abstract class PatcherBase {
  protected readonly decoder: RdiffDeltaDecoder;
  protected readonly subject: string | undefined;
  protected readonly maxRead: number;
  private readonly maxOutput: number;
  /** Output bytes produced so far. */
  outputLength = 0;

  constructor(
    protected readonly basisSize: number,
    options: RdiffPatchOptions,
  ) {
    this.subject = options.subject;
    this.decoder = new RdiffDeltaDecoder(options.subject);
    this.maxRead = options.maxReadLength ?? 1 << 20;
    this.maxOutput = options.maxOutputLength ?? Infinity;
    if (!Number.isSafeInteger(this.maxRead) || this.maxRead < 1) throw new RangeError(`maxReadLength ${this.maxRead} must be a positive integer`);
    if (!Number.isSafeInteger(basisSize) || basisSize < 0) throw new RangeError(`basis size ${basisSize} must be a non-negative integer`);
  }

  /** True once END has been read (further delta bytes are ignored). */
  get finished(): boolean {
    return this.decoder.finished;
  }

  /** Bytes after END (ignored, as rdiff ignores them). */
  get trailingBytes(): number {
    return this.decoder.trailingBytes;
  }

  /** Call when the delta has no more bytes; throws (rdiffResult 103) unless END was reached. */
  end(): void {
    this.decoder.end();
  }

  protected error(message: string, offset: number): RdiffError {
    const where = this.subject ? `rdiff delta ${this.subject}` : 'rdiff delta';
    return new RdiffError(ErrorCodes.RDIFF_DELTA, 103, `${where}: ${message}`, { offset, subject: this.subject });
  }

  /** rdiff fails a copy that reaches past the basis end (even partly) with "unexpected end of input" (103). */
  protected checkCopy(ev: Extract<RdiffDeltaEvent, { type: 'copy' }>): void {
    if (ev.position + ev.length > this.basisSize) {
      throw this.error(
        `COPY at offset ${ev.offset} reads basis bytes ${ev.position}..${ev.position + ev.length - 1} (${ev.length} bytes) but the basis has only ${this.basisSize} bytes`,
        ev.offset,
      );
    }
  }

  /** Output of `length` more bytes, from the command at `offset`, stays within maxOutputLength. */
  protected checkOutput(length: number, offset: number): void {
    if (this.outputLength + length > this.maxOutput) {
      throw this.error(`the command at offset ${offset} makes the output longer than the ${this.maxOutput} bytes expected`, offset);
    }
  }

  protected checkRead(got: Uint8Array, position: number, length: number, offset: number): void {
    if (got.length !== length) {
      throw this.error(`basis read of ${length} bytes at ${position} (for the COPY at offset ${offset}) returned ${got.length} bytes`, offset);
    }
  }
}

/** Incremental patcher with a synchronous basis reader. */
export class RdiffPatcher extends PatcherBase {
  constructor(
    private readonly basis: RdiffBasis,
    options: RdiffPatchOptions = {},
  ) {
    super(basis.size, options);
  }

  /** Feeds delta bytes; `emit` receives the output bytes they produce, in order. */
  push(chunk: Uint8Array, emit: (bytes: Uint8Array) => void): void {
    for (const piece of this.pieces(chunk)) emit(piece);
  }

  /** Feeds delta bytes; yields the output bytes they produce, in order (basis reads happen as you iterate). */
  *pieces(chunk: Uint8Array): Generator<Uint8Array, void, undefined> {
    for (const ev of this.decoder.push(chunk)) {
      if (ev.type === 'literal') {
        this.checkOutput(ev.data.length, ev.offset);
        this.outputLength += ev.data.length;
        yield ev.data;
      } else if (ev.type === 'copy') {
        this.checkCopy(ev);
        this.checkOutput(ev.length, ev.offset);
        for (let done = 0; done < ev.length; ) {
          const n = Math.min(this.maxRead, ev.length - done);
          const got = this.basis.read(ev.position + done, n);
          this.checkRead(got, ev.position + done, n, ev.offset);
          done += n;
          this.outputLength += n;
          yield got;
        }
      }
    }
  }
}

/** Incremental patcher whose basis reads and output writes may be asynchronous (awaited in order). */
export class RdiffAsyncPatcher extends PatcherBase {
  constructor(
    private readonly basis: RdiffAsyncBasis,
    options: RdiffPatchOptions = {},
  ) {
    super(basis.size, options);
  }

  /** Feeds delta bytes; `emit` receives the output bytes they produce, in order, and may return a promise (backpressure). */
  async push(chunk: Uint8Array, emit: (bytes: Uint8Array) => void | Promise<void>): Promise<void> {
    for await (const piece of this.pieces(chunk)) await emit(piece);
  }

  /** Feeds delta bytes; yields the output bytes they produce, in order (basis reads happen as you iterate). */
  async *pieces(chunk: Uint8Array): AsyncGenerator<Uint8Array, void, undefined> {
    for (const ev of this.decoder.push(chunk)) {
      if (ev.type === 'literal') {
        this.checkOutput(ev.data.length, ev.offset);
        this.outputLength += ev.data.length;
        yield ev.data;
      } else if (ev.type === 'copy') {
        this.checkCopy(ev);
        this.checkOutput(ev.length, ev.offset);
        for (let done = 0; done < ev.length; ) {
          const n = Math.min(this.maxRead, ev.length - done);
          const got = await this.basis.read(ev.position + done, n);
          this.checkRead(got, ev.position + done, n, ev.offset);
          done += n;
          this.outputLength += n;
          yield got;
        }
      }
    }
  }
}

/**
 * The new file as a stream of pieces, from a delta stream and a basis (e.g. for stream.pipeline via
 * Readable.from). Memory stays bounded: a long COPY is read and yielded maxReadLength bytes at a time.
 * Literal pieces are views of the delta chunks.
 */
export async function* rdiffPatchStream(
  basis: RdiffAsyncBasis,
  delta: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: RdiffPatchOptions = {},
): AsyncGenerator<Uint8Array, void, undefined> {
  const patcher = new RdiffAsyncPatcher(basis, options);
  for await (const chunk of delta) {
    yield* patcher.pieces(chunk);
    if (patcher.finished) break;
  }
  patcher.end();
}

/** Applies a whole in-memory delta to a whole in-memory basis. */
export function applyRdiffPatch(basis: Uint8Array, delta: Uint8Array, options: RdiffPatchOptions = {}): Uint8Array {
  const patcher = new RdiffPatcher(rdiffBufferBasis(basis), { maxReadLength: Number.MAX_SAFE_INTEGER, ...options });
  const parts: Uint8Array[] = [];
  patcher.push(delta, (bytes) => void parts.push(bytes));
  patcher.end();
  return concatBytes(parts);
}
