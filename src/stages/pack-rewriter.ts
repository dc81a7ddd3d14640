// Pack rewriter (gc): rewrites a pack of a collected layer, under the same name, into one of only the members kept layers need.
//
//   index'  the kept members' H lines; packsize NEW; replaces OLD (the old data object holds them all too)   put
//   data'   a tar of the kept members, in their order, as zstd frames                                      put (whole or not at all)
//   index'' the same without `replaces`, with the checksum the store reported for data'                   put
//
// At every moment the index lists only members the data object holds, so a backup can never come to refer to
// a member that is gone; a rewrite stopped after index' leaves either data object, both valid for it. The pack
// keeps its name, so every entry and delta that refers to it stays valid. Only a collected layer's pack is
// rewritten: its index's S and E lines are read by nobody, so index' has none.

import { BlanketError, ErrorCodes } from '../formats/errors.js';
import { indexObjectName, packObjectName } from '../formats/archive-layout.js';
import { IndexEncoder, type PackMember } from '../formats/index-format.js';
import { END_OF_TAR_SIZE, memberTarSize, TAR_BLOCK, writeMemberHeader } from '../formats/tar-member.js';
import type { Store } from '../stores/store.js';
import { compressIndexText } from './index-compression.js';
import { readMembers } from './pack-reader.js';
import { readIndex } from './state-reader.js';
import { zstdCompress } from './zstd.js';

/** Tar bytes per zstd frame (as the packer writes them: readers take frames of any size up to this and more). */
const FRAME_TAR_BYTES = 1 << 20;

export interface RewriteOptions {
  /** The data object's size now (as listed). */
  readonly currentBytes: number;
  readonly compressionLevel: number;
  readonly signal?: AbortSignal;
}

export interface RewriteResult {
  readonly members: number;
  readonly keptMembers: number;
  /** Bytes read (the kept members' part of the old data object, at most all of it) and written (data' and indexes). */
  readonly readBytes: number;
  readonly writtenBytes: number;
  readonly newBytes: number;
}

/** Rewrites pack `stem` to hold only the members `keep` accepts (at least one; a pack with none is deleted instead). */
export async function rewritePack(store: Store, stem: string, keep: (member: PackMember) => boolean, options: RewriteOptions): Promise<RewriteResult> {
  const { signal } = options;
  const index = await readIndex(store, stem, signal, 'members');
  const header = index.header;
  const kept = index.members.filter(keep);
  if (kept.length === 0 || header.pack === null) throw new RangeError(`pack ${stem}: nothing to rewrite into`);
  const { members: bytes, read } = await readMembers(store, stem, new Set(kept.map((m) => m.hash)), signal);
  const missing = kept.find((m) => !bytes.has(m.hash));
  if (missing !== undefined) {
    // Damage found on the way: nothing was written yet, so the pack stays as it was.
    throw new BlanketError(
      ErrorCodes.DAMAGED_ARCHIVE,
      `${packObjectName(stem)} does not hold member ${missing.hash} that its index lists${read.error ? ` (${read.error.message})` : ''}: gc leaves it as it is`,
      { subject: packObjectName(stem) },
    );
  }
  const frames: Buffer[] = [];
  let staged = Buffer.alloc(FRAME_TAR_BYTES);
  let at = 0;
  const flush = async (): Promise<void> => {
    if (at === 0) return;
    frames.push(await zstdCompress(staged.subarray(0, at), options.compressionLevel));
    staged = Buffer.alloc(FRAME_TAR_BYTES);
    at = 0;
  };
  const append = async (piece: Uint8Array): Promise<void> => {
    for (let from = 0; from < piece.length; ) {
      const n = Math.min(piece.length - from, FRAME_TAR_BYTES - at);
      staged.set(piece.subarray(from, from + n), at);
      at += n;
      from += n;
      if (at === FRAME_TAR_BYTES) await flush();
    }
  };
  for (const member of kept) {
    signal?.throwIfAborted();
    const content = bytes.get(member.hash)!;
    const head = Buffer.alloc(TAR_BLOCK);
    writeMemberHeader(head, 0, member.hash, content.length);
    await append(head);
    await append(content);
    await append(Buffer.alloc(memberTarSize(content.length) - TAR_BLOCK - content.length));
    bytes.delete(member.hash);
  }
  await append(Buffer.alloc(END_OF_TAR_SIZE));
  await flush();
  const data = Buffer.concat(frames);
  const indexText = async (final: { packChecksum?: string } | null): Promise<Buffer> => {
    const encoder = new IndexEncoder();
    for (const member of kept) encoder.addMember(member);
    const { packChecksum: _old, replacesSize: _replaces, ...rest } = header;
    return compressIndexText(
      encoder.finishParts({ ...rest, packSize: data.length, ...(final === null ? { replacesSize: options.currentBytes } : final) }),
      options.compressionLevel,
    );
  };
  const first = await indexText(null);
  await store.put(indexObjectName(stem), first, { signal });
  const written = await store.put(packObjectName(stem), data, { signal });
  const last = await indexText(written.checksum !== undefined ? { packChecksum: written.checksum } : {});
  await store.put(indexObjectName(stem), last, { signal });
  return {
    members: index.members.length,
    keptMembers: kept.length,
    readBytes: read.bytes,
    writtenBytes: first.length + data.length + last.length,
    newBytes: data.length,
  };
}
