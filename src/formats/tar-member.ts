// Tar framing of a pack's content members: the ustar header of a member named by its hash, padding, end of archive.
//
// A member is  header (512) · content · zero padding to a multiple of 512;  a pack's tar ends with 1024 zero bytes.
// The header is the one tar-stream writes for {name, size, mode 0644, mtime 0, uid 0, gid 0, type file}, so
// packs built here and packs built by tar-stream are the same bytes.

export const TAR_BLOCK = 512;
/** Two zero blocks end a tar archive. */
export const END_OF_TAR_SIZE = 2 * TAR_BLOCK;

const MEMBER_MODE = 0o644;

/** Bytes a member of `size` content bytes takes in the tar: header, content, padding. */
export function memberTarSize(size: number): number {
  return TAR_BLOCK + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
}

/** Writes the 512-byte ustar header of a member `name` (ASCII, at most 100 bytes) of `size` bytes at `offset`. */
export function writeMemberHeader(target: Uint8Array, offset: number, name: string, size: number): void {
  if (name.length === 0 || name.length > 100 || !/^[\x21-\x7e]+$/.test(name)) throw new RangeError(`invalid tar member name ${JSON.stringify(name)}`);
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid tar member size ${size}`);
  const header = target.subarray(offset, offset + TAR_BLOCK);
  header.fill(0);
  writeAscii(header, 0, name);
  writeAscii(header, 100, octal(MEMBER_MODE, 6));
  writeAscii(header, 108, octal(0, 6));
  writeAscii(header, 116, octal(0, 6));
  if (size.toString(8).length > 11) {
    // base-256, as GNU tar and tar-stream write sizes of 8 GiB and more
    header[124] = 0x80;
    let rest = size;
    for (let i = 11; i > 0; i--) {
      header[124 + i] = rest % 256;
      rest = Math.floor(rest / 256);
    }
  } else {
    writeAscii(header, 124, octal(size, 11));
  }
  writeAscii(header, 136, octal(0, 11));
  header[156] = 0x30; // '0': regular file
  writeAscii(header, 257, 'ustar\0');
  writeAscii(header, 263, '00');
  writeAscii(header, 329, octal(0, 6));
  writeAscii(header, 337, octal(0, 6));
  let sum = 8 * 0x20; // the checksum field counts as spaces
  for (let i = 0; i < 148; i++) sum += header[i]!;
  for (let i = 156; i < TAR_BLOCK; i++) sum += header[i]!;
  writeAscii(header, 148, octal(sum, 6));
}

/** Zero-padded octal digits followed by a space, as tar-stream writes numeric fields. */
function octal(value: number, digits: number): string {
  const text = value.toString(8);
  return (text.length > digits ? '7'.repeat(digits) : '0'.repeat(digits - text.length) + text) + ' ';
}

function writeAscii(target: Uint8Array, offset: number, text: string): void {
  for (let i = 0; i < text.length; i++) target[offset + i] = text.charCodeAt(i);
}

/** One member's header as the reader sees it: name (prefix joined), content size, and type flag ('0' for a file). */
export interface TarHeader {
  readonly name: string;
  readonly size: number;
  /** The type flag as a character; '0' (or NUL, old tars) is a regular file. */
  readonly type: string;
}

/** Where a TarReader delivers what it parses. */
export interface TarSink {
  /** A member begins; true asks for its content, false skips it. */
  header(header: TarHeader): boolean;
  /** Content of the current member, as views into the pushed chunks (no copy). */
  data(bytes: Buffer): void;
  /** The current member's content is complete (called for skipped members too). */
  memberEnd(): void;
}

/** A tar stream that cannot be what it claims: the message says what and at which byte. */
export class TarFormatError extends Error {
  override readonly name = 'TarFormatError';
}

/**
 * Incremental tar reader: push() bytes in any chunking, the sink receives headers and content as they complete.
 * It reads what Blanket writes (ustar, base-256 sizes) and steps over anything else (pax, GNU long names) as
 * members of other types. A zero block ends the archive: bytes after it are counted, never parsed, so a stream
 * that expands into zeros stops at once.
 *
 *   header (512) ─▶ sink.header ─▶ content (size) ─▶ sink.data … ─▶ padding to 512 ─▶ sink.memberEnd ─▶ header …
 */
export class TarReader {
  private readonly block = Buffer.alloc(TAR_BLOCK);
  private blockLength = 0;
  /** Content bytes of the current member still to come, then its padding. */
  private contentLeft = 0;
  private paddingLeft = 0;
  private inMember = false;
  private wanted = false;
  private ended = false;
  /** Stream offset of the next byte pushed, for messages. */
  private offset = 0;

  constructor(
    private readonly sink: TarSink,
    /** Largest content size accepted: a size beyond it is damage, and nothing after it would line up. */
    private readonly maxMemberSize = Number.MAX_SAFE_INTEGER,
  ) {}

  /** True once the end-of-archive block was read. */
  get finished(): boolean {
    return this.ended;
  }

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.ended) {
      if (this.inMember) {
        const take = Math.min(this.contentLeft, chunk.length - at);
        if (take > 0 && this.wanted) this.sink.data(chunk.subarray(at, at + take));
        this.contentLeft -= take;
        at += take;
        const skip = this.contentLeft > 0 ? 0 : Math.min(this.paddingLeft, chunk.length - at);
        this.paddingLeft -= skip;
        at += skip;
        this.endMemberIfComplete();
        continue;
      }
      const take = Math.min(TAR_BLOCK - this.blockLength, chunk.length - at);
      chunk.copy(this.block, this.blockLength, at, at + take);
      this.blockLength += take;
      at += take;
      if (this.blockLength < TAR_BLOCK) break;
      this.blockLength = 0;
      this.startMember(this.offset + at - TAR_BLOCK);
      this.endMemberIfComplete(); // an empty member has nothing more to come
    }
    this.offset += chunk.length;
  }

  private endMemberIfComplete(): void {
    if (!this.inMember || this.contentLeft > 0 || this.paddingLeft > 0) return;
    this.inMember = false;
    this.sink.memberEnd();
  }

  /** The stream is over: throws if it stopped inside a header or a member, or before the end-of-archive block. */
  end(): void {
    if (this.ended) return;
    if (this.inMember) throw new TarFormatError(`the tar ends inside a member, ${this.contentLeft + this.paddingLeft} bytes short`);
    if (this.blockLength > 0) throw new TarFormatError(`the tar ends inside a header, at byte ${this.offset}`);
    throw new TarFormatError(`the tar ends at byte ${this.offset} without its end-of-archive block`);
  }

  private startMember(at: number): void {
    const header = this.block;
    if (header.every((byte) => byte === 0)) {
      this.ended = true;
      return;
    }
    const stored = parseOctal(header, 148, 8);
    let unsigned = 8 * 0x20;
    let signed = 8 * 0x20;
    for (let i = 0; i < TAR_BLOCK; i++) {
      if (i >= 148 && i < 156) continue;
      unsigned += header[i]!;
      signed += (header[i]! << 24) >> 24;
    }
    if (stored === null || (stored !== unsigned && stored !== signed)) throw new TarFormatError(`bad tar header checksum at byte ${at}`);
    const size = parseSize(header);
    if (size === null) throw new TarFormatError(`unreadable size in the tar header at byte ${at}`);
    if (size > this.maxMemberSize) throw new TarFormatError(`the member at byte ${at} declares ${size} bytes, more than any member holds`);
    let name = cString(header, 0, 100);
    const ustar = header.toString('latin1', 257, 262) === 'ustar';
    const prefix = ustar ? cString(header, 345, 155) : '';
    if (prefix.length > 0) name = `${prefix}/${name}`;
    const type = header[156] === 0 ? '0' : String.fromCharCode(header[156]!);
    this.inMember = true;
    this.contentLeft = size;
    this.paddingLeft = (TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK;
    this.wanted = this.sink.header({ name, size, type });
  }
}

function cString(block: Buffer, offset: number, length: number): string {
  const end = block.indexOf(0, offset);
  return block.toString('latin1', offset, end < 0 || end > offset + length ? offset + length : end);
}

/** An octal field (spaces and NULs around the digits allowed), or null if it holds anything else. */
function parseOctal(block: Buffer, offset: number, length: number): number | null {
  let value = 0;
  let digits = 0;
  let i = offset;
  const end = offset + length;
  while (i < end && block[i] === 0x20) i++;
  for (; i < end && block[i]! >= 0x30 && block[i]! <= 0x37; i++, digits++) value = value * 8 + (block[i]! - 0x30);
  for (; i < end; i++) if (block[i] !== 0 && block[i] !== 0x20) return null;
  return digits > 0 ? value : null;
}

/** The size field: octal, or base-256 (high bit set) for 8 GiB and more; null if unreadable or unsafe. */
function parseSize(block: Buffer): number | null {
  if ((block[124]! & 0x80) === 0) return parseOctal(block, 124, 12);
  if (block[124] !== 0x80) return null; // negative, or beyond any safe integer
  let value = 0;
  for (let i = 125; i < 136; i++) value = value * 256 + block[i]!;
  return Number.isSafeInteger(value) ? value : null;
}
