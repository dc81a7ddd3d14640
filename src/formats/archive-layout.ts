// Names of archive objects and the archive header: short ASCII names, never a source file name.
//
//   blanket.json                          archive header (format, version, id), written once by init
//   layers/LLLLLL/SSSSSSSS.tar.zst        pack data: tar of content members named by SHA-256, zstd frames
//   layers/LLLLLL/SSSSSSSS.idx.zst        pack index: the commit point (checkpoint) of that pack
//   layers/LLLLLL/base-SSSSSSSS.idx.zst   base of layer L (written by gc): the whole state as of layer L, index only
//   layers/LLLLLL/base                    marker: layer L's base is complete, and layers before L are collected
//   lock                                  present while a run holds the archive
//
// A pack's "stem" is "LLLLLL/SSSSSSSS": layer number and sequence number within the layer, zero-padded
// so that sorting names sorts packs in the order they were written. A base index's stem is "LLLLLL/base-SSSSSSSS".

import { createHash } from 'node:crypto';
import { BlanketError, ErrorCodes } from './errors.js';

/** Object names are short ASCII: digits, a-z, ".", "-", "/", no empty or dot components, at most 200 characters. */
export function isObjectName(name: string): boolean {
  return name.length <= 200 && /^[0-9a-z.\-]+(?:\/[0-9a-z.\-]+)*$/.test(name) && !name.split('/').some((c) => c === '.' || c === '..');
}

export const FORMAT_NAME = 'blanket';
/** The header version new archives get: an archive is moved to version 2 by the gc that writes its first base. */
export const FORMAT_VERSION = 1;
/** Version 2: the archive may have a base (see BASE_MARKER), which a reader of version 1 would not know to read. */
export const FORMAT_VERSION_WITH_BASES = 2;
/** Newest header version this Blanket reads. */
export const READABLE_FORMAT_VERSION = FORMAT_VERSION_WITH_BASES;
export const HEADER_OBJECT = 'blanket.json';
export const LOCK_OBJECT = 'lock';

/** Marker of the one run allowed to delete the stale lock whose token is `token` (see stages/archive-lock.ts). */
export function lockBreakObject(token: string): string {
  if (!/^[0-9a-z]{1,32}$/.test(token)) return `${LOCK_OBJECT}-break-unreadable`;
  return `${LOCK_OBJECT}-break-${token}`;
}
export const LAYERS_PREFIX = 'layers/';

const STEM_PATTERN = /^(\d{6})\/(\d{8})$/;
const BASE_STEM_PATTERN = /^(\d{6})\/base-(\d{8})$/;
const INDEX_NAME_PATTERN = /^layers\/(\d{6})\/(\d{8})\.idx\.zst$/;
const BASE_INDEX_NAME_PATTERN = /^layers\/(\d{6})\/base-(\d{8})\.idx\.zst$/;
const PACK_NAME_PATTERN = /^layers\/(\d{6})\/(\d{8})\.tar\.zst$/;
const BASE_MARKER_PATTERN = /^layers\/(\d{6})\/base$/;
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

/** Stem of base index `seq` of layer `layer` (see BASE_MARKER): "LLLLLL/base-SSSSSSSS". */
export function baseIndexStem(id: PackId): string {
  const stem = packStem(id);
  return `${stem.slice(0, 6)}/base-${stem.slice(7)}`;
}

/** A pack stem or a base index stem, parsed; undefined if it is neither. */
export function parseIndexStem(stem: string): (PackId & { readonly base: boolean }) | undefined {
  const m = STEM_PATTERN.exec(stem) ?? BASE_STEM_PATTERN.exec(stem);
  if (!m) return undefined;
  const id = { layer: Number(m[1]), seq: Number(m[2]), base: m[0].includes('base') };
  return id.layer >= 1 && id.seq >= 1 ? id : undefined;
}

/**
 * The marker that layer `layer` has a complete base: written by gc after every base index of that layer, it says
 * that readers start from that base and no longer replay the layers before `layer` (their index objects stay only
 * while their packs hold content something still needs).
 */
export function baseMarkerName(layer: number): string {
  return `${LAYERS_PREFIX}${packStem({ layer, seq: 1 }).slice(0, 6)}/base`;
}

export type ObjectKind = 'index' | 'pack' | 'base-marker';

/**
 * Parses an object name from a listing: an index (`base` for a base index), a pack, a base marker (its id's seq is
 * 0), or neither (undefined).
 */
export function classifyObjectName(name: string): { kind: ObjectKind; id: PackId; stem: string; base: boolean } | undefined {
  for (const [kind, pattern, base] of [
    ['index', INDEX_NAME_PATTERN, false],
    ['pack', PACK_NAME_PATTERN, false],
    ['index', BASE_INDEX_NAME_PATTERN, true],
  ] as const) {
    const m = pattern.exec(name);
    if (m) {
      const id = { layer: Number(m[1]), seq: Number(m[2]) };
      if (id.layer >= 1 && id.seq >= 1) return { kind, id, stem: base ? `${m[1]}/base-${m[2]}` : `${m[1]}/${m[2]}`, base };
    }
  }
  const marker = BASE_MARKER_PATTERN.exec(name);
  if (marker && Number(marker[1]) >= 1) return { kind: 'base-marker', id: { layer: Number(marker[1]), seq: 0 }, stem: `${marker[1]}/base`, base: true };
  return undefined;
}

/** The name of an object of `kind` (base: a base index) with `id`: classifyObjectName's inverse. */
export function objectNameOf(kind: ObjectKind, id: PackId, base = false): string {
  if (kind === 'base-marker') return baseMarkerName(id.layer);
  if (kind === 'pack') return packObjectName(packStem(id));
  return indexObjectName(base ? baseIndexStem(id) : packStem(id));
}

/** The text of a base marker (readers need only that it exists; the text is for people). */
export function encodeBaseMarker(layer: number, time: number): Buffer {
  return Buffer.from(`blanket-base\t${layer}\ntime\t${time}\n`, 'latin1');
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
  if (v.version > READABLE_FORMAT_VERSION) {
    throw new BlanketError(
      ErrorCodes.FORMAT_VERSION,
      `${objectName}: this archive uses format version ${v.version}, but this Blanket reads only up to version ${READABLE_FORMAT_VERSION}: upgrade Blanket`,
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
