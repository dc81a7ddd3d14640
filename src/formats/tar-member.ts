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
