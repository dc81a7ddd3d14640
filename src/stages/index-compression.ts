// An index's text as zstd frames of about 1 MiB of text each (readers decode an index frame by frame).

import { zstdCompress } from './zstd.js';

/**
 * An index text, given in pieces, as zstd frames of about INDEX_FRAME_BYTES of text each: one frame for a
 * small index, and never a copy of a large one whole (8,192 entries are ~1.5 MiB of text).
 */
export async function compressIndexText(parts: readonly Buffer[], level: number): Promise<Buffer> {
  const groups: Buffer[] = [];
  let group: Buffer[] = [];
  let groupBytes = 0;
  const close = (): void => {
    if (group.length === 0) return;
    groups.push(group.length === 1 ? group[0]! : Buffer.concat(group, groupBytes));
    group = [];
    groupBytes = 0;
  };
  for (const part of parts) {
    group.push(part);
    groupBytes += part.length;
    if (groupBytes >= INDEX_FRAME_BYTES) close();
  }
  close();
  // The frames at once, in the libuv pool's threads: an index of several MiB compresses in a fraction of the time.
  const frames = await Promise.all(groups.map((text) => zstdCompress(text, level)));
  return frames.length === 1 ? frames[0]! : Buffer.concat(frames);
}

/** Text per zstd frame of an index (frames are independent, so readers decode an index frame by frame). */
const INDEX_FRAME_BYTES = 1 << 20;
