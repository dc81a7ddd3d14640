// Hash stage: reads, hashes and packs changed files in the worker pool, keeping path order and a bound on bytes in flight.
//
//   items in order ──▶ [small files batched into one task] [big file: one task per chunk] ──▶ items in order
//                       window of pending slots, at most maxInFlightBytes read but not yet consumed
//
// Each task's new content comes back as compressed tar frames ({kind: 'stored'}), handed over just before the
// task's first item, so the packer has written every member before any item that refers to it. A big file
// comes out as its chunks first ({kind: 'chunk'}), then its entry with the content hash of its chunk list, so
// no file is ever held whole in memory, nor read twice. A file that vanishes or cannot be read keeps its previous state.

import path from 'node:path';
import type { BackupItem } from './change-detector.js';
import type { ReadRequest, ReadResult } from './hash-worker.js';
import type { Monitor } from './monitor.js';
import type { EntryStat } from './walker.js';
import { contentHash } from '../formats/entry.js';
import { displayPath } from '../formats/path-key.js';
import type { PackMember } from '../formats/index-format.js';
import type { ChunkRdiff } from './delta.js';

export interface ContentChunk {
  readonly hash: string;
  readonly size: number;
}

/** New content of one task: tar members compressed as zstd frames, ready to append to a pack. */
export interface StoredContent {
  /** Borrowed memory (the frame ring): valid until `release` is called, once the store is done with it. */
  readonly frames: Uint8Array;
  readonly tarBytes: number;
  /** The members the frames hold, in tar order. */
  readonly members: readonly PackMember[];
  readonly release: () => void;
}

export type HashedItem =
  | Exclude<BackupItem, { kind: 'entry' }>
  | (Extract<BackupItem, { kind: 'entry' }> & { readonly read: false })
  /** Content to append to the open pack before the items that follow. */
  | { readonly kind: 'stored'; readonly content: StoredContent }
  /** One chunk of the file `key`, in order; its entry follows. */
  | { readonly kind: 'chunk'; readonly key: string; readonly chunk: ContentChunk }
  /** A file whose content was read: its content hash, and its chunks (given here for single-chunk files). */
  | (Extract<BackupItem, { kind: 'entry' }> & {
      readonly read: true;
      readonly contentHash: string;
      readonly chunkHashes: readonly { hash: string; size: number }[];
      readonly inlineChunk: ContentChunk | null;
    });

/** What a task gives back: one result per request, and the frames of its new content in borrowed memory. */
export interface TaskOutput {
  readonly results: readonly ReadResult[];
  readonly frames: Uint8Array;
  readonly tarBytes: number;
  /** Gives the frames' memory back; called exactly once, by whoever last needs them. */
  readonly release: () => void;
}

/**
 * Reads, hashes and packs `requests` as task number `task`. Called in task order, which is also the order the
 * outputs are consumed in, so a task may wait for memory that earlier tasks give back (the frame ring).
 */
export type ReadTask = (requests: ReadRequest[], task: number) => Promise<TaskOutput>;

export interface HasherOptions {
  readonly root: string;
  readonly runTask: ReadTask;
  readonly monitor: Monitor;
  readonly chunkSize: number;
  readonly maxInFlightBytes?: number;
  readonly batchBytes?: number;
  readonly batchFiles?: number;
  readonly signal?: AbortSignal;
  /**
   * Called once, at the first item that must be read: time to start what tasks need (threads, the content
   * table). Until the promise it returns settles, tasks cannot run, and more items may wait behind them.
   */
  readonly onFirstRead?: () => Promise<void> | void;
  /**
   * Hashes of a big file's chunks known before it is read (read-ahead.ts), for the chunks whose content is stored
   * or claimed already (index i: chunk i): those chunks are not read again.
   */
  readonly knownChunks?: (key: string, stat: EntryStat) => readonly (string | undefined)[] | undefined;
  /** For chunk `index` of a big file: what to do besides storing it (signature, delta against a base; delta.ts). */
  readonly chunkRdiff?: (item: Extract<BackupItem, { kind: 'entry' }>, index: number) => ChunkRdiff | undefined | Promise<ChunkRdiff | undefined>;
}

/** Input items held behind running tasks before the stage waits for the oldest one. */
const MAX_HELD_INPUTS = 4096;
/**
 * The same while tasks wait for what they need (worker threads starting, the content table loading: ~0.3 s):
 * the walk, the main thread's work, goes on meanwhile instead of idling.
 */
const MAX_HELD_INPUTS_WARMING_UP = 16_384;
/** Slots in the queue (a big file's chunks take one each) before the stage waits for the oldest one. */
const MAX_QUEUED_SLOTS = 16_384;
/** Items that may pass an open batch of small files before it is dispatched anyway (its results are then back in time). */
const MAX_ITEMS_PAST_OPEN_BATCH = 1024;

type EntryItem = Extract<BackupItem, { kind: 'entry' }>;

interface Slot {
  /** Null once settled (then `items` or `error` holds the outcome). */
  promise: Promise<unknown> | null;
  items: HashedItem[] | null;
  error: { reason: unknown } | null;
  bytes: number;
  /** Items that needed no read, gathered behind a running task: more may be added while it is the tail. */
  passThrough: boolean;
  /** Input items the slot stands for (a big file's chunks stand for none, its entry for one). */
  inputs: number;
  /** A small file's slot (its bytes are its content, read by a batch task). */
  small: boolean;
  /** Dispatches a batch still being filled, when the consumer needs it. */
  dispatch?: () => void;
}

/**
 * Takes items in batches and hands them on in batches, in the same order, each changed file's content read,
 * hashed and packed on the way. A batch is handed on before any wait, so the consumer can release frame memory
 * that later tasks need.
 */
export async function* hashContents(items: AsyncIterable<readonly BackupItem[]>, options: HasherOptions): AsyncGenerator<HashedItem[]> {
  const maxInFlight = options.maxInFlightBytes ?? 16 << 20;
  const batchBytes = options.batchBytes ?? 2 << 20;
  const batchFiles = options.batchFiles ?? 256;
  const rootBuf = Buffer.from(path.resolve(options.root));
  const queue: Slot[] = [];
  let inFlight = 0;
  let batch: {
    items: EntryItem[];
    requests: ReadRequest[];
    bytes: number;
    /** itemsTaken when the batch was opened. */
    openedAtItem: number;
    promise: Promise<TaskOutput>;
    resolve: (r: TaskOutput) => void;
    reject: (e: unknown) => void;
  } | null = null;
  let tasks = 0;
  /** Items taken from the input so far. */
  let itemsTaken = 0;
  /** Big files whose chunks are in flight: whether a read failed or saw a change, and the chunks consumed so far. */
  const running = new Map<string, { failed: boolean; changed: boolean; chunkHashes: { hash: string; size: number }[] }>();

  const absolute = (relative: Buffer): Buffer => (relative.length === 0 ? rootBuf : Buffer.concat([rootBuf, SLASH, relative]));
  const fileName = (item: EntryItem): string => displayPath(item.walked.path);

  /** Input items waiting in the queue: bounded, so a long-running task does not let the walk run far ahead. */
  let heldInputs = 0;
  /** Bytes of the small files in the queue (waiting for their task, or read and not yet taken). */
  let heldSmallBytes = 0;
  const enqueue = (slot: Slot): void => {
    queue.push(slot);
    heldInputs += slot.inputs;
  };
  const settledSlot = (items: HashedItem[], passThrough: boolean, inputs = 1): Slot => ({ promise: null, items, error: null, bytes: 0, passThrough, inputs, small: false });
  const pendingSlot = (promise: Promise<HashedItem[]>, bytes: number, inputs: number, small: boolean): Slot => {
    const slot: Slot = { promise: null, items: null, error: null, bytes, passThrough: false, inputs, small };
    slot.promise = promise.then(
      (items) => {
        slot.items = items;
        slot.promise = null;
      },
      (reason: unknown) => {
        slot.error = { reason };
        slot.promise = null;
      },
    );
    return slot;
  };

  const request = (item: EntryItem, offset: number, length: number): ReadRequest => ({
    path: absolute(item.walked.path),
    offset,
    length,
    ino: item.walked.stat.ino,
    mtimeNs: item.walked.stat.mtimeNs,
    size: Number(item.walked.stat.size),
  });

  /** Turns a failed or shrunk read into "keep the previous state", with a warning. */
  const failed = (item: EntryItem, result: Extract<ReadResult, { ok: false }>): HashedItem => {
    const code = result.vanished ? 'vanished' : result.code === 'ESHRUNK' ? 'changed-while-read' : 'unreadable';
    options.monitor.warn(code, `${fileName(item)}: ${result.message}${item.previous ? ' (keeping the previous version)' : ''}`, {
      path: fileName(item),
    });
    return { kind: 'unchanged', key: item.key };
  };

  /** The task's new members, to be written before its first item (always, even when that item failed). */
  const storedContent = (out: TaskOutput): HashedItem[] => {
    if (out.tarBytes === 0) {
      out.release();
      return [];
    }
    const members: PackMember[] = [];
    for (const result of out.results) {
      if (!result.ok || !result.stored) continue;
      if (result.storedAs) members.push(...result.storedAs);
      else members.push({ hash: result.hash, size: result.length });
    }
    return [{ kind: 'stored', content: { frames: out.frames, tarBytes: out.tarBytes, members, release: out.release } }];
  };

  const warnChanged = (item: EntryItem): void =>
    options.monitor.warn('changed-while-read', `${fileName(item)}: changed while being read; stored as read`, { path: fileName(item) });

  /** Items taken since the open batch of small files was opened (0: none is open). */
  const openBatchAge = (): number => (batch === null ? 0 : itemsTaken - batch.openedAtItem);

  /**
   * Tasks not yet dispatched, in queue order. They start in that order (and are numbered then) as the bound on
   * bytes in flight allows, so the input loop never waits for a big file's chunks to be dispatched: the walk
   * goes on, its items queued behind them, while they are read.
   */
  const jobs: Array<{ readonly bytes: number; readonly start: (task: number) => void }> = [];
  let jobsStarted = 0;

  /** Starts waiting tasks while they fit in flight; the oldest always starts when nothing is in flight. */
  const startJobs = (): void => {
    while (jobsStarted < jobs.length && (inFlight === 0 || inFlight + jobs[jobsStarted]!.bytes <= maxInFlight)) {
      const job = jobs[jobsStarted++]!;
      inFlight += job.bytes;
      job.start(++tasks);
    }
    // Started jobs are dropped from the front now and then, not one shift() each.
    if (jobsStarted === jobs.length || jobsStarted >= 1024) {
      jobs.splice(0, jobsStarted);
      jobsStarted = 0;
    }
  };
  const addJob = (bytes: number, start: (task: number) => void): void => {
    jobs.push({ bytes, start });
    startJobs();
  };

  const flushBatch = (): void => {
    if (batch === null) return;
    const current = batch;
    batch = null;
    addJob(current.bytes, (task) => options.runTask(current.requests, task).then(current.resolve, current.reject));
  };

  /** Small files share one worker task, but each keeps its own slot so that path order holds. */
  const addSmall = (item: EntryItem, size: number): void => {
    if (batch === null) batch = { items: [], requests: [], bytes: 0, ...deferred<TaskOutput>(), openedAtItem: itemsTaken };
    const position = batch.items.length;
    batch.items.push(item);
    batch.requests.push(request(item, 0, size));
    batch.bytes += size;
    heldSmallBytes += size;
    const slot = pendingSlot(
      batch.promise.then((out): HashedItem[] => {
        const result = out.results[position]!;
        const produced = position === 0 ? storedContent(out) : [];
        if (!result.ok) {
          produced.push(failed(item, result));
        } else {
          if (result.changed) warnChanged(item);
          const chunk: ContentChunk = { hash: result.hash, size: result.length };
          produced.push({ ...item, read: true, contentHash: result.hash, chunkHashes: [chunk], inlineChunk: chunk });
        }
        return produced;
      }),
      size,
      1,
      true,
    );
    slot.dispatch = flushBatch;
    enqueue(slot);
    if (batch.bytes >= batchBytes || batch.items.length >= batchFiles) flushBatch();
  };

  /** Items ready to hand on, in order. */
  let out: HashedItem[] = [];

  /** Moves the settled head slot's items to `out`, collecting big files' chunk lists on the way. */
  const takeSettledHead = (): void => {
    const slot = queue.shift()!;
    inFlight -= slot.bytes;
    heldInputs -= slot.inputs;
    if (slot.small) heldSmallBytes -= slot.bytes;
    startJobs();
    if (slot.error !== null) throw slot.error.reason;
    for (const produced of slot.items!) {
      const state = produced.kind === 'stored' ? undefined : running.get(produced.key);
      if (state && produced.kind === 'chunk') {
        state.chunkHashes.push({ hash: produced.chunk.hash, size: produced.chunk.size });
        if (!state.failed) out.push(produced);
      } else if (state && produced.kind === 'entry' && produced.read) {
        running.delete(produced.key);
        if (state.failed) {
          out.push(failed(produced, { ok: false, code: 'EIO', message: 'could not be read completely', vanished: false }));
        } else {
          if (state.changed) warnChanged(produced);
          out.push({ ...produced, contentHash: contentHash(state.chunkHashes.map((c) => c.hash)), chunkHashes: state.chunkHashes });
        }
      } else {
        out.push(produced);
      }
    }
  };

  /** Takes the head slot: hands on what is ready first, then waits for the head's task if it still runs. */
  async function* takeHead(): AsyncGenerator<HashedItem[]> {
    const slot = queue[0]!;
    if (slot.promise !== null) {
      if (out.length > 0) {
        const ready = out;
        out = [];
        yield ready;
      }
      // The head's task is the oldest not yet consumed: once its batch is closed, nothing keeps it from starting.
      slot.dispatch?.();
      await slot.promise;
    }
    takeSettledHead();
  }

  /** One task per chunk, dispatched only as the in-flight bound allows, so a big file is never read whole. */
  async function* addBig(item: EntryItem, size: number): AsyncGenerator<HashedItem[]> {
    // Tasks are dispatched in queue order, so the head task never waits for frame space held by later ones.
    flushBatch();
    const state = { failed: false, changed: false, chunkHashes: [] as { hash: string; size: number }[] };
    running.set(item.key, state);
    const known = options.knownChunks?.(item.key, item.walked.stat);
    for (let offset = 0, index = 0; offset < size; offset += options.chunkSize, index++) {
      const length = Math.min(options.chunkSize, size - offset);
      // Slots for a huge file's chunks are made as the queue drains, not all at once.
      while (queue.length >= MAX_QUEUED_SLOTS) yield* takeHead();
      const knownHash = known?.[index];
      if (knownHash !== undefined) {
        enqueue(settledSlot([{ kind: 'chunk', key: item.key, chunk: { hash: knownHash, size: length } }], false, 0));
        continue;
      }
      const rdiff = await options.chunkRdiff?.(item, index);
      const chunkRequest = rdiff ? { ...request(item, offset, length), rdiff } : request(item, offset, length);
      const task = deferred<TaskOutput>();
      addJob(length, (number) => options.runTask([chunkRequest], number).then(task.resolve, task.reject));
      const promise = task.promise.then((out): HashedItem[] => {
        const result = out.results[0]!;
        if (!result.ok) {
          state.failed = true;
          return [];
        }
        state.changed ||= result.changed;
        return [...storedContent(out), { kind: 'chunk', key: item.key, chunk: { hash: result.hash, size: length } }];
      });
      enqueue(pendingSlot(promise, length, 0, false));
    }
    // The entry follows its chunks; its content hash comes from their hashes as they are taken.
    enqueue(settledSlot([{ ...item, read: true, contentHash: '', chunkHashes: [], inlineChunk: null }], false));
  }

  let firstRead = true;
  let maxHeldInputs = MAX_HELD_INPUTS;
  /** Counts an input item taken; an open batch of small files is not held open past MAX_ITEMS_PAST_OPEN_BATCH items. */
  const taken = (): void => {
    itemsTaken++;
    if (openBatchAge() > MAX_ITEMS_PAST_OPEN_BATCH) flushBatch();
  };
  /** Whether the input must wait: too many items held behind a task still running at the head of the queue. */
  const mustWait = (): boolean => queue.length > 0 && (heldInputs > maxHeldInputs || queue.length >= MAX_QUEUED_SLOTS);

  /**
   * Takes the items that need no read from `start` on (most items of an incremental run), synchronously: they
   * go on in order behind any task still running. Returns the position of the next item to take: a file to
   * read, the batch's end, or where the input must wait (mustWait).
   */
  const passOn = (batchIn: readonly BackupItem[], start: number): number => {
    for (let i = start; i < batchIn.length; i++) {
      const item = batchIn[i]!;
      if (item.kind === 'entry' && item.read) return i;
      taken();
      if (queue.length === 0) {
        out.push(item as HashedItem); // nothing ahead of it to wait for
        continue;
      }
      const tail = queue[queue.length - 1]!;
      if (tail.passThrough) {
        tail.items!.push(item as HashedItem);
        tail.inputs++;
        heldInputs++;
      } else {
        enqueue(settledSlot([item as HashedItem], true));
      }
      while (queue.length > 0 && queue[0]!.promise === null) takeSettledHead();
      if (mustWait()) return i + 1;
    }
    return batchIn.length;
  };

  for await (const batchIn of items) {
    options.signal?.throwIfAborted();
    for (let i = 0; i < batchIn.length; ) {
      const item = batchIn[i]!;
      if (!(item.kind === 'entry' && item.read)) {
        i = passOn(batchIn, i);
      } else {
        i++;
        taken();
        // A file to read waits while a window's worth of small files wait for their tasks (items that need no read
        // go on, and so does the walk while a big file's chunks are read).
        while (queue.length > 0 && heldSmallBytes > maxInFlight) yield* takeHead();
        if (firstRead) {
          firstRead = false;
          const ready = options.onFirstRead?.();
          if (ready) {
            maxHeldInputs = MAX_HELD_INPUTS_WARMING_UP;
            // A failure surfaces in the tasks, which wait for the same promise.
            ready.then(
              () => (maxHeldInputs = MAX_HELD_INPUTS),
              () => (maxHeldInputs = MAX_HELD_INPUTS),
            );
          }
        }
        const size = Number(item.walked.stat.size);
        if (size <= options.chunkSize) addSmall(item, size);
        else yield* addBig(item, size);
      }
      // Hand over whatever is ready, and wait when too many items are held behind running tasks.
      while (queue.length > 0 && (queue[0]!.promise === null || mustWait())) yield* takeHead();
    }
    if (out.length > 0) {
      const ready = out;
      out = [];
      yield ready;
    }
  }
  flushBatch();
  while (queue.length > 0) yield* takeHead();
  if (out.length > 0) yield out;
}

const SLASH = Buffer.from('/');

/** A promise with its settling functions, for a task that starts later. */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (reason: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}
