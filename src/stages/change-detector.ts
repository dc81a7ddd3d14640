// Change detection: a streaming merge-join of the walk against the previous state, both in path order.
//
//   walk:  a  b  c     e  f          (keys > clock pointer)
//   prev:  a  b     d  e  f  g
//   out:   a? b? c+ d- e? f? g-      (+ new, - deleted, ? compare stat: unchanged keeps, otherwise read)
//
// A path recorded exactly as before comes out as a small 'same' item, so that the many unchanged paths of an
// incremental run do not keep their walked and previous entries alive while they wait behind files being read.
// The previous state comes as EntryLines where it can (state-reader.ts, readStateRecordBatches): a walked path's
// record is written out as the index would write it and compared with the line as text, so the lines of
// unchanged paths are never parsed; a line that differs is parsed, and compared field by field as before.
// A file is unchanged when size, mtime (ns), ctime and inode all match: it is not read (unless its previous
// content is in a pack missing from the archive). Paths under a directory that could not be listed keep their
// previous state ("unchanged"), never count as deleted: the walk says so on the directory's entry
// (contentsUnknown), or, when that entry went out earlier or was before the clock pointer, with an UnlistedContents.

import type { Entry } from '../formats/entry.js';
import { keyToContentsPrefix } from '../formats/path-key.js';
import {
  EMPTY_FILE_CONTENT_TEXT,
  EntryLine,
  type FileStamp,
  nameText,
  NO_CONTENT_TEXT,
  statRecordText,
  tailText,
} from '../formats/index-format.js';
import { entryKind, recordsAsBefore } from './entry-record.js';
import type { OwnerNames } from './owner-names.js';
import type { StateRecord } from './state-reader.js';
import { isUnlisted, type EntryStat, type WalkedEntry, type WalkItem } from './walker.js';

export type BackupItem =
  /** Keep the previous state of this key (nothing to write): below a directory that could not be listed. */
  | { readonly kind: 'unchanged'; readonly key: string }
  /**
   * The walk found this path exactly as the previous state records it (lstat, owner names, link target), so
   * nothing is written; `fileSize` (null: not a file) is for progress. Most paths of an incremental run: the
   * item holds neither the walked entry nor the previous one, so those die young while items wait behind reads.
   */
  | { readonly kind: 'same'; readonly key: string; readonly fileSize: number | null }
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
  /** Owner names as the packer records them: with them, paths recorded exactly as before come out as 'same'. */
  readonly owners?: Pick<OwnerNames, 'user' | 'group'>;
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
  previousState: AsyncIterable<readonly StateRecord[]>,
  options: ChangeDetectorOptions = {},
): AsyncGenerator<BackupItem[]> {
  const previous = previousState[Symbol.asyncIterator]();
  const join = new ChangeJoin(options);
  /** Hands the join the next non-empty batch of the previous state, or tells it the state has ended. */
  const feed = async (): Promise<void> => {
    for (;;) {
      const next = await previous.next();
      if (next.done) return join.endOfPrevious();
      if (next.value.length > 0) return join.morePrevious(next.value);
    }
  };
  await feed();
  for await (const walkedBatch of walk) {
    let position = 0;
    for (;;) {
      position = join.take(walkedBatch, position);
      if (position === walkedBatch.length) break;
      // Stopped short: too many deletions for one batch, or the previous state's batch is used up.
      if (join.out.length >= MAX_BATCH) yield join.handOn();
      if (join.needsPrevious) await feed();
    }
    yield join.handOn();
  }
  for (;;) {
    const done = join.takeRest();
    if (join.out.length > 0 && (done || join.out.length >= MAX_BATCH)) yield join.handOn();
    if (done) return;
    if (join.needsPrevious) await feed();
  }
}

/**
 * The merge-join itself, synchronous: it stops where it needs the next batch of the previous state (or has a
 * full batch of deletions), and the caller feeds it and asks again. (The per-path loop lives here rather than
 * in the async generator, which V8 would otherwise have to optimize whole, suspension points and all.)
 */
class ChangeJoin {
  /** Items ready to hand on. */
  out: BackupItem[] = [];
  private previous: readonly StateRecord[] = [];
  private position = 0;
  private previousEnded = false;
  /** Contents prefixes of directories that could not be listed: what the state holds below them is kept. */
  private keepPrefixes: string[] = [];
  private readonly paranoid: boolean;
  private readonly packExists: ((stem: string) => boolean) | undefined;
  private readonly reported = new Set<string>();
  private readonly owners: Pick<OwnerNames, 'user' | 'group'> | undefined;
  /** Owner names as E lines hold them, by uid and by gid. */
  private readonly userTexts = new Map<number, string>();
  private readonly groupTexts = new Map<number, string>();

  constructor(private readonly options: ChangeDetectorOptions) {
    this.paranoid = options.paranoid === true;
    this.packExists = options.packExists;
    this.owners = options.owners;
  }

  /** Whether the join stopped because the previous state's batch at hand is used up. */
  get needsPrevious(): boolean {
    return this.position >= this.previous.length && !this.previousEnded;
  }

  morePrevious(batch: readonly StateRecord[]): void {
    this.previous = batch;
    this.position = 0;
  }

  endOfPrevious(): void {
    this.previous = [];
    this.position = 0;
    this.previousEnded = true;
  }

  handOn(): BackupItem[] {
    const ready = this.out;
    this.out = [];
    return ready;
  }

  /**
   * Joins walk items from `start` on; returns the position of the first one not yet joined (the batch's length
   * when all are). Stops short when the previous state's batch is used up (needsPrevious) or when MAX_BATCH
   * deletions are waiting: asking again from the returned position carries on exactly there.
   */
  take(walkedBatch: readonly WalkItem[], start: number): number {
    const previous = this.previous;
    for (let i = start; i < walkedBatch.length; i++) {
      const walked = walkedBatch[i]!;
      if (isUnlisted(walked)) {
        // Comes before any path past that directory's contents: what the state holds there is kept.
        this.keepPrefixes.push(walked.contentsPrefix);
        continue;
      }
      // The previous entries before this path are gone (a deleted subtree can be any size).
      for (;;) {
        if (this.position >= previous.length) {
          if (!this.previousEnded) return i;
          break;
        }
        const prev = previous[this.position]!;
        if (prev.key >= walked.key) break;
        if (this.out.length >= MAX_BATCH) return i;
        this.out.push(this.gone(prev));
        this.position++;
      }
      if (this.keepPrefixes.length > 0) this.keepPrefixes = this.keepPrefixes.filter((p) => walked.key < p || walked.key.startsWith(p));
      let record: StateRecord | null = null;
      if (this.position < previous.length && previous[this.position]!.key === walked.key) record = previous[this.position++]!;
      if (walked.contentsUnknown) this.keepPrefixes.push(keyToContentsPrefix(walked.key));
      if (record instanceof EntryLine) {
        if (this.lineAsBefore(walked, record)) {
          this.out.push({ kind: 'same', key: walked.key, fileSize: walked.stat.isFile() ? Number(walked.stat.size) : null });
          continue;
        }
        record = record.entry();
      }
      const match: Entry | null = record;
      const read =
        walked.stat.isFile() &&
        walked.stat.size > 0n &&
        (this.paranoid || match === null || !statUnchanged(walked, match) || (this.packExists !== undefined && this.lostContent(match)));
      if (!read && match !== null && this.owners !== undefined && recordsAsBefore(walked, match, this.owners)) {
        this.out.push({ kind: 'same', key: walked.key, fileSize: match.kind === 'file' ? match.size : null });
      } else {
        this.out.push({ kind: 'entry', key: walked.key, walked, previous: match, read });
      }
    }
    return walkedBatch.length;
  }

  /** After the walk's end: the rest of the previous state is gone. True when all of it is taken. */
  takeRest(): boolean {
    const previous = this.previous;
    while (this.position < previous.length) {
      if (this.out.length >= MAX_BATCH) return false;
      this.out.push(this.gone(previous[this.position++]!));
    }
    return this.previousEnded;
  }

  /** A previous entry the walk did not meet: deleted, or kept below a directory that could not be listed. */
  private gone(record: StateRecord): BackupItem {
    if (this.keepPrefixes.some((p) => record.key.startsWith(p))) return { kind: 'unchanged', key: record.key };
    return { kind: 'deleted', key: record.key, previous: record instanceof EntryLine ? record.entry() : record };
  }

  /**
   * recordsAsBefore() for a previous record still as text, without parsing it: whether the line is exactly what
   * the index would write for the walked path with the previous content, and that content is not to be read
   * again (not paranoid, not in a missing pack). False sends the line to be parsed and compared as before.
   */
  private lineAsBefore(walked: WalkedEntry, line: EntryLine): boolean {
    const owners = this.owners;
    if (owners === undefined || this.paranoid) return false;
    const kind = entryKind(walked);
    if (kind === null) return false;
    const st = walked.stat;
    const uid = Number(st.uid);
    const gid = Number(st.gid);
    let user = this.userTexts.get(uid);
    if (user === undefined) this.userTexts.set(uid, (user = nameText(owners.user(uid))));
    let group = this.groupTexts.get(gid);
    if (group === undefined) this.groupTexts.set(gid, (group = nameText(owners.group(gid))));
    const size = kind === 'file' ? Number(st.size) : 0;
    if (!line.statIs(statRecordText(kind, Number(st.mode) & 0o7777, st.mtimeNs, st.ctimeNs, st.ino, Number(st.nlink), size, uid, gid, user, group))) {
      return false;
    }
    const target = kind === 'symlink' ? walked.linkTarget : null;
    if (target === undefined || target?.length === 0) return false; // no target read: never as recorded
    if (!line.tailIs(tailText(target, kind === 'chardev' || kind === 'blockdev' ? Number(st.rdev) : 0))) return false;
    if (kind !== 'file') return line.contentIs(NO_CONTENT_TEXT);
    if (size === 0) return line.contentIs(EMPTY_FILE_CONTENT_TEXT);
    // Unchanged content in a pack the archive lacks is read again: the parsed line reports the pack (lostContent).
    const pack = line.location;
    return pack !== '-' && (this.packExists === undefined || this.packExists(pack));
  }

  /** Whether some chunk of `entry` is in a missing pack (reported once per pack). */
  private lostContent(entry: Entry): boolean {
    let lost = false;
    for (const chunk of entry.chunks) {
      if (this.packExists!(chunk.pack)) continue;
      lost = true;
      if (!this.reported.has(chunk.pack)) {
        this.reported.add(chunk.pack);
        this.options.onMissingPack?.(chunk.pack);
      }
    }
    return lost;
  }
}

/** Most items in one batch handed on. */
const MAX_BATCH = 1024;
