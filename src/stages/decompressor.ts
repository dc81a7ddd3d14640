// Decompresses a pack frame by frame, several frames at a time, so restore never holds more than a few frames in memory.

import { zstdDecompress as decompress } from './zstd.js';
import { BlanketError, ErrorCodes } from '../formats/errors.js';
import { ZstdFrameSplitter } from '../formats/zstd-frames.js';
import { OrderedParallelTransform, requirePositiveInteger, type CountingTransform } from './compressor.js';

export interface DecompressorOptions {
  /** Named in errors about corrupt data. */
  objectName?: string;
  concurrency?: number;
  signal?: AbortSignal;
  /** Largest frame accepted, compressed or decompressed; our own packs use 1 MiB blocks. */
  maxFrameSize?: number;
}

export const DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024;

class Decompressor extends OrderedParallelTransform {
  private readonly splitter: ZstdFrameSplitter;
  private framesSeen = 0;

  constructor(
    private readonly objectName: string | undefined,
    maxFrameSize: number,
    concurrency: number,
    signal?: AbortSignal,
  ) {
    super(concurrency, signal);
    this.splitter = new ZstdFrameSplitter(objectName, { maxFrameSize });
  }

  protected async consume(chunk: Buffer): Promise<void> {
    for (const frame of this.splitter.push(chunk)) {
      if (this.destroyed) return;
      await this.decompressFrame(frame);
    }
  }

  protected async finish(): Promise<void> {
    this.splitter.end();
  }

  private decompressFrame(frame: Buffer): Promise<void> {
    const frameNumber = ++this.framesSeen;
    return this.run(() => decompressFrame(frame, this.objectName, frameNumber));
  }
}

/** One whole zstd frame's content (in the libuv pool); a frame zstd rejects is BLANKET_E_CORRUPT_OBJECT naming the object and frame. */
export function decompressFrame(frame: Buffer, objectName: string | undefined, frameNumber: number): Promise<Buffer> {
  return decompress(frame).catch((error: unknown) => {
    const where = objectName === undefined ? '' : ` in ${objectName}`;
    const reason = error instanceof Error ? error.message : String(error);
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `Corrupt zstd data${where}: frame ${frameNumber} cannot be decompressed (${reason})`, {
      subject: objectName,
      cause: error,
    });
  });
}

export function createDecompressor(options: DecompressorOptions = {}): CountingTransform {
  const { objectName, concurrency = 2, signal, maxFrameSize = DEFAULT_MAX_FRAME_SIZE } = options;
  requirePositiveInteger('maxFrameSize', maxFrameSize);
  return new Decompressor(objectName, maxFrameSize, concurrency, signal);
}
