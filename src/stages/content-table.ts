// Which pack holds each stored content hash: built from the member lists of every committed index, lazily.

import type { Store } from '../stores/store.js';
import { readIndex, type Catalog } from './state-reader.js';

export class ContentTable {
  /** hash (first 32 hex digits = 128 bits) → pack stem; a 128-bit prefix keeps memory small with no practical collision risk. */
  private readonly locations = new Map<string, string>();
  private loaded = false;

  constructor(
    private readonly store: Store,
    private readonly catalog: Catalog,
  ) {}

  /** Pack stem holding `hash`, loading the archive's member lists on first use. */
  async lookup(hash: string, signal?: AbortSignal): Promise<string | undefined> {
    if (!this.loaded) await this.load(signal);
    return this.locations.get(hash.slice(0, 32));
  }

  /** Records content written in this run (its pack commits before any index refers to it). */
  add(hash: string, stem: string): void {
    this.locations.set(hash.slice(0, 32), stem);
  }

  get size(): number {
    return this.locations.size;
  }

  private async load(signal?: AbortSignal): Promise<void> {
    this.loaded = true;
    for (const ref of this.catalog.indexes) {
      const index = await readIndex(this.store, ref.stem, signal);
      if (index.header.pack === null) continue;
      for (const member of index.members) {
        const key = member.hash.slice(0, 32);
        if (!this.locations.has(key)) this.locations.set(key, index.header.pack);
      }
    }
  }
}
