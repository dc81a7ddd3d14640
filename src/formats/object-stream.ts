// Object stream codec: archive objects as one byte stream (`blanket backup SRC -`, `blanket receive`), readable past cuts and concatenation.
//
// Format version 1. A stream is a sequence of records. Each record starts with a line: ASCII, fields separated by
// one TAB, ended by LF, at most 512 bytes with the LF. Numbers are decimal without leading zeros ("0" for zero), at
// most 2^53 - 1. ID is the stream's id: 32 lowercase hex digits, random per stream, repeated in every record.
//
//   blanket-stream TAB 1 TAB ID LF          the stream header, first; 1 is the format version
//   begin TAB ID TAB NAME TAB CHECK LF      an object starts. NAME: an archive object name (^[0-9a-z.-]+(/[0-9a-z.-]+)*$,
//                                           at most 200 characters, no "." or ".." component). CHECK: the first 8 hex
//                                           digits of the SHA-256 of NAME, so that a damaged name is not taken for another
//   data TAB ID TAB LEN LF <LEN bytes>      the next LEN bytes of the object's body, 1 <= LEN <= 1048576
//   end TAB ID TAB SIZE TAB SHA256 LF       the object is whole: SIZE bytes of data in all, whose SHA-256 is SHA256
//                                           (64 lowercase hex)
//   finish TAB ID TAB COUNT LF              the stream ends cleanly, after COUNT objects
//
// Writers write the header, then each object's records contiguously (begin, data..., end; an object of 0 bytes has
// no data record), then finish. A data payload never holds the 15 bytes "blanket-stream" TAB: the writer cuts the
// record one byte into any occurrence (nextRecordLength), so that these bytes occur only where a stream starts, even
// when objects hold streams (an archived stream file). Streams may be concatenated, and a writer may be killed
// anywhere: the next stream then starts right after the cut, possibly inside what a reader takes for the payload of
// the cut data record.
//
// Readers deliver an object only when its end record matches the size and SHA-256 of its data. A record that cannot
// be read in its place (not a record line, no LF within 512 bytes, another stream's ID, a record out of place, LEN
// out of range, the input ending) is damage: the open object is dropped, and the reader searches, from the first
// payload byte of the last data record it read (else from the unreadable line), for the next "blanket-stream" TAB,
// or "begin" TAB ID TAB or "finish" TAB ID TAB of the current stream. A match that does not read as a record is
// passed over and the search goes on from its next byte. A stream header ends the stream before it; a stream that
// ends without finish was truncated. A header of another version is damage (its stream is skipped).

import { createHash, randomBytes, type Hash } from 'node:crypto';
import { isObjectName } from './archive-layout.js';

export const STREAM_MAGIC = 'blanket-stream';
export const STREAM_VERSION = 1;
/** Largest data record payload; writers cut bodies into records of at most this many bytes. */
export const MAX_RECORD_BYTES = 1024 * 1024;
/** Longest record line, LF included (a begin line with a 200-character name takes 249). */
export const MAX_LINE_BYTES = 512;

const LF = 0x0a;
/** What a payload never contains and a search looks for: the start of a stream header. */
const MAGIC = Buffer.from(`${STREAM_MAGIC}\t`, 'latin1');
const STREAM_ID = /^[0-9a-f]{32}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const DECIMAL = /^(?:0|[1-9][0-9]{0,15})$/;
/** Input is taken in pieces of at most this size, so that a huge chunk is never held whole. */
const PIECE_BYTES = 64 * 1024;


// ---------------------------------------------------------------------------------------------------------------
// Encoder

export function newStreamId(): string {
  return randomBytes(16).toString('hex');
}

export function streamStart(streamId: string): Buffer {
  return line(STREAM_MAGIC, String(STREAM_VERSION), checkId(streamId));
}

export function objectBegin(streamId: string, name: string): Buffer {
  if (!isObjectName(name)) throw new RangeError(`not an archive object name: ${JSON.stringify(name)}`);
  return line('begin', checkId(streamId), name, nameCheck(name));
}

/** The line of a data record; its `length` payload bytes follow (cut with nextRecordLength). */
export function dataRecordHeader(streamId: string, length: number): Buffer {
  if (!Number.isInteger(length) || length < 1 || length > MAX_RECORD_BYTES) {
    throw new RangeError(`a data record holds 1 to ${MAX_RECORD_BYTES} bytes, not ${length}`);
  }
  return line('data', checkId(streamId), String(length));
}

/**
 * How many bytes from the start of `rest` the next data record takes: at most MAX_RECORD_BYTES, and a record
 * never holds the stream magic (it ends one byte into any occurrence). 0 only for an empty `rest`.
 */
export function nextRecordLength(rest: Uint8Array): number {
  const max = Math.min(rest.length, MAX_RECORD_BYTES);
  const scan = Buffer.from(rest.buffer, rest.byteOffset, Math.min(rest.length, max + MAGIC.length - 1));
  const at = scan.indexOf(MAGIC);
  return at !== -1 && at < max ? at + 1 : max;
}

/** `bytes` as data records: line, payload, line, payload... (payloads are views of `bytes`). */
export function dataRecords(streamId: string, bytes: Uint8Array): Buffer[] {
  const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const parts: Buffer[] = [];
  for (let at = 0; at < body.length; ) {
    const length = nextRecordLength(body.subarray(at));
    parts.push(dataRecordHeader(streamId, length), body.subarray(at, at + length));
    at += length;
  }
  return parts;
}

export function objectEnd(streamId: string, size: number, sha256hex: string): Buffer {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad object size ${size}`);
  if (!SHA256_HEX.test(sha256hex)) throw new RangeError(`not a lowercase hex SHA-256: ${JSON.stringify(sha256hex)}`);
  return line('end', checkId(streamId), String(size), sha256hex);
}

export function streamFinish(streamId: string, count: number): Buffer {
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`bad object count ${count}`);
  return line('finish', checkId(streamId), String(count));
}

/** A whole object's records, for bodies already in memory (payloads are views of `body`). */
export function encodeObject(streamId: string, name: string, body: Uint8Array): Buffer[] {
  const sha256 = createHash('sha256').update(body).digest('hex');
  return [objectBegin(streamId, name), ...dataRecords(streamId, body), objectEnd(streamId, body.length, sha256)];
}

function nameCheck(name: string): string {
  return createHash('sha256').update(name, 'latin1').digest('hex').slice(0, 8);
}

function checkId(streamId: string): string {
  if (!STREAM_ID.test(streamId)) throw new RangeError(`a stream id is 32 lowercase hex digits, not ${JSON.stringify(streamId)}`);
  return streamId;
}

function line(...fields: string[]): Buffer {
  return Buffer.from(`${fields.join('\t')}\n`, 'latin1');
}

// ---------------------------------------------------------------------------------------------------------------
// Decoder

export type StreamEvent =
  /** A stream header: records of stream `streamId` follow. */
  | { readonly type: 'stream'; readonly streamId: string }
  | { readonly type: 'begin'; readonly streamId: string; readonly name: string }
  /** Part of the body of the open object; `bytes` is a view of a pushed chunk or a copy, never reused by the decoder. */
  | { readonly type: 'data'; readonly name: string; readonly bytes: Buffer }
  /** The open object is whole: its size and SHA-256 (checked against its data) are those of its end record. */
  | { readonly type: 'end'; readonly name: string; readonly size: number; readonly sha256: string }
  /** The open object cannot be completed: discard its data (`size` bytes were given). */
  | { readonly type: 'lost'; readonly name: string; readonly size: number; readonly reason: string }
  /** A clean end of stream: the writer wrote `count` objects, `objects` of which were delivered whole. */
  | { readonly type: 'finish'; readonly streamId: string; readonly count: number; readonly objects: number }
  /** The stream ended without finish (a new stream started, or the input ended) after `objects` whole objects. */
  | { readonly type: 'truncated'; readonly streamId: string; readonly objects: number }
  /** Input bytes thrown away to resynchronise: not part of any record read, nor given as data. */
  | { readonly type: 'skipped'; readonly bytes: number; readonly reason: string };

type StreamRecord =
  | { readonly kind: 'stream'; readonly id: string }
  | { readonly kind: 'begin'; readonly id: string; readonly name: string }
  | { readonly kind: 'data'; readonly id: string; readonly length: number }
  | { readonly kind: 'end'; readonly id: string; readonly size: number; readonly sha256: string }
  | { readonly kind: 'finish'; readonly id: string; readonly count: number };

const FIELD_COUNTS = new Map([[STREAM_MAGIC, 3], ['begin', 4], ['data', 3], ['end', 4], ['finish', 3]]);

/** A record line's fields, or why it is not one. */
function parseRecord(text: string): StreamRecord | string {
  const f = text.split('\t');
  const id = f[1] ?? '';
  const fieldCount = FIELD_COUNTS.get(f[0]!);
  if (fieldCount === undefined) return `not a record line: ${excerpt(text)}`;
  if (f.length !== fieldCount) return `a ${f[0]} record has ${fieldCount} fields: ${excerpt(text)}`;
  if (f[0] === STREAM_MAGIC) {
    if (f[1] !== String(STREAM_VERSION)) return `stream format version ${excerpt(f[1]!)} is not supported (this Blanket reads version ${STREAM_VERSION})`;
    return STREAM_ID.test(f[2]!) ? { kind: 'stream', id: f[2]! } : `bad stream id in a stream header: ${excerpt(text)}`;
  }
  if (!STREAM_ID.test(id)) return `bad stream id in a ${f[0]} record: ${excerpt(text)}`;
  switch (f[0]) {
    case 'begin':
      return isObjectName(f[2]!) && f[3] === nameCheck(f[2]!) ? { kind: 'begin', id, name: f[2]! } : `bad begin record: ${excerpt(text)}`;
    case 'data': {
      const length = decimal(f[2]!);
      return length !== undefined && length >= 1 && length <= MAX_RECORD_BYTES ? { kind: 'data', id, length } : `bad data record length: ${excerpt(text)}`;
    }
    case 'end': {
      const size = decimal(f[2]!);
      if (size === undefined || !SHA256_HEX.test(f[3]!)) return `bad end record: ${excerpt(text)}`;
      return { kind: 'end', id, size, sha256: f[3]! };
    }
    default: {
      const count = decimal(f[2]!);
      return count === undefined ? `bad finish record: ${excerpt(text)}` : { kind: 'finish', id, count };
    }
  }
}

function decimal(text: string): number | undefined {
  if (!DECIMAL.test(text)) return undefined;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : undefined;
}

/** Some of an untrusted line, quoted, for a message. */
function excerpt(text: string): string {
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text);
}

/**
 * The input bytes the decoder may still need, addressed by their offset in the whole input. Room is made by
 * compacting only once the dead prefix is as large as the live bytes, so each byte is moved O(1) times on average
 * and the capacity stays under twice the most bytes ever held.
 */
class Window {
  private buf = Buffer.alloc(0);
  private head = 0;
  private tail = 0;
  /** Input offset of the first byte held. */
  private start = 0;

  get end(): number {
    return this.start + this.tail - this.head;
  }

  get capacity(): number {
    return this.buf.length;
  }

  append(piece: Buffer): void {
    const held = this.tail - this.head;
    if (this.tail + piece.length > this.buf.length) {
      if (this.head >= held && held + piece.length <= this.buf.length) {
        this.buf.copyWithin(0, this.head, this.tail);
      } else {
        const next = Buffer.allocUnsafe(2 * (held + piece.length));
        this.buf.copy(next, 0, this.head, this.tail);
        this.buf = next;
      }
      this.head = 0;
      this.tail = held;
    }
    piece.copy(this.buf, this.tail);
    this.tail += piece.length;
  }

  /** Forgets the bytes before input offset `offset`. */
  dropBefore(offset: number): void {
    this.head += offset - this.start;
    this.start = offset;
    if (this.head === this.tail) this.head = this.tail = 0;
  }

  /** The held bytes from `from` to `to` (input offsets), as a view valid until the next append. */
  view(from: number, to: number): Buffer {
    return this.buf.subarray(this.head + from - this.start, this.head + to - this.start);
  }

  /** Input offset of the first `pattern` at or after `from`, or -1. */
  indexOf(pattern: Buffer, from: number): number {
    const at = this.view(from, this.end).indexOf(pattern);
    return at === -1 ? -1 : from + at;
  }
}

/** Finds a pattern's next occurrence, remembering what it scanned: a search moving forward never rescans bytes. */
class Finder {
  private scannedFrom = Number.POSITIVE_INFINITY;
  private scannedTo = 0;
  /** Where the last scan found the pattern, or -1 when it is not in [scannedFrom, scannedTo). */
  private found = -1;

  constructor(readonly pattern: Buffer) {}

  next(window: Window, from: number): number {
    if (from >= this.scannedFrom && from <= this.found) return this.found;
    const start = from >= this.scannedFrom && this.found === -1 ? Math.max(from, this.scannedTo - this.pattern.length + 1) : from;
    this.found = window.indexOf(this.pattern, start);
    this.scannedFrom = from;
    this.scannedTo = window.end;
    return this.found;
  }
}

interface OpenStream {
  readonly id: string;
  objects: number;
  /** begin and finish records of this stream: where a search may also resume it. */
  readonly finders: readonly Finder[];
}

interface OpenObject {
  readonly name: string;
  size: number;
  readonly hash: Hash;
}

type Mode = 'line' | 'payload' | 'search';

/**
 * Incremental stream reader: push() chunks, then end(); each returns the events they complete, in order.
 * Memory stays bounded (about 2 × (MAX_RECORD_BYTES + 64 KiB), see bufferedBytes) whatever the input. Data events
 * may be views of pushed chunks, so callers must not modify a chunk after pushing it.
 */
export class ObjectStreamDecoder {
  private readonly window = new Window();
  private readonly magic = new Finder(MAGIC);
  private mode: Mode = 'line';
  /** Input offset of the next byte to read. */
  private pos = 0;
  /** Where a search starts after damage: the payload of the last data record read, or the line being read. */
  private rescanFrom = 0;
  /** The line being read was found by a search: if it is not a record, the search goes on from its next byte. */
  private candidate = false;
  /** Input bytes up to here were part of a record read or given as data. */
  private accountedTo = 0;
  private skipReason = 'bytes before the first stream header';
  private stream: OpenStream | null = null;
  private object: OpenObject | null = null;
  private payloadLeft = 0;
  private ended = false;
  private eof = false;
  /** The chunk piece being read and its input offset: data inside it is given as views, not copies. */
  private piece: Buffer = Buffer.alloc(0);
  private pieceStart = 0;

  /** Memory the decoder holds for input (its window's capacity): a test hook for the memory bound. */
  get bufferedBytes(): number {
    return this.window.capacity;
  }

  push(chunk: Uint8Array): StreamEvent[] {
    if (this.ended) throw new Error('ObjectStreamDecoder: push() after end()');
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    const events: StreamEvent[] = [];
    for (let at = 0; at < bytes.length; at += PIECE_BYTES) {
      this.piece = bytes.subarray(at, at + PIECE_BYTES);
      this.pieceStart = this.window.end;
      this.window.append(this.piece);
      this.run(events);
    }
    this.piece = Buffer.alloc(0);
    return events;
  }

  /** Declares the end of the input: reports the open object lost, and the open stream truncated. */
  end(): StreamEvent[] {
    if (this.ended) throw new Error('ObjectStreamDecoder: end() called twice');
    this.ended = true;
    this.eof = true;
    const events: StreamEvent[] = [];
    this.run(events);
    if (this.window.end > this.accountedTo) {
      events.push({ type: 'skipped', bytes: this.window.end - this.accountedTo, reason: this.skipReason });
    }
    const object = this.object;
    if (object) this.lose(events, `the stream ends inside object ${object.name} (${object.size} bytes of it arrived)`);
    if (this.stream) events.push({ type: 'truncated', streamId: this.stream.id, objects: this.stream.objects });
    this.stream = null;
    this.window.dropBefore(this.window.end);
    return events;
  }

  /** Reads as far as the input allows, then forgets the bytes no longer needed. */
  private run(events: StreamEvent[]): void {
    for (;;) {
      const progress = this.mode === 'payload' ? this.readPayload(events) : this.mode === 'search' ? this.search() : this.readLine(events);
      if (!progress) break;
    }
    this.window.dropBefore(this.mode === 'search' || this.candidate ? this.pos : this.rescanFrom);
  }

  private readPayload(events: StreamEvent[]): boolean {
    const object = this.object!;
    const available = Math.min(this.payloadLeft, this.window.end - this.pos);
    if (available === 0) {
      if (!this.eof) return false;
      this.damage(events, `the stream ends inside object ${object.name} (${object.size} bytes of it arrived)`);
      return true;
    }
    const bytes = this.bytes(this.pos, this.pos + available);
    object.hash.update(bytes);
    object.size += available;
    events.push({ type: 'data', name: object.name, bytes });
    this.pos += available;
    this.accountedTo = Math.max(this.accountedTo, this.pos);
    this.payloadLeft -= available;
    if (this.payloadLeft === 0) this.mode = 'line';
    return true;
  }

  /** Input bytes from `from` to `to` that outlive the window: a view of the pushed chunk when they lie in it. */
  private bytes(from: number, to: number): Buffer {
    const at = from - this.pieceStart;
    if (at >= 0 && to - this.pieceStart <= this.piece.length) return this.piece.subarray(at, at + to - from);
    return Buffer.from(this.window.view(from, to));
  }

  private readLine(events: StreamEvent[]): boolean {
    const start = this.pos;
    const available = this.window.end - start;
    if (available === 0) return false;
    // Never scan further than a line may reach: a search may stop on many candidates in a long run without LF.
    const lf = this.window.view(start, start + Math.min(available, MAX_LINE_BYTES)).indexOf(LF);
    if (lf === -1) {
      if (available < MAX_LINE_BYTES && !this.eof) return false;
      const object = this.object;
      return this.damage(
        events,
        available >= MAX_LINE_BYTES
          ? `no record line at byte ${start}: no line end within ${MAX_LINE_BYTES} bytes`
          : object
            ? `the stream ends inside object ${object.name} (${object.size} bytes of it arrived)`
            : `the stream ends inside a record line at byte ${start}`,
      );
    }
    const record = parseRecord(this.window.view(start, start + lf).toString('latin1'));
    if (typeof record === 'string') return this.damage(events, `bad record line at byte ${start}: ${record}`);
    return this.accept(events, record, start, start + lf + 1);
  }

  private accept(events: StreamEvent[], record: StreamRecord, start: number, next: number): boolean {
    const stream = this.stream;
    const object = this.object;
    if (record.kind !== 'stream') {
      if (!stream) return this.damage(events, `a ${record.kind} record at byte ${start} outside any stream`);
      if (record.id !== stream.id) return this.damage(events, `a ${record.kind} record of stream ${record.id} at byte ${start}, inside stream ${stream.id}`);
      if ((record.kind === 'data' || record.kind === 'end') !== (object !== null)) {
        const where = object ? `inside object ${object.name}` : 'outside any object';
        return this.damage(events, `a ${record.kind} record at byte ${start} ${where}`);
      }
    }
    // The line is a record in its place: account for what the search skipped to reach it.
    if (this.candidate && start > this.accountedTo) events.push({ type: 'skipped', bytes: start - this.accountedTo, reason: this.skipReason });
    this.candidate = false;
    this.pos = next;
    this.accountedTo = Math.max(this.accountedTo, next);
    this.rescanFrom = next;
    switch (record.kind) {
      case 'stream':
        if (object) this.lose(events, `a new stream starts at byte ${start} inside object ${object.name} (${object.size} bytes of it arrived)`);
        if (stream) events.push({ type: 'truncated', streamId: stream.id, objects: stream.objects });
        this.stream = {
          id: record.id,
          objects: 0,
          finders: [new Finder(Buffer.from(`begin\t${record.id}\t`)), new Finder(Buffer.from(`finish\t${record.id}\t`))],
        };
        events.push({ type: 'stream', streamId: record.id });
        break;
      case 'begin':
        this.object = { name: record.name, size: 0, hash: createHash('sha256') };
        events.push({ type: 'begin', streamId: record.id, name: record.name });
        break;
      case 'data':
        this.mode = 'payload';
        this.payloadLeft = record.length;
        break;
      case 'end': {
        const sha256 = object!.hash.digest('hex');
        if (object!.size !== record.size) {
          this.lose(events, `object ${object!.name} is damaged: ${object!.size} bytes of data arrived, its end record says ${record.size}`);
        } else if (sha256 !== record.sha256) {
          this.lose(events, `object ${object!.name} is damaged: its data has SHA-256 ${sha256}, its end record says ${record.sha256}`);
        } else {
          this.object = null;
          stream!.objects++;
          events.push({ type: 'end', name: object!.name, size: record.size, sha256 });
        }
        break;
      }
      case 'finish':
        events.push({ type: 'finish', streamId: stream!.id, count: record.count, objects: stream!.objects });
        this.stream = null;
        this.skipReason = `bytes after the end of stream ${stream!.id}`;
        break;
    }
    return true;
  }

  /**
   * The line at pos is not a record in its place. A search match: search on from its next byte. Otherwise: the open
   * object is lost, and a search starts where the damage may begin (a cut record's payload may hold the next stream).
   */
  private damage(events: StreamEvent[], reason: string): true {
    if (this.candidate) {
      this.candidate = false;
      this.pos++;
    } else {
      if (this.object) this.lose(events, reason);
      this.pos = this.rescanFrom;
      // Outside a stream, say what the bytes are around (before the first header, after a finish).
      this.skipReason = this.stream ? reason : `${this.skipReason} (${reason})`;
    }
    this.mode = 'search';
    return true;
  }

  /** Moves to the next stream header (or begin or finish record of the open stream); false when none is in sight. */
  private search(): boolean {
    let found = this.magic.next(this.window, this.pos);
    for (const finder of this.stream?.finders ?? []) {
      const at = finder.next(this.window, this.pos);
      if (at !== -1 && (found === -1 || at < found)) found = at;
    }
    if (found === -1) {
      // Keep what may be the start of a pattern cut by the end of the input so far.
      const longest = Math.max(MAGIC.length, ...(this.stream?.finders ?? []).map((f) => f.pattern.length));
      this.pos = this.eof ? this.window.end : Math.max(this.pos, this.window.end - longest + 1);
      return false;
    }
    this.pos = found;
    this.mode = 'line';
    this.candidate = true;
    return true;
  }

  private lose(events: StreamEvent[], reason: string): void {
    const object = this.object!;
    this.object = null;
    events.push({ type: 'lost', name: object.name, size: object.size, reason });
  }
}
