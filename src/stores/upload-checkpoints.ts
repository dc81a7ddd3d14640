// Local records of multipart uploads in progress (upload id, parts sent), so a killed upload resumes, not restarts.
//
//   DIR/<sha256(location, key)[:32]>.json   { location, key, uploadId, partSize, started, parts: [{ number, size, etag }] }
//
// A record is only a hint: it is rewritten (temporary file + rename) after each part the store has acknowledged,
// and a reader ignores one it cannot parse. The store stays the authority: a resumed part is skipped only when
// the new bytes have the MD5 its recorded ETag says, and a vanished upload just means sending again.

import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export interface UploadedPart {
  readonly number: number;
  readonly size: number;
  /** The ETag the store answered for the part (for S3 without KMS: the part's MD5, in hex). */
  readonly etag: string;
}

export interface UploadCheckpoint {
  readonly location: string;
  readonly key: string;
  readonly uploadId: string;
  readonly partSize: number;
  /** When the upload was started (ISO 8601): old records are abandoned uploads. */
  readonly started: string;
  readonly parts: readonly UploadedPart[];
}

export class UploadCheckpoints {
  /** Writes in progress per record file: each waits for the one before, so the newest state lands last. */
  private readonly writing = new Map<string, Promise<void>>();

  constructor(private readonly dir: string) {}

  async load(location: string, key: string): Promise<UploadCheckpoint | undefined> {
    const file = this.fileOf(location, key);
    await this.writing.get(file);
    const record = await readRecord(file);
    return record && record.location === location && record.key === key ? record : undefined;
  }

  /** Records `checkpoint` (replacing the one for its key); failures to write are ignored: it is only a hint. */
  save(checkpoint: UploadCheckpoint): Promise<void> {
    const file = this.fileOf(checkpoint.location, checkpoint.key);
    const text = JSON.stringify(checkpoint);
    const write = async (): Promise<void> => {
      const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
      try {
        await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
        await fsp.writeFile(temp, text, { mode: 0o600 });
        await fsp.rename(temp, file);
      } catch {
        await fsp.rm(temp, { force: true }).catch(() => undefined);
      }
    };
    const next = (this.writing.get(file) ?? Promise.resolve()).then(write);
    this.writing.set(file, next);
    void next.then(() => {
      if (this.writing.get(file) === next) this.writing.delete(file);
    });
    return next;
  }

  async remove(location: string, key: string): Promise<void> {
    const file = this.fileOf(location, key);
    await this.writing.get(file);
    await fsp.rm(file, { force: true }).catch(() => undefined);
  }

  /** Every record of `location` (for sweeping abandoned uploads). */
  async all(location: string): Promise<UploadCheckpoint[]> {
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch {
      return [];
    }
    const records: UploadCheckpoint[] = [];
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const record = await readRecord(path.join(this.dir, name));
      if (record?.location === location) records.push(record);
    }
    return records;
  }

  private fileOf(location: string, key: string): string {
    return path.join(this.dir, `${createHash('sha256').update(`${location}\0${key}`).digest('hex').slice(0, 32)}.json`);
  }
}

async function readRecord(file: string): Promise<UploadCheckpoint | undefined> {
  let value: unknown;
  try {
    value = JSON.parse(await fsp.readFile(file, 'utf8'));
  } catch {
    return undefined;
  }
  return isCheckpoint(value) ? value : undefined;
}

function isCheckpoint(value: unknown): value is UploadCheckpoint {
  const v = value as Partial<UploadCheckpoint> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.location === 'string' &&
    typeof v.key === 'string' &&
    typeof v.uploadId === 'string' &&
    v.uploadId.length > 0 &&
    Number.isSafeInteger(v.partSize) &&
    typeof v.started === 'string' &&
    Array.isArray(v.parts) &&
    v.parts.every((p: Partial<UploadedPart>) => Number.isSafeInteger(p?.number) && Number.isSafeInteger(p?.size) && typeof p?.etag === 'string')
  );
}
