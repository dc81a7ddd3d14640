// Restore from several copies of one archive (restore ARCHIVE DEST --from COPY ...): each object from a copy that has it intact.
//
//   headers: one archive id for every copy that has a readable header (else refused)
//   indexes: from the first copy whose bytes decode and check (MeshStore)
//   pass: restore (files already right are skipped) ─▶ none failed? done
//         └ packs found damaged: marked against the copy they came from ─▶ another copy has them? next pass
//
// Only content that no copy holds intact is reported failed after the last pass.

import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { classifyObjectName, decodeHeader, HEADER_OBJECT } from '../formats/archive-layout.js';
import type { Monitor } from '../stages/monitor.js';
import { decodeIndexObject, readArchiveHeader } from '../stages/state-reader.js';
import { MeshStore, type CopyProblem } from '../stores/mesh.js';
import type { Store } from '../stores/store.js';
import { restore, type RestoreOptions, type RestoreResult } from './restore.js';

export interface MeshRestoreResult extends RestoreResult {
  /** Restore passes made (one per copy preferred, until nothing failed). */
  passes: number;
  /** What each copy lacked or had damaged (objects other copies gave instead, or nobody had). */
  copyProblems: CopyProblem[];
}

export async function restoreFromCopies(options: Omit<RestoreOptions, 'store'> & { copies: readonly Store[]; monitor: Monitor }): Promise<MeshRestoreResult> {
  const { copies, monitor } = options;
  await checkSameArchive(copies, monitor);
  const mesh = new MeshStore(copies, {
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
  });
  let total: MeshRestoreResult | undefined;
  const damaged = new Set<string>();
  // Each pass that goes on has marked at least one object damaged in one more copy: a bounded number of passes.
  for (let pass = 0; ; pass++) {
    const result = await restore({ ...options, store: mesh });
    let another = false;
    for (const object of result.damagedObjects) {
      damaged.add(`${object} (read from ${mesh.servedBy.get(object) ?? 'a copy'})`);
      if (mesh.markDamaged(object, 'damaged (found by restore)')) another = true;
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
  total!.copyProblems = mesh.problems;
  return total!;
}

/** Refuses copies of different archives; a copy whose header is missing or damaged is only noted. */
async function checkSameArchive(copies: readonly Store[], monitor: Monitor): Promise<void> {
  let first: { id: string; location: string } | undefined;
  for (const copy of copies) {
    let id: string;
    try {
      id = (await readArchiveHeader(copy)).id;
    } catch (error) {
      if (!isBlanketError(error) || error.code === ErrorCodes.FORMAT_VERSION) throw error;
      monitor.warn('copy-header', `${copy.location}: ${error.message}; its layers are still read`, { object: HEADER_OBJECT });
      continue;
    }
    if (first === undefined) first = { id, location: copy.location };
    else if (first.id !== id) {
      throw new BlanketError(
        ErrorCodes.USAGE,
        `${copy.location} is archive ${id}, ${first.location} is archive ${first.id}: --from takes copies of one archive`,
        { subject: copy.location },
      );
    }
  }
}
