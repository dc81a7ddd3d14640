// Worker of the restore pool: decodes one pack posted to it in compressed chunks and writes the members the
// restore wants straight into DEST, so content bytes, hashing and file writes never reach the main thread.
//
//   port: {at, size} (bytes of the pack in the shared ring), …, null ─▶ PackDecoder (frames → tar → SHA-256 checked) ─▶ MemberFiles
//     one-piece file: create temp (O_EXCL|O_NOFOLLOW) · writev … · owner, mode, mtime · close · rename into place
//     piece of a larger file: writev … at its offset into the temp file the main thread created
//     (bytes are written as each frame is decoded; only content whose hash matched is renamed or reported)
//   port ◀─ {released} after each piece (ring space free again), {written, blocked, failed} now and then, {end}
//
// The pack's bytes are read in place in the ring; the only buffers allocated are zstd's output, which dies as
// soon as its frame is parsed (young collections free it), and frames that span the ring's end, joined in one
// reused buffer. So the worker's memory stays flat without full collections.
//
// Paths come from the main thread, which made every parent a real directory inside DEST (stages/destination.ts)
// before it sent them; the worker never creates a directory, a link or anything outside those names.

import { closeSync, unlinkSync } from 'node:fs';
import type { MessagePort } from 'node:worker_threads';
import { ErrorCodes, isBlanketError } from '../formats/errors.js';
import { finishNewFile, openForPieces, openNewFile, placeFile, writeAllAt, type CreatedAs, type Metadata } from './destination.js';
import { PackDecoder, type MemberSink } from './pack-reader.js';

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
  /** Where the pack's bytes are (RingMessage); reports go back. */
  readonly port: MessagePort;
  /** Shared memory the main thread reads the pack into, in order, wrapping at its end. */
  readonly ring: SharedArrayBuffer;
}

/** The next bytes of the pack, at a place in the ring; null: the object is over. */
export type RingMessage = { readonly at: number; readonly size: number } | null;

export interface PackRestoreOutcome {
  readonly delivered: string[];
  readonly badMembers: string[];
  /** Why decoding stopped early, if it did. */
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly bytes: number;
}

/** What the worker posts on the task's port. */
export type RestoreReport =
  /** Stream offset before which the worker needs no byte of the ring any more. */
  | { readonly released: number }
  | {
      /** Files placed, and pieces written. */
      readonly written: number[];
      /** One-piece files written whose rename a directory blocks: the main thread resolves those (Destination.replace). */
      readonly blocked: number[];
      readonly failed: Array<[number, string]>;
    }
  | { readonly end: PackRestoreOutcome };

/** Files reported at once (progress on the main thread moves in steps of this many). */
const REPORT_EVERY = 64;

export async function restorePack(task: PackRestoreTask): Promise<void> {
  const { object, port } = task;
  const files = new MemberFiles(object, new Map(task.members), (report) => port.postMessage(report satisfies RestoreReport));
  // One frame at a time: two workers already keep both cores busy, and every frame ahead is a MiB more per worker.
  const decoder = new PackDecoder(object, { wants: (hash) => files.wants(hash), sink: files, wantedCount: files.wantedCount, framesAhead: 1 });
  const pieces = new RingQueue(port);
  let pushed = 0;
  let error: PackRestoreOutcome['error'] = null;
  try {
    for (;;) {
      const piece = await pieces.next();
      if (piece === null) {
        await decoder.end();
        break;
      }
      await decoder.push(Buffer.from(task.ring, piece.at, piece.size)); // parsed and written when this resolves (framesAhead 1)
      pushed += piece.size;
      // An unfinished frame keeps its bytes in the ring, unless it would hold back reads: then it is copied out.
      if (decoder.heldBytes > task.ring.byteLength / 2) decoder.copyHeld();
      port.postMessage({ released: pushed - decoder.heldBytes } satisfies RestoreReport);
      if (decoder.finished) break; // every wanted member written, or the tar's end: whatever follows is not read
    }
  } catch (caught) {
    error = isBlanketError(caught) ? { code: caught.code, message: caught.message } : { code: ErrorCodes.CORRUPT_OBJECT, message: `pack ${object} is damaged: ${(caught as Error).message}` };
  }
  files.abandon();
  files.flush();
  const outcome: PackRestoreOutcome = { delivered: [...decoder.delivered], badMembers: decoder.badMembers, error, bytes: decoder.bytes };
  port.postMessage({ end: outcome } satisfies RestoreReport);
  pieces.close();
}

/**
 * Writes content whole in memory (rebuilt from a delta: stages/delta-restorer.ts) to its targets, exactly as a
 * worker writes a member; what was written, blocked or failed goes to `post`.
 */
export function writeContent(object: string, hash: string, bytes: Buffer, targets: readonly RestoreTarget[], post: (report: RestoreReport) => void): void {
  const files = new MemberFiles(object, new Map([[hash, targets]]), post);
  files.end(hash, [bytes], bytes.length, true);
  files.flush();
}

/** One target of the member being written: its descriptor once opened, where the next bytes go, why it failed. */
interface OpenTarget {
  readonly target: RestoreTarget;
  readonly temp: Buffer;
  fd: number | null;
  at: number;
  failure: string | null;
}

/**
 * The wanted members' files, written as the decoder hands over their bytes:
 *
 *   member in one frame:   end(intact) ─▶ create temp · writev · metadata · close · rename      (one open)
 *   member across frames:  content ─▶ open (create temp, or the multi-piece file) · writev
 *                          content ─▶ writev …
 *                          end(intact) ─▶ writev · metadata · close · rename │ not intact: close · remove temp
 *
 * Bytes reach a temporary name before their hash is checked, and only intact content is renamed into place or
 * reported written. A failed write is reported at the member's end, and only for intact content: a damaged
 * member is the main thread's to report (it is not delivered).
 */
class MemberFiles implements MemberSink {
  private written: number[] = [];
  private blocked: number[] = [];
  private failed: Array<[number, string]> = [];
  /** The member whose bytes are being written (tar members come one after another), with its targets. */
  private open: { hash: string; targets: OpenTarget[] } | null = null;

  constructor(
    private readonly object: string,
    private readonly targets: ReadonlyMap<string, readonly RestoreTarget[]>,
    private readonly post: (report: RestoreReport) => void,
  ) {}

  get wantedCount(): number {
    return this.targets.size;
  }

  wants(hash: string): boolean {
    return this.targets.has(hash);
  }

  content(hash: string, parts: readonly Buffer[], size: number): void {
    if (this.open?.hash !== hash) this.open = { hash, targets: this.startAll(hash, size) };
    for (const open of this.open.targets) this.write(open, parts);
  }

  end(hash: string, parts: readonly Buffer[], size: number, intact: boolean): void {
    let open = this.open?.hash === hash ? this.open.targets : null;
    this.open = null;
    // A member within one frame is opened only now, and only if intact: one open, one writev, close.
    open ??= intact ? this.startAll(hash, size) : [];
    for (const target of open) {
      if (intact) this.write(target, parts);
      this.finish(target, intact);
    }
    if (this.written.length + this.blocked.length + this.failed.length >= REPORT_EVERY) this.flush();
  }

  /** Decoding stopped inside a member: its temporary files go (the main thread reports the member's files). */
  abandon(): void {
    for (const target of this.open?.targets ?? []) this.finish(target, false);
    this.open = null;
  }

  /** Reports what was written since the last report. */
  flush(): void {
    if (this.written.length + this.blocked.length + this.failed.length === 0) return;
    this.post({ written: this.written, blocked: this.blocked, failed: this.failed });
    this.written = [];
    this.blocked = [];
    this.failed = [];
  }

  private startAll(hash: string, size: number): OpenTarget[] {
    return this.targets.get(hash)!.map((target) => this.start(target, size));
  }

  private start(target: RestoreTarget, size: number): OpenTarget {
    const open: OpenTarget = { target, temp: Buffer.from(target.temp, 'latin1'), fd: null, at: target.final === null ? target.offset : 0, failure: null };
    try {
      if (size !== target.size) throw this.sizeMismatch(size, target);
      open.fd = target.final === null ? openForPieces(open.temp) : openNewFile(open.temp, target.created);
    } catch (error) {
      open.failure = (error as Error).message;
    }
    return open;
  }

  private write(open: OpenTarget, parts: readonly Buffer[]): void {
    if (open.fd === null || open.failure !== null) return;
    try {
      writeAllAt(open.fd, parts, open.at);
      for (const part of parts) open.at += part.length;
    } catch (error) {
      open.failure = (error as Error).message;
    }
  }

  private finish(open: OpenTarget, intact: boolean): void {
    const { target, fd } = open;
    open.fd = null;
    if (intact && open.failure === null && fd !== null) {
      try {
        if (target.final === null) {
          closeSync(fd);
          this.written.push(target.id);
        } else {
          finishNewFile(fd, target.meta, target.created);
          (placeFile(open.temp, Buffer.from(target.final, 'latin1')) ? this.written : this.blocked).push(target.id);
        }
        return;
      } catch (error) {
        open.failure = (error as Error).message;
      }
    } else if (fd !== null) {
      closeQuietly(fd);
    }
    if (target.final !== null) removeQuietly(open.temp);
    if (intact) this.failed.push([target.id, open.failure ?? 'not written']);
  }

  private sizeMismatch(size: number, target: RestoreTarget): Error {
    return new Error(`content in ${this.object} holds ${size} bytes, the index says ${target.size}`);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // a descriptor whose write failed: nothing more to lose
  }
}

function removeQuietly(path: Buffer): void {
  try {
    unlinkSync(path);
  } catch {
    // never created, or already gone: nothing to clean
  }
}

/** The ring messages posted to a port, taken one at a time in order. */
class RingQueue {
  private readonly queued: RingMessage[] = [];
  private waiter: ((message: RingMessage) => void) | null = null;

  constructor(private readonly port: MessagePort) {
    port.on('message', (message: RingMessage) => {
      if (this.waiter) {
        const wake = this.waiter;
        this.waiter = null;
        wake(message);
      } else {
        this.queued.push(message);
      }
    });
  }

  next(): Promise<RingMessage> {
    if (this.queued.length > 0) return Promise.resolve(this.queued.shift()!);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  close(): void {
    this.port.close();
  }
}
