// The restore stage that turns packs into files: streams each pack object to a worker of its pool, which decodes
// it and writes the wanted members into DEST (stages/restore-worker.ts), and relays the worker's reports.
//
//   pack object ─ read into a ring of shared memory ─▶ port: {at, size} ─▶ worker: decode · check · write
//        ▲                                                                     │
//        └─ ring space ◀── {released: stream offset} ──────────────────────────┤ (backpressure: a full ring waits)
//                                              handlers ◀── {written, blocked, failed}
//
// A local store reads the file straight into the ring, so a pack's bytes pass through no buffer of their own:
// nothing per read for either thread's garbage collector (each 1 MiB chunk read and handed over cost ~1 s of
// main-thread collection per GiB, or ~60 MiB of RSS while it waited to be freed).

import { MessageChannel } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import { packObjectName } from '../formats/archive-layout.js';
import { BlanketError, ErrorCodes, isBlanketError, type ErrorCode } from '../formats/errors.js';
import { openReader, type Store } from '../stores/store.js';
import type { PackReadResult } from './pack-reader.js';
import type { PackRestoreOutcome, PackRestoreTask, RestoreReport, RestoreTarget, RingMessage } from './restore-worker.js';
import { startPool } from './worker-threads.js';

export type { RestoreTarget } from './restore-worker.js';

/**
 * Shared memory per pack being restored. The worker holds back at most half of it (an unfinished frame: it
 * copies a larger one out), so reads of up to READ_BYTES always find room again.
 */
const RING_BYTES = 4 << 20;
const READ_BYTES = 1 << 20;

export interface PackRestoreHandlers {
  /** Files placed, and pieces written (by target id). */
  written(ids: readonly number[]): void;
  /** One-piece files written to their temporary name whose rename a directory blocks. */
  blocked(ids: readonly number[]): void;
  failed(id: number, message: string): void;
}

/** Passes what a report says was written, blocked or failed to `handlers` (others: ring and end reports, ignored). */
export function handOn(report: RestoreReport, handlers: PackRestoreHandlers): void {
  if (!('written' in report)) return;
  if (report.written.length > 0) handlers.written(report.written);
  if (report.blocked.length > 0) handlers.blocked(report.blocked);
  for (const [id, message] of report.failed) handlers.failed(id, message);
}

export class PackRestorer {
  private pool: Promise<Piscina> | null = null;
  /** Rings of restores that finished, for the next ones: as many as ever ran at once. */
  private readonly rings: SharedArrayBuffer[] = [];

  constructor(private readonly threads: number) {}

  /** Starts the threads now (they take ~0.1 s to boot), so they are ready when the first pack is. */
  warmUp(): void {
    void this.start().catch(() => undefined); // a failure surfaces at the first restore()
  }

  private start(): Promise<Piscina> {
    return (this.pool ??= import('piscina').then(
      ({ Piscina }) =>
        startPool(Piscina, {
          filename: new URL('./restore-worker.js', import.meta.url).href,
          minThreads: this.threads,
          maxThreads: this.threads,
          idleTimeout: 1000,
        }),
    ));
  }

  /**
   * Restores the members of pack `stem` listed in `members`. Damage (a missing object, corrupt data) is returned,
   * as readPack does; only an abort or a failing worker throws.
   */
  async restore(
    store: Store,
    stem: string,
    members: ReadonlyMap<string, readonly RestoreTarget[]>,
    handlers: PackRestoreHandlers,
    signal?: AbortSignal,
  ): Promise<PackReadResult> {
    const object = packObjectName(stem);
    const pool = await this.start();
    const ring = this.rings.pop() ?? new SharedArrayBuffer(RING_BYTES);
    const { port1, port2 } = new MessageChannel();
    /** Stream offsets: bytes read into the ring, and bytes the worker is done with. */
    let read = 0;
    let released = 0;
    let outcome: PackRestoreOutcome | null = null;
    let wake: (() => void) | null = null;
    const wakeUp = (): void => {
      const resume = wake;
      wake = null;
      resume?.();
    };
    const ended = new Promise<PackRestoreOutcome>((resolve) => {
      port1.on('message', (report: RestoreReport) => {
        if ('released' in report) {
          released = report.released;
        } else if ('end' in report) {
          outcome = report.end;
          resolve(report.end);
        } else {
          handOn(report, handlers);
        }
        wakeUp();
      });
    });
    const task: PackRestoreTask = { object, members: [...members], port: port2, ring };
    let taskFailed = false;
    const running = pool.run(task, { name: 'restorePack', transferList: [port2], signal }).catch((error: unknown) => {
      taskFailed = true;
      wakeUp();
      throw error;
    });
    const post = (message: RingMessage): void => port1.postMessage(message);
    const workerDone = (): boolean => outcome !== null || taskFailed;
    let readError: unknown = null;
    try {
      const reader = await openReader(store, object, { signal });
      try {
        while (!workerDone()) {
          const at = read % RING_BYTES;
          const room = Math.min(RING_BYTES - at, RING_BYTES - (read - released), READ_BYTES);
          if (room < Math.min(READ_BYTES, RING_BYTES - at)) {
            await new Promise<void>((resolve) => (wake = resolve)); // the worker has not freed enough yet
            continue;
          }
          const count = await reader.read(new Uint8Array(ring, at, room));
          if (count === 0) break;
          read += count;
          post({ at, size: count });
        }
      } finally {
        await reader.close();
      }
    } catch (error) {
      readError = error;
    }
    post(null);
    try {
      const [end] = await Promise.all([ended, running]); // a worker that dies rejects `running`, so this cannot hang
      signal?.throwIfAborted();
      this.rings.push(ring); // the worker is done with it
      const error = readError !== null ? asReadError(object, readError) : end.error && new BlanketError(end.error.code as ErrorCode, end.error.message, { subject: object });
      return { delivered: new Set(end.delivered), badMembers: end.badMembers, error, bytes: end.bytes };
    } finally {
      port1.close();
    }
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    this.rings.length = 0;
    if (pool) await (await pool).destroy();
  }
}

function asReadError(object: string, error: unknown): BlanketError {
  if (isBlanketError(error)) return error;
  return new BlanketError(ErrorCodes.CORRUPT_OBJECT, `pack ${object} could not be read: ${(error as Error).message}`, { subject: object, cause: error });
}
