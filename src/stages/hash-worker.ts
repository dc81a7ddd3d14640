// Worker of the hash pool: reads a batch of files (or one chunk of a big file), hashes each, and packs the
// contents not yet stored into tar members compressed as zstd frames, so content bytes never reach the main thread.
//
//   requests ─▶ read into place (after a reserved header) ─▶ SHA-256 ─▶ claim in the shared content table
//            ─▶ claimed: write the header, keep the member │ not: the next file overwrites it
//            ─▶ a big file's chunk: its signature as a member too, and maybe a delta in its place (delta.ts)
//            ─▶ tar of kept members ─▶ 1 MiB zstd frames ─▶ copied into the task's region of the frame ring
//
// Synchronous reads inside a worker avoid the thread-pool round trips that make async small-file reads slow.

import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, type BigIntStats } from 'node:fs';
import { createHash } from 'node:crypto';
import { memberTarSize, TAR_BLOCK, writeMemberHeader } from '../formats/tar-member.js';
import { NoRoomForFrameError } from '../formats/zstd-frames.js';
import { compressFramesInto, DEFAULT_BLOCK_SIZE, looksIncompressible } from './compressor.js';
import { hashWordsOfDigest, hashWordsOfHex, SharedContentSet } from './content-table.js';
import { loadRdiffHashes, type RdiffHashes } from '../formats/rdiff-checksums.js';
import type { PackMember } from '../formats/index-format.js';
import { chunkDelta, MAX_DELTA_DEPTH, maxSignatureBytes, sha256Hex, signChunk, type ChunkRdiff } from './delta.js';
import { cacheSignature, readCachedSignature } from './signature-cache.js';
import { collectYoungGarbage } from './gc-hints.js';

/** The pool also loads the content table from the archive's indexes, off the main thread (see ContentTable.load). */
export { loadMembers } from './content-table.js';

export interface ReadRequest {
  readonly path: Uint8Array;
  readonly offset: number;
  readonly length: number;
  /** What the walker saw; a mismatch after reading means the file changed while it was read. */
  readonly ino: bigint;
  readonly mtimeNs: bigint;
  readonly size: number;
  /** A chunk of a big file: sign it, and store it as a delta against its base where that pays. */
  readonly rdiff?: ChunkRdiff;
}

export type ReadResult =
  | {
      readonly ok: true;
      readonly hash: string;
      readonly length: number;
      readonly changed: boolean;
      readonly stored: boolean;
      /** The members stored for it when not just its content (a delta instead, a signature besides), in tar order. */
      readonly storedAs?: readonly PackMember[];
    }
  | { readonly ok: false; readonly code: string; readonly message: string; readonly vanished: boolean };

export interface PackTask {
  readonly requests: readonly ReadRequest[];
  /** Task number for claims: tasks are numbered in the order their first item reaches the packer. */
  readonly task: number;
  /** The content table's current buffer. */
  readonly table: SharedArrayBuffer;
  readonly level: number;
  /** The frame ring's buffer, and the region reserved for this task's frames (large enough for any outcome). */
  readonly ring: SharedArrayBuffer;
  readonly ringOffset: number;
  readonly ringLength: number;
}

export interface PackedBatch {
  readonly results: ReadResult[];
  /** Bytes of zstd frames written at the start of the task's ring region: the tar members of the results with `stored`, in order. */
  readonly framesLength: number;
  /** Tar bytes those frames hold. */
  readonly tarBytes: number;
}

/** Tar bytes of the members of `requests`, were they all stored. */
export function tarBytesOf(requests: readonly ReadRequest[]): number {
  return requests.reduce((sum, r) => sum + memberTarSize(r.length) + (r.rdiff ? memberTarSize(maxSignatureBytes(r.length)) : 0), 0);
}

let noAtime = true;

function openForRead(path: Buffer): number {
  const flags = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW;
  if (noAtime) {
    try {
      return openSync(path, flags | fsConstants.O_NOATIME);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EPERM') throw error;
      noAtime = false; // O_NOATIME needs file ownership; fall back for good
    }
  }
  return openSync(path, flags);
}

/** The file is not what the walker saw, or changed between the two fstats around the read. */
function changedWhileRead(request: ReadRequest, before: BigIntStats, after: BigIntStats): boolean {
  return before.ino !== request.ino || after.mtimeNs !== request.mtimeNs || Number(after.size) !== request.size || after.mtimeNs !== before.mtimeNs;
}

type ReadFailure = Extract<ReadResult, { ok: false }>;

function readOne(request: ReadRequest, target: Buffer, start: number): { ok: true; digest: Buffer; changed: boolean } | ReadFailure {
  let fd = -1;
  try {
    fd = openForRead(Buffer.from(request.path.buffer, request.path.byteOffset, request.path.byteLength));
    const before = fstatSync(fd, { bigint: true });
    if (!before.isFile()) return { ok: false, code: 'ENOTFILE', message: 'is no longer a regular file', vanished: true };
    let done = 0;
    while (done < request.length) {
      const n = readSync(fd, target, start + done, request.length - done, request.offset + done);
      if (n === 0) break;
      done += n;
    }
    const after = fstatSync(fd, { bigint: true });
    if (done < request.length) {
      return { ok: false, code: 'ESHRUNK', message: `shrank while being read (${done} of ${request.length} bytes)`, vanished: false };
    }
    const changed = changedWhileRead(request, before, after);
    return { ok: true, digest: createHash('sha256').update(target.subarray(start, start + request.length)).digest(), changed };
  } catch (error) {
    const err = error as NodeJS.ErrnoException;
    return { ok: false, code: err.code ?? 'EIO', message: err.message, vanished: err.code === 'ENOENT' || err.code === 'ELOOP' };
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** One content set per table buffer this worker has seen (the main thread replaces the buffer when it grows). */
let contentSet: SharedContentSet | undefined;

export default async function packBatch(task: PackTask): Promise<PackedBatch> {
  if (contentSet?.buffer !== task.table) contentSet = new SharedContentSet(task.table);
  const set = contentSet;
  const tar = takeTarBuffer(tarBytesOf(task.requests));
  try {
    return await packInto(tar, task, set);
  } finally {
    if (spareTarBuffers.length < MAX_SPARE_TAR_BUFFERS) spareTarBuffers.push(tar);
  }
}

/** What hashPiece gives back: the SHA-256 of the piece, and whether the file changed while it was read. */
export type PieceHash = { readonly ok: true; readonly hash: string; readonly changed: boolean } | ReadFailure;

/** Reads and hashes one piece of a file, storing nothing: for the read-ahead of big files (read-ahead.ts). */
export function hashPiece(request: ReadRequest): PieceHash {
  const buffer = takeTarBuffer(request.length);
  try {
    const read = readOne(request, buffer, 0);
    return read.ok ? { ok: true, hash: read.digest.toString('hex'), changed: read.changed } : read;
  } finally {
    if (spareTarBuffers.length < MAX_SPARE_TAR_BUFFERS) spareTarBuffers.push(buffer);
  }
}

/**
 * Tar buffers are reused: a new multi-MiB buffer per task would leave the worker's heap holding many dead ones
 * (their memory is outside the JS heap, which grows too little to trigger a collection).
 */
const spareTarBuffers: Buffer[] = [];
/** A batch of small files (2 MiB and their headers) or a big file's chunk (4 MiB) fits; anything larger gets its own. */
const TAR_BUFFER_SIZE = (4 << 20) + (512 << 10);
/** As many as the tasks one worker runs at once. */
const MAX_SPARE_TAR_BUFFERS = 2;

function takeTarBuffer(size: number): Buffer {
  const index = spareTarBuffers.findIndex((b) => b.length >= size);
  if (index >= 0) return spareTarBuffers.splice(index, 1)[0]!;
  return Buffer.allocUnsafeSlow(Math.max(size, TAR_BUFFER_SIZE));
}

async function packInto(tar: Buffer, task: PackTask, set: SharedContentSet): Promise<PackedBatch> {
  const results: ReadResult[] = [];
  /** Where the kept members' contents lie in the tar: [start, end) pairs, in order. */
  const contents: number[] = [];
  let end = 0;
  for (const request of task.requests) {
    // Read straight to where the member's content goes; a member not kept is overwritten by the next one.
    const read = readOne(request, tar, end + TAR_BLOCK);
    if (!read.ok) {
      results.push(read);
      continue;
    }
    const hash = read.digest.toString('hex');
    const stored = set.claim(hashWordsOfDigest(read.digest), task.task);
    if (!stored || request.rdiff === undefined) {
      results.push({ ok: true, hash, length: request.length, changed: read.changed, stored });
      if (stored) end = closeMember(tar, end, hash, request.length, contents);
      continue;
    }
    const members = deltaAndSignature(await rdiffHashes(), tar, end + TAR_BLOCK, hash, request.length, request.rdiff, set);
    results.push({ ok: true, hash, length: request.length, changed: read.changed, stored, storedAs: members.map((m) => m.member) });
    for (const { member, bytes } of members) {
      // The content is in place already; a delta or a signature goes where the member's content goes.
      if (bytes !== null) tar.set(bytes, end + TAR_BLOCK);
      end = closeMember(tar, end, member.hash, member.size, contents);
    }
  }
  const region = new Uint8Array(task.ring, task.ringOffset, task.ringLength);
  let framesLength: number;
  try {
    framesLength = await compressFramesInto(tar.subarray(0, end), region, 0, task.level, DEFAULT_BLOCK_SIZE, (start, stop) => mayStoreRaw(tar, contents, start, stop));
  } catch (error) {
    if (error instanceof NoRoomForFrameError) throw new Error(`internal error: frames of task ${task.task} exceed their ring region of ${region.length} bytes`);
    throw error;
  }
  // The binding's frame buffers are garbage now: freed at once instead of after ~64 MiB of them pile up per worker.
  collectYoungGarbage();
  return { results, framesLength, tarBytes: end };
}

/** Writes the header of the member whose `size` bytes of content follow it at `end`, and its padding: the next member's offset. */
function closeMember(tar: Buffer, end: number, name: string, size: number, contents: number[]): number {
  writeMemberHeader(tar, end, name, size);
  contents.push(end + TAR_BLOCK, end + TAR_BLOCK + size);
  const tarSize = memberTarSize(size);
  tar.fill(0, end + TAR_BLOCK + size, end + tarSize);
  return end + tarSize;
}

let loadedHashes: Promise<RdiffHashes> | undefined;

function rdiffHashes(): Promise<RdiffHashes> {
  return (loadedHashes ??= loadRdiffHashes());
}

/**
 * The members a new chunk of a big file is stored as, in tar order, each with its bytes (null: the chunk's own,
 * in place at `start`): the chunk or a delta against its base, then the chunk's signature. The signature also
 * goes to the local cache, for the next version's delta.
 */
function deltaAndSignature(
  hashes: RdiffHashes,
  tar: Buffer,
  start: number,
  hash: string,
  length: number,
  rdiff: ChunkRdiff,
  set: SharedContentSet,
): Array<{ member: PackMember; bytes: Uint8Array | null }> {
  const content = tar.subarray(start, start + length);
  const signature = signChunk(hashes, content);
  const members: Array<{ member: PackMember; bytes: Uint8Array | null }> = [];
  const base = rdiff.base;
  if (base !== undefined) {
    const chain = set.chainOf(hashWordsOfHex(base.hash)) ?? { depth: 0, bytes: 0 };
    const baseSignature = chain.depth < MAX_DELTA_DEPTH ? readCachedSignature(rdiff.signatureCache, base.hash) : undefined;
    // The chain of deltas to this chunk stays smaller than the chunk: else restoring it reads more than the chunk.
    const delta = baseSignature && chunkDelta(hashes, baseSignature, content, length - chain.bytes);
    if (delta) {
      const member: PackMember = {
        kind: 'delta',
        hash: sha256Hex(delta),
        size: delta.length,
        target: hash,
        targetSize: length,
        base: base.hash,
        baseStem: base.stem,
        depth: chain.depth + 1,
        chainBytes: chain.bytes + delta.length,
      };
      members.push({ member, bytes: delta });
    }
  }
  if (members.length === 0) members.push({ member: { hash, size: length }, bytes: null });
  members.push({ member: { kind: 'signature', hash: sha256Hex(signature), size: signature.length, target: hash }, bytes: signature });
  cacheSignature(rdiff.signatureCache, hash, signature);
  return members;
}

/**
 * Whether the tar bytes [start, stop) may be stored raw: every member content in them of 4 KiB or more looks
 * incompressible on its own, and what is left unjudged (tar headers, padding, smaller pieces) is at most 1/64
 * of them. So a block of files that are all random-looking is stored raw, and one holding any text is compressed.
 */
export function mayStoreRaw(tar: Buffer, contents: readonly number[], start: number, stop: number): boolean {
  let judged = 0;
  for (let i = 0; i < contents.length && contents[i]! < stop; i += 2) {
    const from = Math.max(contents[i]!, start);
    const to = Math.min(contents[i + 1]!, stop);
    if (to - from < MIN_JUDGED_PIECE) continue;
    // A piece that is most of the block gets the full set of samples; smaller ones (many per block) one each.
    if (!looksIncompressible(tar.subarray(from, to), to - from >= (stop - start) >>> 2 ? undefined : 1)) return false;
    judged += to - from;
  }
  return stop - start - judged <= (stop - start) >>> 6;
}

/** Smallest piece of a member's content that mayStoreRaw judges (one entropy sample). */
const MIN_JUDGED_PIECE = 4096;
