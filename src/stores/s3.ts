// Store on S3 or an S3-compatible service: each object one PUT (atomic), big streamed ones a multipart upload.
//
// Client settings that matter (see docs/ARCHITECTURE.md, stores): path-style addressing, and checksums only
// when required: with the SDK's defaults a streamed body is sent aws-chunked with a trailer, which some
// S3-compatible servers store as data. The SDK's own retries are off: RetryingStore is the one retry policy.

import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { BlanketError, ErrorCodes } from '../formats/errors.js';
import { UploadCheckpoints, type UploadCheckpoint, type UploadedPart } from './upload-checkpoints.js';
import { DEFAULT_RETRY_POLICY, retryTransient, type RetryHooks, type RetryPolicy } from './retry.js';
import { isValidObjectName, type GetOptions, type ObjectInfo, type PutBody, type PutOptions, type Store, type StoreCapabilities } from './store.js';

export interface S3StoreOptions {
  readonly bucket: string;
  /** Key prefix of the archive inside the bucket ('' or ending in '/'). */
  readonly prefix: string;
  /** For S3-compatible services (and tests): e.g. http://127.0.0.1:9000. */
  readonly endpoint?: string;
  /** Default: the SDK's (AWS_REGION, shared config), else us-east-1. */
  readonly region?: string;
  /** Default: the SDK's provider chain (environment, shared credentials and config files, ...). */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string };
  /** Part size of multipart uploads (at least 5 MiB on S3, except the last part). */
  readonly partSize?: number;
  /** Retries of one part of a streamed upload (its body cannot be read again, so RetryingStore cannot). */
  readonly retryPolicy?: Partial<RetryPolicy>;
  readonly retryHooks?: RetryHooks;
  /** A connection silent this long is dropped (and the request retried); default 60 s. */
  readonly idleTimeoutMs?: number;
  /** Folder for records of multipart uploads in progress, so that a killed upload is resumed; none: not resumable. */
  readonly uploadStateDir?: string;
}

/** A recorded multipart upload not resumed for this long is aborted by cleanup(). */
export const ABANDONED_UPLOAD_MS = 7 * 24 * 3600_000;

/** Parts of one upload sent at once (memory: this many parts, plus the one filling). */
const PARTS_IN_FLIGHT = 2;

/** Bodies up to this size go up in one PUT; larger streamed bodies as a multipart upload. */
const DEFAULT_PART_SIZE = 5 << 20;

/** Parses s3://bucket/prefix; the prefix gets a trailing slash. */
export function parseS3Location(location: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(location);
  if (!match) {
    throw new BlanketError(ErrorCodes.USAGE, `archive location ${location}: an S3 location is s3://BUCKET[/PREFIX], with a valid bucket name`, { subject: location });
  }
  const prefix = (match[2] ?? '').replace(/\/+$/, '');
  return { bucket: match[1]!, prefix: prefix === '' ? '' : `${prefix}/` };
}

export class S3Store implements Store {
  readonly capabilities: StoreCapabilities = {
    atomicRename: false,
    parallelism: 8,
    checksums: ['md5-etag'],
    // Conditional PUT (If-None-Match) is honoured by AWS S3, not by every compatible service.
    exclusiveCreate: false,
  };
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly partSize: number;
  private readonly retryPolicy: RetryPolicy;
  private readonly retryHooks: RetryHooks;
  private readonly checkpoints: UploadCheckpoints | undefined;
  /** Multipart uploads: parts and bytes sent, reused from a killed upload of the same object, uploads abandoned. */
  readonly uploadStats = { partsSent: 0, bytesSent: 0, partsReused: 0, bytesReused: 0, uploadsAbandoned: 0 };

  constructor(options: S3StoreOptions) {
    this.checkpoints = options.uploadStateDir !== undefined ? new UploadCheckpoints(options.uploadStateDir) : undefined;
    this.bucket = options.bucket;
    this.prefix = options.prefix;
    this.partSize = options.partSize ?? DEFAULT_PART_SIZE;
    this.retryPolicy = { ...DEFAULT_RETRY_POLICY, ...options.retryPolicy };
    this.retryHooks = options.retryHooks ?? {};
    const config: S3ClientConfig = {
      forcePathStyle: true,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 1,
      // A stalled connection is an error (retried), not a hang. socketTimeout is the idle limit; the SDK's
      // requestTimeout would bound a whole request (a big part on a slow link) and by default only warns.
      requestHandler: { connectionTimeout: 10_000, socketTimeout: options.idleTimeoutMs ?? 60_000 },
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.credentials ? { credentials: { ...options.credentials } } : {}),
      region: options.region ?? process.env['AWS_REGION'] ?? process.env['AWS_DEFAULT_REGION'] ?? 'us-east-1',
    };
    this.client = new S3Client(config);
  }

  get location(): string {
    return `s3://${this.bucket}/${this.prefix}`;
  }

  async put(name: string, body: PutBody, options: PutOptions = {}): Promise<ObjectInfo> {
    const key = this.keyOf(name);
    options.signal?.throwIfAborted();
    if (body instanceof Uint8Array) {
      try {
        const out = await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length }), {
          ...(options.signal ? { abortSignal: options.signal } : {}),
        });
        return withChecksum({ name, size: body.length }, out.ETag);
      } catch (error) {
        throw this.error('write', name, error);
      }
    }
    return this.putStreamed(name, key, body, options);
  }

  /**
   * A streamed body: buffered into parts (copies: the producer reuses its memory). A body smaller than one part
   * is one PUT; a larger one a multipart upload whose parts are retried one by one, since the body cannot be
   * read again. At most PARTS_IN_FLIGHT parts are sent at once, and the body is read no further meanwhile.
   *
   *   fill part ─ full ─▶ (first: resume the recorded upload, or CreateMultipartUpload) ─▶ same MD5 as the
   *   recorded part? skip it : UploadPart, retried, recorded ─▶ … ─▶ CompleteMultipartUpload ─▶ record removed
   *   failure or abort ─▶ the upload stays, recorded, for the next put of this object (none recorded: aborted)
   */
  private async putStreamed(name: string, key: string, body: AsyncIterable<Uint8Array>, options: PutOptions): Promise<ObjectInfo> {
    const signal = options.signal;
    const retry = <T>(operation: string, call: () => Promise<T>): Promise<T> =>
      retryTransient(call, { operation, name, location: this.location, policy: this.retryPolicy, hooks: this.retryHooks, ...(signal ? { signal } : {}) });
    const sendOptions = signal ? { abortSignal: signal } : {};
    const checkpoints = this.checkpoints;
    const previous = checkpoints ? await this.resumableUpload(name, key) : undefined;
    let size = 0;
    let part = Buffer.allocUnsafe(this.partSize);
    let filled = 0;
    let uploadId: string | undefined;
    let started = new Date().toISOString();
    let partNumber = 0;
    let completing = false;
    const etags: string[] = [];
    /** Parts the store holds for this upload, as recorded: reusable ones of a killed upload, then those sent now. */
    const held = new Map<number, UploadedPart>((previous?.parts ?? []).map((p) => [p.number, p]));
    const record = (): Promise<void> =>
      checkpoints && uploadId !== undefined
        ? checkpoints.save({ location: this.location, key, uploadId, partSize: this.partSize, started, parts: [...held.values()].sort((a, b) => a.number - b.number) })
        : Promise.resolve();
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    const uploadPart = (number: number, bytes: Buffer): void => {
      const recorded = held.get(number);
      if (recorded !== undefined && recorded.size === bytes.length && etagIsMd5Of(recorded.etag, bytes)) {
        etags[number - 1] = recorded.etag;
        this.uploadStats.partsReused++;
        this.uploadStats.bytesReused += bytes.length;
        return;
      }
      held.delete(number);
      const sending = retry('write part of', async () => {
        try {
          const out = await this.client.send(
            new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: number, Body: bytes, ContentLength: bytes.length }),
            sendOptions,
          );
          etags[number - 1] = out.ETag ?? '';
        } catch (error) {
          throw this.error('write', name, error);
        }
      })
        .then(() => {
          this.uploadStats.partsSent++;
          this.uploadStats.bytesSent += bytes.length;
          held.set(number, { number, size: bytes.length, etag: etags[number - 1]! });
          return record();
        })
        .catch((error: unknown) => void (failure ??= error))
        .finally(() => inFlight.delete(sending));
      inFlight.add(sending);
    };
    try {
      for await (const chunk of body) {
        signal?.throwIfAborted();
        size += chunk.length;
        for (let at = 0; at < chunk.length; ) {
          const take = Math.min(chunk.length - at, part.length - filled);
          part.set(chunk.subarray(at, at + take), filled);
          filled += take;
          at += take;
          if (filled < part.length) continue;
          if (uploadId === undefined) {
            if (previous !== undefined) {
              uploadId = previous.uploadId;
              started = previous.started;
            } else {
              uploadId = await retry('start upload of', async () => {
                try {
                  const out = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key }), sendOptions);
                  if (!out.UploadId) throw new Error('no UploadId in the answer');
                  return out.UploadId;
                } catch (error) {
                  throw this.error('write', name, error);
                }
              });
            }
            await record();
          }
          uploadPart(++partNumber, part);
          part = Buffer.allocUnsafe(this.partSize);
          filled = 0;
          while (inFlight.size >= PARTS_IN_FLIGHT) await Promise.race(inFlight);
          if (failure !== undefined) throw failure;
        }
      }
      signal?.throwIfAborted();
      if (uploadId === undefined) {
        // Smaller than a part this time: a recorded upload of this object is of no more use.
        if (previous !== undefined) await this.abandonUpload(previous);
        const whole = part.subarray(0, filled);
        return retry('write', async () => {
          try {
            const out = await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: whole, ContentLength: whole.length }), sendOptions);
            return withChecksum({ name, size }, out.ETag);
          } catch (error) {
            throw this.error('write', name, error);
          }
        });
      }
      if (filled > 0) uploadPart(++partNumber, part.subarray(0, filled));
      await Promise.all(inFlight);
      if (failure !== undefined) throw failure;
      const parts = etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 }));
      completing = true;
      const info = await retry('finish upload of', async () => {
        try {
          const out = await this.client.send(
            new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
            sendOptions,
          );
          return withChecksum({ name, size }, out.ETag);
        } catch (error) {
          // An answer lost after the upload completed: the retry finds no upload, and the object in place.
          if (errorName(error) === 'NoSuchUpload') {
            const there = await this.stat(name);
            if (there?.size === size) return there;
          }
          throw this.error('write', name, error);
        }
      });
      await checkpoints?.remove(this.location, key);
      return info;
    } catch (error) {
      await Promise.allSettled(inFlight);
      if (uploadId !== undefined && errorName(rootCause(error)) === 'NoSuchUpload') {
        // The recorded upload was aborted or expired meanwhile: the next put sends the object whole.
        await checkpoints?.remove(this.location, key);
        throw new BlanketError(
          ErrorCodes.STORE_IO,
          `cannot write ${name} in ${this.location}: the multipart upload an earlier run started is gone from the store (expired or aborted); the next run sends the object whole`,
          { subject: name, cause: error },
        );
      }
      // A resumed upload that could not be completed is not resumed again: the next put starts afresh.
      if (previous !== undefined && uploadId === previous.uploadId && completing) await checkpoints?.remove(this.location, key);
      // Recorded, the upload stays for the next put of this object to resume; unrecorded, nothing could.
      if (uploadId !== undefined && !checkpoints) {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
      }
      throw this.error('write', name, signal?.aborted ? signal.reason : error);
    }
  }

  /**
   * The recorded multipart upload of `key` that a put may continue, with the parts the store holds: listed by
   * the store where it can (ListParts), else as recorded. Undefined if none, or if the store no longer has it.
   */
  private async resumableUpload(name: string, key: string): Promise<UploadCheckpoint | undefined> {
    const checkpoints = this.checkpoints!;
    const recorded = await checkpoints.load(this.location, key);
    if (recorded === undefined) return undefined;
    // An object in place means the recorded upload may have been completed already (a kill during its completion
    // leaves the record), and a service may answer completing it again with an error: start afresh.
    if (recorded.partSize !== this.partSize || (await this.stat(name)) !== undefined) {
      await this.abandonUpload(recorded);
      return undefined;
    }
    try {
      const parts: UploadedPart[] = [];
      let marker: string | undefined;
      do {
        const out = await this.client.send(
          new ListPartsCommand({ Bucket: this.bucket, Key: key, UploadId: recorded.uploadId, ...(marker ? { PartNumberMarker: marker } : {}) }),
        );
        for (const p of out.Parts ?? []) {
          if (p.PartNumber !== undefined && p.Size !== undefined && p.ETag !== undefined) parts.push({ number: p.PartNumber, size: p.Size, etag: p.ETag });
        }
        marker = out.IsTruncated ? out.NextPartNumberMarker : undefined;
      } while (marker);
      return { ...recorded, parts };
    } catch (error) {
      if (errorName(error) === 'NoSuchUpload' || statusOf(error) === 404) {
        await checkpoints.remove(this.location, key);
        return undefined;
      }
      // ListParts unsupported (s3rver answers 405) or failing now: the record says what was acknowledged.
      return recorded;
    }
  }

  /** Aborts a recorded upload (best effort: some services cannot) and forgets it. */
  private async abandonUpload(recorded: UploadCheckpoint): Promise<void> {
    await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: recorded.key, UploadId: recorded.uploadId })).catch(() => undefined);
    this.uploadStats.uploadsAbandoned++;
    await this.checkpoints?.remove(this.location, recorded.key);
  }

  async putIfAbsent(name: string, body: Buffer): Promise<boolean> {
    if ((await this.stat(name)) !== undefined) return false;
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.keyOf(name), Body: body, ContentLength: body.length, IfNoneMatch: '*' }));
    } catch (error) {
      if (statusOf(error) === 412 || statusOf(error) === 409) return false;
      throw this.error('create', name, error);
    }
    // A service that ignores If-None-Match lets a racing writer replace ours: what is there now decides.
    const now = await this.readAll(name);
    return now.equals(body);
  }

  async get(name: string, options: GetOptions = {}): Promise<Readable> {
    const range = options.range;
    if (range && range.end <= range.start) return Readable.from([]);
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.keyOf(name), ...(range ? { Range: `bytes=${range.start}-${range.end - 1}` } : {}) }),
        { ...(options.signal ? { abortSignal: options.signal } : {}) },
      );
      const stream = out.Body as Readable | undefined;
      if (!stream) return Readable.from([]);
      // A server may answer with more than the range (s3rver gives the whole object for bytes=0-0, as 206 with
      // Content-Range 0-5/6; others ignore Range and answer 200): the window is cut from what came.
      let window: { start: number; end: number } | undefined;
      if (range) {
        const served = /^bytes (\d+)-(\d+)\//.exec(out.ContentRange ?? '');
        const servedStart = served ? Number(served[1]) : 0;
        const servedEnd = served ? Number(served[2]) + 1 : Infinity;
        if (servedStart > range.start) throw new Error(`asked for bytes from ${range.start}, the server sent from ${servedStart}`);
        if (servedStart !== range.start || servedEnd > range.end) window = { start: range.start - servedStart, end: range.end - servedStart };
      }
      return Readable.from(this.mapped(stream, name, window), { objectMode: false });
    } catch (error) {
      throw this.error('read', name, error);
    }
  }

  /** The body's bytes; a connection lost mid-object is a transient store error naming the object. */
  private async *mapped(stream: Readable, name: string, window?: { start: number; end: number }): AsyncGenerator<Buffer> {
    let at = 0;
    try {
      for await (const chunk of stream) {
        const bytes = chunk as Buffer;
        if (window === undefined) {
          yield bytes;
          continue;
        }
        const from = Math.max(0, window.start - at);
        const to = Math.min(bytes.length, window.end - at);
        at += bytes.length;
        if (to > from) yield bytes.subarray(from, to);
        if (at >= window.end) return;
      }
    } catch (error) {
      throw this.error('read', name, error, true);
    } finally {
      stream.destroy();
    }
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.keyOf(name) }));
      return withChecksum({ name, size: out.ContentLength ?? 0 }, out.ETag);
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw this.error('stat', name, error);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      let out;
      try {
        out = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, ...(token ? { ContinuationToken: token } : {}) }));
      } catch (error) {
        throw this.error('list', prefix || '.', error);
      }
      for (const object of out.Contents ?? []) {
        const name = (object.Key ?? '').slice(this.prefix.length);
        if (isValidObjectName(name)) yield withChecksum({ name, size: object.Size ?? 0 }, object.ETag);
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(name: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keyOf(name) }));
    } catch (error) {
      if (statusOf(error) === 404) return;
      throw this.error('delete', name, error);
    }
  }

  async isEmpty(): Promise<boolean> {
    // Any key under the prefix counts, foreign ones too. (No MaxKeys=1: s3rver fails on it with an internal error.)
    try {
      const out = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix }));
      return (out.Contents?.length ?? 0) === 0;
    } catch (error) {
      throw this.error('list', '.', error);
    }
  }

  /**
   * Objects appear only whole, so the leftovers are multipart uploads that were never resumed: those recorded
   * here and older than ABANDONED_UPLOAD_MS, and those the store lists under the prefix (where it can) started
   * that long ago, are aborted. A younger one may still be resumed by the next put of its object.
   */
  async cleanup(): Promise<void> {
    const cutoff = Date.now() - ABANDONED_UPLOAD_MS;
    for (const recorded of (await this.checkpoints?.all(this.location)) ?? []) {
      if (!(Date.parse(recorded.started) > cutoff)) await this.abandonUpload(recorded);
    }
    let marker: { KeyMarker?: string; UploadIdMarker?: string } = {};
    for (;;) {
      let out;
      try {
        out = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: this.prefix, ...marker }));
      } catch {
        return; // not every S3-compatible service lists uploads (s3rver does not); the records above still count
      }
      for (const upload of out.Uploads ?? []) {
        if (upload.Key === undefined || upload.UploadId === undefined || !(upload.Initiated && upload.Initiated.getTime() < cutoff)) continue;
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.Key, UploadId: upload.UploadId })).catch(() => undefined);
        this.uploadStats.uploadsAbandoned++;
      }
      if (!out.IsTruncated) return;
      marker = { ...(out.NextKeyMarker ? { KeyMarker: out.NextKeyMarker } : {}), ...(out.NextUploadIdMarker ? { UploadIdMarker: out.NextUploadIdMarker } : {}) };
    }
  }

  /** Closes the client's connections. */
  async close(): Promise<void> {
    this.client.destroy();
  }

  private async readAll(name: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const chunk of await this.get(name)) parts.push(chunk as Buffer);
    return Buffer.concat(parts);
  }

  private keyOf(name: string): string {
    if (!isValidObjectName(name)) throw new RangeError(`invalid object name ${JSON.stringify(name)}`);
    return this.prefix + name;
  }

  private error(action: string, name: string, cause: unknown, midStream = false): BlanketError {
    if (cause instanceof BlanketError) return cause;
    const status = statusOf(cause);
    if (action === 'read' && (status === 404 || errorName(cause) === 'NoSuchKey')) {
      return new BlanketError(ErrorCodes.MISSING_OBJECT, `object ${name} is missing from ${this.location}`, { subject: name, cause });
    }
    if (errorName(cause) === 'NoSuchBucket') {
      return new BlanketError(ErrorCodes.STORE_IO, `bucket ${this.bucket} does not exist (${this.location}): create it first`, { subject: name, cause });
    }
    const detail = cause instanceof Error ? cause.message || errorName(cause) : String(cause);
    return new BlanketError(ErrorCodes.STORE_IO, `cannot ${action} ${name} in ${this.location}: ${detail}${status ? ` (HTTP ${status})` : ''}`, {
      subject: name,
      cause,
      transient: midStream || isTransientS3Error(cause),
    });
  }
}

/** `info` with the ETag as its checksum ("md5-etag:HEX", or "md5-etag:HEX-N" for a multipart upload), if there is one. */
function withChecksum(info: ObjectInfo, etag: string | undefined): ObjectInfo {
  const value = etag?.replace(/^"|"$/g, '').toLowerCase();
  return value && /^[0-9a-f]{32}(?:-[0-9]+)?$/.test(value) ? { ...info, checksum: `md5-etag:${value}` } : info;
}

/** Whether `etag` is the MD5 of `bytes` (S3 gives a part's MD5 as its ETag, except with KMS encryption). */
function etagIsMd5Of(etag: string, bytes: Uint8Array): boolean {
  const value = etag.replace(/^"|"$/g, '').toLowerCase();
  return /^[0-9a-f]{32}$/.test(value) && createHash('md5').update(bytes).digest('hex') === value;
}

/** The SDK error under a BlanketError (which keeps it as its cause). */
function rootCause(error: unknown): unknown {
  let at = error;
  while (at instanceof BlanketError && at.cause !== undefined) at = at.cause;
  return at;
}

function statusOf(error: unknown): number | undefined {
  const meta = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata;
  return meta?.httpStatusCode;
}

function errorName(error: unknown): string {
  return (error as { name?: unknown } | null)?.name?.toString() ?? '';
}

const TRANSIENT_NAMES = new Set(['RequestTimeout', 'RequestTimeoutException', 'SlowDown', 'InternalError', 'ServiceUnavailable', 'Throttling', 'ThrottlingException', 'TimeoutError']);
const TRANSIENT_ERRNOS = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENOTFOUND', 'ECONNABORTED', 'ENETUNREACH', 'EHOSTUNREACH']);

/** Server busy or failing (5xx, 429), throttled, timed out, or the connection itself failed. */
function isTransientS3Error(error: unknown): boolean {
  const status = statusOf(error);
  if (status !== undefined && (status >= 500 || status === 429 || status === 408)) return true;
  if (TRANSIENT_NAMES.has(errorName(error))) return true;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && TRANSIENT_ERRNOS.has(code)) return true;
  return /socket hang up|ECONNRESET|timed? ?out|premature close|aborted/i.test(error instanceof Error ? error.message : '');
}
