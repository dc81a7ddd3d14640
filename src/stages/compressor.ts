// Compresses a pack's tar stream into independent zstd frames, one per fixed-size block, several blocks at a time.

import { createRequire } from 'node:module';
import { Transform, type TransformCallback } from 'node:stream';

// The package's index.js wrapper of 1.2.2 drops the level argument (everything is compressed at level 3),
// so call the native binding, which honours it.
const zstdBinding = createRequire(import.meta.url)('@mongodb-js/zstd/bindings.js') as typeof import('@mongodb-js/zstd');

export type CountingTransform = Transform & { readonly bytesIn: number; readonly bytesOut: number };

export interface CompressorOptions {
  level?: number;
  blockSize?: number;
  concurrency?: number;
  signal?: AbortSignal;
}

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

class Compressor extends OrderedParallelTransform {
  /** Gathers input that does not arrive as whole blocks. */
  private block: Buffer | undefined;
  private blockFill = 0;

  constructor(
    private readonly level: number,
    private readonly blockSize: number,
    concurrency: number,
    signal?: AbortSignal,
  ) {
    super(concurrency, signal);
  }

  protected async consume(chunk: Buffer): Promise<void> {
    let pos = 0;
    while (pos < chunk.length && !this.destroyed) {
      if (this.blockFill === 0 && chunk.length - pos >= this.blockSize) {
        await this.compressBlock(chunk.subarray(pos, (pos += this.blockSize)));
        continue;
      }
      this.block ??= Buffer.allocUnsafe(this.blockSize);
      const copied = chunk.copy(this.block, this.blockFill, pos, Math.min(chunk.length, pos + this.blockSize - this.blockFill));
      pos += copied;
      this.blockFill += copied;
      if (this.blockFill === this.blockSize) await this.compressBlock(this.takeBlock());
    }
  }

  protected async finish(): Promise<void> {
    if (this.blockFill > 0) await this.compressBlock(this.takeBlock());
    // `zstd -d` rejects an empty file, so an empty pack still gets one (empty) frame.
    else if (this.bytesIn === 0) await this.compressBlock(Buffer.alloc(0));
  }

  private takeBlock(): Buffer {
    const block = this.block!.subarray(0, this.blockFill);
    this.block = undefined;
    this.blockFill = 0;
    return block;
  }

  private compressBlock(block: Buffer): Promise<void> {
    return this.run(() =>
      zstdBinding.compress(block, this.level).catch((error: unknown) => {
        // Native errors carry no JS stack.
        throw new Error(`zstd compression failed: ${error instanceof Error ? error.message : String(error)}`);
      }),
    );
  }
}

/** zstd clamps `level` to its supported range. The frames carry no content checksum. */
export function createCompressor(options: CompressorOptions = {}): CountingTransform {
  const { level = 3, blockSize = DEFAULT_BLOCK_SIZE, concurrency = 2, signal } = options;
  if (!Number.isInteger(level)) throw new RangeError(`zstd level must be an integer, got ${level}`);
  requirePositiveInteger('blockSize', blockSize);
  return new Compressor(level, blockSize, concurrency, signal);
}

export function requirePositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
}
