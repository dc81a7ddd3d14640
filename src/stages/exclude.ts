// Exclude patterns: gitignore semantics (via the `ignore` package) over raw relative path bytes.

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { BlanketError, ErrorCodes } from '../formats/errors.js';

export interface ExcludeMatcherOptions {
  /** Match case-insensitively (default false, like git on Linux; the `ignore` package's own default is true). */
  ignoreCase?: boolean;
}

type IgnoreFactory = typeof import('ignore');

/**
 * The `ignore` package, loaded on first use with require(): most runs have no excludes, and an ES import of this
 * CommonJS module would have Node scan its 50 KB source for export names in every thread that loads this
 * module (~20 ms, plus ~0.1 s of optimizing compiles of the scanner on V8's background threads).
 */
let ignoreFactory: IgnoreFactory | undefined;
function loadIgnore(): IgnoreFactory {
  return (ignoreFactory ??= createRequire(import.meta.url)('ignore') as IgnoreFactory);
}

/** Cached results kept by one `ignore` instance before it is replaced by a fresh one (bounds memory on huge trees). */
const CACHE_LIMIT = 100_000;

/**
 * Builds `isExcluded(relPath, isDir)` from gitignore-style patterns, relative to the backup root.
 * Directories are matched with a trailing "/" so that `build/` patterns apply to them only.
 * Path bytes are decoded as UTF-8; bytes that are not valid UTF-8 stand for themselves as latin1 characters.
 */
export function createExcludeMatcher(
  patterns: string[],
  options: ExcludeMatcherOptions = {},
): (relPath: Buffer, isDir: boolean) => boolean {
  const rules = patterns.filter((pattern) => pattern.trim() !== '');
  if (rules.length === 0) return () => false;
  const ignoreCase = options.ignoreCase ?? false;
  const ignore = loadIgnore();
  const build = () => ignore({ ignoreCase, allowRelativePaths: true }).add(rules);
  let matcher = build();
  let calls = 0;
  return (relPath: Buffer, isDir: boolean): boolean => {
    if (relPath.length === 0) return false; // the root itself is never excluded
    if (++calls > CACHE_LIMIT) {
      matcher = build();
      calls = 0;
    }
    const text = decodePath(relPath);
    return matcher.ignores(isDir ? text + '/' : text);
  };
}

/** Reads a gitignore-style exclude file: one pattern a line; blank lines and "#" comments are dropped. */
export function readExcludeFile(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new BlanketError(ErrorCodes.USAGE, `cannot read exclude file ${file}: ${(error as Error).message}`, {
      subject: file,
      cause: error,
    });
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  return text
    .split(/\r?\n/)
    .filter((line) => line.trim() !== '' && !line.startsWith('#'));
}

/** UTF-8 where valid; every byte of an invalid sequence becomes the latin1 character of the same value. */
export function decodePath(path: Buffer): string {
  const text = path.toString('utf8');
  if (!text.includes('\ufffd')) return text;
  let out = '';
  let i = 0;
  while (i < path.length) {
    const length = utf8SequenceLength(path, i);
    if (length > 0) {
      out += path.toString('utf8', i, i + length);
      i += length;
    } else {
      out += String.fromCharCode(path[i]!);
      i += 1;
    }
  }
  return out;
}

/** Length of the valid UTF-8 sequence starting at `i`, or 0 if the byte there does not start one. */
function utf8SequenceLength(buf: Buffer, i: number): number {
  const b0 = buf[i]!;
  if (b0 < 0x80) return 1;
  const need = b0 >= 0xc2 && b0 <= 0xdf ? 2 : b0 >= 0xe0 && b0 <= 0xef ? 3 : b0 >= 0xf0 && b0 <= 0xf4 ? 4 : 0;
  if (need === 0 || i + need > buf.length) return 0;
  for (let k = 1; k < need; k++) if ((buf[i + k]! & 0xc0) !== 0x80) return 0;
  // Overlongs, surrogates and values above U+10FFFF decode to U+FFFD (but EF BF BD is U+FFFD itself).
  if (need === 3 && b0 === 0xef && buf[i + 1] === 0xbf && buf[i + 2] === 0xbd) return 3;
  return buf.toString('utf8', i, i + need).includes('\ufffd') ? 0 : need;
}
