// Restore from several copies of one archive, or from several archives of one source (restore ARCHIVE DEST --from COPY ...).
//
//   headers: copies grouped by archive id (a copy whose header is unreadable joins the only archive there is)
//   one archive ─▶ a MeshStore over its copies
//   several     ─▶ an ArchiveUnion of one MeshStore per archive, merged by time: for each path range the most
//                  recently written index wins (stages/archive-union.ts, stages/state-reader.ts)
//   indexes: from the first copy whose bytes decode and check (MeshStore)
//   pass: restore (files already right are skipped) ─▶ none failed? done
//         └ packs found damaged: marked against the copy they came from ─▶ another copy has them? next pass
//
// Only content that no copy holds intact is reported failed after the last pass.

import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { classifyObjectName, decodeHeader, HEADER_OBJECT } from '../formats/archive-layout.js';
import { ArchiveUnion } from '../stages/archive-union.js';
import type { Monitor } from '../stages/monitor.js';
import { decodeIndexObject } from '../stages/index-decoding.js';
import { readArchiveHeader } from '../stages/state-reader.js';
import { MeshStore, type CopyProblem } from '../stores/mesh.js';
import type { Store } from '../stores/store.js';
import { restore, type RestoreOptions, type RestoreResult } from './restore.js';

export interface MeshRestoreResult extends RestoreResult {
  /** Restore passes made (one per copy preferred, until nothing failed). */
  passes: number;
  /** What each copy lacked or had damaged (objects other copies gave instead, or nobody had). */
  copyProblems: CopyProblem[];
  /**
   * Several archives merged by time: each one's location (its copies joined by " + "), its number of layers, and
   * the first layer number it appears as in messages about layers. Absent for copies of one archive.
   */
  merged?: Array<{ location: string; layers: number; firstVirtual: number }>;
}

export async function restoreFromCopies(options: Omit<RestoreOptions, 'store' | 'layerOrigin'> & { copies: readonly Store[]; monitor: Monitor }): Promise<MeshRestoreResult> {
  const { copies, monitor } = options;
  const meshes = (await groupByArchive(copies, monitor)).map(
    (group) =>
      new MeshStore(group, {
        checked: (name) => name === HEADER_OBJECT || classifyObjectName(name)?.kind === 'index',
        check: async (name, bytes) => {
          try {
            if (name === HEADER_OBJECT) decodeHeader(bytes);
            else await decodeIndexObject(classifyObjectName(name)!.stem, bytes);
            return null;
          } catch (error) {
            if (!isBlanketError(error)) throw error;
            return error.message;
          }
        },
      }),
  );
  let union: ArchiveUnion | undefined;
  if (meshes.length > 1) {
    if (options.layer !== undefined) {
      throw new BlanketError(
        ErrorCodes.USAGE,
        '--layer names a layer of one archive, and these are different archives merged by time: restore from one archive (and its copies) to choose a layer',
      );
    }
    union = await ArchiveUnion.open(meshes);
  }
  const store: Store = union ?? meshes[0]!;
  /** The copies and the name within its archive of an object the restore names. */
  const locate = (object: string): { mesh: MeshStore; name: string } => {
    const real = union?.resolve(object);
    return real === undefined ? { mesh: meshes[0]!, name: object } : { mesh: meshes[real.archive]!, name: real.name };
  };
  let total: MeshRestoreResult | undefined;
  const damaged = new Set<string>();
  // Each pass that goes on has marked at least one object damaged in one more copy: a bounded number of passes.
  for (let pass = 0; ; pass++) {
    const result = await restore({ ...options, store, ...(union && { layerOrigin: union.layerOrigin }) });
    let another = false;
    for (const object of result.damagedObjects) {
      const { mesh, name } = locate(object);
      damaged.add(`${name} (read from ${mesh.servedBy.get(name) ?? 'a copy'})`);
      if (mesh.markDamaged(name, 'damaged (found by restore)')) another = true;
    }
    total =
      total === undefined
        ? { ...result, passes: 1, copyProblems: [] }
        : {
            ...total,
            restoredFiles: total.restoredFiles + result.restoredFiles,
            restoredBytes: total.restoredBytes + result.restoredBytes,
            failedFiles: result.failedFiles,
            packsFetched: total.packsFetched + result.packsFetched,
            elapsedMs: total.elapsedMs + result.elapsedMs,
            passes: pass + 1,
          };
    if (result.failedFiles === 0 || !another) break;
    monitor.warn('next-copy', `${result.failedFiles} files could not be restored yet; reading the damaged objects from other copies`);
  }
  total!.damagedObjects = [...damaged].sort();
  total!.copyProblems = meshes.flatMap((mesh) => mesh.problems);
  if (union) total!.merged = union.layerMap();
  return total!;
}

/**
 * The copies grouped by archive id, in the order first seen. A copy whose header is missing or damaged is only
 * noted and joins the one archive there is; among several archives it cannot be placed, and is refused.
 */
async function groupByArchive(copies: readonly Store[], monitor: Monitor): Promise<Store[][]> {
  const groups = new Map<string, Store[]>();
  const headless: Store[] = [];
  for (const copy of copies) {
    let id: string;
    try {
      id = (await readArchiveHeader(copy)).id;
    } catch (error) {
      if (!isBlanketError(error) || error.code === ErrorCodes.FORMAT_VERSION) throw error;
      monitor.warn('copy-header', `${copy.location}: ${error.message}; its layers are still read`, { object: HEADER_OBJECT });
      headless.push(copy);
      continue;
    }
    const group = groups.get(id);
    if (group) group.push(copy);
    else groups.set(id, [copy]);
  }
  if (groups.size > 1 && headless.length > 0) {
    throw new BlanketError(
      ErrorCodes.USAGE,
      `${headless[0]!.location} has no readable header, so it cannot be told which of the ${groups.size} archives given it is a copy of: leave it out, or repair its header from another copy`,
      { subject: headless[0]!.location },
    );
  }
  if (groups.size === 0) return [headless];
  if (headless.length > 0) groups.values().next().value!.push(...headless);
  return [...groups.values()];
}
