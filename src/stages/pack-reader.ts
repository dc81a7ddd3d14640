// Reads one pack: compressed bytes → zstd frames → tar members, each checked against the SHA-256 that names it.
//
//   push(compressed) ─▶ frame splitter ─▶ decompress (a few frames at once, in order) ─▶ TarReader
//                    ─▶ member content hashed ─▶ intact: onMember(hash, parts) │ not: badMembers
//
// The decoder is fed, not pulled, so the same code serves a stream read here (verify) and bytes posted to a
// restore worker (stages/restore-worker.ts).

import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { packObjectName } from '../formats/archive-layout.js';
import { TarReader, type TarHeader } from '../formats/tar-member.js';
import { storedFrameContent, ZstdFrameSplitter } from '../formats/zstd-frames.js';
import type { Store } from '../stores/store.js';
import { decompressFrame, DEFAULT_MAX_FRAME_SIZE } from './decompressor.js';
import { collectOldGarbage, collectYoungGarbage, GarbageCounter } from './gc-hints.js';

/** Largest member a pack may hold (Blanket writes chunks of at most 4 MiB; anything much bigger is damage or hostility). */
export const MAX_MEMBER_BYTES = 64 << 20;
const MEMBER_NAME = /^[0-9a-f]{64}$/;
/** Frames decompressed at once, ahead of the tar reader, unless told otherwise. */
const FRAMES_AHEAD = 2;

export interface PackReadResult {
  /** Hashes of the members delivered intact. */
  readonly delivered: Set<string>;
  /** Members whose content did not match their name, or that were malformed. */
  readonly badMembers: string[];
  /** Why reading stopped early (missing object, corrupt compression or tar), if it did. */
  readonly error: BlanketError | null;
  readonly bytes: number;
}

export interface PackDecoderOptions {
  /** Whether a member's bytes are needed (handed to onMember). */
  wants: (hash: string) => boolean;
  /** A member's content, in the parts it was decompressed in (not joined: no copy), and its size. Awaited. */
  onMember?: (hash: string, parts: readonly Buffer[], size: number) => Promise<void> | void;
  /** Hash every member, wanted or not (verify). */
  checkAll?: boolean;
  /** How many members are wanted: once all of them are delivered, the rest of the pack is not read (unless checkAll). */
  wantedCount?: number;
  /** Frames decompressing ahead of the tar reader (default 2); each holds up to a frame of output. */
  framesAhead?: number;
}

/**
 * Decompressed content read here (and the frames behind it) is garbage outside the heap once delivered: most of
 * it dies young (a frame is parsed as soon as it is decompressed), the rest (members a slow onMember kept) old.
 */
const frameGarbage = new GarbageCounter(8 << 20, collectYoungGarbage);
const readGarbage = new GarbageCounter(64 << 20, collectOldGarbage);

/** Decodes one pack pushed in compressed chunks of any size; errors are BlanketErrors naming the pack. */
export class PackDecoder {
  readonly delivered = new Set<string>();
  readonly badMembers: string[] = [];
  /** Content bytes hashed. */
  bytes = 0;
  private readonly splitter: ZstdFrameSplitter;
  private readonly tar: TarReader;
  /** Content of the frames decompressing, in order: in parts (a frame of stored blocks is views of itself). */
  private readonly ahead: Array<Promise<Buffer[]>> = [];
  private framesSeen = 0;
  /** The member being read: its name, whether it is wanted, its hash so far and (if wanted) its parts. */
  private member: { name: string; size: number; wanted: boolean; hasher: Hash | null; parts: Buffer[] } | null = null;
  /** Members completed by the frame being read, delivered once it is parsed (onMember may be async). */
  private readonly complete: Array<{ hash: string; parts: Buffer[]; size: number }> = [];

  constructor(
    readonly objectName: string,
    private readonly options: PackDecoderOptions,
  ) {
    this.splitter = new ZstdFrameSplitter(objectName, { maxFrameSize: DEFAULT_MAX_FRAME_SIZE });
    this.tar = new TarReader(
      {
        header: (header) => this.onHeader(header),
        data: (bytes) => {
          const member = this.member!;
          member.hasher!.update(bytes);
          if (member.wanted) member.parts.push(bytes);
        },
        memberEnd: () => this.onMemberEnd(),
      },
      MAX_MEMBER_BYTES,
    );
  }

  private wantedDelivered = 0;

  /** True once nothing after this point matters (the tar's end, or every wanted member), so the caller may stop reading. */
  get finished(): boolean {
    return this.tar.finished || this.wantedDelivered === this.options.wantedCount;
  }

  async push(compressed: Buffer): Promise<void> {
    if (this.finished) return;
    let frames: Buffer[];
    try {
      frames = this.splitter.push(compressed);
    } catch (error) {
      throw this.damaged(error);
    }
    for (const frame of frames) {
      this.ahead.push(this.decompress(frame));
      if (this.ahead.length >= (this.options.framesAhead ?? FRAMES_AHEAD)) await this.parseNext();
      if (this.finished) return;
    }
  }

  /** The object is over: parses what is left, and throws if it was cut short. */
  async end(): Promise<void> {
    while (this.ahead.length > 0 && !this.finished) await this.parseNext();
    if (this.finished) return;
    try {
      this.splitter.end();
      this.tar.end();
    } catch (error) {
      throw this.damaged(error);
    }
  }

  private decompress(frame: Buffer): Promise<Buffer[]> {
    const frameNumber = ++this.framesSeen;
    // Content that did not compress is stored as is: read in place, no decoder, no copy.
    const stored = storedFrameContent(frame);
    if (stored !== null) return Promise.resolve(stored);
    const promise = decompressFrame(frame, this.objectName, frameNumber).then((data) => {
      frameGarbage.add(data.length); // a new buffer, garbage once parsed and written
      return [data];
    });
    promise.catch(() => undefined); // awaited in order later; not an unhandled rejection meanwhile
    return promise;
  }

  private async parseNext(): Promise<void> {
    const content = await this.ahead.shift()!;
    try {
      for (const data of content) this.tar.push(data);
    } catch (error) {
      throw this.damaged(error);
    }
    for (const { hash, parts, size } of this.complete.splice(0)) await this.options.onMember?.(hash, parts, size);
  }

  private onHeader(header: TarHeader): boolean {
    const name = header.name;
    if (header.type !== '0' || !MEMBER_NAME.test(name)) {
      this.badMembers.push(name.slice(0, 80));
      this.member = null;
      return false;
    }
    const wanted = this.options.wants(name);
    const hashed = wanted || this.options.checkAll === true;
    this.member = { name, size: header.size, wanted, hasher: hashed ? createHash('sha256') : null, parts: [] };
    return hashed;
  }

  private onMemberEnd(): void {
    const member = this.member;
    this.member = null;
    if (member === null || member.hasher === null) return;
    this.bytes += member.size;
    readGarbage.add(member.size);
    if (member.hasher.digest('hex') !== member.name) {
      this.badMembers.push(member.name);
      return;
    }
    if (member.wanted && !this.delivered.has(member.name)) {
      this.complete.push({ hash: member.name, parts: member.parts, size: member.size });
      if (this.options.checkAll !== true) this.wantedDelivered++;
    }
    this.delivered.add(member.name);
  }

  private damaged(error: unknown): BlanketError {
    if (isBlanketError(error)) return error;
    const reason = error instanceof Error ? error.message : String(error);
    return new BlanketError(ErrorCodes.CORRUPT_OBJECT, `pack ${this.objectName} is damaged: ${reason}`, { subject: this.objectName, cause: error });
  }
}

/** Streams pack `stem` from the store through a PackDecoder; damage is returned, not thrown. */
export async function readPack(store: Store, stem: string, options: PackDecoderOptions & { signal?: AbortSignal }): Promise<PackReadResult> {
  const name = packObjectName(stem);
  const decoder = new PackDecoder(name, options);
  let source: Readable | undefined;
  try {
    source = await store.get(name, { signal: options.signal });
    for await (const chunk of source) {
      await decoder.push(chunk as Buffer);
      if (decoder.finished) break;
    }
    await decoder.end();
    return { delivered: decoder.delivered, badMembers: decoder.badMembers, error: null, bytes: decoder.bytes };
  } catch (error) {
    const blanketError = isBlanketError(error)
      ? error
      : new BlanketError(ErrorCodes.CORRUPT_OBJECT, `pack ${name} is damaged: ${(error as Error).message}`, { subject: name, cause: error });
    return { delivered: decoder.delivered, badMembers: decoder.badMembers, error: blanketError, bytes: decoder.bytes };
  } finally {
    source?.destroy();
  }
}

