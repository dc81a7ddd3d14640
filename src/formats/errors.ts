// Blanket's error type: every failure a user can see carries a stable BLANKET_E_* code and an actionable message.

export const ErrorCodes = {
  /** Bad command-line usage or option value. */
  USAGE: 'BLANKET_E_USAGE',
  /** The archive location does not hold a Blanket archive. */
  NOT_AN_ARCHIVE: 'BLANKET_E_NOT_AN_ARCHIVE',
  /** The archive was written by a newer, unknown format version. */
  FORMAT_VERSION: 'BLANKET_E_FORMAT_VERSION',
  /** An archive object is malformed (cannot be parsed). */
  CORRUPT_OBJECT: 'BLANKET_E_CORRUPT_OBJECT',
  /** An archive object that the archive refers to is missing. */
  MISSING_OBJECT: 'BLANKET_E_MISSING_OBJECT',
  /** Stored content does not hash to the recorded value. */
  HASH_MISMATCH: 'BLANKET_E_HASH_MISMATCH',
  /** Another live run holds the archive lock. */
  LOCKED: 'BLANKET_E_LOCKED',
  /** The backup source cannot be read at all. */
  SOURCE: 'BLANKET_E_SOURCE',
  /** A store operation failed (I/O, permissions, space). */
  STORE_IO: 'BLANKET_E_STORE_IO',
  /** The archive asks restore to do something unsafe (escape DEST, device nodes, ...). */
  UNSAFE_ENTRY: 'BLANKET_E_UNSAFE_ENTRY',
  /** The requested layer or path does not exist in the archive. */
  NOT_FOUND: 'BLANKET_E_NOT_FOUND',
  /** The run was aborted (signal or fatal error elsewhere in the pipeline). */
  ABORTED: 'BLANKET_E_ABORTED',
  /** Restore or verify completed but some content could not be restored or checked. */
  INCOMPLETE: 'BLANKET_E_INCOMPLETE',
  /** An rdiff signature is malformed, or signature parameters are invalid. */
  RDIFF_SIGNATURE: 'BLANKET_E_RDIFF_SIGNATURE',
  /** An rdiff delta is malformed, or cannot be applied to the given basis. */
  RDIFF_DELTA: 'BLANKET_E_RDIFF_DELTA',
  /** gc found the archive damaged, and deletes nothing until it is repaired (verify names the damage). */
  DAMAGED_ARCHIVE: 'BLANKET_E_DAMAGED_ARCHIVE',
  /** A size cap is smaller than the newest state needs. */
  CAP_TOO_SMALL: 'BLANKET_E_CAP_TOO_SMALL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class BlanketError extends Error {
  readonly code: ErrorCode;
  /** The archive object, source file or option the error is about, when there is one. */
  readonly subject: string | undefined;
  /** The same request may succeed if made again (a dropped connection, a timeout, a busy server). */
  readonly transient: boolean;

  constructor(code: ErrorCode, message: string, options?: { subject?: string; cause?: unknown; transient?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BlanketError';
    this.code = code;
    this.subject = options?.subject;
    this.transient = options?.transient ?? false;
  }
}

export function isBlanketError(error: unknown, code?: ErrorCode): error is BlanketError {
  return error instanceof BlanketError && (code === undefined || error.code === code);
}

/** Node's errno code of an fs error (ENOENT, EACCES, ...), or undefined. */
export function errnoCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = (error as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}
