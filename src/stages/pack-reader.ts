// Reads one pack: compressed bytes → zstd frames → tar members, each checked against the SHA-256 that names it.
//
//   push(compressed) ─▶ frame splitter ─▶ decompress (a few frames at once, in order) ─▶ TarReader
//                    ─▶ member content hashed ─▶ sink.content(parts) at each frame's end … sink.end(intact)
//
// The decoder is fed, not pulled, so the same code serves a stream read here (verify) and bytes posted to a
// restore worker (stages/restore-worker.ts). A wanted member's bytes go to the sink as each frame is parsed,
// before the member's hash can be checked, so no buffer outlives its frame: everything the decoder allocates
// dies young, and a worker's memory stays flat without full garbage collections. The sink learns at the
// member's end whether what it got was intact.

import * as nodeCrypto from 'node:crypto';
import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { packObjectName } from '../formats/archive-layout.js';
import { TarReader, type TarHeader } from '../formats/tar-member.js';
import { storedFrameContent, ZstdFrameSplitter } from '../formats/zstd-frames.js';
import type { Store } from '../stores/store.js';
import { decompressFrame, DEFAULT_MAX_FRAME_SIZE } from './decompressor.js';
import { collectYoungGarbage, GarbageCounter } from './gc-hints.js';

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

/**
 * Where wanted members' bytes go, in the parts they were decompressed in (not joined: no copy). The parts are
 * views of the decoder's buffers, valid only during the call.
 */
export interface MemberSink {
  /** Content of a wanted member of `size` bytes that continues in a later frame, not yet checked against its name. */
  content(hash: string, parts: readonly Buffer[], size: number): void;
  /**
   * The member's last content (all of it, if content() was not called) and whether everything given for it
   * matched its name. If not, the sink must discard what it got: the member is in badMembers, not delivered.
   */
  end(hash: string, parts: readonly Buffer[], size: number, intact: boolean): void;
}

export interface PackDecoderOptions {
  /** Whether a member's bytes are needed (handed to the sink). */
  wants: (hash: string) => boolean;
  sink?: MemberSink;
  /** Hash every member, wanted or not (verify). */
  checkAll?: boolean;
  /** How many members are wanted: once all of them are delivered, the rest of the pack is not read (unless checkAll). */
  wantedCount?: number;
  /**
   * Frames decompressing ahead of the tar reader (default 2); each holds up to a frame of output. At 1, every
   * frame is parsed, and its wanted bytes handed to the sink, before push() returns: no buffer the decoder
   * allocated outlives its frame, and a pushed chunk is not needed after the next push() returns.
   */
  framesAhead?: number;
}

/**
 * zstd's output is garbage outside the heap once parsed, which is as soon as it is decompressed: it dies young,
 * and a young collection frees it.
 */
const frameGarbage = new GarbageCounter(8 << 20, collectYoungGarbage);

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
  private readonly framesAhead: number;
  /** Where frames that span chunks are joined, when frames are parsed one at a time. */
  private joined = Buffer.alloc(0);
  /**
   * The member being read: its name, whether it is wanted and hashed, its hash so far (started only for a member
   * of several pieces: one piece, most members, is hashed in one call at its end, as `single`), and (if wanted)
   * its parts in this frame.
   */
  private member: { name: string; size: number; wanted: boolean; hashed: boolean; hasher: Hash | null; single: Buffer | null; parts: Buffer[] } | null =
    null;

  constructor(
    readonly objectName: string,
    private readonly options: PackDecoderOptions,
  ) {
    this.framesAhead = options.framesAhead ?? FRAMES_AHEAD;
    this.splitter = new ZstdFrameSplitter(objectName, { maxFrameSize: DEFAULT_MAX_FRAME_SIZE });
    this.tar = new TarReader(
      {
        header: (header) => this.onHeader(header),
        data: (bytes) => {
          const member = this.member!;
          if (member.hasher === null && member.single === null) member.single = bytes;
          else hasherOf(member).update(bytes);
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
    let frames: Buffer[][];
    try {
      frames = this.splitter.pushParts(compressed);
    } catch (error) {
      throw this.damaged(error);
    }
    for (const parts of frames) {
      this.ahead.push(this.decompress(parts.length === 1 ? parts[0]! : this.join(parts)));
      if (this.ahead.length >= this.framesAhead) await this.parseNext();
      if (this.finished) return;
    }
  }

  /**
   * A frame that spans pushed chunks, in one piece. Chunks that lie one after another in the same memory (pieces
   * of a ring) make a frame that is a view of it. Otherwise, parsing one frame at a time, the decoder is done
   * with a frame before the next one comes, so they take turns in one buffer of its own: no allocation per frame.
   */
  private join(parts: readonly Buffer[]): Buffer {
    const size = parts.reduce((sum, part) => sum + part.length, 0);
    const first = parts[0]!;
    if (parts.every((part, i) => i === 0 || (part.buffer === first.buffer && part.byteOffset === parts[i - 1]!.byteOffset + parts[i - 1]!.length))) {
      return Buffer.from(first.buffer, first.byteOffset, size);
    }
    if (this.framesAhead !== 1) return Buffer.concat(parts);
    if (this.joined.length < size) this.joined = Buffer.allocUnsafeSlow(size);
    let at = 0;
    for (const part of parts) at += part.copy(this.joined, at);
    return this.joined.subarray(0, size);
  }

  /**
   * Bytes of pushed chunks the decoder still refers to (a frame begun and not finished): with framesAhead 1,
   * everything pushed before them may be reused once push() resolves.
   */
  get heldBytes(): number {
    return this.splitter.heldBytes;
  }

  /** Copies the unfinished frame's bytes, so that every pushed chunk may be reused (heldBytes 0). */
  copyHeld(): void {
    this.splitter.copyHeld();
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
    // The member goes on in the next frame: its bytes so far go now, so that this frame's buffers can die.
    const member = this.member;
    if (member !== null && member.single !== null) hasherOf(member);
    if (member !== null && member.wanted && member.parts.length > 0) {
      this.options.sink?.content(member.name, member.parts, member.size);
      member.parts = [];
    }
  }

  private onHeader(header: TarHeader): boolean {
    const name = header.name;
    if (header.type !== '0' || !MEMBER_NAME.test(name)) {
      this.badMembers.push(name.slice(0, 80));
      this.member = null;
      return false;
    }
    const wanted = !this.delivered.has(name) && this.options.wants(name);
    const hashed = wanted || this.options.checkAll === true;
    this.member = { name, size: header.size, wanted, hashed, hasher: null, single: null, parts: [] };
    return hashed;
  }

  private onMemberEnd(): void {
    const member = this.member;
    this.member = null;
    if (member === null || !member.hashed) return;
    this.bytes += member.size;
    const digest = member.hasher !== null ? member.hasher.digest('hex') : sha256Hex(member.single ?? EMPTY);
    const intact = digest === member.name;
    if (member.wanted) this.options.sink?.end(member.name, member.parts, member.size, intact);
    if (!intact) {
      this.badMembers.push(member.name);
      return;
    }
    if (member.wanted && this.options.checkAll !== true) this.wantedDelivered++;
    this.delivered.add(member.name);
  }

  private damaged(error: unknown): BlanketError {
    if (isBlanketError(error)) return error;
    const reason = error instanceof Error ? error.message : String(error);
    return new BlanketError(ErrorCodes.CORRUPT_OBJECT, `pack ${this.objectName} is damaged: ${reason}`, { subject: this.objectName, cause: error });
  }
}

const EMPTY = Buffer.alloc(0);

/** The member's Hash, started now (with its one piece so far, whose buffer is about to be reused) if not yet. */
function hasherOf(member: { hasher: Hash | null; single: Buffer | null }): Hash {
  if (member.hasher === null) {
    member.hasher = createHash('sha256');
    if (member.single !== null) member.hasher.update(member.single);
    member.single = null;
  }
  return member.hasher;
}

/** SHA-256 of one buffer in one call (crypto.hash, Node 20.12+: no Hash object), as hex. */
const sha256Hex: (data: Buffer) => string =
  typeof nodeCrypto.hash === 'function'
    ? (data) => nodeCrypto.hash('sha256', data, 'hex')
    : (data) => createHash('sha256').update(data).digest('hex');

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


/**
 * The members `wanted` of pack `stem`, each whole in memory and checked against its name (a member that is
 * missing or damaged is absent from the result; the read's outcome says why). For small members only:
 * signatures, deltas, chunks being rebuilt.
 */
export async function readMembers(
  store: Store,
  stem: string,
  wanted: ReadonlySet<string>,
  signal?: AbortSignal,
): Promise<{ members: Map<string, Buffer>; read: PackReadResult }> {
  const members = new Map<string, Buffer>();
  const parts = new Map<string, Buffer[]>();
  const copies = (pieces: readonly Buffer[]): Buffer[] => pieces.map((piece) => Buffer.from(piece)); // views of the decoder's buffers
  const read = await readPack(store, stem, {
    wants: (hash) => wanted.has(hash),
    wantedCount: wanted.size,
    sink: {
      content: (hash, pieces) => void (parts.get(hash) ?? parts.set(hash, []).get(hash)!).push(...copies(pieces)),
      end: (hash, pieces, _size, intact) => {
        const bytes = Buffer.concat([...(parts.get(hash) ?? []), ...copies(pieces)]);
        parts.delete(hash);
        if (intact) members.set(hash, bytes);
      },
    },
    ...(signal ? { signal } : {}),
  });
  return { members, read };
}
