// The source walk (stages/walker.ts) run in a thread of its own: its readdir and lstat calls overlap the main thread's work.
//
//   walk thread (walk-worker.ts)                        main thread (WalkThread.walk)
//   walkSyncBatches ─ encode ─ postMessage ──────────▶  decode ─ yield WalkItem[] (in walk order)
//        ▲   waits while SHARED_AHEAD batches              │
//        └── are unread: Atomics.wait(consumed) ◀──────────┘ consumed++ / Atomics.notify
//
// A batch crosses as a few flat arrays, not as objects (structured-cloning thousands of small objects costs the
// main thread about as much as the lstat calls it saves): per item a flag byte, the key, the stat fields in one
// BigUint64Array and the path and link target bytes in one Uint8Array, whose buffers are transferred.

import { Worker } from 'node:worker_threads';
import { BlanketError, ErrorCodes, type ErrorCode } from '../formats/errors.js';
import { isUnlisted, LeanStat, type WalkedEntry, type WalkItem, type WalkOptions, type WalkProblem } from './walker.js';

/** Batches the walk thread may run ahead of the consumer: about SHARED_AHEAD × 256 entries. */
export const SHARED_AHEAD = 4;

/**
 * The walk's options (see WalkOptions), with exclude patterns instead of a matcher, which is built in the thread.
 * Problems reach onProblem before the batch they were met in.
 */
export type ThreadWalkOptions = Omit<WalkOptions, 'isExcluded' | 'fs'> & {
  /** gitignore-style exclude patterns (see exclude.ts). */
  readonly excludes?: readonly string[];
};

/** What the walk thread starts with. */
export interface WalkThreadData {
  /** Int32 [batches consumed], shared. */
  readonly consumed: SharedArrayBuffer;
}

/** The walk the thread is then asked for (its one message). */
export interface WalkJob {
  readonly root: string;
  readonly after: string | undefined;
  readonly excludes: readonly string[];
  readonly oneFileSystem: boolean;
}

const UNLISTED = 1;
const CONTENTS_UNKNOWN = 2;
const HAS_LINK_TARGET = 4;
/** Stat fields per entry, in LeanStat's constructor order. */
const STAT_FIELDS = 9;

export interface WireProblem {
  readonly kind: WalkProblem['kind'];
  readonly path: Uint8Array;
  readonly message: string;
  readonly code?: string;
}

/** One batch as it crosses threads. */
export interface WireBatch {
  readonly flags: Uint8Array;
  /** Key of each entry; contents prefix of each UnlistedContents. */
  readonly keys: string[];
  readonly stats: BigUint64Array;
  /** Path of each item, then link target of each entry that has one; lengths in `lengths`, same order. */
  readonly bytes: Uint8Array;
  readonly lengths: Uint32Array;
  readonly problems: WireProblem[];
}

export type WalkThreadMessage =
  | { readonly batch: WireBatch }
  | { readonly done: true; readonly problems: WireProblem[] }
  | { readonly error: { readonly message: string; readonly code?: ErrorCode; readonly subject?: string } };

export function encodeBatch(items: readonly WalkItem[], problems: readonly WalkProblem[]): { batch: WireBatch; transfer: ArrayBuffer[] } {
  const flags = new Uint8Array(items.length);
  const keys: string[] = new Array<string>(items.length);
  let entries = 0;
  let byteCount = 0;
  let pieceCount = 0;
  for (const item of items) {
    byteCount += item.path.length;
    pieceCount++;
    if (!isUnlisted(item)) {
      entries++;
      if (item.linkTarget !== undefined) {
        byteCount += item.linkTarget.length;
        pieceCount++;
      }
    }
  }
  const stats = new BigUint64Array(entries * STAT_FIELDS);
  const signed = new BigInt64Array(stats.buffer);
  const bytes = new Uint8Array(byteCount);
  const lengths = new Uint32Array(pieceCount);
  let at = 0;
  let piece = 0;
  let statAt = 0;
  const put = (data: Uint8Array): void => {
    bytes.set(data, at);
    at += data.length;
    lengths[piece++] = data.length;
  };
  items.forEach((item, i) => {
    put(item.path);
    if (isUnlisted(item)) {
      flags[i] = UNLISTED;
      keys[i] = item.contentsPrefix;
      return;
    }
    keys[i] = item.key;
    const st = item.stat;
    stats[statAt] = st.ino;
    stats[statAt + 1] = st.mode;
    stats[statAt + 2] = st.nlink;
    stats[statAt + 3] = st.uid;
    stats[statAt + 4] = st.gid;
    stats[statAt + 5] = st.rdev;
    stats[statAt + 6] = st.size;
    signed[statAt + 7] = st.mtimeNs;
    signed[statAt + 8] = st.ctimeNs;
    statAt += STAT_FIELDS;
    let flag = item.contentsUnknown === true ? CONTENTS_UNKNOWN : 0;
    if (item.linkTarget !== undefined) {
      flag |= HAS_LINK_TARGET;
      put(item.linkTarget);
    }
    flags[i] = flag;
  });
  const batch: WireBatch = { flags, keys, stats, bytes, lengths, problems: wireProblems(problems) };
  return { batch, transfer: [flags.buffer, stats.buffer, bytes.buffer, lengths.buffer] as ArrayBuffer[] };
}

export function decodeBatch(batch: WireBatch): WalkItem[] {
  const { flags, keys, stats, lengths } = batch;
  const signed = new BigInt64Array(stats.buffer, stats.byteOffset, stats.length);
  const bytes = Buffer.from(batch.bytes.buffer, batch.bytes.byteOffset, batch.bytes.byteLength);
  const items: WalkItem[] = new Array<WalkItem>(flags.length);
  let at = 0;
  let piece = 0;
  let statAt = 0;
  const take = (): Buffer => {
    const length = lengths[piece++]!;
    const data = bytes.subarray(at, at + length);
    at += length;
    return data;
  };
  for (let i = 0; i < flags.length; i++) {
    const flag = flags[i]!;
    const path = take();
    if (flag & UNLISTED) {
      items[i] = { unlisted: true, contentsPrefix: keys[i]!, path };
      continue;
    }
    const stat = new LeanStat(
      stats[statAt]!,
      stats[statAt + 1]!,
      stats[statAt + 2]!,
      stats[statAt + 3]!,
      stats[statAt + 4]!,
      stats[statAt + 5]!,
      stats[statAt + 6]!,
      signed[statAt + 7]!,
      signed[statAt + 8]!,
    );
    statAt += STAT_FIELDS;
    const entry: WalkedEntry = { key: keys[i]!, path, stat };
    if (flag & HAS_LINK_TARGET) entry.linkTarget = take();
    if (flag & CONTENTS_UNKNOWN) entry.contentsUnknown = true;
    items[i] = entry;
  }
  return items;
}

export function wireProblems(problems: readonly WalkProblem[]): WireProblem[] {
  return problems.map(wireProblem);
}

function wireProblem(problem: WalkProblem): WireProblem {
  return problem.code === undefined
    ? { kind: problem.kind, path: problem.path, message: problem.message }
    : { kind: problem.kind, path: problem.path, message: problem.message, code: problem.code };
}

function fromWire(problem: WireProblem): WalkProblem {
  const path = Buffer.from(problem.path.buffer, problem.path.byteOffset, problem.path.byteLength);
  return problem.code === undefined
    ? { kind: problem.kind, path, message: problem.message }
    : { kind: problem.kind, path, message: problem.message, code: problem.code };
}

type Inbound = WalkThreadMessage | { readonly failed: Error };

/**
 * A thread that walks the source once (see walk()). Started before the walk's start point is known, so that
 * the thread is up by the time the run has read the archive. Ends when the walk does, when the consumer stops
 * early, on abort, or with close().
 */
export class WalkThread {
  private readonly worker: Worker;
  private readonly consumed = new Int32Array(new SharedArrayBuffer(4));
  private readonly inbox: Inbound[] = [];
  private wake: (() => void) | null = null;
  private closed: Promise<void> | null = null;
  private started = false;

  constructor() {
    // No per-thread options (loaders, say): the thread runs only this project's code. V8's flags, such as the
    // young generation's size, are the process's in every thread anyway.
    this.worker = new Worker(new URL('./walk-worker.js', import.meta.url), { workerData: { consumed: this.consumed.buffer }, execArgv: [] });
    this.worker.unref(); // never what keeps the process alive
    this.worker.on('message', (message: WalkThreadMessage) => this.deliver(message));
    this.worker.on('error', (error: Error) => this.deliver({ failed: error }));
    this.worker.on('exit', (code) => this.deliver({ failed: new Error(`the walk thread exited (code ${code}) before the walk ended`) }));
  }

  /** The walk of walkBatches (same items, same batches, same errors), at most SHARED_AHEAD batches ahead. Once. */
  async *walk(options: ThreadWalkOptions): AsyncGenerator<WalkItem[]> {
    if (this.started) throw new Error('a WalkThread walks once');
    this.started = true;
    const signal = options.signal;
    const onAbort = (): void => this.wake?.();
    signal?.addEventListener('abort', onAbort);
    try {
      checkAborted(signal);
      const job: WalkJob = {
        root: options.root,
        after: options.after,
        excludes: [...(options.excludes ?? [])],
        oneFileSystem: options.oneFileSystem === true,
      };
      this.worker.postMessage(job);
      for (;;) {
        while (this.inbox.length === 0) {
          checkAborted(signal);
          await new Promise<void>((resolve) => (this.wake = resolve));
          this.wake = null;
        }
        checkAborted(signal);
        const message = this.inbox.shift()!;
        if ('failed' in message) {
          throw new BlanketError(ErrorCodes.SOURCE, `cannot walk ${options.root}: ${message.failed.message}`, { subject: options.root, cause: message.failed });
        }
        if ('error' in message) {
          const { code, subject } = message.error;
          if (code !== undefined) throw new BlanketError(code, message.error.message, subject === undefined ? undefined : { subject });
          throw new Error(message.error.message);
        }
        const problems = 'batch' in message ? message.batch.problems : message.problems;
        for (const problem of problems) options.onProblem?.(fromWire(problem));
        if ('done' in message) return;
        const items = decodeBatch(message.batch);
        Atomics.add(this.consumed, 0, 1);
        Atomics.notify(this.consumed, 0);
        if (items.length > 0) yield items;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      await this.close();
    }
  }

  /** Stops the thread (idempotent). */
  close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    return (this.closed ??= this.worker.terminate().then(() => undefined));
  }

  private deliver(message: Inbound): void {
    this.inbox.push(message);
    this.wake?.();
  }
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new BlanketError(ErrorCodes.ABORTED, 'walk aborted', { cause: signal.reason });
}
