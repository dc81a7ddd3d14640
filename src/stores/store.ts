// The one interface every archive store implements: opaque named objects, written whole and atomically.

import type { Readable } from 'node:stream';
import { isObjectName } from '../formats/archive-layout.js';
import { BlanketError, ErrorCodes } from '../formats/errors.js';

export interface StoreCapabilities {
  /** put() is atomic by rename (local, SFTP) rather than by a single request (S3). */
  readonly atomicRename: boolean;
  /** How many requests may usefully run at once. */
  readonly parallelism: number;
  /** Checksum kinds the store reports on stat (e.g. "md5-etag"); empty if none. */
  readonly checksums: readonly string[];
  /** putIfAbsent() is atomic (exclusive create), so it can serve as a lock. */
  readonly exclusiveCreate: boolean;
}

export interface ObjectInfo {
  readonly name: string;
  readonly size: number;
  /**
   * The checksum the store reports for the object, as KIND:VALUE (a kind of capabilities.checksums), where it
   * reports one: put(), stat() and list() report the same value for the same object.
   */
  readonly checksum?: string;
}

/** An object's bytes: whole, or as chunks pulled one at a time (a Readable is one). */
export type PutBody = Uint8Array | AsyncIterable<Uint8Array>;

export interface PutOptions {
  readonly signal?: AbortSignal;
  /** Make the object durable before put() resolves (fsync); default true. */
  readonly durable?: boolean;
}

export interface GetOptions {
  readonly signal?: AbortSignal;
  /** Inclusive start, exclusive end. */
  readonly range?: { readonly start: number; readonly end: number };
}

/** Options of openReader: a range makes no sense for reads in order. */
export type ReaderOptions = Pick<GetOptions, 'signal'>;

/** An object opened for reading in order into memory the caller owns. */
export interface ObjectReader {
  /** Reads the next bytes into `target` (up to its length); resolves to how many, 0 at the object's end. */
  read(target: Uint8Array): Promise<number>;
  close(): Promise<void>;
}

export interface Store {
  /** Where the store is, for messages (never holds secrets). */
  readonly location: string;
  readonly capabilities: StoreCapabilities;
  /**
   * Writes an object atomically: afterwards it exists whole or not at all. Replaces an existing object.
   * The chunks of an iterable body are borrowed: the store is done with a chunk when it asks for the next one
   * (or put() settles), and copies whatever it must keep longer, since the producer reuses that memory.
   */
  put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo>;
  /** Creates an object only if none exists by that name; false if one does. */
  putIfAbsent(name: string, body: Buffer): Promise<boolean>;
  /** Streams an object; rejects with BLANKET_E_MISSING_OBJECT if absent. */
  get(name: string, options?: GetOptions): Promise<Readable>;
  /**
   * Opens an object for reads into the caller's memory, where the store can do that without a buffer of its own
   * per read (a local file); rejects as get() does. Callers use openReader(store, name), which falls back to get().
   */
  openReader?(name: string, options?: ReaderOptions): Promise<ObjectReader>;
  /** Size of an object, or undefined if absent. */
  stat(name: string): Promise<ObjectInfo | undefined>;
  /** Objects whose names start with prefix, in no particular order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Deletes an object; deleting an absent object is not an error. */
  delete(name: string): Promise<void>;
  /** True when the location holds nothing at all: no object, and nothing that is not an object (foreign files) either. */
  isEmpty(): Promise<boolean>;
  /** Removes leftovers of interrupted writes (temporary files, ...). */
  cleanup(): Promise<void>;
  /** Releases connections (remote stores); the store is not used afterwards. */
  close?(): Promise<void>;
}

/** Object names are short ASCII: digits, a-z, ".", "-", "/", no empty or dot components (the archive layout's rule). */
export const isValidObjectName = isObjectName;

/** Destroys `stream` with the signal's reason when `signal` aborts (a store's get() honouring its signal). */
export function destroyOnAbort<S extends Readable>(stream: S, signal: AbortSignal | undefined): S {
  if (signal) {
    const onAbort = (): void => void stream.destroy(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    stream.once('close', () => signal.removeEventListener('abort', onAbort));
  }
  return stream;
}

/** `map` over `items`, `batch` at a time (each batch together, the batches one after another); results in order. */
export async function mapInBatches<T, R>(items: readonly T[], batch: number, map: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let at = 0; at < items.length; at += batch) results.push(...(await Promise.all(items.slice(at, at + batch).map(map))));
  return results;
}

/** Reads a whole object into memory (for small objects: headers, indexes). */
export async function getBuffer(store: Store, name: string, options?: GetOptions): Promise<Buffer> {
  const stream = await store.get(name, options);
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/** Opens an object for reads into the caller's memory: the store's own reader, or get()'s stream copied out. */
export async function openReader(store: Store, name: string, options: ReaderOptions = {}): Promise<ObjectReader> {
  if (store.openReader) return store.openReader(name, options);
  return new StreamReader(await store.get(name, options));
}

class StreamReader implements ObjectReader {
  private readonly chunks: AsyncIterator<Buffer>;
  private rest: Buffer | null = null;

  constructor(private readonly stream: Readable) {
    this.chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  async read(target: Uint8Array): Promise<number> {
    if (this.rest === null) {
      const next = await this.chunks.next();
      if (next.done === true) return 0;
      this.rest = next.value;
    }
    const rest = this.rest;
    const count = Math.min(rest.length, target.length);
    target.set(count === rest.length ? rest : rest.subarray(0, count));
    this.rest = count === rest.length ? null : rest.subarray(count);
    return count;
  }

  async close(): Promise<void> {
    this.stream.destroy();
  }
}

/**
 * A store that only reads (several copies or archives read as one): its writes fail with a usage error saying
 * why, and there is nothing of its own to clean up.
 */
export abstract class ReadOnlyStore implements Store {
  abstract readonly location: string;
  abstract readonly capabilities: StoreCapabilities;
  abstract get(name: string, options?: GetOptions): Promise<Readable>;
  abstract stat(name: string): Promise<ObjectInfo | undefined>;
  abstract list(prefix: string): AsyncIterable<ObjectInfo>;
  abstract isEmpty(): Promise<boolean>;
  /** Why nothing can be written here (the end of a sentence: "cannot write NAME: ..."). */
  protected abstract readonly readOnlyReason: string;

  async put(name: string, _body: PutBody): Promise<ObjectInfo> {
    throw this.readOnly(name);
  }

  async putIfAbsent(name: string): Promise<boolean> {
    throw this.readOnly(name);
  }

  async delete(name: string): Promise<void> {
    throw this.readOnly(name);
  }

  async cleanup(): Promise<void> {}

  private readOnly(name: string): BlanketError {
    return new BlanketError(ErrorCodes.USAGE, `cannot write ${name}: ${this.readOnlyReason}`, { subject: name });
  }
}
