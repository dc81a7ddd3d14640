// Blanket's total order of paths ("apath" order) and its ASCII sort keys, on raw name bytes.
//
// Order: compare paths component by component; at the first position where they differ,
// a path that ends there (a direct child of the common directory) sorts first; otherwise
// the two component names are compared as bytes. So a directory's direct children come
// before anything deeper, and every directory's contents are one contiguous range:
//
//     a   b   c   a/x   a/y   a/x/1   b/z        (a, b: directories; c, x, y, 1, z: files)
//
// A key encodes a path so that plain string comparison (bytewise, ASCII) equals that order:
//
//     key(c1/c2/.../cn) = "1" hex(c1) "." "1" hex(c2) "." ... "0" hex(cn) "."
//     key(root)         = "-"
//
// The "0"/"1" token type puts direct children before deeper paths, "." (below every hex digit)
// ends a name so a prefix name sorts first, and lowercase hex preserves byte order. The contents
// of directory D are exactly the keys that start with contentsPrefix(D). Keys are what indexes
// store; they contain no tab, newline or space, so they can be handled by awk and sort -C.

import { BlanketError, ErrorCodes } from './errors.js';

/** The key of the backup root itself. */
export const ROOT_KEY = '-';
/** Sorts before every key: "nothing covered yet". */
export const BEFORE_ALL = '!';
/** Sorts after every key: "covered to the end of the tree". */
export const AFTER_ALL = '~';

/** Contents prefix of the root directory: every non-root key starts with it. */
export const ROOT_CONTENTS_PREFIX = '';

/** Key of a direct child named `name` of the directory whose contents prefix is `parentPrefix`. */
export function childKey(parentPrefix: string, name: Buffer): string {
  return parentPrefix + '0' + name.toString('hex') + '.';
}

/** Contents prefix of a child directory named `name` of the directory with contents prefix `parentPrefix`. */
export function childContentsPrefix(parentPrefix: string, name: Buffer): string {
  return parentPrefix + '1' + name.toString('hex') + '.';
}

/** Splits a relative path (components separated by "/"; empty = root) into its components. */
export function splitPath(path: Buffer): Buffer[] {
  if (path.length === 0) return [];
  const components: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || path[i] === 0x2f) {
      components.push(path.subarray(start, i));
      start = i + 1;
    }
  }
  return components;
}

/** The key of a relative path ("" is the root). Throws on empty, "." or ".." components, or NUL bytes. */
export function pathToKey(path: Buffer): string {
  const components = splitPath(path);
  if (components.length === 0) return ROOT_KEY;
  let prefix = ROOT_CONTENTS_PREFIX;
  for (let i = 0; i < components.length - 1; i++) {
    prefix = childContentsPrefix(prefix, checkedComponent(components[i]!, path));
  }
  return childKey(prefix, checkedComponent(components[components.length - 1]!, path));
}

/** Contents prefix of the directory at `path` ("" is the root): keys of everything below it start with this. */
export function pathToContentsPrefix(path: Buffer): string {
  let prefix = ROOT_CONTENTS_PREFIX;
  for (const component of splitPath(path)) prefix = childContentsPrefix(prefix, checkedComponent(component, path));
  return prefix;
}

/** Contents prefix of the directory whose own key is `key`. */
export function keyToContentsPrefix(key: string): string {
  if (key === ROOT_KEY) return ROOT_CONTENTS_PREFIX;
  const lastToken = key.lastIndexOf('.', key.length - 2) + 1;
  return key.slice(0, lastToken) + '1' + key.slice(lastToken + 1);
}

/** The key of the parent directory of `key` (root for top-level paths). */
export function parentKey(key: string): string {
  if (key === ROOT_KEY) throw new RangeError('the root has no parent');
  const lastToken = key.lastIndexOf('.', key.length - 2) + 1;
  if (lastToken === 0) return ROOT_KEY;
  const parentStart = key.lastIndexOf('.', lastToken - 2) + 1;
  return key.slice(0, parentStart) + '0' + key.slice(parentStart + 1, lastToken);
}

/** True when `key` is the directory `dirKey` itself or anything below it. */
export function isInSubtree(key: string, dirKey: string): boolean {
  return key === dirKey || dirKey === ROOT_KEY || key.startsWith(keyToContentsPrefix(dirKey));
}

/**
 * True if `key` is a well-formed key of a valid path: tokens "1" hex "." for directories, a last token "0" hex
 * "." (lowercase hex, at least one byte per name), and no empty, "." or ".." component, no "/" or NUL byte in a
 * name. Checked on the hex text without decoding (this runs for every entry of every index read).
 */
export function isValidKey(key: string): boolean {
  return key === ROOT_KEY || scanKey(key, undefined) >= 0;
}

/** Decodes a key back to its path bytes. Throws BLANKET_E_CORRUPT_OBJECT on a malformed or unsafe key. */
export function keyToPath(key: string): Buffer {
  if (key === ROOT_KEY) return Buffer.alloc(0);
  // A valid key of L characters holds L/2 - 1 path bytes: per name 2 hex digits a byte, a type and a "." for
  // the "/" before it or the missing one at the start.
  const path = Buffer.allocUnsafe(Math.max(0, (key.length >> 1) - 1));
  if (scanKey(key, path) !== path.length) {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `malformed path key ${JSON.stringify(key.slice(0, 80))}`);
  }
  return path;
}

/** Value of each lowercase hex digit by character code (ASCII), -1 for every other character. */
const HEX_VALUE = Int8Array.from({ length: 128 }, (_, code) => (code >= 0x30 && code <= 0x39 ? code - 0x30 : code >= 0x61 && code <= 0x66 ? code - 0x57 : -1));

/**
 * One pass over a non-root key: -1 if it is not valid (see isValidKey), else the length of its path, whose bytes
 * are written to `out` (when given and long enough) as they are decoded.
 */
function scanKey(key: string, out: Buffer | undefined): number {
  const length = key.length;
  let i = 0;
  let at = 0;
  for (;;) {
    if (i >= length) return -1; // empty, or a directory token last
    const type = key.charCodeAt(i++);
    if (type !== 0x30 && type !== 0x31) return -1;
    const nameStart = i;
    for (;;) {
      if (i >= length) return -1;
      const code = key.charCodeAt(i);
      const high = code < 128 ? HEX_VALUE[code]! : -1;
      if (high < 0) {
        if (code === 0x2e) break;
        return -1;
      }
      const next = i + 1 < length ? key.charCodeAt(i + 1) : 0;
      const low = next < 128 ? HEX_VALUE[next]! : -1;
      if (low < 0) return -1;
      const byte = (high << 4) | low;
      if (byte === 0 || byte === 0x2f) return -1; // NUL, "/"
      if (out !== undefined) out[at] = byte;
      at++;
      i += 2;
    }
    const nameLength = (i - nameStart) >> 1;
    if (nameLength === 0) return -1;
    if (nameLength <= 2 && key.startsWith(nameLength === 1 ? '2e' : '2e2e', nameStart)) return -1; // ".", ".."
    i++; // the "."
    if (type === 0x30) return i === length ? at : -1; // a file's token (or the last name's) ends the key
    if (out !== undefined) out[at] = 0x2f;
    at++;
  }
}

/** Apath comparison done directly on path bytes; the reference that keys must agree with. */
export function comparePaths(a: Buffer, b: Buffer): number {
  const ac = splitPath(a);
  const bc = splitPath(b);
  if (ac.length === 0 || bc.length === 0) return ac.length === bc.length ? 0 : ac.length === 0 ? -1 : 1;
  for (let i = 0; ; i++) {
    const aLast = i === ac.length - 1;
    const bLast = i === bc.length - 1;
    const byName = Buffer.compare(ac[i]!, bc[i]!);
    if (aLast && bLast) return byName;
    if (aLast) return -1;
    if (bLast) return 1;
    if (byName !== 0) return byName;
  }
}

/** A path as text for people: UTF-8 where valid, other bytes as \xNN (and backslash as \\). */
export function displayPath(path: Buffer): string {
  const text = path.toString('utf8');
  if (!text.includes('\ufffd') && !text.includes('\\') && !/[\x00-\x1f\x7f]/.test(text)) return text;
  let out = '';
  let i = 0;
  while (i < path.length) {
    const length = utf8SequenceLength(path, i);
    if (length > 0) {
      const ch = path.subarray(i, i + length).toString('utf8');
      if (ch === '\\') out += '\\\\';
      else if (length === 1 && (path[i]! < 0x20 || path[i] === 0x7f)) out += '\\x' + path[i]!.toString(16).padStart(2, '0');
      else out += ch;
      i += length;
    } else {
      out += '\\x' + path[i]!.toString(16).padStart(2, '0');
      i += 1;
    }
  }
  return out;
}

/** Parses displayPath's text form back to bytes (used for PATH arguments given on a command line). */
export function parseDisplayPath(text: string): Buffer {
  const out: Buffer[] = [];
  let literal = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\\' && text[i + 1] === '\\') {
      literal += '\\';
      i++;
    } else if (text[i] === '\\' && text[i + 1] === 'x' && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 2, i + 4))) {
      out.push(Buffer.from(literal, 'utf8'), Buffer.from([parseInt(text.slice(i + 2, i + 4), 16)]));
      literal = '';
      i += 3;
    } else {
      literal += text[i];
    }
  }
  out.push(Buffer.from(literal, 'utf8'));
  return Buffer.concat(out);
}

/** Normalises a user-given relative path: strips leading/trailing "/" and "./", collapses "//". */
export function normaliseRelativePath(path: Buffer): Buffer {
  const kept = splitPath(path).filter((c) => c.length > 0 && !(c.length === 1 && c[0] === 0x2e));
  const out: Buffer[] = [];
  kept.forEach((c, i) => {
    if (i > 0) out.push(SLASH);
    out.push(c);
  });
  return Buffer.concat(out);
}

const SLASH = Buffer.from('/');

function isSafeComponent(component: Buffer): boolean {
  if (component.length === 0) return false;
  if (component.includes(0) || component.includes(0x2f)) return false;
  if (component.length === 1 && component[0] === 0x2e) return false;
  if (component.length === 2 && component[0] === 0x2e && component[1] === 0x2e) return false;
  return true;
}

function checkedComponent(component: Buffer, path: Buffer): Buffer {
  if (!isSafeComponent(component)) {
    throw new BlanketError(ErrorCodes.USAGE, `invalid path ${JSON.stringify(displayPath(path))}: empty, ".", ".." or NUL component`);
  }
  return component;
}

function utf8SequenceLength(buf: Buffer, i: number): number {
  const b0 = buf[i]!;
  if (b0 < 0x80) return 1;
  const need = b0 >= 0xf0 && b0 <= 0xf4 ? 4 : b0 >= 0xe0 ? (b0 <= 0xef ? 3 : 0) : b0 >= 0xc2 ? 2 : 0;
  if (need === 0 || i + need > buf.length) return 0;
  for (let k = 1; k < need; k++) if ((buf[i + k]! & 0xc0) !== 0x80) return 0;
  const decoded = buf.subarray(i, i + need).toString('utf8');
  return decoded.includes('\ufffd') ? 0 : need;
}
