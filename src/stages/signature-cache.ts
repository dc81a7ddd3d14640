// The local cache of rdiff signatures (~/.cache/blanket/archives/ID/signatures): one file per content hash, read
// by the delta stage, written as signatures are made or fetched, and pruned by gc.

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { mapInBatches } from '../stores/store.js';

/** File system calls gc makes on the cache at once (in the libuv pool). */
const CACHE_CALLS_AT_ONCE = 16;

function cachePath(cache: string, hash: string): string {
  return path.join(cache, hash.slice(0, 2), hash);
}

/** Whether the cache holds the signature of content `hash`. */
export function hasCachedSignature(cache: string, hash: string): boolean {
  return existsSync(cachePath(cache, hash));
}

/** The cached signature of content `hash`, if the cache has it. */
export function readCachedSignature(cache: string, hash: string): Uint8Array | undefined {
  try {
    return readFileSync(cachePath(cache, hash));
  } catch {
    return undefined;
  }
}

/** Keeps the signature of content `hash` in the cache (written whole, or not at all; a cache that cannot be written is only a cache). */
export function cacheSignature(cache: string, hash: string, signature: Uint8Array): boolean {
  const file = cachePath(cache, hash);
  const temp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(temp, signature);
    renameSync(temp, file);
    return true;
  } catch {
    return false;
  }
}

/** The files of the cache (signatures, and temporary files of writers that were killed), as "xx/name"; none if it cannot be read. */
export async function listSignatureCache(cache: string): Promise<string[]> {
  let folders: string[];
  try {
    folders = (await readdir(cache)).filter((folder) => /^[0-9a-f]{2}$/.test(folder));
  } catch {
    return [];
  }
  // Folders a few at a time: up to 256 of them, each a readdir in the libuv pool.
  const listed = await mapInBatches(folders, CACHE_CALLS_AT_ONCE, (folder) => readdir(path.join(cache, folder)).catch((): string[] => []));
  return listed.flatMap((names, i) => names.map((name) => `${folders[i]}/${name}`));
}

/**
 * Deletes the cached signatures among `files` (listSignatureCache's) of contents `keep` rejects (gc: a delta's base
 * is always content of the newest state, so the signatures of older versions are never read again), and temporary
 * files; returns how many went. A cache that cannot be written is only a cache: what fails is left.
 */
export async function pruneSignatureCache(cache: string, files: readonly string[], keep: (hash: string) => boolean): Promise<number> {
  const doomed = files.filter((file) => {
    const name = file.slice(3);
    return !(/^[0-9a-f]{64}$/.test(name) && keep(name));
  });
  const removed = await mapInBatches(doomed, CACHE_CALLS_AT_ONCE, (file) => rm(path.join(cache, file), { force: true }).then(() => true, () => false));
  return removed.filter(Boolean).length;
}
