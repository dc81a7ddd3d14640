// Base of the store wrappers (retry, concurrency limit, faults, recording): every call passed to an inner store.
// No openReader: reads go through get(), so a wrapper sees every byte it watches or alters.

import type { Readable } from 'node:stream';
import type { GetOptions, ObjectInfo, PutBody, PutOptions, Store, StoreCapabilities } from './store.js';

export class ForwardingStore implements Store {
  constructor(protected readonly inner: Store) {}

  get location(): string {
    return this.inner.location;
  }

  get capabilities(): StoreCapabilities {
    return this.inner.capabilities;
  }

  put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo> {
    return this.inner.put(name, body, options);
  }

  putIfAbsent(name: string, body: Buffer): Promise<boolean> {
    return this.inner.putIfAbsent(name, body);
  }

  get(name: string, options?: GetOptions): Promise<Readable> {
    return this.inner.get(name, options);
  }

  stat(name: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(name);
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }

  delete(name: string): Promise<void> {
    return this.inner.delete(name);
  }

  isEmpty(): Promise<boolean> {
    return this.inner.isEmpty();
  }

  cleanup(): Promise<void> {
    return this.inner.cleanup();
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }

}
