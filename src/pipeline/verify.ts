// Verify: re-reads every index and pack, re-hashes every member, checks every reference, and names the damage
// together with the files (path and layer) whose content it holds. A quick verify reads indexes only and checks
// each pack against the store's listing: present, of the size (and store checksum) its index recorded.

import { AFTER_ALL, BEFORE_ALL, displayPath, keyToPath, ROOT_KEY } from '../formats/path-key.js';
import { baseIndexStem, baseMarkerName, HEADER_OBJECT, indexObjectName, packObjectName, packStem } from '../formats/archive-layout.js';
import type { DeltaMember, PackIndex } from '../formats/index-format.js';
import { isBlanketError } from '../formats/errors.js';
import type { Store } from '../stores/store.js';
import type { Monitor } from '../stages/monitor.js';
import { readPack } from '../stages/pack-reader.js';
import { describeLostRange, IndexChain, isCollectedLayer, readCatalog, readIndex, type LostRange } from '../stages/state-reader.js';
import { MAX_DELTA_DEPTH } from '../stages/delta.js';

export interface Damage {
  readonly object: string;
  readonly problem: string;
  /** Files whose content (in some layer) lives in the damaged object, as "path (layer N)". */
  readonly files: string[];
}

export interface VerifyResult {
  indexes: number;
  packs: number;
  members: number;
  bytes: number;
  damaged: Damage[];
  /** Pack objects no index commits (left by an interrupted run): harmless, reported for information. */
  orphans: string[];
  /** Quick verify: packs checked against the listing only (their members trusted as their index lists them). */
  quick: boolean;
  /** Quick verify: packs found only by name, their index being older than recorded sizes (version 1 or 2). */
  unsized: number;
  elapsedMs: number;
}

export interface VerifyOptions {
  readonly store: Store;
  readonly monitor: Monitor;
  readonly signal?: AbortSignal;
  /** Check packs against the listing (size, store checksum) instead of reading them: no pack data is read. */
  readonly quick?: boolean;
}

export async function verify(options: VerifyOptions): Promise<VerifyResult> {
  const { store, monitor, signal } = options;
  const quick = options.quick === true;
  const started = Date.now();
  monitor.emit({ type: 'started', command: 'verify', archive: store.location });
  const stopTicker = monitor.startTicker();
  const result: VerifyResult = { indexes: 0, packs: 0, members: 0, bytes: 0, damaged: [], orphans: [], quick, unsized: 0, elapsedMs: 0 };
  const damage = new Map<string, { problem: string; files: Set<string> }>();
  const addDamage = (object: string, problem: string): void => {
    if (!damage.has(object)) {
      damage.set(object, { problem, files: new Set() });
      monitor.warn('damaged-object', `${object}: ${problem}`, { object });
    }
  };
  // The header only identifies the archive: a damaged one is reported, and everything else still checked.
  const catalog = await readCatalog(store, { onDamagedHeader: (error) => addDamage(HEADER_OBJECT, error.message) });
  /** pack stem → member hashes that are intact. */
  const intact = new Map<string, Set<string>>();
  /** pack stem → member hashes found damaged (in a readable pack). */
  const badMembers = new Map<string, Set<string>>();
  /** pack stem → its delta members, by the content they rebuild. */
  const deltas = new Map<string, Map<string, DeltaMember>>();
  /** Whether pack `stem` holds content `hash` intact: as a member, or as an intact delta on content held intact. */
  const holds = (stem: string, hash: string, depth = 0): boolean => {
    if (intact.get(stem)?.has(hash) || presentUnchecked.has(stem)) return true;
    const delta = deltas.get(stem)?.get(hash);
    return delta !== undefined && depth < MAX_DELTA_DEPTH && intact.get(stem)!.has(delta.hash) && holds(delta.baseStem, delta.base, depth + 1);
  };
  const indexed = new Set<string>();
  /** Quick verify: packs present whose index is lost, so that nothing says what they should hold. */
  const presentUnchecked = new Set<string>();
  const lost: LostRange[] = [];
  const lastLayer = catalog.layers[catalog.layers.length - 1];
  let chain: IndexChain | null = null;
  let chainLayer = 0;
  const checkPack = async (stem: string) => {
    const read = await readPack(store, stem, { wants: () => false, checkAll: true, signal });
    result.packs++;
    result.bytes += read.bytes;
    result.members += read.delivered.size;
    monitor.bytes += read.bytes;
    intact.set(stem, read.delivered);
    return read;
  };

  try {
    // Pass 1: every index parses and continues the one before it; every pack it commits is read whole and every
    // member re-hashed.
    // A base (written by gc) is a chain of its own, complete; collected layers keep only the indexes of packs
    // still needed, so theirs are no chains any more.
    for (const base of catalog.bases) {
      const baseChain = new IndexChain(base.layer, (range) => lost.push(range), 0, baseIndexStem);
      if (base.indexes.length === 0) addDamage(baseMarkerName(base.layer), 'a base marker without its base: the base index objects are missing');
      for (const ref of base.indexes) {
        signal?.throwIfAborted();
        try {
          baseChain.next(ref, (await readIndex(store, ref.stem, signal)).header);
          result.indexes++;
        } catch (error) {
          if (!isBlanketError(error)) throw error;
          addDamage(indexObjectName(ref.stem), error.message);
          baseChain.next(ref, null);
        }
      }
      if (base.indexes.length > 0) baseChain.end(true);
    }
    for (const ref of catalog.indexes) {
      signal?.throwIfAborted();
      const collected = isCollectedLayer(catalog, ref.id.layer);
      if (ref.id.layer !== chainLayer) {
        chain?.end(true);
        chainLayer = ref.id.layer;
        chain = collected ? null : new IndexChain(chainLayer, (range) => lost.push(range));
      }
      let index: PackIndex;
      try {
        index = await readIndex(store, ref.stem, signal);
      } catch (error) {
        if (!isBlanketError(error)) throw error;
        addDamage(indexObjectName(ref.stem), error.message);
        chain?.next(ref, null);
        continue;
      }
      chain?.next(ref, index.header);
      result.indexes++;
      if (index.header.pack === null) continue;
      const packDeltas = index.members.filter((m): m is DeltaMember => m.kind === 'delta');
      if (packDeltas.length > 0) deltas.set(ref.stem, new Map(packDeltas.map((d) => [d.target, d])));
      indexed.add(ref.stem);
      const name = packObjectName(ref.stem);
      if (!catalog.packs.has(ref.stem)) {
        addDamage(name, 'missing');
        continue;
      }
      if (quick) {
        const problem = listingProblem(index, catalog.packs.get(ref.stem)!, catalog.packChecksums.get(ref.stem));
        result.packs++;
        if (index.header.packSize === undefined) result.unsized++;
        if (problem !== null) {
          addDamage(name, problem);
          continue;
        }
        intact.set(ref.stem, new Set(index.members.map((m) => m.hash)));
        result.members += index.members.length;
        continue;
      }
      const read = await checkPack(ref.stem);
      const missing = index.members.filter((m) => !read.delivered.has(m.hash)).map((m) => m.hash);
      if (read.error) addDamage(name, read.error.message);
      else if (missing.length > 0) addDamage(name, `${missing.length} of ${index.members.length} members missing or damaged`);
      if (missing.length > 0) badMembers.set(ref.stem, new Set(missing));
    }
    chain?.end(chainLayer !== lastLayer);
    // A layer with no index left: everything it recorded is lost; its data objects, if any, are checked below.
    for (const layer of catalog.missingLayers) {
      const stems = [...catalog.packs.keys()].filter((stem) => stem.startsWith(`${packStem({ layer, seq: 1 }).slice(0, 6)}/`)).sort();
      lost.push({ layer, stems: stems.length > 0 ? stems : [packStem({ layer, seq: 1 })], after: BEFORE_ALL, through: AFTER_ALL });
    }
    // A missing or damaged index loses what its layer recorded in its range. Its pack, if present, is not an
    // orphan: later indexes may refer to content in it (chunks of a big file), so it is checked like the others.
    for (const range of lost) {
      for (const stem of range.stems) {
        const object = indexObjectName(stem);
        const present = catalog.indexes.some((ref) => ref.stem === stem);
        if (!present) addDamage(object, `missing: ${describeLostRange(range)}`);
        else if (damage.has(object)) damage.get(object)!.problem += `; ${describeLostRange(range)}`;
        else addDamage(object, `does not continue the index before it: ${describeLostRange(range)}`);
        if (catalog.packs.has(stem) && !indexed.has(stem)) {
          indexed.add(stem);
          // Without its index nothing says what the pack should hold: a quick verify takes it as it is listed.
          if (quick) presentUnchecked.add(stem);
          else await checkPack(stem);
        }
      }
    }
    for (const stem of catalog.packs.keys()) if (!indexed.has(stem)) result.orphans.push(packObjectName(stem));

    // Pass 2: every content reference of the state (the base and the kept layers) points at an intact member;
    // collect the files each damage costs.
    const stateIndexes = [...catalog.bases.flatMap((base) => base.indexes), ...catalog.indexes.filter((ref) => !isCollectedLayer(catalog, ref.id.layer))];
    for (const ref of stateIndexes) {
      let index: PackIndex;
      try {
        index = await readIndex(store, ref.stem, signal);
      } catch {
        continue;
      }
      for (const segment of index.segments) {
        for (const entry of segment.entries) {
          for (const chunk of entry.chunks) {
            const members = intact.get(chunk.pack);
            if (holds(chunk.pack, chunk.hash)) continue;
            const object = packObjectName(chunk.pack);
            if (!damage.has(object)) addDamage(object, members ? `does not hold content ${chunk.hash} that indexes refer to` : 'missing or unreadable');
            damage.get(object)!.files.add(`${entry.key === ROOT_KEY ? '/' : displayPath(keyToPath(entry.key))} (layer ${ref.id.layer})`);
          }
        }
      }
    }
  } finally {
    stopTicker();
  }
  result.damaged = [...damage].map(([object, d]) => ({ object, problem: d.problem, files: [...d.files].sort() }));
  result.elapsedMs = Date.now() - started;
  return result;
}

/** Why a pack's listing contradicts what its index recorded when the pack was written, or null if it does not. */
function listingProblem(index: PackIndex, listedSize: number, listedChecksum: string | undefined): string | null {
  const { packSize, packChecksum, replacesSize } = index.header;
  // A rewrite by gc that was stopped: the object may still be the old one, which holds every member listed too.
  if (replacesSize !== undefined && listedSize === replacesSize && listedSize !== packSize) return null;
  if (packSize !== undefined && listedSize !== packSize) {
    return `${listedSize < packSize ? 'truncated' : 'grown'}: ${listedSize} bytes, ${packSize} when written`;
  }
  // Compared only when the store reports the same kind of checksum as the one that wrote the pack.
  if (packChecksum !== undefined && listedChecksum !== undefined && kindOf(packChecksum) === kindOf(listedChecksum) && packChecksum !== listedChecksum) {
    return `changed since written: the store reports checksum ${listedChecksum}, ${packChecksum} when written`;
  }
  return null;
}

const kindOf = (checksum: string): string => checksum.slice(0, checksum.indexOf(':'));
