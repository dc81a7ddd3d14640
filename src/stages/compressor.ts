// zstd frames for pack data: independent frames of fixed-size blocks, and the ordered parallel Transform that
// (de)compresses several frames at once while keeping their order.

import { Transform, type TransformCallback } from 'node:stream';
import { NoRoomForFrameError, rawZstdFrame, writeRawZstdFrame } from '../formats/zstd-frames.js';
import { zstdCompress } from './zstd.js';

export type CountingTransform = Transform & { readonly bytesIn: number; readonly bytesOut: number };

export const DEFAULT_BLOCK_SIZE = 1024 * 1024;

/**
 * A Transform whose jobs run concurrently (zstd works in the libuv pool) while their outputs leave in submission
 * order. For backpressure no job starts, and no write is acknowledged, while `concurrency` jobs are unfinished
 * or the reader has not taken the output already pushed.
 */
export abstract class OrderedParallelTransform extends Transform {
  #bytesIn = 0;
  #bytesOut = 0;
  private readonly jobs: Array<{ output?: Buffer }> = [];
  private wakeUp: (() => void) | undefined;

  constructor(
    private readonly concurrency: number,
    signal?: AbortSignal,
  ) {
    super();
    requirePositiveInteger('concurrency', concurrency);
    if (signal?.aborted) {
      this.destroy(signal.reason);
    } else if (signal) {
      const onAbort = (): void => void this.destroy(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      this.once('close', () => signal.removeEventListener('abort', onAbort));
    }
  }

  get bytesIn(): number {
    return this.#bytesIn;
  }

  get bytesOut(): number {
    return this.#bytesOut;
  }

  /** Handles one input chunk, calling `run` for its jobs. */
  protected abstract consume(chunk: Buffer): Promise<void>;

  /** Handles the end of input; jobs still running are awaited afterwards. */
  protected abstract finish(): Promise<void>;

  /** Starts a job once there is room for it. A rejected job destroys the stream with its error. */
  protected async run(job: () => Promise<Buffer>): Promise<void> {
    await this.until(() => this.hasRoom());
    if (this.destroyed) return;
    const slot: { output?: Buffer } = {};
    this.jobs.push(slot);
    job().then(
      (output) => {
        slot.output = output;
        this.emitFinished();
      },
      (error: unknown) => this.destroy(error instanceof Error ? error : new Error(String(error))),
    );
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#bytesIn += chunk.length;
    this.consume(chunk)
      .then(() => this.until(() => this.hasRoom()))
      .then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    this.finish()
      .then(() => this.until(() => this.jobs.length === 0))
      .then(() => callback(), callback);
  }

  override _read(size: number): void {
    this.wake();
    super._read(size);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.wake();
    callback(error);
  }

  private hasRoom(): boolean {
    return this.jobs.length < this.concurrency && this.readableLength < this.readableHighWaterMark;
  }

  /** Resolves once `condition` holds or the stream is destroyed; re-checked whenever a job ends or the reader reads. */
  private async until(condition: () => boolean): Promise<void> {
    while (!this.destroyed && !condition()) await new Promise<void>((resolve) => (this.wakeUp = resolve));
  }

  private wake(): void {
    const wakeUp = this.wakeUp;
    this.wakeUp = undefined;
    wakeUp?.();
  }

  private emitFinished(): void {
    if (this.destroyed) return;
    while (this.jobs[0]?.output) {
      const output = this.jobs.shift()!.output!;
      this.#bytesOut += output.length;
      if (output.length > 0) this.push(output);
    }
    this.wake();
  }
}

/**
 * Compresses `data` as independent zstd frames of `blockSize` input bytes each (the last one shorter), all
 * blocks at once in the libuv pool. No frames for empty input. The frames carry no content checksum.
 * A block for which `mayStoreRaw(start, end)` holds and whose bytes look incompressible is stored as a raw
 * frame instead: compressing random-looking data costs the most CPU per byte and saves nothing.
 */
export async function compressFrames(
  data: Uint8Array,
  level = 3,
  blockSize = DEFAULT_BLOCK_SIZE,
  mayStoreRaw?: (start: number, end: number) => boolean,
): Promise<Buffer[]> {
  return Promise.all(planFrames(data, level, blockSize, mayStoreRaw).map((frame) => (frame instanceof Promise ? frame : rawZstdFrame(frame))));
}

/**
 * compressFrames, written one after another into `target` from `offset` instead of returned: raw frames are
 * written in place, never allocated. Returns the bytes written; NoRoomForFrameError if `target` has no room.
 */
export async function compressFramesInto(
  data: Uint8Array,
  target: Uint8Array,
  offset: number,
  level: number,
  blockSize = DEFAULT_BLOCK_SIZE,
  mayStoreRaw?: (start: number, end: number) => boolean,
): Promise<number> {
  const frames = planFrames(data, level, blockSize, mayStoreRaw);
  // Awaited in order below; a failure of a later one must not go unobserved if an earlier one throws first.
  for (const frame of frames) if (frame instanceof Promise) frame.catch(() => undefined);
  let at = offset;
  for (const frame of frames) {
    if (frame instanceof Promise) {
      const compressed = await frame;
      if (at + compressed.length > target.length) throw new NoRoomForFrameError(compressed.length, at, target.length);
      target.set(compressed, at);
      at += compressed.length;
    } else {
      at += writeRawZstdFrame(frame, target, at);
    }
  }
  return at - offset;
}

/** Each block of `data`: its compression, already started, or the block itself to be stored raw. */
function planFrames(
  data: Uint8Array,
  level: number,
  blockSize: number,
  mayStoreRaw: ((start: number, end: number) => boolean) | undefined,
): Array<Promise<Buffer> | Uint8Array> {
  if (!Number.isInteger(level)) throw new RangeError(`zstd level must be an integer, got ${level}`);
  requirePositiveInteger('blockSize', blockSize);
  const frames: Array<Promise<Buffer> | Uint8Array> = [];
  for (let start = 0; start < data.length; start += blockSize) {
    const end = Math.min(start + blockSize, data.length);
    const block = data.subarray(start, end);
    frames.push(mayStoreRaw?.(start, end) === true && looksIncompressible(block) ? block : zstdCompress(block, level));
  }
  return frames;
}

/** Bytes per sample, and samples per block, that looksIncompressible reads. */
const ENTROPY_SAMPLE_BYTES = 4096;
const ENTROPY_SAMPLES = 4;
/**
 * Bits per byte above which a sample counts as incompressible. A 4 KiB sample of uniformly random bytes measures
 * ~7.955 (the estimate is biased low by ~255 / (2 · 4096 · ln 2)); zstd -3 leaves such data at 100%. Text and
 * binaries with structure measure well below 7.5.
 */
const INCOMPRESSIBLE_BITS_PER_BYTE = 7.9;
const histogram = new Uint32Array(256);

/**
 * Whether `data` looks like compressed, encrypted or random bytes: `samples` samples of 4 KiB spread across it
 * (none at its very start) all have an order-0 byte entropy near 8 bits. Reads that much whatever the size; data shorter than one sample
 * never qualifies. Conservative: one sample of text, zeros or repeated bytes makes it false.
 */
export function looksIncompressible(data: Uint8Array, samples = ENTROPY_SAMPLES): boolean {
  if (data.length < ENTROPY_SAMPLE_BYTES) return false;
  const span = data.length - ENTROPY_SAMPLE_BYTES;
  for (let sample = 0; sample < samples; sample++) {
    // Each sample is centred in its share of the data, so none starts at the very beginning, where files that
    // are mostly random (images, archives) often have a header with structure.
    const start = Math.floor((span * (2 * sample + 1)) / (2 * samples));
    histogram.fill(0);
    for (let i = start; i < start + ENTROPY_SAMPLE_BYTES; i++) histogram[data[i]!]!++;
    let bits = 0;
    for (let value = 0; value < 256; value++) {
      const count = histogram[value]!;
      if (count > 0) bits -= count * Math.log2(count / ENTROPY_SAMPLE_BYTES);
    }
    if (bits / ENTROPY_SAMPLE_BYTES < INCOMPRESSIBLE_BITS_PER_BYTE) return false;
  }
  return true;
}

export function requirePositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
}
