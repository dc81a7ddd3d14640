// Store wrapper that keeps at most N calls to the inner store running at once (connections to a server, say).
//
// A call holds its slot until it settles; a get() holds it until its stream ends or is destroyed, since the
// stream is what holds the connection; a list() while it is being iterated. Waiting calls start in FIFO order.

import { Readable } from 'node:stream';
import { ForwardingStore } from './forwarding.js';
import type { GetOptions, ObjectInfo, PutBody, PutOptions, Store, StoreCapabilities } from './store.js';

export class ConcurrencyLimitedStore extends ForwardingStore {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    inner: Store,
    readonly limit: number = inner.capabilities.parallelism,
  ) {
    super(inner);
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`concurrency limit must be a positive integer, not ${limit}`);
  }

  override get capabilities(): StoreCapabilities {
    return { ...this.inner.capabilities, parallelism: Math.min(this.limit, this.inner.capabilities.parallelism) };
  }

  /** Calls running now (for tests and progress). */
  get active(): number {
    return this.running;
  }

  override put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo> {
    return this.withSlot(() => this.inner.put(name, body, options));
  }

  override putIfAbsent(name: string, body: Buffer): Promise<boolean> {
    return this.withSlot(() => this.inner.putIfAbsent(name, body));
  }

  override stat(name: string): Promise<ObjectInfo | undefined> {
    return this.withSlot(() => this.inner.stat(name));
  }

  override delete(name: string): Promise<void> {
    return this.withSlot(() => this.inner.delete(name));
  }

  override isEmpty(): Promise<boolean> {
    return this.withSlot(() => this.inner.isEmpty());
  }

  override cleanup(): Promise<void> {
    return this.withSlot(() => this.inner.cleanup());
  }

  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    await this.acquire();
    try {
      yield* this.inner.list(prefix);
    } finally {
      this.release();
    }
  }

  override async get(name: string, options?: GetOptions): Promise<Readable> {
    await this.acquire();
    let stream: Readable;
    try {
      stream = await this.inner.get(name, options);
    } catch (error) {
      this.release();
      throw error;
    }
    let released = false;
    const releaseOnce = (): void => {
      if (released) return;
      released = true;
      this.release();
    };
    stream.once('close', releaseOnce);
    stream.once('end', releaseOnce);
    stream.once('error', releaseOnce);
    return stream;
  }

  private async withSlot<T>(call: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await call();
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.running < this.limit) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Hands the slot straight to the next waiter, or frees it. */
  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }
}
