// The local cache of rdiff signatures (~/.cache/blanket/archives/ID/signatures): one file per content hash, read
// by the delta stage, written as signatures are made or fetched, and pruned by gc.

import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

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

/**
 * Deletes the cached signatures of contents `keep` rejects (gc: a delta's base is always content of the newest
 * state, so the signatures of older versions are never read again); returns how many went. A cache that cannot be
 * read or written is only a cache: what fails is left.
 */
export function pruneSignatureCache(cache: string, keep: (hash: string) => boolean): number {
  let removed = 0;
  let folders: string[];
  try {
    folders = readdirSync(cache);
  } catch {
    return 0;
  }
  for (const folder of folders) {
    if (!/^[0-9a-f]{2}$/.test(folder)) continue;
    let names: string[];
    try {
      names = readdirSync(path.join(cache, folder));
    } catch {
      continue;
    }
    for (const name of names) {
      // Temporary files of a writer that was killed go too.
      if (/^[0-9a-f]{64}$/.test(name) && keep(name)) continue;
      try {
        rmSync(path.join(cache, folder, name), { force: true });
        removed++;
      } catch {
        // left for the next gc
      }
    }
  }
  return removed;
}
