// Frame ring: shared memory that the hash workers write compressed frames into, so that the packer hands the
// store views of it instead of a new ArrayBuffer per task (whose collection cost the main thread ~1 s per GiB).
//
//   task dispatched ─▶ reserve(bound) in task order ─▶ worker writes ≤ bound bytes at region.offset
//     ─▶ packer hands a view to the store ─▶ store asks for its next chunk ─▶ release(region)
//
//   buffer:  [ free | oldest region … newest region | free ]   regions are taken at the end, wrapping to the
//   start when the end has no room; space frees from the oldest region on, whatever order regions are released.

/** Space for one task's frames. */
export interface RingRegion {
  readonly offset: number;
  readonly length: number;
}

interface Held extends RingRegion {
  released: boolean;
}

export class FrameRing {
  readonly buffer: SharedArrayBuffer;
  /** Regions in the order they were taken (oldest first). */
  private readonly held: Held[] = [];
  private readonly waiting: Array<{ length: number; grant: (region: RingRegion) => void }> = [];

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`ring capacity must be a positive integer, got ${capacity}`);
    this.buffer = new SharedArrayBuffer(capacity);
  }

  /** Bytes held by regions not yet released (and by the free space between released ones). */
  get heldBytes(): number {
    if (this.held.length === 0) return 0;
    const first = this.held[0]!;
    const last = this.held[this.held.length - 1]!;
    return last.offset >= first.offset ? last.offset + last.length - first.offset : this.capacity - first.offset + last.offset + last.length;
  }

  /** A region of `length` bytes, once there is room for it; requests are granted in the order they are made. */
  reserve(length: number, signal?: AbortSignal): Promise<RingRegion> {
    if (!Number.isInteger(length) || length < 0 || length > this.capacity) {
      return Promise.reject(new RangeError(`cannot reserve ${length} bytes in a frame ring of ${this.capacity}`));
    }
    signal?.throwIfAborted();
    const region = this.waiting.length === 0 ? this.take(length) : null;
    if (region !== null) return Promise.resolve(region);
    return new Promise<RingRegion>((resolve, reject) => {
      const onAbort = (): void => {
        const at = this.waiting.indexOf(waiter);
        if (at >= 0) this.waiting.splice(at, 1);
        reject(signal!.reason);
      };
      // The listener goes with the grant: a long run waits many times on one signal.
      const grant = (region: RingRegion): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve(region);
      };
      const waiter = { length, grant };
      this.waiting.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Gives a region back; its space is reused once every older region has been given back too. */
  release(region: RingRegion): void {
    const held = this.held.find((h) => h === region);
    if (held === undefined || held.released) throw new Error(`internal error: frame ring region at ${region.offset} released twice`);
    held.released = true;
    while (this.held.length > 0 && this.held[0]!.released) this.held.shift();
    while (this.waiting.length > 0) {
      const granted = this.take(this.waiting[0]!.length);
      if (granted === null) break;
      this.waiting.shift()!.grant(granted);
    }
  }

  /** A view of `length` bytes of a region. */
  view(region: RingRegion, length = region.length): Uint8Array {
    if (length > region.length) throw new RangeError(`${length} bytes do not fit a ring region of ${region.length}`);
    return new Uint8Array(this.buffer, region.offset, length);
  }

  private take(length: number): Held | null {
    const offset = this.freeOffset(length);
    if (offset === null) return null;
    const held: Held = { offset, length, released: false };
    this.held.push(held);
    return held;
  }

  private freeOffset(length: number): number | null {
    if (this.held.length === 0) return 0;
    const first = this.held[0]!.offset;
    const last = this.held[this.held.length - 1]!;
    const end = last.offset + last.length;
    if (last.offset >= first) {
      // Not wrapped: room after the newest region, else at the start before the oldest.
      if (end + length <= this.capacity) return end;
      return length <= first ? 0 : null;
    }
    return end + length <= first ? end : null;
  }
}
