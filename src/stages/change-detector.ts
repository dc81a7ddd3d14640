// Change detection: a streaming merge-join of the walk against the previous state, both in path order.
//
//   walk:  a  b  c     e  f          (keys > clock pointer)
//   prev:  a  b     d  e  f  g
//   out:   a? b? c+ d- e? f? g-      (+ new, - deleted, ? compare stat: unchanged keeps, otherwise read)
//
// A file is unchanged when size, mtime (ns), ctime and inode all match: it is not read (unless its previous
// content is in a pack missing from the archive). Paths under a directory that could not be listed keep their
// previous state ("unchanged"), never count as deleted: the walk says so on the directory's entry
// (contentsUnknown), or, when that entry went out earlier or was before the clock pointer, with an UnlistedContents.

import type { Entry } from '../formats/entry.js';
import { keyToContentsPrefix } from '../formats/path-key.js';
import type { FileStamp } from '../formats/index-format.js';
import { isUnlisted, type EntryStat, type WalkedEntry, type WalkItem } from './walker.js';

export type BackupItem =
  /** Keep the previous state of this key (nothing to write). */
  | { readonly kind: 'unchanged'; readonly key: string }
  /** The key existed before and is gone now. */
  | { readonly kind: 'deleted'; readonly key: string; readonly previous: Entry }
  /** The key exists; `read` says its content must be read and hashed. */
  | { readonly kind: 'entry'; readonly key: string; readonly walked: WalkedEntry; readonly previous: Entry | null; readonly read: boolean };

export interface ChangeDetectorOptions {
  /** Re-read every file, even when its stat says unchanged. */
  readonly paranoid?: boolean;
  /**
   * Whether a pack's data object is in the archive. A file whose previous content is in a missing pack is read
   * again, though its stat says unchanged, so that the new layer stores it instead of referring to lost data.
   */
  readonly packExists?: (stem: string) => boolean;
  /** Called once for each missing pack that the previous state refers to. */
  readonly onMissingPack?: (stem: string) => void;
}

/** Whether an lstat still shows the file a record describes: size, mtime (ns), ctime and inode all match. */
export function matchesStamp(st: EntryStat, stamp: Pick<FileStamp, 'size' | 'mtimeNs' | 'ctimeNs' | 'ino'>): boolean {
  return Number(st.size) === stamp.size && st.mtimeNs === stamp.mtimeNs && st.ctimeNs === stamp.ctimeNs && st.ino === stamp.ino;
}

export function statUnchanged(walked: WalkedEntry, previous: Entry): boolean {
  return previous.kind === 'file' && walked.stat.isFile() && matchesStamp(walked.stat, previous);
}

/**
 * Joins the walk with the previous state, both in batches (see walkBatches, readStateBatches) and in key order,
 * starting after the same clock pointer. Yields one batch of items per batch of the walk (and the deletions
 * after its end), so that a batch costs one promise, not one per entry.
 */
export async function* detectChanges(
  walk: AsyncIterable<readonly WalkItem[]>,
  previousState: AsyncIterable<readonly Entry[]>,
  options: ChangeDetectorOptions = {},
): AsyncGenerator<BackupItem[]> {
  const previous = previousState[Symbol.asyncIterator]();
  let batch: readonly Entry[] = [];
  let position = -1;
  let prev: Entry | undefined;
  /** The next previous entry: from the batch at hand without a promise, or from the next batch. */
  const advance = (): Promise<void> | undefined => {
    if (++position < batch.length) {
      prev = batch[position];
      return undefined;
    }
    return (async () => {
      for (;;) {
        const next = await previous.next();
        if (next.done) {
          prev = undefined;
          return;
        }
        batch = next.value;
        position = 0;
        if (batch.length > 0) {
          prev = batch[0];
          return;
        }
      }
    })();
  };
  await advance();
  const packExists = options.packExists;
  const paranoid = options.paranoid === true;
  const reported = new Set<string>();
  /** Whether some chunk of `entry` is in a missing pack (reported once per pack). */
  const lostContent = (entry: Entry): boolean => {
    let lost = false;
    for (const chunk of entry.chunks) {
      if (packExists!(chunk.pack)) continue;
      lost = true;
      if (!reported.has(chunk.pack)) {
        reported.add(chunk.pack);
        options.onMissingPack?.(chunk.pack);
      }
    }
    return lost;
  };
  /** Contents prefixes of directories that could not be listed: what the state holds below them is kept. */
  let keepPrefixes: string[] = [];

  /** A previous entry the walk did not meet: deleted, or kept below a directory that could not be listed. */
  const gone = (entry: Entry): BackupItem =>
    keepPrefixes.some((p) => entry.key.startsWith(p)) ? { kind: 'unchanged', key: entry.key } : { kind: 'deleted', key: entry.key, previous: entry };

  let out: BackupItem[] = [];
  /** The previous entries before `key` (all that are left, for null), gone: a deleted subtree can be any size. */
  async function* drainBefore(key: string | null): AsyncGenerator<BackupItem[]> {
    while (prev !== undefined && (key === null || prev.key < key)) {
      out.push(gone(prev));
      const more = advance();
      if (more) await more;
      if (out.length >= MAX_BATCH) {
        yield out;
        out = [];
      }
    }
  }

  for await (const walkedBatch of walk) {
    for (const walked of walkedBatch) {
      if (isUnlisted(walked)) {
        // Comes before any path past that directory's contents: what the state holds there is kept.
        keepPrefixes.push(walked.contentsPrefix);
        continue;
      }
      if (prev !== undefined && prev.key < walked.key) yield* drainBefore(walked.key);
      if (keepPrefixes.length > 0) keepPrefixes = keepPrefixes.filter((p) => walked.key < p || walked.key.startsWith(p));
      let match: Entry | null = null;
      if (prev !== undefined && prev.key === walked.key) {
        match = prev;
        const more = advance();
        if (more) await more;
      }
      if (walked.contentsUnknown) keepPrefixes.push(keyToContentsPrefix(walked.key));
      const read =
        walked.stat.isFile() &&
        walked.stat.size > 0n &&
        (paranoid || match === null || !statUnchanged(walked, match) || (packExists !== undefined && lostContent(match)));
      out.push({ kind: 'entry', key: walked.key, walked, previous: match, read });
    }
    yield out;
    out = [];
  }
  yield* drainBefore(null);
  if (out.length > 0) yield out;
}

/** Most items in one batch handed on. */
const MAX_BATCH = 1024;
