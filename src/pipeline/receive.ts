// Receiving an object stream (`blanket receive ARCHIVE`): every archive object that arrives whole is stored.
//
//   stdin ─▶ ObjectStreamDecoder ─▶ begin ─▶ store.put(name, body fed by data events) ─▶ end: stored
//                                                                               └ lost: the put fails, no object
//
// Each stream opens with the archive header: the first one makes an empty location the archive; later ones must
// name the same archive id. A store put appears whole or not at all, so a cut or damaged stream leaves exactly the
// objects that arrived whole; a pack arrives before the index that commits it, so what is stored is consistent.

import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { classifyObjectName, decodeHeader, HEADER_OBJECT, type ArchiveHeader } from '../formats/archive-layout.js';
import { ObjectStreamDecoder, type StreamEvent } from '../formats/object-stream.js';
import { acquireLock, type HeldLock } from '../stages/archive-lock.js';
import type { Monitor } from '../stages/monitor.js';
import { readArchiveHeader } from '../stages/state-reader.js';
import type { ObjectInfo, Store } from '../stores/store.js';
import { initArchiveWith } from './archive.js';

export interface ReceiveOptions {
  readonly store: Store;
  readonly input: AsyncIterable<Uint8Array>;
  readonly monitor: Monitor;
  readonly signal?: AbortSignal;
}

export interface ReceiveResult {
  streams: number;
  /** Streams that ended without their finish record (cut). */
  truncatedStreams: number;
  objects: number;
  bytes: number;
  /** Objects that began but did not arrive whole, or were refused, and did not arrive whole later either: not stored. */
  lost: { name: string; reason: string }[];
  /** Objects lost in a cut stream that a later stream brought whole (a backup killed, then run again). */
  resent: number;
  /** Whether the last stream was cut off: whatever its writer sent after the cut did not arrive. */
  endedCut: boolean;
  /** Bytes that were no part of any record (garbage, the rest of a cut record). */
  skippedBytes: number;
  elapsedMs: number;
}

/** Largest archive header accepted (a real one is ~200 bytes). */
const MAX_HEADER_BYTES = 64 << 10;

export async function receive(options: ReceiveOptions): Promise<ReceiveResult> {
  const { store, monitor, signal } = options;
  const started = Date.now();
  monitor.emit({ type: 'started', command: 'receive', archive: store.location });
  const result: ReceiveResult = { streams: 0, truncatedStreams: 0, objects: 0, bytes: 0, lost: [], resent: 0, endedCut: false, skippedBytes: 0, elapsedMs: 0 };
  const decoder = new ObjectStreamDecoder();
  let archive: ArchiveHeader | null = await readArchiveHeader(store).catch((error: unknown) => {
    if (isBlanketError(error, ErrorCodes.NOT_AN_ARCHIVE)) return null;
    throw error;
  });
  let lock: HeldLock | null = null;
  /** Whether the current stream's header object arrived (objects before it cannot be told to be this archive's). */
  let headerSeen = false;
  let open: { name: string; body: BodyChannel | null; header: Buffer[] | null; put: Promise<ObjectInfo> | null } | null = null;
  const lose = (name: string, reason: string): void => {
    result.lost.push({ name, reason });
    monitor.warn('lost-object', `${name}: ${reason}; not stored`, { object: name });
  };

  const handle = async (event: StreamEvent): Promise<void> => {
    switch (event.type) {
      case 'stream':
        result.streams++;
        headerSeen = false;
        return;
      case 'begin': {
        const name = event.name;
        if (name === HEADER_OBJECT) {
          open = { name, body: null, header: [], put: null };
        } else if (classifyObjectName(name) === undefined) {
          lose(name, 'not an archive object name');
          open = { name, body: null, header: null, put: null };
        } else if (!headerSeen) {
          lose(name, 'its stream did not start with the archive header');
          open = { name, body: null, header: null, put: null };
        } else {
          lock ??= await acquireLock(store, 'receive', { monitor });
          const body = new BodyChannel();
          const put = lock.guard(store).put(name, body, signal ? { signal } : {});
          // A store that fails stops pulling: the decoder must not wait for it (the failure is thrown at the end).
          put.catch((error: unknown) => body.fail(error instanceof Error ? error : new Error(String(error))));
          open = { name, body, header: null, put };
        }
        return;
      }
      case 'data':
        if (open?.header) {
          open.header.push(event.bytes);
          if (open.header.reduce((sum, part) => sum + part.length, 0) > MAX_HEADER_BYTES) open.header = null;
        } else if (open?.body) {
          await open.body.push(event.bytes);
        }
        return;
      case 'end': {
        const current = open!;
        open = null;
        if (current.name === HEADER_OBJECT) {
          if (current.header === null) return lose(current.name, 'too large for an archive header');
          archive = await adoptHeader(store, archive, Buffer.concat(current.header));
          headerSeen = true;
          return;
        }
        if (current.body === null || current.put === null) return;
        current.body.end();
        const info = await current.put;
        const before = result.lost.length;
        result.lost = result.lost.filter((lost) => lost.name !== current.name);
        result.resent += before - result.lost.length;
        result.objects++;
        result.bytes += info.size;
        monitor.bytes += info.size;
        monitor.storedBytes += info.size;
        return;
      }
      case 'lost': {
        const current = open;
        open = null;
        if (current?.body && current.put) {
          current.body.fail(new BlanketError(ErrorCodes.CORRUPT_OBJECT, `${current.name}: ${event.reason}`, { subject: current.name }));
          await current.put.catch(() => undefined);
        }
        if (current?.body || current?.header) lose(event.name, event.reason);
        return;
      }
      case 'truncated':
        result.truncatedStreams++;
        result.endedCut = true;
        monitor.warn('truncated-stream', `a stream ended without its finish record (cut off) after ${event.objects} whole objects`);
        return;
      case 'skipped':
        result.skippedBytes += event.bytes;
        return;
      case 'finish':
        result.endedCut = false;
        return;
    }
  };

  const stopTicker = monitor.startTicker();
  try {
    for await (const chunk of options.input) {
      signal?.throwIfAborted();
      for (const event of decoder.push(chunk)) await handle(event);
    }
    for (const event of decoder.end()) await handle(event);
  } finally {
    stopTicker();
    const left = open as { body: BodyChannel | null; put: Promise<ObjectInfo> | null } | null;
    if (left?.body) {
      left.body.fail(new BlanketError(ErrorCodes.ABORTED, 'receive stopped'));
      await left.put?.catch(() => undefined);
    }
    await (lock as HeldLock | null)?.release();
  }
  result.elapsedMs = Date.now() - started;
  return result;
}

/** The archive after a stream's header: the first one creates the archive; later ones must be of the same archive. */
async function adoptHeader(store: Store, archive: ArchiveHeader | null, bytes: Buffer): Promise<ArchiveHeader> {
  const header = decodeHeader(bytes, `${HEADER_OBJECT} in the stream`);
  if (archive === null) return initArchiveWith(store, header);
  if (archive.id !== header.id) {
    throw new BlanketError(
      ErrorCodes.USAGE,
      `the stream is of archive ${header.id}, but ${store.location} is archive ${archive.id}: receive a stream into the archive it was made for, or into an empty location`,
      { subject: store.location },
    );
  }
  return archive;
}

/**
 * An object's body as the store pulls it: push() resolves once the store took the bytes (so the decoder reads no
 * further meanwhile); fail() makes the store's put fail, so that the object does not appear.
 */
class BodyChannel implements AsyncIterable<Uint8Array> {
  private item: { bytes: Buffer; taken: () => void } | null = null;
  private ended = false;
  private failure: Error | null = null;
  private wakeReader: (() => void) | null = null;

  push(bytes: Buffer): Promise<void> {
    return new Promise<void>((taken) => {
      this.item = { bytes, taken };
      this.wake();
    });
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  fail(error: Error): void {
    this.failure = error;
    this.item?.taken();
    this.item = null;
    this.wake();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.failure) throw this.failure;
      const item = this.item;
      if (item) {
        this.item = null;
        yield item.bytes;
        item.taken(); // the store asked for more: it is done with these bytes
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wakeReader = resolve));
      this.wakeReader = null;
    }
  }

  private wake(): void {
    this.wakeReader?.();
  }
}
