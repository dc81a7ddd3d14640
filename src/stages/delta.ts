// Delta stage: rdiff signatures of big files' chunks, and rdiff deltas of a changed chunk against its previous version.
//
//   chunk of a big file, new content (in a hash worker)
//     ─▶ its signature: a member of the pack, and a file of the local cache named by the chunk's content hash
//     ─▶ the previous version's chunk at the same place (its base) has a cached signature, and its chain of
//        deltas is short enough ─▶ delta against it ─▶ at most half the chunk? stored instead of the chunk
//
// Deltas are per chunk: a restore rebuilds one chunk at a time from a chunk stored whole and at most
// MAX_DELTA_DEPTH deltas, never a whole file. An insertion shifts the chunks after it, and each of their
// deltas then costs the shift in literal bytes: small next to the chunks themselves.

import { createHash } from 'node:crypto';
import type { RdiffHashes } from '../formats/rdiff-checksums.js';
import { rdiffDelta } from '../formats/rdiff-delta.js';
import { parseRdiffSignature, rdiffDefaultBlockLen, rdiffSignature } from '../formats/rdiff-signature.js';
import type { Entry } from '../formats/entry.js';
import { isBlanketError } from '../formats/errors.js';
import type { Store } from '../stores/store.js';
import { readMembers } from './pack-reader.js';
import { readIndex } from './state-reader.js';
import { cacheSignature, hasCachedSignature } from './signature-cache.js';

/** Deltas between a chunk stored whole and any chunk rebuilt from it: what a restore reads, at most, for one chunk. */
export const MAX_DELTA_DEPTH = 8;
/** A delta is stored only when at most this share of its chunk (otherwise the chunk, which a restore reads faster). */
const MAX_DELTA_SHARE = 0.5;
/** Bytes kept of each block's BLAKE2b: a false match would make a delta that restores wrong content, so generous. */
const SIGNATURE_STRONG_LEN = 16;

/** The chunk a new chunk may be stored as a delta against: the previous version's chunk at the same place. */
export interface ChunkBase {
  readonly hash: string;
  /** Pack holding it (as content, or as a delta of its own). */
  readonly stem: string;
}

/** What a hash worker does for a chunk of a big file besides storing it (see ReadRequest). */
export interface ChunkRdiff {
  /** Folder of the local signature cache. */
  readonly signatureCache: string;
  readonly base?: ChunkBase;
}

/** Largest signature of a chunk of `length` bytes: what a task reserves room for. */
export function maxSignatureBytes(length: number): number {
  return 12 + Math.ceil(length / rdiffDefaultBlockLen(length)) * (4 + SIGNATURE_STRONG_LEN);
}

/** The rdiff signature of a chunk (RabinKarp + BLAKE2b, rdiff's block length for its size). */
export function signChunk(hashes: RdiffHashes, content: Uint8Array): Uint8Array {
  return rdiffSignature(hashes, content, { strongLen: SIGNATURE_STRONG_LEN });
}

/**
 * The delta of `content` against the chunk whose signature is `baseSignature`, if it is worth storing: at most
 * MAX_DELTA_SHARE of the chunk and at most `room` bytes. A damaged signature gives no delta (the chunk is stored).
 */
export function chunkDelta(hashes: RdiffHashes, baseSignature: Uint8Array, content: Uint8Array, room: number): Uint8Array | undefined {
  let signature;
  try {
    signature = parseRdiffSignature(baseSignature);
  } catch {
    return undefined;
  }
  const delta = rdiffDelta(hashes, signature, content);
  return delta.length <= Math.min(room, content.length * MAX_DELTA_SHARE) ? delta : undefined;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Fills the signature cache from the archive where it lacks a base's signature (another machine made the last
 * run, or the cache was cleared): the signature is a member of the pack that holds the base chunk. One pass per
 * file over the packs of its chunks, each pack's index and data read once, whatever the file's size.
 */
export class SignatureFetcher {
  /** Files whose bases were fetched already (or found cached): by key. */
  private readonly done = new Set<string>();
  /** Signatures fetched from the archive, for the run's summary. */
  fetched = 0;

  constructor(
    private readonly store: Store,
    private readonly cache: string,
    private readonly signal?: AbortSignal,
  ) {}

  /** Makes sure the cache holds the signature of every chunk of `previous` (those the archive has), once per file. */
  async ensure(key: string, previous: Entry): Promise<void> {
    if (this.done.has(key)) return;
    this.done.add(key);
    const missing = new Map<string, Set<string>>(); // pack stem → chunk hashes
    for (const chunk of previous.chunks) {
      if (hasCachedSignature(this.cache, chunk.hash)) continue;
      let wanted = missing.get(chunk.pack);
      if (!wanted) missing.set(chunk.pack, (wanted = new Set()));
      wanted.add(chunk.hash);
    }
    for (const [stem, chunks] of missing) {
      let members;
      try {
        members = (await readIndex(this.store, stem, this.signal, 'members')).members;
      } catch (error) {
        if (isBlanketError(error)) continue; // no signature from there: those chunks are stored whole if they changed
        throw error;
      }
      const signatures = new Map<string, string>(); // member hash → the chunk it signs
      for (const member of members) if (member.kind === 'signature' && chunks.has(member.target)) signatures.set(member.hash, member.target);
      if (signatures.size === 0) continue;
      const { members: read } = await readMembers(this.store, stem, new Set(signatures.keys()), this.signal);
      for (const [hash, bytes] of read) if (cacheSignature(this.cache, signatures.get(hash)!, bytes)) this.fetched++;
    }
  }
}
