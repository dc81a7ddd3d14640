// Read-only views of an archive: its layers, and the paths of its state as of a layer.

import { BlanketError, ErrorCodes } from '../formats/errors.js';
import type { Entry } from '../formats/entry.js';
import { AFTER_ALL, displayPath, keyToContentsPrefix, keyToPath, pathToKey, ROOT_KEY } from '../formats/path-key.js';
import type { Store } from '../stores/store.js';
import { indexObjectName } from '../formats/archive-layout.js';
import { describeLostRange, isCollectedLayer, layerIndexes, readCatalog, readIndex, readState, type Catalog, type StateOptions } from '../stages/state-reader.js';

export interface LayerSummary {
  readonly layer: number;
  readonly started: string;
  readonly ended: string;
  readonly complete: boolean;
  /** Last path covered, for a partial layer. */
  readonly through: string | null;
  readonly packs: number;
  readonly indexes: number;
  readonly bytes: number;
}

export async function listLayers(store: Store): Promise<LayerSummary[]> {
  const catalog = await readCatalog(store);
  const out: LayerSummary[] = [];
  for (const layer of catalog.layers) {
    const refs = layerIndexes(catalog, layer);
    const first = await readIndex(store, refs[0]!.stem);
    const last = refs.length > 1 ? await readIndex(store, refs[refs.length - 1]!.stem) : first;
    let bytes = 0;
    let packs = 0;
    for (const ref of refs) {
      bytes += ref.size;
      const packSize = catalog.packs.get(ref.stem);
      if (packSize !== undefined) {
        bytes += packSize;
        packs++;
      }
    }
    out.push({
      layer,
      started: new Date(first.header.time).toISOString(),
      ended: new Date(last.header.time).toISOString(),
      complete: last.header.through === AFTER_ALL,
      through: last.header.through === AFTER_ALL ? null : describe(last.header.through),
      packs,
      indexes: refs.length,
      bytes,
    });
  }
  return out;
}

export interface PathListing {
  readonly path: string;
  readonly kind: Entry['kind'];
  readonly mode: number;
  readonly size: number;
  readonly mtime: string;
  readonly user: string;
  readonly group: string;
  readonly hash?: string;
  readonly target?: string;
}

/** The key ranges that hold a path and everything below it: the entry itself, then its contents. */
export function subtreeRanges(path: Buffer): Array<Pick<StateOptions, 'after' | 'through'>> {
  const key = pathToKey(path);
  if (key === ROOT_KEY) return [{}];
  const contents = keyToContentsPrefix(key);
  // No key lies between key-without-its-final-"." and key, so that range holds exactly the entry.
  return [
    { after: key.slice(0, -1), through: key },
    { after: contents, through: contents + '~' },
  ];
}

/** Entries of the state (as of `layer`) within the given subtrees, in path order. */
export async function* readSubtrees(
  store: Store,
  catalog: Catalog,
  options: { layer?: number; subtrees: readonly Buffer[]; signal?: AbortSignal } & Pick<StateOptions, 'onDamagedIndex' | 'onLostRange' | 'onOutdated'>,
): AsyncGenerator<Entry> {
  assertLayerExists(catalog, options.layer);
  const ranges = (options.subtrees.length === 0 ? [Buffer.alloc(0)] : options.subtrees)
    .flatMap((path) => subtreeRanges(path))
    .sort((a, b) => ((a.after ?? '') < (b.after ?? '') ? -1 : 1));
  let lastKey = '';
  for (const range of ranges) {
    for await (const entry of readState(store, catalog, {
      ...range,
      layer: options.layer,
      signal: options.signal,
      onDamagedIndex: options.onDamagedIndex,
      onLostRange: options.onLostRange,
      onOutdated: options.onOutdated,
    })) {
      // Overlapping requests (a path and its parent) must not yield an entry twice.
      if (entry.key <= lastKey) continue;
      lastKey = entry.key;
      yield entry;
    }
  }
}

/**
 * Paths of the state, in path order. A damaged or missing index is reported through `onDamage` (naming the object
 * and the paths it recorded) and the listing goes on with what the other indexes hold, as restore does.
 */
export async function* listPaths(
  store: Store,
  options: { layer?: number; subtree?: Buffer; onDamage?: (message: string, object: string) => void },
): AsyncGenerator<PathListing> {
  const catalog = await readCatalog(store);
  const reported = new Set<string>();
  const report = (message: string, object: string): void => {
    if (reported.has(message)) return;
    reported.add(message);
    options.onDamage?.(message, object);
  };
  let found = false;
  for await (const entry of readSubtrees(store, catalog, {
    layer: options.layer,
    subtrees: options.subtree ? [options.subtree] : [],
    ...(options.onDamage && {
      onDamagedIndex: (stem, error) => report(error.message, indexObjectName(stem)),
      onLostRange: (range) => {
        const objects = range.stems.map(indexObjectName);
        if (range.after !== range.through) report(`${describeLostRange(range)} with ${objects.join(', ')}: those paths are missing or listed as of an older layer`, objects[0]!);
      },
    }),
  })) {
    found = true;
    yield {
      path: entry.key === ROOT_KEY ? '/' : displayPath(keyToPath(entry.key)),
      kind: entry.kind,
      mode: entry.mode,
      size: entry.size,
      mtime: nsToIso(entry.mtimeNs),
      user: entry.user,
      group: entry.group,
      ...(entry.hash !== null ? { hash: entry.hash } : {}),
      ...(entry.linkTarget !== null ? { target: displayPath(entry.linkTarget) } : {}),
    };
  }
  if (!found && options.subtree !== undefined) {
    throw new BlanketError(ErrorCodes.NOT_FOUND, `${displayPath(options.subtree)} is not in the archive${options.layer ? ` as of layer ${options.layer}` : ''}`);
  }
}

export function nsToIso(ns: bigint): string {
  const ms = ns / 1_000_000n;
  const frac = (((ns % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n).toString().padStart(9, '0');
  return new Date(Number(ms)).toISOString().slice(0, 19) + '.' + frac + 'Z';
}

/** Throws BLANKET_E_NOT_FOUND unless `layer` (when given) is a layer of the archive. */
export function assertLayerExists(catalog: Catalog, layer: number | undefined): void {
  if (layer !== undefined && isCollectedLayer(catalog, layer)) {
    throw new BlanketError(ErrorCodes.NOT_FOUND, `layer ${layer} was collected by gc (layers: ${describeLayers(catalog)})`);
  }
  if (layer !== undefined && !catalog.layers.includes(layer)) {
    throw new BlanketError(ErrorCodes.NOT_FOUND, `layer ${layer} does not exist (layers: ${describeLayers(catalog)})`);
  }
}

export function describeLayers(catalog: Catalog): string {
  return catalog.layers.length === 0 ? 'none' : `${catalog.layers[0]}..${catalog.layers[catalog.layers.length - 1]}`;
}

function describe(key: string): string {
  return key === ROOT_KEY ? '/' : displayPath(keyToPath(key));
}
