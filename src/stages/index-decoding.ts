// Index objects from their bytes: frames checked against limits, decompressed, decoded and checked against their
// names. No store needed, so a worker can do it too (content-table.ts loads members in the hash pool).

import { zstdDecompress as decompress } from './zstd.js';
import { BlanketError, ErrorCodes } from '../formats/errors.js';
import type { Entry } from '../formats/entry.js';
import { EntryLine, IndexDecoder, type IndexHeader, type IndexParts, type PackIndex } from '../formats/index-format.js';
import { ZstdFrameSplitter } from '../formats/zstd-frames.js';
import { indexObjectName, parseIndexStem } from '../formats/archive-layout.js';

/** Largest compressed index object read; indexes are capped well below this by the packer. */
const MAX_INDEX_OBJECT_BYTES = 256 << 20;
/** Largest index text accepted once decompressed (a tiny zstd bomb could otherwise expand to gigabytes). */
const MAX_INDEX_TEXT_BYTES = 256 << 20;
/** Text per zstd frame of an index: the packer writes ~1 MiB frames, so a much larger one is damage (or a bomb). */
export const MAX_INDEX_FRAME_BYTES = 16 << 20;

/**
 * What a state read with `records` yields per path: an Entry, or an EntryLine not yet parsed (see IndexDecoder's
 * 'records' reads), for the change detector, which parses only the lines of paths that changed.
 */
export type StateRecord = Entry | EntryLine;

/**
 * How a cursor reads its indexes: 'entries' parses every E line; 'records' keeps E lines as EntryLines (see
 * StateRecord); 'history' as well, with the H lines (members) parsed for onIndex. The state needs no H lines.
 */
export type CursorParts = 'entries' | 'records' | 'history';

/** Decompresses and checks the bytes of index object `stem` (see readIndex): no store needed, so a worker can do it. */
export async function decodeIndexObject(stem: string, compressed: Buffer, parts: Exclude<IndexParts, 'records'> = 'all'): Promise<PackIndex> {
  return checkedIndex(stem, (await feedDecoder(stem, compressed, parts)).end());
}

/** An index object's bytes, decoded (`parts`: see CursorParts) and checked; `firstText`: its first frame, decompressed ahead. */
export async function decodeCursorIndex(stem: string, compressed: Buffer, parts: CursorParts, firstText: Buffer | null): Promise<PackIndex<StateRecord>> {
  const decoder = await feedDecoder(stem, compressed, parts, firstText);
  return checkedIndex(stem, parts === 'entries' ? decoder.end() : decoder.endRecords());
}

/** The frames of index object `stem`, each checked against the limit (from its header and block sizes). */
export function indexFrames(stem: string, compressed: Buffer): Buffer[] {
  const name = indexObjectName(stem);
  if (compressed.length > MAX_INDEX_OBJECT_BYTES) {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `index ${name} is implausibly large (${compressed.length} bytes)`, { subject: name });
  }
  const splitter = new ZstdFrameSplitter(name, { maxFrameSize: MAX_INDEX_FRAME_BYTES });
  const frames = splitter.push(compressed);
  splitter.end();
  return frames;
}

/**
 * A decoder fed the whole text of index object `stem`, frame by frame (`firstText`: the first frame's, when it
 * was decompressed ahead).
 */
async function feedDecoder(stem: string, compressed: Buffer, parts: IndexParts, firstText: Buffer | null = null): Promise<IndexDecoder> {
  const name = indexObjectName(stem);
  // Frame by frame, each frame checked against the limit before it is decompressed, the text fed to the decoder
  // as it comes: a zstd bomb is an error here, not a memory blow-up.
  const frames = indexFrames(stem, compressed);
  const decoder = new IndexDecoder(name, parts);
  let textBytes = 0;
  for (const [position, frame] of frames.entries()) {
    let text: Buffer;
    try {
      text = position === 0 && firstText !== null ? firstText : await decompress(frame);
    } catch (cause) {
      throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `index ${name} is not valid zstd data: ${(cause as Error).message}`, {
        subject: name,
        cause,
      });
    }
    textBytes += text.length;
    if (textBytes > MAX_INDEX_TEXT_BYTES) {
      throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `index ${name} decompresses to more than ${MAX_INDEX_TEXT_BYTES} bytes`, { subject: name });
    }
    // Fed as it comes, so that a bad frame (a bomb's line without end) fails before the next is decompressed.
    decoder.push(text);
  }
  return decoder;
}

/** `index`, if its header names the object it was read from (see checkedHeader). */
function checkedIndex<E>(stem: string, index: PackIndex<E>): PackIndex<E> {
  checkedHeader(stem, index.header);
  return index;
}

/** `header`, if it names index object `stem` (a base index's stem names a base index); else CORRUPT_OBJECT naming it. */
export function checkedHeader(stem: string, header: IndexHeader): IndexHeader {
  const id = parseIndexStem(stem);
  const { layer, seq, base } = header;
  if (id === undefined || layer !== id.layer || seq !== id.seq || (base === true) !== id.base) {
    const name = indexObjectName(stem);
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `index ${name} claims to be layer ${layer} ${base ? 'base index' : 'pack'} ${seq}`, {
      subject: name,
    });
  }
  return header;
}
