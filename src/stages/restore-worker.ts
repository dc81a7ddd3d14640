// Worker of the restore pool: decodes one pack posted to it in compressed chunks and writes the members the
// restore wants straight into DEST, so content bytes, hashing and file writes never reach the main thread.
//
//   port: chunk, chunk, …, null ─▶ PackDecoder (frames → tar → SHA-256 checked) ─▶ member
//     one-piece file: create temp (O_EXCL|O_NOFOLLOW) · writev · owner, mode, mtime · close · rename into place
//     piece of a larger file: writev at its offset into the temp file the main thread created
//   port ◀─ {acked} after each chunk (flow control), {written, blocked, failed} now and then, {end} with the outcome
//
// Paths come from the main thread, which made every parent a real directory inside DEST (stages/destination.ts)
// before it sent them; the worker never creates a directory, a link or anything outside those names.

import { unlinkSync } from 'node:fs';
import type { MessagePort } from 'node:worker_threads';
import { ErrorCodes, isBlanketError } from '../formats/errors.js';
import { placeFile, writeNewFile, writePiece, type CreatedAs, type Metadata } from './destination.js';
import { collectOldGarbage, GarbageCounter } from './gc-hints.js';
import { PackDecoder } from './pack-reader.js';

/** Where one member's content goes. */
export interface RestoreTarget {
  /** The main thread's number for the file (or piece). */
  readonly id: number;
  /**
   * Absolute temporary name, its bytes as a latin1 string: a small Buffer is a view of an 8 KiB pool slab, which
   * structured clone would copy whole for every name.
   */
  readonly temp: string;
  /**
   * Absolute final name (latin1) of a one-piece file, which is created, written, given its metadata and renamed
   * here; null for a piece of a larger file, written at `offset` into the temporary file that already exists.
   */
  readonly final: string | null;
  readonly offset: number;
  /** Size the index declares: content of another size is not written. */
  readonly size: number;
  readonly meta: Metadata;
  /** How open() makes a one-piece file (which calls to leave out). */
  readonly created: CreatedAs;
}

export interface PackRestoreTask {
  /** The pack's object name, for messages. */
  readonly object: string;
  /** Wanted members: content hash → where it goes. */
  readonly members: ReadonlyArray<readonly [string, readonly RestoreTarget[]]>;
  /** Chunks of the compressed pack arrive here (null: the object is over); reports go back. */
  readonly port: MessagePort;
}

export interface PackRestoreOutcome {
  readonly delivered: string[];
  readonly badMembers: string[];
  /** Why decoding stopped early, if it did. */
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly bytes: number;
}

/** What the worker posts on the task's port. */
export type RestoreReport =
  | { readonly acked: number }
  | {
      /** Files placed, and pieces written. */
      readonly written: number[];
      /** One-piece files written whose rename a directory blocks: the main thread resolves those (Destination.replace). */
      readonly blocked: number[];
      readonly failed: Array<[number, string]>;
    }
  | { readonly end: PackRestoreOutcome };

/**
 * Received chunks are garbage once decoded, and their bytes count against the main thread, whose allocator made
 * them, until this thread collects them; they outlive young collections (frames are views of them), so a full
 * collection of this thread's small heap every so often frees them.
 */
const chunkGarbage = new GarbageCounter(4 << 20, collectOldGarbage);

/** Files reported at once (progress on the main thread moves in steps of this many). */
const REPORT_EVERY = 64;

export async function restorePack(task: PackRestoreTask): Promise<void> {
  const { object, port } = task;
  const targets = new Map(task.members);
  let written: number[] = [];
  let blocked: number[] = [];
  let failed: Array<[number, string]> = [];
  const flush = (): void => {
    if (written.length + blocked.length + failed.length === 0) return;
    port.postMessage({ written, blocked, failed } satisfies RestoreReport);
    written = [];
    blocked = [];
    failed = [];
  };

  const writeMember = (hash: string, parts: readonly Buffer[], size: number): void => {
    for (const target of targets.get(hash)!) {
      const temp = Buffer.from(target.temp, 'latin1');
      try {
        if (size !== target.size) throw new Error(`content ${hash.slice(0, 16)}… in ${object} holds ${size} bytes, the index says ${target.size}`);
        if (target.final === null) {
          writePiece(temp, parts, target.offset);
          written.push(target.id);
        } else {
          writeNewFile(temp, parts, target.meta, target.created);
          (placeFile(temp, Buffer.from(target.final, 'latin1')) ? written : blocked).push(target.id);
        }
      } catch (error) {
        if (target.final !== null) removeQuietly(temp);
        failed.push([target.id, (error as Error).message]);
      }
    }
    if (written.length + blocked.length + failed.length >= REPORT_EVERY) flush();
  };

  // One frame at a time: two workers already keep both cores busy, and every frame ahead is a MiB more per worker.
  const decoder = new PackDecoder(object, { wants: (hash) => targets.has(hash), onMember: writeMember, wantedCount: targets.size, framesAhead: 1 });
  const chunks = new ChunkQueue(port);
  let error: PackRestoreOutcome['error'] = null;
  try {
    for (;;) {
      const chunk = await chunks.next();
      if (chunk === null) {
        await decoder.end();
        break;
      }
      await decoder.push(chunk);
      port.postMessage({ acked: chunk.length } satisfies RestoreReport);
      chunkGarbage.add(chunk.length);
      if (decoder.finished) break; // every wanted member written, or the tar's end: whatever follows is not read
    }
  } catch (caught) {
    error = isBlanketError(caught) ? { code: caught.code, message: caught.message } : { code: ErrorCodes.CORRUPT_OBJECT, message: `pack ${object} is damaged: ${(caught as Error).message}` };
  }
  flush();
  const outcome: PackRestoreOutcome = { delivered: [...decoder.delivered], badMembers: decoder.badMembers, error, bytes: decoder.bytes };
  port.postMessage({ end: outcome } satisfies RestoreReport);
  chunks.close();
}

/** Chunks arrive as Uint8Arrays (structured clone drops the Buffer class). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function removeQuietly(path: Buffer): void {
  try {
    unlinkSync(path);
  } catch {
    // never created, or already gone: nothing to clean
  }
}

/** The chunks posted to a port, taken one at a time in order. */
class ChunkQueue {
  private readonly queued: Array<Buffer | null> = [];
  private waiter: ((chunk: Buffer | null) => void) | null = null;

  constructor(private readonly port: MessagePort) {
    port.on('message', (message: Uint8Array | null) => {
      const chunk = message === null ? null : asBuffer(message);
      if (this.waiter) {
        const wake = this.waiter;
        this.waiter = null;
        wake(chunk);
      } else {
        this.queued.push(chunk);
      }
    });
  }

  next(): Promise<Buffer | null> {
    if (this.queued.length > 0) return Promise.resolve(this.queued.shift()!);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  close(): void {
    this.port.close();
  }
}
