// Store wrapper that records every call (operation, object, range, bytes moved): for tests, and request counts.

import { Readable } from 'node:stream';
import { ForwardingStore } from './forwarding.js';
import type { GetOptions, ObjectInfo, PutBody, PutOptions, Store } from './store.js';

export type StoreOperation = 'put' | 'putIfAbsent' | 'get' | 'stat' | 'list' | 'delete' | 'isEmpty' | 'cleanup';

export interface StoreCall {
  readonly operation: StoreOperation;
  /** The object, or the prefix of a list (undefined for whole-store calls). */
  readonly name: string | undefined;
  readonly range?: { readonly start: number; readonly end: number };
  /** Bytes sent (put) or received so far (get); listed objects for a list. */
  bytes: number;
  /** Settled without an error (a get: its stream ended). */
  ok: boolean | undefined;
}

export interface RecordingOptions {
  /** Keep every call in `calls` (tests); otherwise only counts are kept, in constant memory (request counts of a run). */
  readonly keepCalls?: boolean;
}

export class RecordingStore extends ForwardingStore {
  /** Every call, in the order made (empty unless keepCalls). */
  readonly calls: StoreCall[] = [];
  /** Calls made, by kind. */
  readonly counts: Record<StoreOperation, number> = { put: 0, putIfAbsent: 0, get: 0, stat: 0, list: 0, delete: 0, isEmpty: 0, cleanup: 0 };
  private readonly keepCalls: boolean;
  private readTotal = 0;

  constructor(inner: Store, options: RecordingOptions = {}) {
    super(inner);
    this.keepCalls = options.keepCalls ?? true;
  }

  /** Calls of one kind (all kinds without an argument). */
  count(operation?: StoreOperation): number {
    return operation === undefined ? Object.values(this.counts).reduce((a, b) => a + b, 0) : this.counts[operation];
  }

  /** Object bytes received by get() calls: 0 proves a command read no object data. */
  get bytesRead(): number {
    return this.readTotal;
  }

  override put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo> {
    const call = this.record('put', name);
    return this.settle(call, this.inner.put(name, body, options)).then((info) => {
      call.bytes = info.size;
      return info;
    });
  }

  override putIfAbsent(name: string, body: Buffer): Promise<boolean> {
    const call = this.record('putIfAbsent', name);
    call.bytes = body.length;
    return this.settle(call, this.inner.putIfAbsent(name, body));
  }

  override stat(name: string): Promise<ObjectInfo | undefined> {
    return this.settle(this.record('stat', name), this.inner.stat(name));
  }

  override delete(name: string): Promise<void> {
    return this.settle(this.record('delete', name), this.inner.delete(name));
  }

  override isEmpty(): Promise<boolean> {
    return this.settle(this.record('isEmpty', undefined), this.inner.isEmpty());
  }

  override cleanup(): Promise<void> {
    return this.settle(this.record('cleanup', undefined), this.inner.cleanup());
  }

  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const call = this.record('list', prefix);
    try {
      for await (const info of this.inner.list(prefix)) {
        call.bytes++;
        yield info;
      }
      call.ok = true;
    } catch (error) {
      call.ok = false;
      throw error;
    }
  }

  override async get(name: string, options?: GetOptions): Promise<Readable> {
    const call = this.record('get', name, options?.range);
    const stream = await this.settle(call, this.inner.get(name, options));
    call.ok = undefined; // settled when the bytes have been read
    return Readable.from(counted(stream, call, (bytes) => (this.readTotal += bytes)), { objectMode: false });
  }

  private record(operation: StoreOperation, name: string | undefined, range?: { start: number; end: number }): StoreCall {
    const call: StoreCall = { operation, name, ...(range ? { range: { start: range.start, end: range.end } } : {}), bytes: 0, ok: undefined };
    this.counts[operation]++;
    if (this.keepCalls) this.calls.push(call);
    return call;
  }

  private async settle<T>(call: StoreCall, result: Promise<T>): Promise<T> {
    try {
      const value = await result;
      call.ok = true;
      return value;
    } catch (error) {
      call.ok = false;
      throw error;
    }
  }
}

/** The stream's bytes, counted into `call` as the reader takes them (a listener would set the stream flowing). */
async function* counted(stream: Readable, call: StoreCall, onBytes: (bytes: number) => void): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of stream) {
      call.bytes += (chunk as Buffer).length;
      onBytes((chunk as Buffer).length);
      yield chunk as Buffer;
    }
    call.ok = true;
  } catch (error) {
    call.ok = false;
    throw error;
  } finally {
    stream.destroy();
  }
}
