// Worker of the hash pool: reads byte ranges of files synchronously into one buffer per batch and hashes them.
// Synchronous reads inside a worker avoid the thread-pool round trips that make async small-file reads slow.

import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, type BigIntStats } from 'node:fs';
import { createHash } from 'node:crypto';
import { move, transferableSymbol, valueSymbol } from 'piscina';

export interface ReadRequest {
  readonly path: Uint8Array;
  readonly offset: number;
  readonly length: number;
  /** What the walker saw; a mismatch after reading means the file changed while it was read. */
  readonly ino: bigint;
  readonly mtimeNs: bigint;
  readonly size: number;
}

export type ReadResult =
  | { readonly ok: true; readonly hash: string; readonly start: number; readonly length: number; readonly changed: boolean }
  | { readonly ok: false; readonly code: string; readonly message: string; readonly vanished: boolean };

export interface ReadBatchResult {
  readonly buffer: ArrayBuffer;
  readonly results: ReadResult[];
}

let noAtime = true;

function openForRead(path: Buffer): number {
  const flags = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW;
  if (noAtime) {
    try {
      return openSync(path, flags | fsConstants.O_NOATIME);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EPERM') throw error;
      noAtime = false; // O_NOATIME needs file ownership; fall back for good
    }
  }
  return openSync(path, flags);
}

/** The file is not what the walker saw, or changed between the two fstats around the read. */
function changedWhileRead(request: ReadRequest, before: BigIntStats, after: BigIntStats): boolean {
  return before.ino !== request.ino || after.mtimeNs !== request.mtimeNs || Number(after.size) !== request.size || after.mtimeNs !== before.mtimeNs;
}

function readOne(request: ReadRequest, target: Buffer, start: number): ReadResult {
  let fd = -1;
  try {
    fd = openForRead(Buffer.from(request.path.buffer, request.path.byteOffset, request.path.byteLength));
    const before = fstatSync(fd, { bigint: true });
    if (!before.isFile()) return { ok: false, code: 'ENOTFILE', message: 'is no longer a regular file', vanished: true };
    let done = 0;
    while (done < request.length) {
      const n = readSync(fd, target, start + done, request.length - done, request.offset + done);
      if (n === 0) break;
      done += n;
    }
    const after = fstatSync(fd, { bigint: true });
    if (done < request.length) {
      return { ok: false, code: 'ESHRUNK', message: `shrank while being read (${done} of ${request.length} bytes)`, vanished: false };
    }
    const changed = changedWhileRead(request, before, after);
    const hash = createHash('sha256').update(target.subarray(start, start + request.length)).digest('hex');
    return { ok: true, hash, start, length: request.length, changed };
  } catch (error) {
    const err = error as NodeJS.ErrnoException;
    return { ok: false, code: err.code ?? 'EIO', message: err.message, vanished: err.code === 'ENOENT' || err.code === 'ELOOP' };
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

export interface WholeHashResult {
  readonly ok: boolean;
  readonly hash: string;
  readonly changed: boolean;
  readonly message: string;
}

/**
 * SHA-256 of a whole (big) file, read sequentially in 1 MiB pieces: runs beside the chunk reads so that the main
 * thread never hashes content. `changed` when the file differs from what the walker saw.
 */
export function hashWhole(request: ReadRequest): WholeHashResult {
  let fd = -1;
  try {
    fd = openForRead(Buffer.from(request.path.buffer, request.path.byteOffset, request.path.byteLength));
    const before = fstatSync(fd, { bigint: true });
    const hash = createHash('sha256');
    const piece = Buffer.allocUnsafe(1 << 20);
    let done = 0;
    while (done < request.size) {
      const n = readSync(fd, piece, 0, Math.min(piece.length, request.size - done), done);
      if (n === 0) break;
      hash.update(piece.subarray(0, n));
      done += n;
    }
    const after = fstatSync(fd, { bigint: true });
    const changed = done < request.size || changedWhileRead(request, before, after);
    return { ok: true, hash: hash.digest('hex'), changed, message: '' };
  } catch (error) {
    return { ok: false, hash: '', changed: true, message: (error as Error).message };
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

export default function readBatch(requests: ReadRequest[]): unknown {
  const total = requests.reduce((sum, r) => sum + r.length, 0);
  const arrayBuffer = new ArrayBuffer(total);
  const target = Buffer.from(arrayBuffer);
  const results: ReadResult[] = [];
  let start = 0;
  for (const request of requests) {
    results.push(readOne(request, target, start));
    start += request.length;
  }
  const value: ReadBatchResult = { buffer: arrayBuffer, results };
  return move({ [transferableSymbol]: [arrayBuffer], [valueSymbol]: value } as never);
}
