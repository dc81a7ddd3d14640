// Names of archive objects and the archive header: short ASCII names, never a source file name.
//
//   blanket.json                          archive header (format, version, id), written once by init
//   layers/LLLLLL/SSSSSSSS.tar.zst        pack data: tar of content members named by SHA-256, zstd frames
//   layers/LLLLLL/SSSSSSSS.idx.zst        pack index: the commit point (checkpoint) of that pack
//   lock                                  present while a run holds the archive
//
// A pack's "stem" is "LLLLLL/SSSSSSSS": layer number and sequence number within the layer, zero-padded
// so that sorting names sorts packs in the order they were written.

import { createHash } from 'node:crypto';
import { BlanketError, ErrorCodes } from './errors.js';

/** Object names are short ASCII: digits, a-z, ".", "-", "/", no empty or dot components, at most 200 characters. */
export function isObjectName(name: string): boolean {
  return name.length <= 200 && /^[0-9a-z.\-]+(?:\/[0-9a-z.\-]+)*$/.test(name) && !name.split('/').some((c) => c === '.' || c === '..');
}

export const FORMAT_NAME = 'blanket';
export const FORMAT_VERSION = 1;
export const HEADER_OBJECT = 'blanket.json';
export const LOCK_OBJECT = 'lock';

/** Marker of the one run allowed to delete the stale lock whose token is `token` (see stages/archive-lock.ts). */
export function lockBreakObject(token: string): string {
  if (!/^[0-9a-z]{1,32}$/.test(token)) return `${LOCK_OBJECT}-break-unreadable`;
  return `${LOCK_OBJECT}-break-${token}`;
}
export const LAYERS_PREFIX = 'layers/';

const STEM_PATTERN = /^(\d{6})\/(\d{8})$/;
const INDEX_NAME_PATTERN = /^layers\/(\d{6})\/(\d{8})\.idx\.zst$/;
const PACK_NAME_PATTERN = /^layers\/(\d{6})\/(\d{8})\.tar\.zst$/;
export const MAX_LAYER = 999_999;
export const MAX_SEQ = 99_999_999;

export interface PackId {
  readonly layer: number;
  readonly seq: number;
}

export function packStem(id: PackId): string {
  if (!Number.isInteger(id.layer) || id.layer < 1 || id.layer > MAX_LAYER) throw new RangeError(`layer ${id.layer} out of range`);
  if (!Number.isInteger(id.seq) || id.seq < 1 || id.seq > MAX_SEQ) throw new RangeError(`pack sequence ${id.seq} out of range`);
  return `${String(id.layer).padStart(6, '0')}/${String(id.seq).padStart(8, '0')}`;
}

export function parseStem(stem: string): PackId | undefined {
  const m = STEM_PATTERN.exec(stem);
  if (!m) return undefined;
  const id = { layer: Number(m[1]), seq: Number(m[2]) };
  return id.layer >= 1 && id.seq >= 1 ? id : undefined;
}

export function isValidStem(stem: string): boolean {
  return parseStem(stem) !== undefined;
}

export function indexObjectName(stem: string): string {
  return `${LAYERS_PREFIX}${stem}.idx.zst`;
}

export function packObjectName(stem: string): string {
  return `${LAYERS_PREFIX}${stem}.tar.zst`;
}

/** Parses an object name from a listing: an index, a pack, or neither (undefined). */
export function classifyObjectName(name: string): { kind: 'index' | 'pack'; id: PackId; stem: string } | undefined {
  for (const [kind, pattern] of [
    ['index', INDEX_NAME_PATTERN],
    ['pack', PACK_NAME_PATTERN],
  ] as const) {
    const m = pattern.exec(name);
    if (m) {
      const id = { layer: Number(m[1]), seq: Number(m[2]) };
      if (id.layer >= 1 && id.seq >= 1) return { kind, id, stem: `${m[1]}/${m[2]}` };
    }
  }
  return undefined;
}

export function comparePackIds(a: PackId, b: PackId): number {
  return a.layer - b.layer || a.seq - b.seq;
}

export interface ArchiveHeader {
  readonly format: typeof FORMAT_NAME;
  readonly version: number;
  /** Random id, 32 hex digits; names the local cache of this archive. */
  readonly id: string;
  /** Creation time, ISO 8601. */
  readonly created: string;
}

/** SHA-256 of the header's fields, one per line: catches a flipped digit in the id that JSON would not. */
export function headerCheck(header: ArchiveHeader): string {
  return createHash('sha256').update(`${header.format}\n${header.version}\n${header.id}\n${header.created}\n`).digest('hex');
}

const HEADER_FIELDS = new Set(['format', 'version', 'id', 'created', 'check']);

export function encodeHeader(header: ArchiveHeader): Buffer {
  const { format, version, id, created } = header;
  return Buffer.from(JSON.stringify({ format, version, id, created, check: headerCheck(header) }, null, 2) + '\n');
}

export function decodeHeader(bytes: Buffer, objectName = HEADER_OBJECT): ArchiveHeader {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (cause) {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `${objectName}: not valid JSON`, { subject: objectName, cause });
  }
  if (typeof value !== 'object' || value === null) {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `${objectName}: not a Blanket archive header`, { subject: objectName });
  }
  const v = value as Record<string, unknown>;
  if (v.format !== FORMAT_NAME) {
    throw new BlanketError(ErrorCodes.NOT_AN_ARCHIVE, `${objectName}: not a Blanket archive header (format ${JSON.stringify(v.format)})`, {
      subject: objectName,
    });
  }
  if (typeof v.version !== 'number' || !Number.isInteger(v.version)) {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `${objectName}: missing format version`, { subject: objectName });
  }
  if (v.version > FORMAT_VERSION) {
    throw new BlanketError(
      ErrorCodes.FORMAT_VERSION,
      `${objectName}: this archive uses format version ${v.version}, but this Blanket reads only up to version ${FORMAT_VERSION}: upgrade Blanket`,
      { subject: objectName },
    );
  }
  if (typeof v.id !== 'string' || !/^[0-9a-f]{32}$/.test(v.id) || typeof v.created !== 'string') {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `${objectName}: malformed id or creation time`, { subject: objectName });
  }
  const unknown = Object.keys(v).find((field) => !HEADER_FIELDS.has(field));
  if (unknown !== undefined) {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `${objectName}: unknown field ${JSON.stringify(unknown.slice(0, 40))}`, { subject: objectName });
  }
  const header: ArchiveHeader = { format: FORMAT_NAME, version: v.version, id: v.id, created: v.created };
  // Headers written before the check existed have none; one that has it must match.
  if (v.check !== undefined && v.check !== headerCheck(header)) {
    throw new BlanketError(ErrorCodes.CORRUPT_OBJECT, `${objectName}: checksum mismatch: the header is damaged`, { subject: objectName });
  }
  return header;
}
