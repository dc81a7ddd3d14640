// Store that sends objects down one byte stream (stdout, for `backup SRC -`), keeping a local state beside it.
//
//   put(name) ─ streamed(name)? ─ no ─▶ state store (the lock, ...)
//                └ yes ─▶ queue ─▶ records on the sink (object-stream format) ─▶ kept(name)? copy in the state
//                                                                               : marker "streamed/NAME.sSIZE"
//
// Objects go out whole and one at a time: a put with a streamed body (pack data) is written as it arrives and
// resolves once all of it is on the sink; a put of bytes in memory (an index, the header) that comes meanwhile
// waits in the queue and resolves at once, since the queue owns its bytes. Only once an object is on the sink is
// it copied into the state (or marked there), so the state, which the next run resumes from, never names an
// object the stream does not hold before it. list() and stat() show the streamed objects by their markers; their
// data is not kept, and get() of one is BLANKET_E_MISSING_OBJECT.

import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { BlanketError, ErrorCodes } from '../formats/errors.js';
import { dataRecords, newStreamId, objectBegin, objectEnd, streamFinish, streamStart } from '../formats/object-stream.js';
import { getBuffer, type GetOptions, type ObjectInfo, type PutBody, type PutOptions, type Store, type StoreCapabilities } from './store.js';

/** Where the bytes go: write() resolves once the sink took them (backpressure), rejects if it failed. */
export interface ByteSink {
  write(bytes: Uint8Array): Promise<void>;
}

export interface StreamOutOptions {
  /** Objects that go down the stream (the others live only in the state: the lock, ...). */
  readonly streamed: (name: string) => boolean;
  /** Streamed objects whose copy the state keeps (indexes, the header): what the next run needs. */
  readonly kept: (name: string) => boolean;
  /** State objects sent at the start of every stream when present (the archive header), so each stream stands alone. */
  readonly preamble?: readonly string[];
}

/** Prefix of the markers of streamed objects whose data is not kept: MARKER_PREFIX + NAME + ".s" + SIZE. */
const MARKER_PREFIX = 'streamed/';

interface QueuedObject {
  readonly name: string;
  readonly body: PutBody;
  readonly done: (error: unknown, info?: ObjectInfo) => void;
}

export class StreamOutStore implements Store {
  readonly capabilities: StoreCapabilities;
  /** Objects written to the sink, whole, by this store. */
  objectsWritten = 0;
  private readonly streamId = newStreamId();
  private started = false;
  private readonly queue: QueuedObject[] = [];
  private draining: Promise<void> | null = null;
  private failure: { error: unknown } | null = null;
  private readonly sentInThisStream = new Set<string>();

  constructor(
    private readonly state: Store,
    private readonly sink: ByteSink,
    private readonly options: StreamOutOptions,
  ) {
    this.capabilities = { atomicRename: false, parallelism: 1, checksums: [], exclusiveCreate: state.capabilities.exclusiveCreate };
  }

  get location(): string {
    return `- (stream; state in ${this.state.location})`;
  }

  put(name: string, body: PutBody, options: PutOptions = {}): Promise<ObjectInfo> {
    if (!this.options.streamed(name)) return this.state.put(name, body, options);
    if (this.failure) return Promise.reject(this.failure.error);
    // What the state keeps a copy of is small (indexes, the header): taken into memory when streamed to us.
    if (!(body instanceof Uint8Array) && this.options.kept(name)) return collect(body).then((bytes) => this.put(name, bytes, options));
    const inMemory = body instanceof Uint8Array;
    return new Promise<ObjectInfo>((resolve, reject) => {
      // Bytes in memory are owned by the queue: the caller need not wait behind the object being streamed.
      const done = inMemory ? (error: unknown): void => void (error && this.fail(error)) : (error: unknown, info?: ObjectInfo) => (error ? reject(error) : resolve(info!));
      this.queue.push({ name, body: inMemory ? Buffer.from(body) : body, done });
      if (inMemory) resolve({ name, size: body.length });
      this.drain();
    });
  }

  async putIfAbsent(name: string, body: Buffer): Promise<boolean> {
    const created = await this.state.putIfAbsent(name, body);
    // A streamed object created here (the header of a new archive) goes down the stream too, unless the preamble sends it.
    if (created && this.options.streamed(name) && !(this.options.preamble ?? []).includes(name)) await this.put(name, body);
    return created;
  }

  async get(name: string, options?: GetOptions): Promise<Readable> {
    try {
      return await this.state.get(name, options);
    } catch (error) {
      if (error instanceof BlanketError && error.code === ErrorCodes.MISSING_OBJECT && (await this.markerOf(name))) {
        throw new BlanketError(ErrorCodes.MISSING_OBJECT, `object ${name} went down the stream: only its record is kept (${this.state.location})`, { subject: name });
      }
      throw error;
    }
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    return (await this.state.stat(name)) ?? (await this.markerOf(name));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    yield* this.state.list(prefix);
    for await (const marker of this.state.list(MARKER_PREFIX + prefix)) {
      const parsed = parseMarker(marker.name);
      if (parsed !== undefined) yield parsed;
    }
  }

  async delete(name: string): Promise<void> {
    const marker = await this.markerOf(name);
    if (marker) await this.state.delete(markerName(name, marker.size));
    await this.state.delete(name);
  }

  isEmpty(): Promise<boolean> {
    return this.state.isEmpty();
  }

  cleanup(): Promise<void> {
    return this.state.cleanup();
  }

  /**
   * Writes what is queued, then the stream's finish record; rejects if the sink failed (objects not written are
   * neither in the state nor marked there, so the next run sends them).
   */
  async close(): Promise<void> {
    await this.settle();
    if (this.failure) throw this.failure.error;
    if (this.started) await this.sink.write(streamFinish(this.streamId, this.objectsWritten));
    await this.state.close?.();
  }

  /** Waits until the queue is empty (or the sink failed). */
  async settle(): Promise<void> {
    while (this.draining) await this.draining;
  }

  private drain(): void {
    this.draining ??= (async () => {
      while (this.queue.length > 0) {
        const next = this.queue.shift()!;
        if (this.failure) {
          next.done(this.failure.error);
          continue;
        }
        try {
          next.done(undefined, await this.send(next.name, next.body));
        } catch (error) {
          this.fail(error);
          next.done(error);
        }
      }
    })().finally(() => {
      this.draining = null;
    });
  }

  private fail(error: unknown): void {
    this.failure ??= { error };
  }

  /** One object on the sink, then its copy or marker in the state. */
  private async send(name: string, body: PutBody): Promise<ObjectInfo> {
    await this.start();
    // The preamble sent it already (the header of a new archive, created just before the stream started).
    const sent = body instanceof Uint8Array && this.sentInThisStream.has(name) && (this.options.preamble ?? []).includes(name);
    const info = sent ? { name, size: (body as Uint8Array).length } : await this.writeObject(name, body);
    if (this.options.kept(name)) await this.state.put(name, body as Uint8Array);
    else await this.state.put(markerName(name, info.size), Buffer.alloc(0));
    return info;
  }

  /** The stream header, then the preamble objects, once per stream. */
  private async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.sink.write(streamStart(this.streamId));
    for (const name of this.options.preamble ?? []) {
      const bytes = await getBuffer(this.state, name).catch(() => null);
      if (bytes !== null) await this.writeObject(name, bytes);
    }
  }

  private async writeObject(name: string, body: PutBody): Promise<ObjectInfo> {
    const hash = createHash('sha256');
    let size = 0;
    await this.sink.write(objectBegin(this.streamId, name));
    for await (const chunk of body instanceof Uint8Array ? [body] : body) {
      if (chunk.length === 0) continue;
      hash.update(chunk);
      size += chunk.length;
      // Each chunk is written before the next is asked for: the producer may reuse its memory afterwards.
      for (const part of dataRecords(this.streamId, chunk)) await this.sink.write(part);
    }
    await this.sink.write(objectEnd(this.streamId, size, hash.digest('hex')));
    this.objectsWritten++;
    this.sentInThisStream.add(name);
    return { name, size };
  }

  private async markerOf(name: string): Promise<ObjectInfo | undefined> {
    const slash = name.lastIndexOf('/');
    for await (const marker of this.state.list(MARKER_PREFIX + name.slice(0, slash + 1))) {
      const parsed = parseMarker(marker.name);
      if (parsed?.name === name) return parsed;
    }
    return undefined;
  }
}

async function collect(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of body) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

function markerName(name: string, size: number): string {
  return `${MARKER_PREFIX}${name}.s${size}`;
}

function parseMarker(marker: string): ObjectInfo | undefined {
  const match = /^streamed\/(.+)\.s(0|[1-9][0-9]{0,15})$/.exec(marker);
  return match ? { name: match[1]!, size: Number(match[2]) } : undefined;
}

/**
 * A sink over a Writable (stdout): each write waits for the stream to take the bytes; an error (EPIPE: the
 * reader went away) fails that write and every later one.
 */
export function writableSink(writable: NodeJS.WritableStream, what = 'stdout'): ByteSink {
  let failure: BlanketError | null = null;
  const fail = (error: Error): BlanketError =>
    (failure ??= new BlanketError(
      ErrorCodes.STORE_IO,
      `cannot write the object stream to ${what}: ${error.message}${(error as NodeJS.ErrnoException).code === 'EPIPE' ? ' (its reader went away)' : ''}; the next run sends what did not go through`,
      { subject: what, cause: error },
    ));
  writable.on('error', (error: Error) => void fail(error));
  return {
    write: (bytes) =>
      new Promise<void>((resolve, reject) => {
        if (failure) return reject(failure);
        writable.write(bytes, (error) => (error ? reject(fail(error)) : resolve()));
      }),
  };
}
