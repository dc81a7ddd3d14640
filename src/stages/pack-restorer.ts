// The restore stage that turns packs into files: streams each pack object to a worker of its pool, which decodes
// it and writes the wanted members into DEST (stages/restore-worker.ts), and relays the worker's reports.
//
//   store.get(pack) ─ chunks ─▶ port ─▶ worker: decode · check · write ─▶ {written, blocked, failed} ─▶ handlers
//              ◀──── acked ───────────┘    (at most MAX_UNACKED_BYTES in flight: backpressure on the read)

import { MessageChannel } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import { packObjectName } from '../formats/archive-layout.js';
import { BlanketError, ErrorCodes, isBlanketError, type ErrorCode } from '../formats/errors.js';
import type { Store } from '../stores/store.js';
import { collectYoungGarbage, GarbageCounter } from './gc-hints.js';
import type { PackReadResult } from './pack-reader.js';
import type { PackRestoreOutcome, PackRestoreTask, RestoreReport, RestoreTarget } from './restore-worker.js';

export type { RestoreTarget } from './restore-worker.js';

/** Chunks copied before they were posted: garbage soon after. */
const chunkGarbage = new GarbageCounter(16 << 20, collectYoungGarbage);

/** Compressed bytes posted to a worker and not yet decoded by it. */
const MAX_UNACKED_BYTES = 1 << 20;

export interface PackRestoreHandlers {
  /** Files placed, and pieces written (by target id). */
  written(ids: readonly number[]): void;
  /** One-piece files written to their temporary name whose rename a directory blocks. */
  blocked(ids: readonly number[]): void;
  failed(id: number, message: string): void;
}

export class PackRestorer {
  private pool: Promise<Piscina> | null = null;

  constructor(private readonly threads: number) {}

  /** Starts the threads now (they take ~0.1 s to boot), so they are ready when the first pack is. */
  warmUp(): void {
    void this.start().catch(() => undefined); // a failure surfaces at the first restore()
  }

  private start(): Promise<Piscina> {
    return (this.pool ??= import('piscina').then(
      ({ Piscina }) =>
        new Piscina({
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
    const { port1, port2 } = new MessageChannel();
    let acked = 0;
    let outcome: PackRestoreOutcome | null = null;
    let wake: (() => void) | null = null;
    const wakeUp = (): void => {
      const resume = wake;
      wake = null;
      resume?.();
    };
    const ended = new Promise<PackRestoreOutcome>((resolve) => {
      port1.on('message', (report: RestoreReport) => {
        if ('acked' in report) {
          acked += report.acked;
        } else if ('end' in report) {
          outcome = report.end;
          resolve(report.end);
        } else {
          if (report.written.length > 0) handlers.written(report.written);
          if (report.blocked.length > 0) handlers.blocked(report.blocked);
          for (const [id, message] of report.failed) handlers.failed(id, message);
        }
        wakeUp();
      });
    });
    const task: PackRestoreTask = { object, members: [...members], port: port2 };
    let taskFailed = false;
    const running = pool.run(task, { name: 'restorePack', transferList: [port2], signal }).catch((error: unknown) => {
      taskFailed = true;
      wakeUp();
      throw error;
    });
    let readError: unknown = null;
    try {
      const source = await store.get(object, { signal });
      let sent = 0;
      try {
        for await (const chunk of source) {
          if (outcome !== null || taskFailed) break; // the worker needs no more (the tar ended, or it failed)
          const bytes = chunk as Buffer;
          // Moved to the worker, not copied: a chunk that is a view of a larger buffer is copied once into its own.
          const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : new Uint8Array(bytes);
          if (whole !== bytes) chunkGarbage.add(bytes.length);
          sent += whole.length; // before posting: a transferred array reads as empty afterwards
          port1.postMessage(whole, [whole.buffer as ArrayBuffer]);
          while (sent - acked > MAX_UNACKED_BYTES && outcome === null && !taskFailed) await new Promise<void>((resolve) => (wake = resolve));
        }
      } finally {
        source.destroy();
      }
    } catch (error) {
      readError = error;
    }
    port1.postMessage(null);
    try {
      const [end] = await Promise.all([ended, running]); // a worker that dies rejects `running`, so this cannot hang
      signal?.throwIfAborted();
      const error = readError !== null ? asReadError(object, readError) : end.error && new BlanketError(end.error.code as ErrorCode, end.error.message, { subject: object });
      return { delivered: new Set(end.delivered), badMembers: end.badMembers, error, bytes: end.bytes };
    } finally {
      port1.close();
    }
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    if (pool) await (await pool).destroy();
  }
}

function asReadError(object: string, error: unknown): BlanketError {
  if (isBlanketError(error)) return error;
  return new BlanketError(ErrorCodes.CORRUPT_OBJECT, `pack ${object} could not be read: ${(error as Error).message}`, { subject: object, cause: error });
}
