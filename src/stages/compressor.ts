// zstd frames for pack data: independent frames of fixed-size blocks, and the ordered parallel Transform that
// (de)compresses several frames at once while keeping their order.

import { Transform, type TransformCallback } from 'node:stream';
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
 */
export async function compressFrames(data: Uint8Array, level = 3, blockSize = DEFAULT_BLOCK_SIZE): Promise<Buffer[]> {
  if (!Number.isInteger(level)) throw new RangeError(`zstd level must be an integer, got ${level}`);
  requirePositiveInteger('blockSize', blockSize);
  const blocks: Promise<Buffer>[] = [];
  for (let start = 0; start < data.length; start += blockSize) {
    const block = Buffer.from(data.buffer, data.byteOffset + start, Math.min(blockSize, data.length - start));
    blocks.push(zstdCompress(block, level));
  }
  return Promise.all(blocks);
}

export function requirePositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
}
