// Garbage collection: collects the oldest layers under a retention policy and deletes what no kept layer needs.
//
//   keep from layer K (the policy's choice, at most the newest complete layer: the newest state stays whole)
//   history (stages/layer-history.ts): for each pack, the newest layer whose state needs any of its members
//   1. base of K (stages/base-writer.ts): the whole state as of K, index only, written as the history is read
//      (K guessed from the policy first; a plan that keeps from another layer deletes it and writes its own);
//      archive header to version 2; then the marker layers/K/base. Readers now start at the base and read no
//      layer before K.
//   2. delete the older base, then for each pack of a layer before K that no layer from K on needs: its index,
//      then its data; index-only objects of those layers; data objects no index names (orphans)
//   packs of collected layers that kept layers still need stay where they are, with their index (for their
//   members); their S and E lines are no longer read.
//
// Each step leaves a consistent archive, so kill -9 anywhere loses nothing a kept layer needs: before the marker
// readers replay the layers as before (base objects without a marker are ignored); after it they start at the
// base. An index is deleted before its data object, so no index ever names a deleted object (the next backup
// could otherwise store a reference to content that is gone). The next gc finishes what a stopped one left.
// Only index objects are read, and no pack data: the cost is the metadata and what is deleted.

import path from 'node:path';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import {
  baseMarkerName,
  encodeBaseMarker,
  encodeHeader,
  FORMAT_VERSION_WITH_BASES,
  HEADER_OBJECT,
  indexObjectName,
  packObjectName,
  parseStem,
} from '../formats/archive-layout.js';
import { RecordingStore, type StoreOperation } from '../stores/recording.js';
import type { Store } from '../stores/store.js';
import { acquireLock } from '../stages/archive-lock.js';
import { BaseWriter, writeBase, type BaseWriteResult } from '../stages/base-writer.js';
import { listSignatureCache, pruneSignatureCache } from '../stages/signature-cache.js';
import { deadBytes, LayerHistory, type LayerFacts } from '../stages/layer-history.js';
import type { Monitor } from '../stages/monitor.js';
import { describeLostRange, layerIndexes, readCatalog, readIndexHeader, type Catalog, type LostRange } from '../stages/state-reader.js';
import type { IndexHeader } from '../formats/index-format.js';
import { AFTER_ALL } from '../formats/path-key.js';

/** Which layers to keep; several rules keep what any of them keeps. */
export interface RetentionPolicy {
  /** Keep the newest N layers. */
  readonly keepLayers?: number;
  /** Keep the layers worked on within this many milliseconds before now. */
  readonly keepWithinMs?: number;
  /** Collect the layers last worked on before this time (Unix ms). */
  readonly before?: number;
  /** Collect the oldest layers until the archive is at most this many bytes. */
  readonly maxBytes?: number;
}

export interface GcOptions {
  readonly store: Store;
  readonly monitor: Monitor;
  readonly policy: RetentionPolicy;
  /** Say what would be deleted and written, and change nothing. */
  readonly dryRun?: boolean;
  /** Share (0..1) of a retained pack's member bytes that may be unneeded before the pack is rewritten (default 0.1). */
  readonly maxWaste?: number;
  /** zstd level of rewritten packs (default 3). */
  readonly compressionLevel?: number;
  /** The local cache folder (as backup's): the signatures of contents the newest state no longer has are pruned. */
  readonly cacheRoot?: string;
  readonly signal?: AbortSignal;
  /** The time the policy counts from (default: now). */
  readonly now?: number;
  readonly lockLeaseMs?: number;
}

export interface GcPlan {
  /** The oldest layer kept (the new base's layer, when it is newer than the old one). */
  readonly keepFrom: number;
  /** Layers collected by this gc. */
  readonly collected: readonly number[];
  /**
   * Objects to delete, in the order they go, with their sizes. `early` ones (base objects a stopped gc left,
   * which nothing reads) go before the new base is written, which may reuse their names.
   */
  readonly deletions: ReadonlyArray<{ readonly name: string; readonly bytes: number; readonly early?: true }>;
  /** Packs of collected layers still needed (kept as they are), and the bytes of theirs nothing needs. */
  readonly retainedPacks: number;
  readonly retainedWasteBytes: number;
  /**
   * Retained packs whose share of members nothing needs exceeds the waste allowed: rewritten in place with only
   * what is needed. Sizes are of the data object, and the bytes it is expected to lose.
   */
  readonly rewrites: ReadonlyArray<{ readonly stem: string; readonly packBytes: number; readonly expectedFreed: number }>;
  /** Archive size before, and (estimated, the new base's size being estimated) after. */
  readonly bytesBefore: number;
  readonly bytesAfter: number;
  /** Paths in the state as of keepFrom: what the new base holds. */
  readonly basePaths: number;
}

export interface GcResult {
  readonly plan: GcPlan;
  readonly dryRun: boolean;
  readonly deletedObjects: number;
  readonly deletedBytes: number;
  /** Base indexes written, and their bytes. */
  readonly baseIndexes: number;
  readonly baseBytes: number;
  /** Bytes written in all: the base, and the packs rewritten (their data and indexes). */
  readonly writtenBytes: number;
  /** Signatures pruned from the local cache (contents no longer in the newest state). */
  readonly prunedSignatures: number;
  /** Packs rewritten, and the bytes that freed. */
  readonly rewrittenPacks: number;
  readonly rewriteFreedBytes: number;
  /** Object bytes read (index objects, and the needed members of the packs rewritten), and the store calls made, by kind. */
  readonly readBytes: number;
  readonly calls: Readonly<Record<StoreOperation, number>>;
  readonly elapsedMs: number;
}

/** Share of a retained pack's member bytes that may be unneeded before gc rewrites it. */
export const DEFAULT_MAX_WASTE = 0.1;

/**
 * Compressed bytes of one path in a base index, when the archive has no base to measure (66 measured on the bench
 * corpus, whose names are short; a little more, as a cap is checked with it).
 */
const BASE_BYTES_PER_PATH = 72;

/** The estimated size of a base of `paths` paths: at the bytes per path of the archive's current base, if it has one. */
function estimatedBaseBytes(catalog: Catalog, history: LayerHistory, paths: number): number {
  const base = catalog.bases[0];
  const basePaths = base === undefined ? 0 : (history.pathsAt.get(base.layer) ?? 0);
  if (base === undefined || basePaths < 1000) return paths * BASE_BYTES_PER_PATH;
  const bytes = base.indexes.reduce((sum, ref) => sum + ref.size, 0);
  return Math.ceil((paths * bytes * 1.05) / basePaths);
}

export async function gc(options: GcOptions): Promise<GcResult> {
  const { store, monitor, signal } = options;
  const started = Date.now();
  monitor.emit({ type: 'started', command: 'gc', archive: store.location });
  const lock = await acquireLock(store, 'gc', { monitor, ...(options.lockLeaseMs !== undefined ? { leaseMs: options.lockLeaseMs } : {}) });
  const stopTicker = monitor.startTicker();
  // Counts what gc itself reads and asks of the store (the lock's own calls aside).
  const counted = new RecordingStore(store, { keepCalls: false });
  const totals = (): { readBytes: number; calls: Record<StoreOperation, number> } => ({ readBytes: counted.bytesRead, calls: { ...counted.counts } });
  try {
    const guarded = lock.guard(counted);
    const dryRun = options.dryRun === true;
    const result = { dryRun, deletedObjects: 0, deletedBytes: 0, baseIndexes: 0, baseBytes: 0, writtenBytes: 0, rewrittenPacks: 0, rewriteFreedBytes: 0, prunedSignatures: 0 };
    const remove = async (deletion: GcPlan['deletions'][number]): Promise<void> => {
      signal?.throwIfAborted();
      await guarded.delete(deletion.name);
      result.deletedObjects++;
      result.deletedBytes += deletion.bytes;
      monitor.bytes += deletion.bytes;
    };
    if (!dryRun) await counted.cleanup();
    const catalog = await readCatalog(counted);
    // The local cache is listed (in the libuv pool) while the history is read, and pruned once it is known.
    const signatureCache = signatureCacheOf(options.cacheRoot, catalog);
    const cacheFiles = dryRun || signatureCache === null ? Promise.resolve([]) : listSignatureCache(signatureCache);
    // The base of the layer the plan will most likely keep from is written while the history is read (one pass
    // over the indexes); if the plan keeps from another layer, or refuses, those objects are deleted again. Not
    // when layers are missing: the plan refuses then, and base objects without a marker may be all that is left.
    // (An index it cannot read means no guess: the history read then names the damage, as without one.)
    const guess =
      dryRun || catalog.missingLayers.length > 0
        ? null
        : await guessKeepFrom(counted, catalog, options.policy, options.now ?? Date.now(), signal).catch((error: unknown) => {
            if (isBlanketError(error) && (error.code === ErrorCodes.CORRUPT_OBJECT || error.code === ErrorCodes.MISSING_OBJECT)) return null;
            throw error;
          });
    // Base objects a stopped gc left, which nothing reads, go before any base is written (it may reuse their names).
    if (guess !== null) for (const ref of catalog.strayBaseIndexes) await remove({ name: indexObjectName(ref.stem), bytes: ref.size });
    const speculative = guess === null ? null : new BaseWriter(guarded, guess.layer, { time: guess.time, ...(signal && { signal }) });
    let history: LayerHistory;
    let plan: GcPlan;
    try {
      history = await readHistoryOrRefuse(counted, catalog, signal, speculative ?? undefined);
      plan = planGc(catalog, history, options.policy, options.now ?? Date.now(), options.maxWaste ?? DEFAULT_MAX_WASTE);
    } catch (error) {
      if (speculative !== null) await takeBack(guarded, speculative);
      throw error;
    }
    if (dryRun) return { plan, ...result, ...totals(), elapsedMs: Date.now() - started };
    if (guess === null) for (const deletion of plan.deletions) if (deletion.early) await remove(deletion);
    if (plan.collected.length > 0) {
      const time = history.layers.get(plan.keepFrom)?.time ?? Date.now();
      // Before the marker, the header says version 2: a Blanket that knows no bases must refuse the archive rather
      // than read it without one. (Alongside the base: a version 2 archive without a marker reads as before.)
      const header = catalog.header;
      const headerPut =
        header !== null && header.version < FORMAT_VERSION_WITH_BASES
          ? guarded.put(HEADER_OBJECT, encodeHeader({ ...header, version: FORMAT_VERSION_WITH_BASES }), { signal })
          : Promise.resolve();
      headerPut.catch(() => undefined); // awaited below; not unhandled while the base is written
      const base =
        speculative !== null && speculative.layer === plan.keepFrom && guess?.time === time
          ? speculative.finish()
          : (async (): Promise<BaseWriteResult> => {
              if (speculative !== null) await takeBack(guarded, speculative);
              return writeBase(guarded, catalog, plan.keepFrom, { time, ...(signal && { signal }) });
            })();
      base.catch(() => undefined); // awaited below
      // The cache is pruned while the base's last index is compressed and stored.
      const pruned = pruneCache(signatureCache, await cacheFiles, history);
      const written = await base;
      result.prunedSignatures = await pruned;
      await headerPut;
      result.baseIndexes = written.indexes;
      result.baseBytes = written.bytes;
      result.writtenBytes = written.bytes;
      await guarded.put(baseMarkerName(plan.keepFrom), encodeBaseMarker(plan.keepFrom, time), { signal });
    } else {
      if (speculative !== null) await takeBack(guarded, speculative);
      result.prunedSignatures = await pruneCache(signatureCache, await cacheFiles, history);
    }
    for (const deletion of plan.deletions) if (!deletion.early) await remove(deletion);
    const keepFrom = plan.collected.length > 0 ? plan.keepFrom : (catalog.bases[0]?.layer ?? plan.keepFrom);
    if (plan.rewrites.length > 0) {
      // Loaded only when there is something to rewrite (it brings the pack reader and the packer): gc starts sooner.
      const { rewritePack } = await import('../stages/pack-rewriter.js');
      for (const rewrite of plan.rewrites) {
        signal?.throwIfAborted();
        const done = await rewritePack(guarded, rewrite.stem, (member) => history.neededFrom(member, keepFrom), {
          currentBytes: rewrite.packBytes,
          compressionLevel: options.compressionLevel ?? 3,
          ...(signal && { signal }),
        });
        result.rewrittenPacks++;
        result.rewriteFreedBytes += rewrite.packBytes - done.newBytes;
        result.writtenBytes += done.writtenBytes;
      }
    }
    return { plan, ...result, ...totals(), elapsedMs: Date.now() - started };
  } finally {
    stopTicker();
    await lock.release();
  }
}

/**
 * The layer the plan will keep from, and its time, guessed before the history is read so that the base can be
 * written in the same pass; null when nothing would be collected, or only a size cap decides (that needs the whole
 * history). Reads the last index of the newest layer, and for a time rule those of O(log layers) layers (layer
 * times increase). The plan decides: a wrong guess costs a second pass over the state, never a wrong base.
 */
async function guessKeepFrom(
  store: Store,
  catalog: Catalog,
  policy: RetentionPolicy,
  now: number,
  signal: AbortSignal | undefined,
): Promise<{ layer: number; time: number } | null> {
  const { layers } = catalog;
  if (layers.length < 2) return null;
  const times = new Map<number, number>();
  const headerOf = async (layer: number): Promise<IndexHeader> => {
    const refs = layerIndexes(catalog, layer);
    const header = await readIndexHeader(store, refs[refs.length - 1]!.stem, signal); // a guess: the history pass checks that index
    times.set(layer, header.time);
    return header;
  };
  const timeOf = async (layer: number): Promise<number> => times.get(layer) ?? (await headerOf(layer)).time;
  const first = layers[0]!;
  const newest = layers[layers.length - 1]!;
  // A layer that a newer one follows was complete.
  const newestComplete = (await headerOf(newest)).through === AFTER_ALL ? newest : layers[layers.length - 2]!;
  const firstAtOrAfter = async (time: number): Promise<number> => {
    let lo = 0;
    let hi = layers.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((await timeOf(layers[mid]!)) >= time) hi = mid;
      else lo = mid + 1;
    }
    return layers[lo] ?? newest;
  };
  const candidates: number[] = [];
  if (policy.keepLayers !== undefined) candidates.push(layers[Math.max(0, layers.length - policy.keepLayers)] ?? first);
  if (policy.keepWithinMs !== undefined) candidates.push(await firstAtOrAfter(now - policy.keepWithinMs));
  if (policy.before !== undefined) candidates.push(await firstAtOrAfter(policy.before));
  if (candidates.length === 0) return null;
  const layer = Math.max(first, Math.min(Math.min(...candidates), newestComplete));
  if (layer === first || layer <= (catalog.bases[0]?.layer ?? 0)) return null;
  return { layer, time: await timeOf(layer) };
}

/** The local cache's signature folder of this archive, if gc is given the cache (and the archive has its header). */
function signatureCacheOf(cacheRoot: string | undefined, catalog: Catalog): string | null {
  if (cacheRoot === undefined || catalog.header === null) return null;
  return path.join(cacheRoot, 'archives', catalog.header.id, 'signatures');
}

/**
 * Prunes the local cache's signatures (`files`, listed before) to those of the newest state's chunks of big files
 * (a delta's base is always one: no other signature is read again), whatever gc does to the archive. The number pruned.
 */
async function pruneCache(cache: string | null, files: readonly string[], history: LayerHistory): Promise<number> {
  return cache === null ? 0 : pruneSignatureCache(cache, files, (hash) => history.isChunkOfNewest(hash));
}

/** Deletes the objects of a base written for nothing (the plan kept from another layer, or refused): nothing reads them. */
async function takeBack(store: Store, writer: BaseWriter): Promise<void> {
  await writer.abandon();
  for (const name of writer.written) await store.delete(name).catch(() => undefined);
}

/** The history, or BLANKET_E_DAMAGED_ARCHIVE naming the damage: gc deletes nothing from an archive it cannot read whole. */
async function readHistoryOrRefuse(store: Store, catalog: Catalog, signal: AbortSignal | undefined, base?: BaseWriter): Promise<LayerHistory> {
  const lost: LostRange[] = [];
  let history: LayerHistory;
  try {
    history = await LayerHistory.read(store, catalog, {
      ...(signal && { signal }),
      onLostRange: (range) => lost.push(range),
      ...(base && { stateOf: { layer: base.layer, add: (records) => base.add(records) } }),
    });
  } catch (error) {
    if (!isBlanketError(error) || error.code === ErrorCodes.ABORTED || error.code === ErrorCodes.STORE_IO) throw error;
    throw refusal(`${error.message}`, error.subject);
  }
  if (lost.length > 0) {
    const range = lost[0]!;
    throw refusal(`${range.stems.map(indexObjectName).join(', ')}: ${describeLostRange(range)}`, indexObjectName(range.stems[0]!));
  }
  // A data object without its index, anywhere but where the next backup resumes, is a lost index: what it holds
  // may be needed (a base of a kept delta, say), so nothing is deleted.
  const newest = catalog.layers[catalog.layers.length - 1] ?? 0;
  const lastSeq = Math.max(0, ...catalog.indexes.filter((ref) => ref.id.layer === newest).map((ref) => ref.id.seq));
  const indexed = new Set(history.packs.map((pack) => pack.stem));
  const firstKept = catalog.bases[0]?.layer ?? catalog.layers[0] ?? 0;
  for (const stem of catalog.packs.keys()) {
    if (indexed.has(stem)) continue;
    const id = parseStem(stem)!;
    const resumePoint = (id.layer === newest && id.seq > lastSeq) || id.layer > newest;
    if (!resumePoint && id.layer >= firstKept) throw refusal(`${packObjectName(stem)} has no index: it is lost, and what the pack holds may be needed`, packObjectName(stem));
  }
  for (const missing of history.deltaBasesUnindexed) {
    throw refusal(`a delta needs content ${missing.base} of pack ${missing.baseStem}, which no index lists`, packObjectName(missing.baseStem));
  }
  for (const pack of history.packs) {
    const name = packObjectName(pack.stem);
    if (!pack.listed) throw refusal(`${name} is missing, though its index lists it`, name);
    if (pack.recordedBytes !== undefined && pack.recordedBytes !== pack.packBytes && pack.formerBytes !== pack.packBytes) {
      throw refusal(`${name} is ${pack.packBytes} bytes, ${pack.recordedBytes} when written`, name);
    }
  }
  return history;
}

function refusal(problem: string, subject: string | undefined): BlanketError {
  return new BlanketError(
    ErrorCodes.DAMAGED_ARCHIVE,
    `the archive is damaged (${problem}): gc deletes nothing until it is repaired, since what looks unneeded may be what the damage hides. ` +
      '`blanket verify` names the damage; restore what it can, or repair it from a copy',
    subject !== undefined ? { subject } : {},
  );
}

/** Which layer to keep from, what goes, and what is left. Pure: a dry run and a real run plan the same. */
export function planGc(catalog: Catalog, history: LayerHistory, policy: RetentionPolicy, now: number, maxWaste = DEFAULT_MAX_WASTE): GcPlan {
  const layers = catalog.layers;
  const first = layers[0] ?? 0;
  const newest = layers[layers.length - 1] ?? 0;
  const facts = (layer: number): LayerFacts | undefined => history.layers.get(layer);
  // The newest state must stay whole: a partial newest layer needs the complete layer before it.
  const newestComplete = [...layers].reverse().find((layer) => facts(layer)?.complete) ?? 0;
  const currentBase = catalog.bases[0]?.layer ?? 0;
  const candidates: number[] = [];
  if (policy.keepLayers !== undefined) candidates.push(layers[Math.max(0, layers.length - policy.keepLayers)] ?? first);
  const firstAtOrAfter = (time: number): number => layers.find((layer) => (facts(layer)?.time ?? 0) >= time) ?? newest;
  if (policy.keepWithinMs !== undefined) candidates.push(firstAtOrAfter(now - policy.keepWithinMs));
  if (policy.before !== undefined) candidates.push(firstAtOrAfter(policy.before));
  let keepFrom = candidates.length > 0 ? Math.min(...candidates) : first;
  keepFrom = Math.max(first, Math.min(keepFrom, newestComplete === 0 ? first : newestComplete));
  const bytesBefore = archiveBytes(catalog);
  const planFor = (k: number): GcPlan => buildPlan(catalog, history, k, currentBase, bytesBefore, maxWaste);
  let plan = planFor(keepFrom);
  if (policy.maxBytes !== undefined && plan.bytesAfter > policy.maxBytes) {
    const last = newestComplete === 0 ? first : newestComplete;
    for (let k = keepFrom + 1; k <= last && plan.bytesAfter > policy.maxBytes; k++) if (layers.includes(k)) plan = planFor(k);
    if (plan.bytesAfter > policy.maxBytes) {
      throw new BlanketError(
        ErrorCodes.CAP_TOO_SMALL,
        `the archive cannot fit in ${policy.maxBytes} bytes: keeping only what the newest state needs (layers ${plan.keepFrom}-${newest}) ` +
          `takes about ${plan.bytesAfter} bytes. Raise the cap to at least that`,
      );
    }
  }
  return plan;
}

function buildPlan(catalog: Catalog, history: LayerHistory, keepFrom: number, currentBase: number, bytesBefore: number, maxWaste: number): GcPlan {
  const collected = catalog.layers.filter((layer) => layer < keepFrom);
  const deletions: Array<{ name: string; bytes: number; early?: true }> = [];
  for (const ref of catalog.strayBaseIndexes) deletions.push({ name: indexObjectName(ref.stem), bytes: ref.size, early: true });
  const newBase = keepFrom > currentBase && collected.length > 0;
  // Old base objects go once the new base is in place (the marker comes first, so readers never lack one).
  if (newBase) {
    for (const base of catalog.bases) {
      deletions.push({ name: baseMarkerName(base.layer), bytes: 0 });
      for (const ref of base.indexes) deletions.push({ name: indexObjectName(ref.stem), bytes: ref.size });
    }
  }
  for (const layer of catalog.oldBaseMarkers) deletions.push({ name: baseMarkerName(layer), bytes: 0 });
  // Collected layers: those of the new base, and any left before an older base by a gc that was stopped.
  const before = newBase ? keepFrom : currentBase;
  let retainedPacks = 0;
  let retainedWasteBytes = 0;
  const rewrites: Array<{ stem: string; packBytes: number; expectedFreed: number }> = [];
  const indexed = new Set<string>();
  for (const pack of history.packs) {
    indexed.add(pack.stem);
    if (pack.layer >= before) continue;
    if (pack.last < before) {
      deletions.push({ name: indexObjectName(pack.stem), bytes: pack.indexBytes });
      deletions.push({ name: packObjectName(pack.stem), bytes: pack.packBytes });
    } else {
      retainedPacks++;
      const waste = deadBytes(pack, before);
      retainedWasteBytes += waste;
      const share = pack.memberBytes > 0 ? waste / pack.memberBytes : 0;
      if (pack.formerBytes !== undefined) {
        // A rewrite a stopped gc began: its index lists the needed members already; the data object is done again.
        rewrites.push({ stem: pack.stem, packBytes: pack.packBytes, expectedFreed: Math.max(0, pack.packBytes - (pack.recordedBytes ?? pack.packBytes)) });
      } else if (share > maxWaste) {
        rewrites.push({ stem: pack.stem, packBytes: pack.packBytes, expectedFreed: Math.round(pack.packBytes * share) });
      }
    }
  }
  for (const index of history.indexOnly) if (index.layer < before) deletions.push({ name: indexObjectName(index.stem), bytes: index.indexBytes });
  // Data objects no index names: left by a run killed before it wrote the index. Nothing can refer to them.
  for (const [stem, bytes] of catalog.packs) if (!indexed.has(stem)) deletions.push({ name: packObjectName(stem), bytes });
  const deleted = deletions.reduce((sum, d) => sum + d.bytes, 0) + rewrites.reduce((sum, r) => sum + r.expectedFreed, 0);
  const basePaths = history.pathsAt.get(keepFrom) ?? 0;
  const baseBytes = newBase ? estimatedBaseBytes(catalog, history, basePaths) : 0;
  return {
    keepFrom,
    collected: newBase ? collected : [],
    deletions,
    retainedPacks,
    retainedWasteBytes,
    rewrites,
    bytesBefore,
    bytesAfter: bytesBefore - deleted + baseBytes,
    basePaths,
  };
}

/** Bytes of every object the catalog lists (packs, indexes, bases). */
function archiveBytes(catalog: Catalog): number {
  let bytes = 0;
  for (const size of catalog.packs.values()) bytes += size;
  for (const ref of catalog.indexes) bytes += ref.size;
  for (const base of catalog.bases) for (const ref of base.indexes) bytes += ref.size;
  for (const ref of catalog.strayBaseIndexes) bytes += ref.size;
  return bytes;
}

/** One line of `blanket layers`: a layer and what collecting it would free. */
export interface LayerReport {
  readonly layer: number;
  readonly time: number;
  readonly complete: boolean;
  readonly paths: number;
  readonly indexes: number;
  readonly packs: number;
  /** Bytes of its own objects. */
  readonly bytes: number;
  /** Bytes freed by collecting this layer with every older one (null: not collectable, the newest state needs it). */
  readonly freedWithOlder: number | null;
  /** Bytes of packs whose members only this layer needs: freed if it alone went. */
  readonly freedAlone: number;
}

export interface LayersResult {
  readonly layers: readonly LayerReport[];
  /** The layer the archive's base is of (0: none), and the bytes of the archive. */
  readonly baseLayer: number;
  readonly bytes: number;
}

/** Per layer, what it holds and what collecting it would free (reads index objects only). */
export async function describeLayers(options: { readonly store: Store; readonly signal?: AbortSignal }): Promise<LayersResult> {
  const { store, signal } = options;
  const catalog = await readCatalog(store);
  const history = await readHistoryOrRefuse(store, catalog, signal);
  const bytesBefore = archiveBytes(catalog);
  const currentBase = catalog.bases[0]?.layer ?? 0;
  const newestComplete = [...catalog.layers].reverse().find((layer) => history.layers.get(layer)?.complete) ?? 0;
  const alone = new Map<number, number>();
  for (const pack of history.packs) if (pack.onlyLayer >= 0) alone.set(pack.onlyLayer, (alone.get(pack.onlyLayer) ?? 0) + pack.packBytes + pack.indexBytes);
  const reports = catalog.layers.map((layer): LayerReport => {
    const facts = history.layers.get(layer);
    const collectable = layer < newestComplete;
    const plan = collectable ? buildPlan(catalog, history, layer + 1, currentBase, bytesBefore, DEFAULT_MAX_WASTE) : null;
    const freed = plan === null ? null : plan.bytesBefore - plan.bytesAfter;
    return {
      layer,
      time: facts?.time ?? 0,
      complete: facts?.complete ?? false,
      paths: history.pathsAt.get(layer) ?? 0,
      indexes: facts?.indexes ?? 0,
      packs: facts?.packs ?? 0,
      bytes: (facts?.indexBytes ?? 0) + (facts?.packBytes ?? 0),
      freedWithOlder: freed,
      freedAlone: alone.get(layer) ?? 0,
    };
  });
  return { layers: reports, baseLayer: currentBase, bytes: bytesBefore };
}
