// Pack index codec: the text (before zstd) that lists a pack's path range, its changed entries and its members.
//
// One line per record, fields separated by tabs, ASCII only (see docs/FORMAT.md):
//
//   blanket-index 5           (versions 1 to 4 are still read)
//   layer   L                 pack's layer
//   seq     S                 pack's sequence number in the layer
//   pack    STEM | -          data object holding this pack's members ("-": index only)
//   packsize BYTES            size of that data object (version 3, when pack is not "-")
//   packsum KIND:VALUE | -    the checksum the store reported for it when it was written (e.g. md5-etag:…)
//   after   KEY               range covered: keys k with after < k <= through
//   through KEY               ("~" = to the end of the tree: the layer is complete; equal to after when the
//                             pack holds only chunks of a big file whose entry a later pack records)
//   time    MS                when the index was written (Unix ms)
//   base    yes               (version 5) a base index, written by gc: part of the whole state as of its layer
//   replaces BYTES            (version 5) gc is rewriting the data object: until done it may still be the old
//                             one, of BYTES, which holds every member listed here too
//   S first last              a replaced segment: within [first, last] the state is exactly the E lines
//   E key kind mode mtime ctime ino nlink size uid gid user group hash loc target rdev
//   C hash size stem          chunks of the preceding E when its loc is "+N"
//   H hash size [KIND ...]    a member of this pack's tar, in tar order, named by its SHA-256: content, or
//                             (version 4) sig TARGET, or rdiff TARGET TSIZE BASE BASESTEM DEPTH CHAIN
//   end SHA256                SHA-256 of every byte before this line
//
// Paths between segments ("holes") keep their state from earlier packs, so an unchanged range costs nothing.

import { createHash, type Hash } from 'node:crypto';
import { BlanketError, ErrorCodes } from './errors.js';
import { type ChunkRef, contentHash, EMPTY_SHA256, type Entry, type EntryKind, kindCode, kindFromCode, makeEntry, withContent } from './entry.js';
import { AFTER_ALL, BEFORE_ALL, isValidKey, ROOT_KEY } from './path-key.js';
import { isValidStem } from './archive-layout.js';
import { grown } from './typed-arrays.js';

export const INDEX_MAGIC = 'blanket-index';
/**
 * Version 5: base indexes (header line `base yes`; see archive-layout.ts baseMarkerName). Version 4: H lines may list rdiff deltas and signatures (see PackMember). Version 3: the header records the data object's size and store checksum (packsize, packsum), so that a quick
 * verify can check packs from a listing. Version 2: a file of several chunks has the hash of its chunk list
 * (entry.ts contentHash). Version 1 had the SHA-256 of the whole content there; such indexes are still read,
 * that hash replaced by the chunk-list one.
 */
export const INDEX_VERSION = 5;
const READABLE_INDEX_VERSIONS = new Set(['1', '2', '3', '4', '5']);

/** A store-reported checksum as recorded: kind, colon, value (e.g. md5-etag:9e107d9d372bb6826bd81d3542a419d6). */
export const STORE_CHECKSUM_PATTERN = /^[a-z0-9][a-z0-9-]{0,31}:[0-9A-Za-z+\/=._-]{1,200}$/;

export interface IndexHeader {
  readonly layer: number;
  readonly seq: number;
  /** Stem of the pack data object, or null when this index has no data object. */
  readonly pack: string | null;
  readonly after: string;
  readonly through: string;
  readonly time: number;
  /** Size of the data object (written by version 3 whenever pack is set; absent in older indexes). */
  readonly packSize?: number;
  /** The checksum the store reported when it wrote the data object (STORE_CHECKSUM_PATTERN), if it reported one. */
  readonly packChecksum?: string;
  /** A base index (version 5): part of the whole state as of its layer, written by gc; never has a data object. */
  readonly base?: true;
  /**
   * (Version 5) gc is rewriting the data object into one of only the members listed: until it has, the object may
   * still be the previous one, of this size (a superset of the members listed).
   */
  readonly replacesSize?: number;
}

/** A segment: `entries` are Entry objects, or for a 'records' read (see IndexDecoder) also EntryLines. */
export interface IndexSegment<E = Entry> {
  readonly first: string;
  readonly last: string;
  readonly entries: readonly E[];
}

/**
 * A member of a pack's tar, named by the SHA-256 of its bytes (`hash`, `size` bytes), as an H line lists it:
 * - content (no `kind`): a file's content, or a chunk of it;
 * - 'delta': an rdiff delta that patches content `base` (stored in pack `baseStem`) into content `target` of
 *   `targetSize` bytes; `depth` deltas lead from a content member to it (1: its base is one), whose sizes add up
 *   to `chainBytes` (this one's included);
 * - 'signature': the rdiff signature of content `target`, for the delta of its next version.
 */
export type PackMember =
  | { readonly kind?: undefined; readonly hash: string; readonly size: number }
  | DeltaMember
  | { readonly kind: 'signature'; readonly hash: string; readonly size: number; readonly target: string };

export interface DeltaMember {
  readonly kind: 'delta';
  readonly hash: string;
  readonly size: number;
  readonly target: string;
  readonly targetSize: number;
  readonly base: string;
  readonly baseStem: string;
  readonly depth: number;
  readonly chainBytes: number;
}

/** A file as an index recorded it: enough to tell whether it changed since. */
export interface FileStamp {
  readonly key: string;
  readonly size: number;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
  readonly ino: bigint;
}

export interface PackIndex<E = Entry> {
  readonly header: IndexHeader;
  readonly segments: readonly IndexSegment<E>[];
  /** The H lines (none for an 'entries' or 'history' read). */
  readonly members: readonly PackMember[];
  /** A 'history' read's H lines, as numbers. */
  readonly memberWords?: MemberWords;
  /** Members-only reads: the files of several chunks that the index lists (others: empty). */
  readonly chunkedFiles: readonly FileStamp[];
}

/**
 * Members as numbers, for gc's lifetimes (a 'history' read's H lines): per member its kind, its size, the first 96
 * bits of the hash whose lifetime it follows (its own; a delta's or signature's target's) and of a delta's base,
 * and the delta's base pack. Typed arrays and a few strings: no object or hash string per member.
 */
export interface MemberWords {
  readonly count: number;
  /** Per member: MEMBER_CONTENT, MEMBER_SIGNATURE or MEMBER_DELTA. */
  readonly kinds: Uint8Array;
  readonly sizes: Float64Array;
  /** Per member, 6 words: those of the hash its lifetime follows, then (deltas) those of its base. */
  readonly words: Int32Array;
  /** Per member: a delta's base pack, as a position in `stems`; -1 for others. */
  readonly baseStems: Int32Array;
  readonly stems: readonly string[];
}

export const MEMBER_CONTENT = 0;
export const MEMBER_SIGNATURE = 1;
export const MEMBER_DELTA = 2;

/** A growing MemberWords. */
class MemberWordsBuilder implements MemberWords {
  count = 0;
  kinds = new Uint8Array(256);
  sizes = new Float64Array(256);
  words = new Int32Array(6 * 256);
  baseStems = new Int32Array(256);
  readonly stems: string[] = [];

  /** Adds a member; its words are set by the caller in words[6 * the index returned ...]. */
  add(kind: number, size: number, baseStem: string | null): number {
    const at = this.count++;
    if (at === this.kinds.length) {
      this.kinds = grown(this.kinds, 2 * at);
      this.sizes = grown(this.sizes, 2 * at);
      this.words = grown(this.words, 12 * at);
      this.baseStems = grown(this.baseStems, 2 * at);
    }
    this.kinds[at] = kind;
    this.sizes[at] = size;
    let stem = -1;
    if (baseStem !== null) {
      stem = this.stems.lastIndexOf(baseStem);
      if (stem < 0) stem = this.stems.push(baseStem) - 1;
    }
    this.baseStems[at] = stem;
    return at;
  }

  /** A member read as a PackMember. */
  addMember(member: PackMember): void {
    const at = 6 * this.add(member.kind === undefined ? MEMBER_CONTENT : member.kind === 'signature' ? MEMBER_SIGNATURE : MEMBER_DELTA, member.size, member.kind === 'delta' ? member.baseStem : null);
    hexWords(member.kind === undefined ? member.hash : member.target, this.words, at);
    if (member.kind === 'delta') hexWords(member.base, this.words, at + 3);
  }

  /** Trimmed to its count. */
  done(): MemberWords {
    const n = this.count;
    return { count: n, kinds: this.kinds.slice(0, n), sizes: this.sizes.slice(0, n), words: this.words.slice(0, 6 * n), baseStems: this.baseStems.slice(0, n), stems: this.stems };
  }
}

/** Members read as PackMembers (a whole or members-only read), as numbers. */
export function memberWordsOf(members: readonly PackMember[]): MemberWords {
  const builder = new MemberWordsBuilder();
  for (const member of members) builder.addMember(member);
  return builder.done();
}

/** The first three 32-bit words of hex hash `hash` into words[at..at+2]. */
function hexWords(hash: string, words: Int32Array, at: number): void {
  for (let w = 0; w < 3; w++) words[at + w] = hashWord(hash, 8 * w);
}

/** Whether bytes[start, start + 64) are 64 lowercase hex digits. */
function isHexBytes(bytes: Uint8Array, start: number): boolean {
  for (let i = start; i < start + 64; i++) if (HEX_BYTE_VALUE[bytes[i]!]! < 0) return false;
  return true;
}

/** hashWord of hex digits as bytes (checked by isHexBytes). */
function hexBytesWord(bytes: Uint8Array, at: number): number {
  let word = 0;
  for (let i = at; i < at + 8; i++) word = (word << 4) | HEX_BYTE_VALUE[bytes[i]!]!;
  return word;
}

/** The 32-bit word of the 8 hex digits of a checked SHA-256 `hash` from `at` (no substring made). */
export function hashWord(hash: string, at: number): number {
  let word = 0;
  for (let i = at; i < at + 8; i++) word = (word << 4) | HEX_BYTE_VALUE[hash.charCodeAt(i) & 0xff]!;
  return word;
}

const HASH_PATTERN = /^[0-9a-f]{64}$/;
const NOT_TEXT = /[^\x20-\x7e\t]/;

/** The chunk list of every entry without content (shared: nothing modifies an entry's chunks). */
const NO_CHUNKS: readonly ChunkRef[] = Object.freeze([]);

/** Names of the header lines (any other is damage, or a newer version's: each version lists its own). */
const HEADER_FIELDS = new Set(['layer', 'seq', 'pack', 'packsize', 'packsum', 'after', 'through', 'time', 'base', 'replaces']);

/** Fields of an E line. */
const ENTRY_FIELDS = 17;

/** The value of line[start, end) as a decimal (digits, no leading zero but "0" itself), or -1 if it is not one. */
function decimalValue(line: string, start: number, end: number): number {
  if (end === start || (end - start > 1 && line.charCodeAt(start) === 0x30)) return -1;
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = line.charCodeAt(i) - 0x30;
    if (digit < 0 || digit > 9) return -1;
    value = value * 10 + digit;
  }
  return value;
}

/** Whether line[start, end) is a decimal with an optional "-". */
function isSignedDecimal(line: string, start: number, end: number): boolean {
  if (start < end && line.charCodeAt(start) === 0x2d) start++;
  return decimalValue(line, start, end) >= 0; // any magnitude: only the syntax is checked here
}

/** The value of line[start, end) as 1 to 5 octal digits, or -1. */
function octalValue(line: string, start: number, end: number): number {
  if (end === start || end - start > 5) return -1;
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = line.charCodeAt(i) - 0x30;
    if (digit < 0 || digit > 7) return -1;
    value = value * 8 + digit;
  }
  return value;
}

/** Values of lowercase hex digits by character code (a table: ~3x faster than comparing ranges), -1 for any other byte. */
const HEX_BYTE_VALUE = Int8Array.from({ length: 256 }, (_, code) => (code >= 0x30 && code <= 0x39 ? code - 0x30 : code >= 0x61 && code <= 0x66 ? code - 0x57 : -1));

/** Whether line[start, end) is 64 lowercase hex digits (a code past 255, off the table, is none). */
function isSha256Hex(line: string, start: number, end: number): boolean {
  if (end - start !== 64) return false;
  for (let i = start; i < end; i++) if (!(HEX_BYTE_VALUE[line.charCodeAt(i)]! >= 0)) return false;
  return true;
}

/** Whether [first, last] are the keys of a segment: both valid, in order (one path's, as most of a day's are, checked once). */
function isSegmentRange(first: string, last: string): boolean {
  return first <= last && isValidKey(first) && (last === first || isValidKey(last));
}

/** Escapes bytes for a text field: printable ASCII stays, everything else (and "%") becomes %xx. */
export function escapeField(bytes: Buffer): string {
  if (bytes.length === 0) return '-';
  let out = '';
  for (const b of bytes) {
    out += b > 0x20 && b < 0x7f && b !== 0x25 ? String.fromCharCode(b) : '%' + b.toString(16).padStart(2, '0');
  }
  return out === '-' ? '%2d' : out;
}

export function unescapeField(text: string): Buffer | undefined {
  if (text === '-') return Buffer.alloc(0);
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x25) {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9a-f]{2}$/.test(hex)) return undefined;
      out.push(parseInt(hex, 16));
      i += 2;
    } else if (c > 0x20 && c < 0x7f) {
      out.push(c);
    } else {
      return undefined;
    }
  }
  return Buffer.from(out);
}

/** Text appended as bytes to a list of buffers: lines become garbage at once, never one big string. */
class TextChunks {
  readonly chunks: Buffer[] = [];
  private current: Buffer | null = null;
  private used = 0;
  /** The next buffer's size: small for a short text (a segment of one entry), growing to TEXT_CHUNK. */
  private nextSize = 4096;

  append(text: string): void {
    const buffer = this.room(text.length); // first: it may start a new buffer, and used with it
    this.used += buffer.write(text, this.used, 'latin1');
  }

  appendBytes(bytes: Buffer): void {
    const buffer = this.room(bytes.length);
    this.used += bytes.copy(buffer, this.used);
  }

  /** The current buffer, replaced by a new one if `length` more bytes do not fit. */
  private room(length: number): Buffer {
    if (this.current === null || length > this.current.length - this.used) {
      this.seal();
      this.current = Buffer.allocUnsafeSlow(Math.max(this.nextSize, length));
      this.nextSize = Math.min(TEXT_CHUNK, this.nextSize * 4);
    }
    return this.current;
  }

  /** Moves everything written so far into `chunks`. */
  seal(): void {
    if (this.current !== null && this.used > 0) this.chunks.push(this.current.subarray(0, this.used));
    this.current = null;
    this.used = 0;
  }

  /**
   * Appends everything `other` holds, leaving it empty. A large text's buffers are taken over rather than
   * copied (a whole pack's segment would otherwise be held twice); a small one is copied, so that many short
   * segments do not each keep a mostly empty buffer alive.
   */
  appendAll(other: TextChunks): void {
    other.seal();
    let bytes = 0;
    for (const chunk of other.chunks) bytes += chunk.length;
    if (bytes >= TAKE_OVER_BYTES) {
      this.seal();
      this.chunks.push(...other.chunks);
    } else {
      for (const chunk of other.chunks) this.appendBytes(chunk);
    }
    other.chunks.length = 0;
  }
}

/** Text at least this long is moved between TextChunks by appendAll, not copied. */
const TAKE_OVER_BYTES = 64 << 10;

const TEXT_CHUNK = 256 << 10;
/** Longest line a reader accepts. */
const MAX_LINE_BYTES = 4 << 20;

/**
 * Builds one index object's text as entries arrive (so a pack's entries need not be kept as objects until it
 * closes). Segments and entries must be added in key order; members in tar order.
 */
export class IndexEncoder {
  private readonly body = new TextChunks();
  /** Entries of the open segment: its S line, which names its last key, goes before them. */
  private open: { first: string; previous: string; text: TextChunks } | null = null;
  private readonly memberLines = new TextChunks();
  private lastSegmentEnd = '';
  private entryCount = 0;
  private memberCount = 0;

  /** A whole segment at once. */
  addSegment(segment: IndexSegment): void {
    this.openSegment(segment.first);
    for (const entry of segment.entries) this.addEntry(entry);
    this.closeSegment(segment.last);
  }

  openSegment(first: string): void {
    if (this.open !== null) throw new RangeError(`index segment opened at ${first} while one is open`);
    if (this.lastSegmentEnd !== '' && first <= this.lastSegmentEnd) throw new RangeError(`index segments out of order at ${first}`);
    this.open = { first, previous: '', text: new TextChunks() };
  }

  addEntry(entry: Entry): void {
    this.addText(entry.key, encodeEntry(entry));
  }

  /** An entry as read: an EntryLine's text is copied as it is (it was checked when read, and re-encodes the same). */
  addRecord(record: Entry | EntryLine): void {
    if (record instanceof EntryBytes) this.addText(record.key, record.lineBytes());
    else if (record instanceof EntryLine) this.addText(record.key, `${record.text}\n`);
    else this.addText(record.key, encodeEntry(record));
  }

  private addText(key: string, text: string | Buffer): void {
    const open = this.open;
    if (open === null) throw new RangeError(`index entry ${key} outside any segment`);
    if (key < open.first || key <= open.previous) throw new RangeError(`index entry ${key} out of order or outside its segment`);
    if (typeof text === 'string') open.text.append(text);
    else open.text.appendBytes(text);
    open.previous = key;
    this.entryCount++;
  }

  closeSegment(last: string): void {
    const open = this.open;
    if (open === null) throw new RangeError('no index segment is open');
    if (open.first > last || (open.previous !== '' && open.previous > last)) throw new RangeError(`index segment ${open.first}..${last} is inverted or ends before its entries`);
    this.open = null;
    this.lastSegmentEnd = last;
    this.body.append(`S\t${open.first}\t${last}\n`);
    this.body.appendAll(open.text);
  }

  addMember(member: PackMember): void {
    this.memberLines.append(`H\t${member.hash}\t${member.size}${memberKindText(member)}\n`);
    this.memberCount++;
  }

  /** Entries added so far, those of an open segment included. */
  get entries(): number {
    return this.entryCount;
  }

  get members(): number {
    return this.memberCount;
  }

  /** The finished text, with its header and closing checksum line. */
  finish(header: IndexHeader): Buffer {
    return Buffer.concat(this.finishParts(header));
  }

  /**
   * The finished text as the pieces it was built in (in order), so that it need not be copied into one buffer.
   * The encoder is spent afterwards.
   */
  finishParts(header: IndexHeader): Buffer[] {
    if (this.open !== null) throw new RangeError('an index segment is still open');
    let packData = '';
    if (header.pack !== null) {
      if (header.packSize === undefined || !Number.isSafeInteger(header.packSize) || header.packSize < 0) {
        throw new RangeError('an index with a data object records its size');
      }
      if (header.packChecksum !== undefined && !STORE_CHECKSUM_PATTERN.test(header.packChecksum)) {
        throw new RangeError(`malformed store checksum ${JSON.stringify(header.packChecksum)}`);
      }
      packData = `packsize\t${header.packSize}\npacksum\t${header.packChecksum ?? '-'}\n`;
      if (header.replacesSize !== undefined) {
        if (!Number.isSafeInteger(header.replacesSize) || header.replacesSize < 0) throw new RangeError('malformed size of the data object replaced');
        packData += `replaces\t${header.replacesSize}\n`;
      }
    }
    const head = Buffer.from(
      `${INDEX_MAGIC}\t${INDEX_VERSION}\n` +
        `layer\t${header.layer}\nseq\t${header.seq}\npack\t${header.pack ?? '-'}\n${packData}` +
        `after\t${header.after}\nthrough\t${header.through}\ntime\t${header.time}\n${header.base ? 'base\tyes\n' : ''}`,
      'latin1',
    );
    this.body.seal();
    this.memberLines.seal();
    const parts = [head, ...this.body.chunks, ...this.memberLines.chunks];
    const hash = createHash('sha256');
    for (const part of parts) hash.update(part);
    parts.push(Buffer.from(`end\t${hash.digest('hex')}\n`, 'latin1'));
    return parts;
  }
}

/** The fields of an H line after the size: none for content, else the kind and what it says (see PackMember). */
function memberKindText(member: PackMember): string {
  switch (member.kind) {
    case undefined:
      return '';
    case 'signature':
      return `\tsig\t${member.target}`;
    case 'delta': {
      const { target, targetSize, base, baseStem, depth, chainBytes } = member;
      if (!(depth >= 1 && chainBytes >= member.size)) throw new RangeError(`delta member ${member.hash}: depth ${depth}, chain ${chainBytes} bytes`);
      return `\trdiff\t${target}\t${targetSize}\t${base}\t${baseStem}\t${depth}\t${chainBytes}`;
    }
  }
}

function encodeEntry(e: Entry): string {
  let loc: string;
  let chunkLines = '';
  if (e.chunks.length === 0) loc = '-';
  else if (e.chunks.length === 1 && e.chunks[0]!.hash === e.hash && e.chunks[0]!.size === e.size) loc = e.chunks[0]!.pack;
  else {
    if (e.hash !== contentHash(e.chunks.map((c) => c.hash))) throw new RangeError(`entry ${e.key}: content hash does not match its chunks`);
    loc = `+${e.chunks.length}`;
    chunkLines = e.chunks.map((c) => `C\t${c.hash}\t${c.size}\t${c.pack}\n`).join('');
  }
  const stat = statRecordText(e.kind, e.mode, e.mtimeNs, e.ctimeNs, e.ino, e.nlink, e.size, e.uid, e.gid, nameText(e.user), nameText(e.group));
  return `E\t${e.key}\t${stat}\t${e.hash ?? '-'}\t${loc}\t${tailText(e.linkTarget, e.rdev)}\n${chunkLines}`;
}

/**
 * Fields 2 to 12 of an E line (kind to group: what an lstat and the owner names give), exactly as the index
 * writes them; `user` and `group` as nameText() gives them. One definition for the writer and for the change
 * detector, which compares a walked path's record with an EntryLine as text.
 */
export function statRecordText(
  kind: EntryKind,
  mode: number,
  mtimeNs: bigint,
  ctimeNs: bigint,
  ino: bigint,
  nlink: number,
  size: number,
  uid: number,
  gid: number,
  user: string,
  group: string,
): string {
  return `${kindCode(kind)}\t${mode.toString(8)}\t${mtimeNs}\t${ctimeNs}\t${ino}\t${nlink}\t${size}\t${uid}\t${gid}\t${user}\t${group}`;
}

/** A user or group name as an E line holds it. */
export function nameText(name: string): string {
  return escapeField(Buffer.from(name, 'utf8'));
}

/** Fields 15 and 16 of an E line (link target, rdev), exactly as the index writes them. */
export function tailText(linkTarget: Buffer | null, rdev: number): string {
  return `${linkTarget === null ? '-' : escapeField(linkTarget)}\t${rdev}`;
}

/** Fields 13 and 14 (content hash, location) of every entry without content, and of every empty file. */
export const NO_CONTENT_TEXT = '-\t-';
export const EMPTY_FILE_CONTENT_TEXT = `${EMPTY_SHA256}\t-`;

/**
 * An E line of a 'records' read (see IndexDecoder), kept as text: of the many paths an incremental run finds
 * unchanged, each is compared with the walk as text and never parsed. Its structure (field count, segment, key
 * order) was checked when it was read; entry() parses and checks the rest, when the fields are needed. A chunked
 * file's line is never deferred (its C lines follow it), so a deferred line's location is "-" or one pack.
 */
export class EntryLine {
  constructor(
    readonly key: string,
    private readonly line: string,
    /** [start of field 2, end of field 12), [start of field 13, end of field 14), start of field 15. */
    private readonly statStart: number,
    private readonly statEnd: number,
    private readonly contentStart: number,
    private readonly contentEnd: number,
    private readonly tailStart: number,
    private readonly decoder: IndexDecoder,
    private readonly lineNumber: number,
  ) {}

  /** Whether fields 2 to 12 are exactly `text` (see statRecordText). */
  statIs(text: string): boolean {
    return this.statEnd - this.statStart === text.length && this.line.startsWith(text, this.statStart);
  }

  /** Whether fields 13 and 14 are exactly `text`. */
  contentIs(text: string): boolean {
    return this.contentEnd - this.contentStart === text.length && this.line.startsWith(text, this.contentStart);
  }

  /** Whether fields 15 and 16 are exactly `text` (see tailText). */
  tailIs(text: string): boolean {
    return this.line.length - this.tailStart === text.length && this.line.endsWith(text);
  }

  /** The line as read, without its newline. */
  get text(): string {
    return this.line;
  }

  /**
   * The hash of the one chunk that holds its content (a deferred line is never a chunked file's), or null when it
   * has none (location "-"). The hash is checked; a bad one is reported as entry() reports it.
   */
  contentChunkHash(): string | null {
    const hashEnd = this.line.indexOf('\t', this.contentStart);
    if (this.contentEnd - hashEnd === 2 && this.line.charCodeAt(hashEnd + 1) === 0x2d) return null; // "-"
    if (isSha256Hex(this.line, this.contentStart, hashEnd)) return this.line.slice(this.contentStart, hashEnd);
    return this.entry().chunks[0]?.hash ?? null; // throws, naming the index and line
  }

  /** Field 14 as written (unchecked): "-" or the stem of the pack that holds the content. */
  get location(): string {
    return this.line.slice(this.line.lastIndexOf('\t', this.contentEnd - 1) + 1, this.contentEnd);
  }

  /** The entry the line records, checked as an eager read checks it (BLANKET_E_CORRUPT_OBJECT naming the index and line). */
  entry(): Entry {
    return this.decoder.deferredEntry(this.line, this.lineNumber);
  }
}

/**
 * An E line of a 'history' read, kept as the bytes it was read from: no string of the line is made, as gc reads
 * every line of every index once and copies most of them into a base as they are. Its key is a string (the
 * merge compares keys); its text, and entry(), are made when asked. It holds the text it was read from (the
 * index's frame) as long as it lives.
 */
export class EntryBytes extends EntryLine {
  constructor(
    key: string,
    private readonly bytes: Buffer,
    /** The line is bytes[start, end), its newline at end. */
    private readonly start: number,
    private readonly end: number,
    /** Field 13 (the content hash) is bytes[hashStart, hashEnd). */
    private readonly hashStart: number,
    private readonly hashEnd: number,
    /** Field 14 is "-": no content stored. */
    private readonly noContent: boolean,
    private readonly reader: IndexDecoder,
    private readonly readAtLine: number,
  ) {
    super(key, '', 0, 0, 0, 0, 0, reader, readAtLine);
  }

  override get text(): string {
    return this.bytes.toString('latin1', this.start, this.end);
  }

  /** The line and its newline, as read. */
  lineBytes(): Buffer {
    return this.bytes.subarray(this.start, this.end + 1);
  }

  /**
   * The first 96 bits of the hash of the one chunk that holds its content, into `words` (three 32-bit words):
   * false when it has none (location "-"). The hash is checked; a bad one is reported as entry() reports it.
   */
  contentChunkWords(words: Int32Array): boolean {
    if (this.noContent) return false;
    const { bytes, hashStart } = this;
    if (this.hashEnd - hashStart === 64 && isHexBytes(bytes, hashStart)) {
      for (let w = 0; w < 3; w++) words[w] = hexBytesWord(bytes, hashStart + 8 * w);
      return true;
    }
    const hash = this.entry().chunks[0]?.hash; // throws, naming the index and line
    if (hash === undefined) return false;
    hexWords(hash, words, 0);
    return true;
  }

  override contentChunkHash(): string | null {
    if (this.noContent) return null;
    return this.entry().chunks[0]?.hash ?? null;
  }

  override statIs(text: string): boolean {
    return this.asLine().statIs(text);
  }

  override contentIs(text: string): boolean {
    return this.asLine().contentIs(text);
  }

  override tailIs(text: string): boolean {
    return this.asLine().tailIs(text);
  }

  override get location(): string {
    return this.asLine().location;
  }

  override entry(): Entry {
    return this.reader.deferredEntry(this.text, this.readAtLine);
  }

  /** The same line as an EntryLine of its text (for the comparisons made on text). */
  private asLine(): EntryLine {
    return this.reader.entryLineOf(this.text, this.readAtLine);
  }
}

/** Incremental index parser: feed bytes in any chunking with push(), then end() validates and returns the index. */
export class IndexDecoder {
  private readonly hash: Hash = createHash('sha256');
  private pending: Buffer = Buffer.alloc(0);
  private lineNumber = 0;
  private readonly headerFields = new Map<string, string>();
  private readonly segments: { first: string; last: string; entries: (Entry | EntryLine)[] }[] = [];
  private readonly members: PackMember[] = [];
  /** A 'history' read's members. */
  private readonly memberWords: MemberWordsBuilder | null;
  private readonly chunkedFiles: FileStamp[] = [];
  /** Members-only reads: the last E line, until a C line shows it is a chunked file's. */
  private skippedEntryLine: string | null = null;
  private chunksWanted = 0;
  private chunkBuffer: ChunkRef[] = [];
  private chunkOwner: Entry | null = null;
  private endDigest: string | null = null;
  private phase: 'magic' | 'header' | 'body' | 'members' | 'done' = 'magic';
  /** Stems repeat on almost every entry: remember the last one found valid. */
  private lastValidStem = '';
  private version = INDEX_VERSION;

  private readonly membersOnly: boolean;
  private readonly entriesOnly: boolean;
  /** A 'records' read: E lines (but a chunked file's) are kept as EntryLines, parsed on demand. */
  private readonly deferEntries: boolean;
  /** A 'history' read: those EntryLines are EntryBytes, no string made of their lines. */
  private readonly entryBytes: boolean;

  /**
   * `parts` (the end checksum always covers every line):
   * - 'members': the S, E and C lines are skipped, for readers of H lines only; only the E lines of chunked
   *   files are parsed, as stamps (chunkedFiles), for the read-ahead of big files;
   * - 'entries': the H lines are skipped (members empty), for readers of the state;
   * - 'records': as 'entries', but each E line (other than a chunked file's) is kept as an EntryLine, whose
   *   structure only is checked here (field count, segment, key order), for the change detector;
   * - 'history': as 'records', the E lines as EntryBytes, with the H lines too, as numbers (memberWords, not
   *   members), for gc's one pass over every line.
   */
  constructor(
    private readonly objectName: string,
    parts: IndexParts = 'all',
  ) {
    this.membersOnly = parts === 'members';
    this.entriesOnly = parts === 'entries' || parts === 'records';
    this.deferEntries = parts === 'records' || parts === 'history';
    this.entryBytes = parts === 'history';
    this.memberWords = parts === 'history' ? new MemberWordsBuilder() : null;
  }

  push(chunk: Buffer): void {
    const data = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    // Hash whole runs of lines at once (the end line itself is not hashed).
    let hashFrom = this.phase === 'done' ? -1 : 0;
    let start = 0;
    for (;;) {
      const newline = data.indexOf(0x0a, start);
      if (newline < 0) break;
      if (hashFrom >= 0 && data[start] === 0x65 && data.toString('latin1', start, start + 4) === 'end\t') {
        this.hash.update(data.subarray(hashFrom, start));
        hashFrom = -1;
      }
      if (this.entriesOnly && data[start] === 0x48 && data[start + 1] === 0x09 && (this.phase === 'body' || this.phase === 'members')) {
        this.skippedMember();
        start = newline + 1;
        continue;
      }
      if (this.entryBytes && data[start] === 0x45 && data[start + 1] === 0x09 && this.entryLineBytes(data, start, newline)) {
        start = newline + 1;
        continue;
      }
      if (this.memberWords !== null && data[start] === 0x48 && data[start + 1] === 0x09 && this.memberLineBytes(data, start, newline)) {
        start = newline + 1;
        continue;
      }
      if (data[start] === 0x53 && data[start + 1] === 0x09 && this.segmentLineBytes(data, start, newline)) {
        start = newline + 1;
        continue;
      }
      // One string per line, not slices of one string of the whole chunk: a key or name kept from an entry then
      // keeps its line alive, not the whole (external, MiB-sized) text of the index.
      this.line(data.toString('latin1', start, newline));
      start = newline + 1;
    }
    if (hashFrom >= 0) this.hash.update(data.subarray(hashFrom, start));
    this.pending = Buffer.from(data.subarray(start)); // a copy: the partial line only, not the chunk it is in
    // No line of a real index comes near this (a 64 KiB path escaped is 192 KiB): without a bound, text with no
    // newline (a zstd bomb of one byte value) would grow the partial line, and memory, without end.
    if (this.pending.length > MAX_LINE_BYTES) this.fail(`a line longer than ${MAX_LINE_BYTES} bytes`);
  }

  end(): PackIndex {
    if (this.deferEntries) throw new Error('internal error: a history or records read ends with endRecords()');
    return this.finish() as PackIndex; // only a records read keeps EntryLines
  }

  /** end() of a 'records' or 'history' read: its segments hold EntryLines too. */
  endRecords(): PackIndex<Entry | EntryLine> {
    return this.finish();
  }

  private finish(): PackIndex<Entry | EntryLine> {
    if (this.pending.length !== 0) this.fail('truncated: last line has no newline');
    if (this.phase !== 'done' || this.endDigest === null) this.fail('truncated: no end line');
    return {
      header: this.header(),
      segments: this.segments,
      members: this.members,
      ...(this.memberWords !== null && { memberWords: this.memberWords.done() }),
      chunkedFiles: this.chunkedFiles,
    };
  }

  /** A members-only read's S, E or C line: an E line followed by C lines is kept as a stamp. */
  private skippedLine(record: number, line: string): void {
    if (record === 0x45) {
      this.skippedEntryLine = line;
    } else if (record === 0x43 && this.skippedEntryLine !== null) {
      this.chunkedFiles.push(this.stampOf(this.skippedEntryLine));
      this.skippedEntryLine = null;
    }
  }

  private stampOf(line: string): FileStamp {
    if (NOT_TEXT.test(line)) this.fail('non-ASCII or control bytes');
    const count = this.fields(line);
    if (count !== ENTRY_FIELDS) this.fail(`entry has ${count} fields, expected ${ENTRY_FIELDS}`);
    const key = this.text(line, 1);
    if (!isValidKey(key) || !this.fieldIs(line, 2, 'f')) this.fail('malformed chunked entry');
    return {
      key,
      size: this.decimalField(line, 8, 'size'),
      mtimeNs: this.bigintField(line, 4, 'mtime'),
      ctimeNs: this.bigintField(line, 5, 'ctime'),
      ino: this.bigintField(line, 6, 'inode'),
    };
  }

  /** The E or H line being parsed, whose text is not scanned for bytes outside printable ASCII beforehand. */
  private fieldCheckedLine: string | null = null;

  private fail(reason: string): never {
    const message = this.fieldCheckedLine !== null && NOT_TEXT.test(this.fieldCheckedLine) ? 'non-ASCII or control bytes' : reason;
    const where = this.lineNumber > 0 ? ` (line ${this.lineNumber})` : '';
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `index ${this.objectName}${where}: ${message}`, { subject: this.objectName });
  }

  private line(line: string): void {
    this.lineNumber++;
    if (this.phase === 'done') this.fail('data after the end line');
    if ((this.phase === 'body' || this.phase === 'members') && line.charCodeAt(1) === 0x09) {
      const record = line.charCodeAt(0);
      if (this.membersOnly && (record === 0x53 || record === 0x45 || record === 0x43)) return this.skippedLine(record, line); // S, E, C
      // The records of almost every line, parsed without splitting it (an index holds one E and one H line per file).
      if (record === 0x45 || record === 0x48) {
        // Every field of these lines is checked against its own alphabet, so a byte outside printable ASCII
        // fails one of those checks; fail() then names it as such (see there), and the lines that make up
        // nearly all of an index need no scan of their own.
        this.fieldCheckedLine = line;
        if (record === 0x45) this.entryLine(line);
        else this.memberLine(line);
        this.fieldCheckedLine = null;
        return;
      }
      // S lines (one per changed stretch): both fields are keys, checked character by character, as above.
      if (record === 0x53 && !this.membersOnly) {
        const second = line.indexOf('\t', 2);
        if (second > 2 && line.indexOf('\t', second + 1) < 0) {
          this.fieldCheckedLine = line;
          this.segmentLine(['S', line.slice(2, second), line.slice(second + 1)]);
          this.fieldCheckedLine = null;
          return;
        }
      }
    }
    const fields = line.split('\t');
    if (fields[0] === 'end') {
      if (fields.length !== 2 || !HASH_PATTERN.test(fields[1]!)) this.fail('malformed end line');
      if (this.chunksWanted > 0) this.fail('missing chunk lines');
      if (this.phase === 'magic') this.fail('truncated header');
      this.header();
      const digest = this.hash.digest('hex');
      if (digest !== fields[1]) this.fail('checksum mismatch: the index is damaged');
      this.endDigest = digest;
      this.phase = 'done';
      return;
    }
    if (NOT_TEXT.test(line)) this.fail('non-ASCII or control bytes');
    switch (this.phase) {
      case 'magic':
        if (fields[0] !== INDEX_MAGIC || fields.length !== 2) this.fail('not a Blanket index');
        if (!READABLE_INDEX_VERSIONS.has(fields[1]!)) {
          throw new BlanketError(
            ErrorCodes.FORMAT_VERSION,
            `index ${this.objectName}: format version ${fields[1]} is not supported (this Blanket reads versions 1 to ${INDEX_VERSION}; upgrade Blanket)`,
            { subject: this.objectName },
          );
        }
        this.version = Number(fields[1]);
        this.phase = 'header';
        return;
      case 'header':
        if (fields[0] === 'S' || fields[0] === 'H') {
          this.header();
          this.phase = 'body';
          break;
        }
        if (fields.length !== 2) this.fail('malformed header line');
        if (!HEADER_FIELDS.has(fields[0]!)) this.fail(`unknown header field ${JSON.stringify(fields[0]!.slice(0, 20))}`);
        if (this.headerFields.has(fields[0]!)) this.fail(`duplicate header field ${fields[0]}`);
        this.headerFields.set(fields[0]!, fields[1]!);
        return;
      default:
        break;
    }
    switch (fields[0]) {
      case 'S':
        if (this.membersOnly) return;
        return this.segmentLine(fields);
      case 'E':
        return this.entryLine(line);
      case 'C':
        return this.chunkLine(fields);
      case 'H':
        return this.memberLine(line);
      default:
        this.fail(`unknown record ${JSON.stringify(fields[0]!.slice(0, 10))}`);
    }
  }

  /**
   * A 'history' read's E line data[start, end) as an EntryBytes: true if it was one. Only the good case is taken
   * here (its structure checked as entryLine checks a deferred line's); anything else (a chunked file's line, or
   * one entryLine refuses) is left to line(), which reads it, or refuses it, as it would any other.
   */
  private entryLineBytes(data: Buffer, start: number, end: number): boolean {
    if (this.phase !== 'body' || this.chunksWanted > 0) return false;
    const segment = this.segments[this.segments.length - 1];
    if (segment === undefined) return false;
    const { starts, ends } = this;
    let count = 0;
    let fieldStart = start;
    for (let i = start; ; i++) {
      if (i === end || data[i] === 0x09) {
        if (count < ENTRY_FIELDS) {
          starts[count] = fieldStart;
          ends[count] = i;
        }
        count++;
        if (i === end) break;
        fieldStart = i + 1;
      }
    }
    if (count !== ENTRY_FIELDS || data[starts[14]!] === 0x2b) return false; // "+N": a chunked file's
    const key = data.toString('latin1', starts[1]!, ends[1]!);
    if (key < segment.first || key > segment.last || key <= this.lastEntryKey) return false;
    this.lineNumber++;
    this.lastEntryKey = key;
    const noContent = ends[14]! - starts[14]! === 1 && data[starts[14]!] === 0x2d;
    segment.entries.push(new EntryBytes(key, data, start, end, starts[13]!, ends[13]!, noContent, this, this.lineNumber));
    return true;
  }

  /**
   * An S line data[start, end) of the body whose two keys are valid, read without a string of the whole line (a
   * day's index has one per changed file): true if it was one. Anything else is left to line(), which reads it,
   * or refuses it, as it would any other.
   */
  private segmentLineBytes(data: Buffer, start: number, end: number): boolean {
    if (this.phase !== 'body' || this.membersOnly || this.chunksWanted > 0) return false;
    const tab = data.indexOf(0x09, start + 2);
    if (tab < 0 || tab >= end) return false;
    const another = data.indexOf(0x09, tab + 1);
    if (another >= 0 && another < end) return false;
    const first = data.toString('latin1', start + 2, tab);
    const last = data.toString('latin1', tab + 1, end);
    if (!isSegmentRange(first, last)) return false;
    this.lineNumber++;
    this.openSegment(first, last);
    return true;
  }

  /** An EntryLine of `line` (the text of an EntryBytes), for the comparisons made on text. */
  entryLineOf(line: string, lineNumber: number): EntryLine {
    this.fields(line);
    const { starts, ends } = this;
    return new EntryLine(this.text(line, 1), line, starts[2]!, ends[12]!, starts[13]!, ends[14]!, starts[15]!, this, lineNumber);
  }

  private cachedHeader: IndexHeader | null = null;

  /**
   * The header, once a line after it has been read (null before): checked field by field, but not against the
   * end line's checksum, which comes last (see readIndexHeader in stages/state-reader.ts).
   */
  headerSoFar(): IndexHeader | null {
    return this.phase === 'magic' || this.phase === 'header' ? null : this.header();
  }

  private header(): IndexHeader {
    if (this.cachedHeader) return this.cachedHeader;
    const get = (name: string): string => this.headerFields.get(name) ?? this.fail(`missing header field ${name}`);
    const layer = this.integer(get('layer'), 'layer');
    const seq = this.integer(get('seq'), 'seq');
    const pack = get('pack');
    const after = get('after');
    const through = get('through');
    const time = this.integer(get('time'), 'time');
    if (layer < 1 || seq < 1) this.fail('layer and seq must be positive');
    if (pack !== '-' && !isValidStem(pack)) this.fail('malformed pack stem');
    if (after !== BEFORE_ALL && !isValidKey(after)) this.fail('malformed after key');
    if (through !== AFTER_ALL && !isValidKey(through)) this.fail('malformed through key');
    // after === through: an empty range, written for a pack that holds only chunks of a big file in progress.
    if (after > through) this.fail('inverted range');
    const packSizeText = this.headerFields.get('packsize');
    const packSumText = this.headerFields.get('packsum');
    const replacesText = this.headerFields.get('replaces');
    if (replacesText !== undefined && (this.version < 5 || pack === '-')) this.fail(pack === '-' ? 'replaces without a data object' : `replaces in a version ${this.version} index`);
    const baseText = this.headerFields.get('base');
    if (baseText !== undefined && (this.version < 5 || baseText !== 'yes')) this.fail(this.version < 5 ? `base in a version ${this.version} index` : 'malformed base');
    if (baseText !== undefined && pack !== '-') this.fail('a base index with a data object');
    let packData: { packSize?: number; packChecksum?: string } = {};
    if (this.version >= 3 && pack !== '-') {
      if (packSizeText === undefined) this.fail('missing header field packsize');
      if (packSumText === undefined) this.fail('missing header field packsum');
      if (packSumText !== '-' && !STORE_CHECKSUM_PATTERN.test(packSumText)) this.fail('malformed packsum');
      packData = { packSize: this.integer(packSizeText, 'packsize'), ...(packSumText === '-' ? {} : { packChecksum: packSumText }) };
    } else if (packSizeText !== undefined || packSumText !== undefined) {
      this.fail(pack === '-' ? 'packsize or packsum without a data object' : `packsize or packsum in a version ${this.version} index`);
    }
    this.cachedHeader = {
      layer,
      seq,
      pack: pack === '-' ? null : pack,
      after,
      through,
      time,
      ...packData,
      ...(baseText !== undefined && { base: true as const }),
      ...(replacesText !== undefined && { replacesSize: this.integer(replacesText, 'replaces') }),
    };
    return this.cachedHeader;
  }

  private integer(text: string, what: string): number {
    return this.safeDecimal(decimalValue(text, 0, text.length), what);
  }

  /** A decimalValue() result as a safe integer, or an error naming `what`. */
  private safeDecimal(value: number, what: string): number {
    if (value < 0) this.fail(`malformed ${what}`);
    if (!Number.isSafeInteger(value)) this.fail(`${what} out of range`);
    return value;
  }

  private segmentLine(fields: string[]): void {
    if (this.phase !== 'body') this.fail('segment after members');
    if (this.chunksWanted > 0) this.fail('missing chunk lines');
    if (fields.length !== 3) this.fail('malformed segment line');
    const [, first, last] = fields as [string, string, string];
    if (!isSegmentRange(first, last)) this.fail('malformed segment range');
    this.openSegment(first, last);
  }

  /** A segment [first, last] of valid keys (isSegmentRange) starts: checked against the range and the last one. */
  private openSegment(first: string, last: string): void {
    const header = this.header();
    if (first <= header.after || last > header.through) this.fail('segment outside the index range');
    const previous = this.segments[this.segments.length - 1];
    if (previous && first <= previous.last) this.fail('segments overlap or are out of order');
    this.segments.push({ first, last, entries: [] });
    this.lastEntryKey = '';
  }

  /** Field i of the line last given to fields() spans [starts[i], ends[i]). */
  private readonly starts = new Int32Array(ENTRY_FIELDS);
  private readonly ends = new Int32Array(ENTRY_FIELDS);
  /** Key of the last E line of the open segment ('' before its first: every key sorts after it). */
  private lastEntryKey = '';
  private lastUserText = '';
  private lastUser = '';
  private lastGroupText = '';
  private lastGroup = '';

  /** Finds the first ENTRY_FIELDS tab-separated fields of `line`; returns how many fields it has in all. */
  private fields(line: string): number {
    let count = 0;
    let start = 0;
    for (;;) {
      const tab = line.indexOf('\t', start);
      const end = tab < 0 ? line.length : tab;
      if (count < ENTRY_FIELDS) {
        this.starts[count] = start;
        this.ends[count] = end;
      }
      count++;
      if (tab < 0) return count;
      start = tab + 1;
    }
  }

  private text(line: string, field: number): string {
    return line.slice(this.starts[field]!, this.ends[field]!);
  }

  /** A decimal field as a safe integer. */
  private decimalField(line: string, field: number, what: string): number {
    return this.safeDecimal(decimalValue(line, this.starts[field]!, this.ends[field]!), what);
  }

  /** A decimal field, optionally negative, of at most 30 characters. */
  private bigintField(line: string, field: number, what: string): bigint {
    const start = this.starts[field]!;
    const end = this.ends[field]!;
    if (end - start > 30 || !isSignedDecimal(line, start, end)) this.fail(`malformed ${what}`);
    return BigInt(line.slice(start, end));
  }

  /** A user or group name field; names repeat from entry to entry, so the last one is kept. */
  private nameField(line: string, field: number, what: 'user' | 'group'): string {
    const start = this.starts[field]!;
    const length = this.ends[field]! - start;
    const lastText = what === 'user' ? this.lastUserText : this.lastGroupText;
    if (length === lastText.length && line.startsWith(lastText, start)) return what === 'user' ? this.lastUser : this.lastGroup;
    const text = line.slice(start, start + length);
    const name = (unescapeField(text) ?? this.fail(`malformed ${what} name`)).toString('utf8');
    if (what === 'user') {
      this.lastUserText = text;
      this.lastUser = name;
    } else {
      this.lastGroupText = text;
      this.lastGroup = name;
    }
    return name;
  }

  private fieldIs(line: string, field: number, value: string): boolean {
    const start = this.starts[field]!;
    return this.ends[field]! - start === value.length && line.startsWith(value, start);
  }

  //   0 E  1 key  2 kind  3 mode  4 mtime  5 ctime  6 ino  7 nlink  8 size  9 uid  10 gid  11 user  12 group
  //   13 hash  14 loc  15 target  16 rdev
  private entryLine(line: string): void {
    if (this.phase !== 'body') this.fail('entry after members');
    if (this.chunksWanted > 0) this.fail('missing chunk lines');
    const segment = this.segments[this.segments.length - 1] ?? this.fail('entry outside any segment');
    const count = this.fields(line);
    if (count !== ENTRY_FIELDS) this.fail(`entry has ${count} fields, expected ${ENTRY_FIELDS}`);
    const key = this.text(line, 1);
    // A deferred line's key is checked when it is parsed: until then it is only compared with other keys.
    const deferred = this.deferEntries && line.charCodeAt(this.starts[14]!) !== 0x2b; // not a chunked file's "+N"
    if (!deferred && !isValidKey(key)) this.fail('malformed entry key');
    if (key < segment.first || key > segment.last) this.fail('entry outside its segment');
    if (key <= this.lastEntryKey) this.fail('entries out of order');
    this.lastEntryKey = key;
    if (deferred) {
      const { starts, ends } = this;
      segment.entries.push(new EntryLine(key, line, starts[2]!, ends[12]!, starts[13]!, ends[14]!, starts[15]!, this, this.lineNumber));
      return;
    }
    const entry = this.entryFields(line, key);
    // A chunked file's entry waits for its C lines.
    if (this.chunksWanted > 0) this.chunkOwner = entry;
    else segment.entries.push(entry);
  }

  /** The entry of a deferred E line (see EntryLine.entry), checked as entryLine() checks an eager one. */
  deferredEntry(line: string, lineNumber: number): Entry {
    const current = this.lineNumber;
    this.lineNumber = lineNumber;
    this.fieldCheckedLine = line;
    try {
      this.fields(line);
      const key = this.text(line, 1);
      if (!isValidKey(key)) this.fail('malformed entry key');
      return this.entryFields(line, key);
    } finally {
      this.lineNumber = current;
      this.fieldCheckedLine = null;
    }
  }

  /** Fields 2 to 16 of the E line last split by fields(), checked; a chunked file's sets chunksWanted. */
  private entryFields(line: string, key: string): Entry {
    const kindText = this.text(line, 2);
    const kind = kindFromCode(kindText) ?? this.fail(`unknown entry kind ${JSON.stringify(kindText)}`);
    const mode = octalValue(line, this.starts[3]!, this.ends[3]!);
    if (mode < 0) this.fail('malformed mode');
    if (mode > 0o7777) this.fail('mode out of range');
    const user = this.nameField(line, 11, 'user');
    const group = this.nameField(line, 12, 'group');
    const sizeValue = this.decimalField(line, 8, 'size');
    if (kind !== 'dir' && key === ROOT_KEY) this.fail('the root must be a directory');
    let fileHash: string | null = null;
    if (kind === 'file') {
      if (!isSha256Hex(line, this.starts[13]!, this.ends[13]!)) this.fail('file entry without a valid content hash');
      fileHash = this.text(line, 13);
    } else if (!this.fieldIs(line, 13, '-')) this.fail('content hash on a non-file entry');
    let linkTarget: Buffer | null = null;
    if (kind === 'symlink') {
      linkTarget = unescapeField(this.text(line, 15)) ?? this.fail('malformed symlink target');
      if (linkTarget.length === 0 || linkTarget.includes(0)) this.fail('empty symlink target or NUL in it');
    } else if (!this.fieldIs(line, 15, '-')) this.fail('symlink target on a non-symlink entry');
    const mtimeNs = this.bigintField(line, 4, 'mtime');
    const ctimeNs = this.bigintField(line, 5, 'ctime');
    const ino = this.bigintField(line, 6, 'inode');
    const nlink = this.decimalField(line, 7, 'nlink');
    const uid = this.decimalField(line, 9, 'uid');
    const gid = this.decimalField(line, 10, 'gid');
    const rdev = this.decimalField(line, 16, 'rdev');
    let chunks: readonly ChunkRef[] = NO_CHUNKS;
    if (this.fieldIs(line, 14, '-')) {
      if (kind === 'file' && sizeValue !== 0) this.fail('non-empty file without content location');
    } else if (kind !== 'file') {
      this.fail('content location on a non-file entry');
    } else if (line.charCodeAt(this.starts[14]!) === 0x2b) {
      this.chunksWanted = this.integer(line.slice(this.starts[14]! + 1, this.ends[14]!), 'chunk count');
      if (this.chunksWanted < 1) this.fail('chunk count must be positive');
      this.chunkBuffer = [];
    } else {
      if (!this.fieldIs(line, 14, this.lastValidStem)) {
        const loc = this.text(line, 14);
        if (!isValidStem(loc)) this.fail('malformed content location');
        this.lastValidStem = loc;
      }
      if (sizeValue === 0) this.fail('empty file with a content location');
      chunks = [{ hash: fileHash!, size: sizeValue, pack: this.lastValidStem }];
    }
    return makeEntry(key, kind, mode, mtimeNs, ctimeNs, ino, nlink, sizeValue, uid, gid, user, group, fileHash, chunks, linkTarget, rdev);
  }

  private chunkLine(fields: string[]): void {
    if (this.chunksWanted === 0 || this.chunkOwner === null) this.fail('chunk line without a chunked entry');
    if (fields.length !== 4) this.fail('malformed chunk line');
    const [, hash, size, stem] = fields as [string, string, string, string];
    if (!HASH_PATTERN.test(hash) || !isValidStem(stem)) this.fail('malformed chunk line');
    const chunkSize = this.integer(size, 'chunk size');
    if (chunkSize === 0) this.fail('empty chunk');
    this.chunkBuffer.push({ hash, size: chunkSize, pack: stem });
    if (--this.chunksWanted === 0) {
      const total = this.chunkBuffer.reduce((sum, c) => sum + c.size, 0);
      if (total !== this.chunkOwner.size) this.fail('chunk sizes do not add up to the file size');
      const hash = contentHash(this.chunkBuffer.map((c) => c.hash));
      if (this.version >= 2 && hash !== this.chunkOwner.hash) this.fail('content hash does not match its chunks');
      this.segments[this.segments.length - 1]!.entries.push(withContent(this.chunkOwner, hash, this.chunkBuffer));
      this.chunkOwner = null;
      this.chunkBuffer = [];
    }
  }

  private addMember(member: PackMember): void {
    if (this.memberWords !== null) this.memberWords.addMember(member);
    else this.members.push(member);
  }

  /**
   * A 'history' read's H line data[start, end) of a content member ("H hash size", nearly every one), added to
   * memberWords without a string: true if it was one. Anything else is left to line(), as in entryLineBytes.
   */
  private memberLineBytes(data: Buffer, start: number, end: number): boolean {
    if (this.chunksWanted > 0 || (this.phase !== 'body' && this.phase !== 'members') || this.header().pack === null) return false;
    const hashStart = start + 2;
    const hashEnd = hashStart + 64;
    if (hashEnd >= end || data[hashEnd] !== 0x09 || end - hashEnd - 1 > 15 || (data[hashEnd + 1] === 0x30 && end - hashEnd > 2)) return false;
    let size = 0;
    for (let i = hashEnd + 1; i < end; i++) {
      const digit = data[i]! - 0x30;
      if (digit < 0 || digit > 9) return false; // a tab too: another kind of member
      size = size * 10 + digit;
    }
    if (end === hashEnd + 1 || !Number.isSafeInteger(size)) return false;
    if (!isHexBytes(data, hashStart)) return false;
    const words = this.memberWords!;
    const at = 6 * words.add(MEMBER_CONTENT, size, null);
    for (let w = 0; w < 3; w++) words.words[at + w] = hexBytesWord(data, hashStart + 8 * w);
    this.lineNumber++;
    this.phase = 'members';
    return true;
  }

  /** An H line of an entries-only read: its place is checked, not its contents. */
  private skippedMember(): void {
    this.lineNumber++;
    if (this.chunksWanted > 0) this.fail('missing chunk lines');
    this.phase = 'members';
    if (this.header().pack === null) this.fail('member listed in an index without a pack');
  }

  private memberLine(line: string): void {
    if (this.chunksWanted > 0) this.fail('missing chunk lines');
    this.phase = 'members';
    const count = this.fields(line);
    if (count < 3 || !isSha256Hex(line, this.starts[1]!, this.ends[1]!)) this.fail('malformed member line');
    if (this.header().pack === null) this.fail('member listed in an index without a pack');
    const hash = this.text(line, 1);
    const size = this.decimalField(line, 2, 'member size');
    if (count === 3) {
      this.addMember({ hash, size });
      return;
    }
    // Deltas and signatures came with version 4.
    const kind = this.version >= 4 ? this.text(line, 3) : '';
    const sha256At = (field: number, what: string): string => {
      if (!isSha256Hex(line, this.starts[field]!, this.ends[field]!)) this.fail(`malformed ${what} in a member line`);
      return this.text(line, field);
    };
    if (kind === 'sig' && count === 5) {
      this.addMember({ kind: 'signature', hash, size, target: sha256At(4, 'signed content') });
    } else if (kind === 'rdiff' && count === 10) {
      const baseStem = this.text(line, 7);
      if (!isValidStem(baseStem)) this.fail('malformed base pack stem in a member line');
      const depth = this.decimalField(line, 8, 'delta depth');
      const chainBytes = this.decimalField(line, 9, 'delta chain size');
      if (depth < 1 || chainBytes < size) this.fail('delta depth below 1, or its chain smaller than itself');
      this.addMember({
        kind: 'delta',
        hash,
        size,
        target: sha256At(4, 'delta target'),
        targetSize: this.decimalField(line, 5, 'delta target size'),
        base: sha256At(6, 'delta base'),
        baseStem,
        depth,
        chainBytes,
      });
    } else {
      this.fail('malformed member line');
    }
  }
}

/** Which lines of an index a reader wants parsed (see IndexDecoder). */
export type IndexParts = 'all' | 'members' | 'entries' | 'records' | 'history';

/** Parses a whole index text. */
export function decodeIndex(bytes: Buffer, objectName: string): PackIndex {
  const decoder = new IndexDecoder(objectName);
  decoder.push(bytes);
  return decoder.end();
}
