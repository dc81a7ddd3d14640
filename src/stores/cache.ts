// Store wrapper that keeps copies of immutable objects (indexes) in a local folder, so a run against a remote
// archive does not download again what an earlier run wrote or read.
//
//   get(name) of a cacheable object:
//     cached copy whose size = the size the archive listed, and whose bytes hash to its recorded SHA-256 ─▶ copy
//     otherwise ─▶ the archive's object (then cached)
//   put(name, bytes) ─▶ the archive, then the cache;  delete(name) ─▶ both
//
// Only a cache: a copy is used only when the archive's own listing (seen by this wrapper) names the object
// with the same size, and its bytes still hash to what was recorded when it was written. Deleted or damaged,
// it is fetched again. Which objects are immutable is the caller's to say (stores know nothing of indexes).

import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { ForwardingStore } from './forwarding.js';
import { isValidObjectName, type GetOptions, type ObjectInfo, type PutBody, type PutOptions, type Store } from './store.js';

export interface ObjectCacheOptions {
  /** This archive's cache folder, or undefined while it has none (e.g. not yet created); asked until defined. */
  readonly folder: () => Promise<string | undefined>;
  /** Objects that are never rewritten under the same name. */
  readonly cacheable: (name: string) => boolean;
}

export interface CacheTotals {
  hits: number;
  misses: number;
  /** Copies found damaged or of the wrong size, and fetched again. */
  refreshed: number;
}

export class CachingStore extends ForwardingStore {
  readonly totals: CacheTotals = { hits: 0, misses: 0, refreshed: 0 };
  /** Sizes of objects as the archive listed them (or as this run wrote them). */
  private readonly listedSizes = new Map<string, number>();
  private folder: string | undefined;

  constructor(
    inner: Store,
    private readonly options: ObjectCacheOptions,
  ) {
    super(inner);
  }

  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for await (const info of this.inner.list(prefix)) {
      if (this.options.cacheable(info.name)) this.listedSizes.set(info.name, info.size);
      yield info;
    }
  }

  override async get(name: string, options: GetOptions = {}): Promise<Readable> {
    if (options.range || !this.options.cacheable(name)) return this.inner.get(name, options);
    const folder = await this.cacheFolder();
    if (folder === undefined) return this.inner.get(name, options);
    const expectedSize = this.listedSizes.get(name);
    if (expectedSize !== undefined) {
      const copy = await readCopy(folder, name, expectedSize);
      if (copy === 'damaged') this.totals.refreshed++;
      else if (copy !== undefined) {
        this.totals.hits++;
        return Readable.from([copy]);
      }
    }
    this.totals.misses++;
    const parts: Buffer[] = [];
    for await (const chunk of await this.inner.get(name, options)) parts.push(chunk as Buffer);
    const bytes = Buffer.concat(parts);
    await writeCopy(folder, name, bytes);
    this.listedSizes.set(name, bytes.length);
    return Readable.from([bytes]);
  }

  override async put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo> {
    const info = await this.inner.put(name, body, options);
    if (body instanceof Uint8Array && this.options.cacheable(name)) {
      const folder = await this.cacheFolder();
      if (folder !== undefined) {
        await writeCopy(folder, name, body);
        this.listedSizes.set(name, info.size);
      }
    }
    return info;
  }

  override async delete(name: string): Promise<void> {
    await this.inner.delete(name);
    this.listedSizes.delete(name);
    const folder = this.options.cacheable(name) ? await this.cacheFolder() : undefined;
    if (folder !== undefined) await removeCopy(folder, name);
  }

  private async cacheFolder(): Promise<string | undefined> {
    this.folder ??= await this.options.folder();
    return this.folder;
  }
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

function copyPath(folder: string, name: string): string {
  if (!isValidObjectName(name)) throw new RangeError(`invalid object name ${JSON.stringify(name)}`);
  return path.join(folder, ...name.split('/'));
}

/** The cached bytes if whole and as recorded; 'damaged' if present but not; undefined if absent. */
async function readCopy(folder: string, name: string, expectedSize: number): Promise<Buffer | 'damaged' | undefined> {
  const file = copyPath(folder, name);
  let bytes: Buffer;
  let recorded: string;
  try {
    [bytes, recorded] = await Promise.all([fsp.readFile(file), fsp.readFile(`${file}.sha256`, 'utf8')]);
  } catch {
    return undefined; // absent (or half of it): fetched again, and both rewritten
  }
  return bytes.length === expectedSize && sha256(bytes) === recorded.trim() ? bytes : 'damaged';
}

/** Writes a copy and its hash, each by rename: a reader sees whole files, and a lone file reads as absent. */
async function writeCopy(folder: string, name: string, bytes: Uint8Array): Promise<void> {
  const file = copyPath(folder, name);
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await fsp.rm(`${file}.sha256`, { force: true });
  for (const [target, content] of [
    [file, bytes],
    [`${file}.sha256`, `${sha256(bytes)}\n`],
  ] as const) {
    const temp = `${target}.tmp-${randomBytes(6).toString('hex')}`;
    await fsp.writeFile(temp, content);
    await fsp.rename(temp, target);
  }
}

async function removeCopy(folder: string, name: string): Promise<void> {
  const file = copyPath(folder, name);
  await Promise.all([fsp.rm(file, { force: true }), fsp.rm(`${file}.sha256`, { force: true })]);
}
