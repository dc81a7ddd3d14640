// Reads one pack: store object → zstd frames → tar members, each checked against the SHA-256 that names it.

import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import tarStream from 'tar-stream';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { packObjectName } from '../formats/archive-layout.js';
import type { Store } from '../stores/store.js';
import { createDecompressor, DEFAULT_MAX_FRAME_SIZE } from './decompressor.js';
import { OldGarbageCounter } from './gc-hints.js';

/** Largest member a pack may hold (Blanket writes chunks of at most 4 MiB; anything much bigger is damage or hostility). */
export const MAX_MEMBER_BYTES = 64 << 20;
const MEMBER_NAME = /^[0-9a-f]{64}$/;
/**
 * Decompressed bytes a pack may hold beyond what its member headers account for: the tar's end blocks, plus data
 * in flight between the decompressor and the tar parser (a few frames). Anything more is no tar Blanket wrote
 * (zero blocks, which tar readers skip, are what a zstd bomb expands to): stop instead of reading gigabytes.
 */
const MAX_UNACCOUNTED_BYTES = 4 * DEFAULT_MAX_FRAME_SIZE;

export interface PackReadResult {
  /** Hashes of the members delivered intact. */
  readonly delivered: Set<string>;
  /** Members whose content did not match their name, or that were malformed. */
  readonly badMembers: string[];
  /** Why reading stopped early (missing object, corrupt compression or tar), if it did. */
  readonly error: BlanketError | null;
  readonly bytes: number;
}

/** Decompressed content read here (and the frames behind it) is garbage outside the heap once delivered. */
const readGarbage = new OldGarbageCounter(64 << 20);

/**
 * Streams the members of pack `stem`. `wants(hash)` says whether a member's bytes are needed; those are read,
 * hashed and handed to `onMember` (awaited, for backpressure). Others are hashed only when `checkAll` is set.
 */
export async function readPack(
  store: Store,
  stem: string,
  options: {
    wants: (hash: string) => boolean;
    /** A member's content, in the parts it was decompressed in (not joined: no copy), and its size. */
    onMember?: (hash: string, parts: readonly Buffer[], size: number) => Promise<void> | void;
    checkAll?: boolean;
    signal?: AbortSignal;
  },
): Promise<PackReadResult> {
  const name = packObjectName(stem);
  const delivered = new Set<string>();
  const badMembers: string[] = [];
  let bytes = 0;
  let source: import('node:stream').Readable | undefined;
  try {
    source = await store.get(name, { signal: options.signal });
    const decompressor = createDecompressor({ objectName: name, signal: options.signal });
    const extract = tarStream.extract();
    let passed = 0;
    let accounted = 0;
    const guard = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        passed += chunk.length;
        if (passed - accounted <= MAX_UNACCOUNTED_BYTES) return callback(null, chunk);
        const message = `pack ${name} is damaged: more than ${MAX_UNACCOUNTED_BYTES} bytes of data outside any member`;
        callback(new BlanketError(ErrorCodes.CORRUPT_OBJECT, message, { subject: name }));
      },
    });
    source.on('error', (error) => decompressor.destroy(error));
    decompressor.on('error', (error) => guard.destroy(error));
    guard.on('error', (error) => extract.destroy(error));
    source.pipe(decompressor).pipe(guard).pipe(extract as unknown as NodeJS.WritableStream);
    for await (const member of extract) {
      const header = member.header;
      const hash = header.name;
      accounted += 512 + Math.ceil((header.size ?? 0) / 512) * 512;
      if (header.size !== undefined && header.size > MAX_MEMBER_BYTES) {
        // Not one damaged member: a size field no Blanket pack holds (and after a wrong size, nothing lines up).
        const message = `pack ${name} is damaged: member ${JSON.stringify(hash.slice(0, 80))} declares ${header.size} bytes, more than any member holds`;
        throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, message, { subject: name });
      }
      const wanted = MEMBER_NAME.test(hash) && options.wants(hash);
      if (header.type !== 'file' || !MEMBER_NAME.test(hash) || header.size === undefined) {
        badMembers.push(hash.slice(0, 80));
        member.resume();
        continue;
      }
      if (!wanted && !options.checkAll) {
        member.resume();
        continue;
      }
      const hasher = createHash('sha256');
      const parts: Buffer[] = [];
      for await (const part of member) {
        hasher.update(part as Buffer);
        if (wanted) parts.push(part as Buffer);
      }
      bytes += header.size;
      readGarbage.add(header.size);
      if (hasher.digest('hex') !== hash) {
        badMembers.push(hash);
        continue;
      }
      delivered.add(hash);
      if (wanted && options.onMember) await options.onMember(hash, parts, header.size);
    }
    return { delivered, badMembers, error: null, bytes };
  } catch (error) {
    source?.destroy();
    const blanketError = isBlanketError(error)
      ? error
      : new BlanketError(ErrorCodes.CORRUPT_OBJECT, `pack ${name} is damaged: ${(error as Error).message}`, { subject: name, cause: error });
    return { delivered, badMembers, error: blanketError, bytes };
  }
}
