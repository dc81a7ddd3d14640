// Hints to V8's garbage collector about memory outside its heap, where the process runs with --expose-gc
// (as the blanket command does); elsewhere they do nothing.
//
// Content moves through Blanket as ArrayBuffers whose bytes live outside the JS heap: zstd's output, frames
// transferred from workers, decompressed members. V8 frees such bytes only when it collects their (tiny) JS
// objects, and an object that waited in a queue for two young collections lives in the old generation, which V8
// collects only after tens of MiB of them pile up. These hints free them sooner, at a measured cost.

const gc = (globalThis as { gc?: (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void }).gc;

/** A young-generation collection now: cheap in a small heap (a worker's), frees buffers that just died. */
export function collectYoungGarbage(): void {
  gc?.({ type: 'minor' });
}

/** A full collection, marking concurrently with JS: for a large buffer that just died in the old generation. */
export function collectOldGarbage(): void {
  gc?.({ type: 'major', execution: 'async' });
}

/**
 * Counts bytes of content that became garbage; every `every` bytes asks for a collection: `collectOldGarbage`
 * (concurrent marking) for buffers that outlive young collections, `collectYoungGarbage` for ones that die young.
 */
export class GarbageCounter {
  private bytes = 0;

  constructor(
    private readonly every: number,
    private readonly collect: () => void,
  ) {}

  add(bytes: number): void {
    this.bytes += bytes;
    if (this.bytes < this.every) return;
    this.bytes = 0;
    this.collect();
  }
}
