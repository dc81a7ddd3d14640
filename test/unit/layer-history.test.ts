// gc's lifetimes against a model: for every content the entries of a random archive name, the layers whose states
// need it (from each path's versions, replayed naively), and the paths in each layer's state, whichever layer the
// pass also writes the state of (the base: sources up to it merged, newer ones read newest first).
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Entry } from '../../src/formats/entry.js';
import { EntryLine } from '../../src/formats/index-format.js';
import { pathToKey, ROOT_KEY } from '../../src/formats/path-key.js';
import { LayerHistory } from '../../src/stages/layer-history.js';
import { readCatalog, type StateRecord } from '../../src/stages/state-reader.js';
import { dirEntry, planArchive, Prng, replay, universe, writeArchive, type PlannedIndex } from '../helpers/planned-archive.js';

const CONTENTS = 17;
const contentOf = (version: number): string => createHash('sha256').update(`content ${version % CONTENTS}`).digest('hex');

/** A file whose content is one of CONTENTS (so that paths and layers share contents), told apart by its mtime; the root is a directory. */
function fileEntry(key: string, version: number): Entry {
  if (key === ROOT_KEY) return dirEntry(key, version);
  const hash = contentOf(version);
  return {
    key,
    kind: 'file',
    mode: 0o644,
    mtimeNs: BigInt(version),
    ctimeNs: 0n,
    ino: 1n,
    nlink: 1,
    size: 100 + (version % CONTENTS),
    uid: 0,
    gid: 0,
    user: '',
    group: '',
    hash,
    chunks: [{ hash, size: 100 + (version % CONTENTS), pack: '000001/00000001' }],
    linkTarget: null,
    rdev: 0,
  };
}

/**
 * The model: each path's versions in written order (every segment covering it, with its entry or none); an entry of
 * layer a next recorded in layer b is in the states a..b-1 (a..newest if never again); a content's lifetime is the
 * hull of those of the entries naming it.
 */
function lifetimesModel(plan: PlannedIndex[], keys: readonly string[]): Map<string, [number, number]> {
  const newest = plan[plan.length - 1]!.layer;
  const hulls = new Map<string, [number, number]>();
  for (const key of keys) {
    const versions: Array<{ layer: number; entry: Entry | undefined }> = [];
    for (const index of plan) {
      for (const segment of index.segments) {
        if (key >= segment.first && key <= segment.last) versions.push({ layer: index.layer, entry: segment.entries.find((e) => e.key === key) });
      }
    }
    for (const [i, { layer, entry }] of versions.entries()) {
      if (entry?.hash == null) continue;
      const to = i + 1 < versions.length ? versions[i + 1]!.layer - 1 : newest;
      const hull = hulls.get(entry.hash);
      hulls.set(entry.hash, hull === undefined ? [layer, to] : [Math.min(hull[0], layer), Math.max(hull[1], to)]);
    }
  }
  return hulls;
}

async function checkRound(t: Test, rng: Prng, plan: PlannedIndex[], keys: readonly string[], label: string): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'blanket-history-'));
  try {
    const store = await writeArchive(dir, plan);
    const catalog = await readCatalog(store);
    const layers = [...new Set(plan.map((index) => index.layer))];
    const expected = lifetimesModel(plan, keys);
    const paths = new Map(layers.map((layer) => [layer, replay(plan, layer).size]));
    // No base; the base of a random layer; of the newest (every source merged, none read newest first).
    for (const stateLayer of [undefined, layers[rng.int(layers.length)]!, layers[layers.length - 1]!]) {
      const state: Entry[] = [];
      const stateOf = stateLayer === undefined ? undefined : { layer: stateLayer, add: async (records: readonly StateRecord[]) => void state.push(...records.map((r) => (r instanceof EntryLine ? r.entry() : r))) };
      const history = await LayerHistory.read(store, catalog, stateOf ? { stateOf } : {});
      const what = `${label}, base ${stateLayer ?? 'none'}`;
      for (let version = 0; version < CONTENTS; version++) {
        const hash = contentOf(version);
        t.same(history.lifetimeOf(hash), expected.get(hash), `${what}: the lifetime of content ${version}`);
      }
      t.same([...history.pathsAt], [...paths], `${what}: the paths in each layer's state`);
      if (stateLayer !== undefined) {
        const model = [...replay(plan, stateLayer).values()].sort((x, y) => (x.key < y.key ? -1 : 1));
        t.same(state.map((e) => [e.key, e.mtimeNs]), model.map((e) => [e.key, e.mtimeNs]), `${what}: the state as of ${stateLayer}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

t.test('lifetimes and paths per layer equal the model, with the base of any layer written in the same pass', async (t) => {
  const rng = new Prng(20261204);
  for (let round = 0; round < 30; round++) await checkRound(t, rng, planArchive(rng, universe, 5, fileEntry), universe, `round ${round}`);
});

t.test('many layers of small stretches over a wider tree (a coverage of many pieces)', async (t) => {
  const rng = new Prng(4122026);
  const wide = [...new Set(Array.from({ length: 120 }, (_, i) => pathToKey(Buffer.from(`d${i % 9}/f${String(i).padStart(3, '0')}`))).concat(universe))].sort();
  for (let round = 0; round < 15; round++) await checkRound(t, rng, planArchive(rng, wide, 16, fileEntry), wide, `round ${round}`);
});
