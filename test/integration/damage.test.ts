// Damaged archives, through the real CLI: for each kind of archive object (the header blanket.json, an index
// of layer 1, an index of layer 2, a pack whose content only some files use) and each kind of damage (one byte
// flipped in the middle, truncated to half, deleted), on a fresh copy of a two-layer archive:
//
//   verify   exits 3 and names the damaged object (for a pack, also the files whose content it holds);
//   restore  restores every unaffected file exactly, names the affected files (for an index, the range of
//            paths it recorded), never writes wrong content, and exits 3;
//   neither  crashes ("unexpected error") or hangs (every run has a timeout).
//
// Header policy: blanket.json only identifies the archive; the layers do not need it. So verify and restore
// report a damaged or missing header (exit 3) but still check / restore everything; backup refuses to write
// into an archive whose header it cannot read, with an error that names blanket.json.
//
// Packs are zstd frames without content checksums: a flipped byte in a raw (incompressible) block decompresses
// to wrong bytes without any zstd error. The chosen pack is one where that happens, so the SHA-256 of each
// member is what must catch it.

import t, { type Test } from 'tap';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decompress } from '@mongodb-js/zstd';
import { tmpDir, type CliResult } from '../helpers/cli.js';
import { blanket } from '../helpers/integration.js';
import { compareTrees, Prng, snapshotTree, type TreeEntry, type TreeSnapshot } from '../helpers/tree.js';
import { displayPath, keyToPath, ROOT_KEY } from '../../src/formats/path-key.js';

const KiB = 1024;
const RUN_TIMEOUT_MS = 60_000;

// ---------------------------------------------------------------------------------------------------------------
// Source tree

function writeTree(root: string): void {
  const rng = new Prng(4242);
  mkdirSync(join(root, 'docs'), { recursive: true });
  mkdirSync(join(root, 'data'), { recursive: true });
  mkdirSync(join(root, 'big'), { recursive: true });
  mkdirSync(join(root, 'deep/a/b'), { recursive: true });
  for (let i = 0; i < 12; i++) {
    const line = `document ${i}, line of text ${rng.nextU32().toString(36)}\n`;
    writeFileSync(join(root, 'docs', `d${String(i).padStart(2, '0')}.txt`), line.repeat(Math.ceil((3 * KiB + rng.int(6 * KiB)) / line.length)));
  }
  for (let i = 0; i < 14; i++) writeFileSync(join(root, 'data', `r${String(i).padStart(2, '0')}.bin`), rng.bytes(2 * KiB + rng.int(10 * KiB)));
  writeFileSync(join(root, 'big', 'b1.bin'), rng.bytes(150 * KiB));
  writeFileSync(join(root, 'big', 'b2.bin'), rng.bytes(230 * KiB));
  writeFileSync(join(root, 'deep/a/b', 'c.txt'), 'deep file\n');
  writeFileSync(join(root, 'empty'), '');
}

/** Changes for layer 2: edits, a rewrite, a deletion, an addition, one changed chunk of a big file. */
function mutateTree(root: string): void {
  const rng = new Prng(777);
  writeFileSync(join(root, 'docs', 'd03.txt'), readFileSync(join(root, 'docs', 'd03.txt'), 'utf8') + 'appended in layer 2\n');
  for (const n of ['01', '02', '03', '05', '09', '11']) writeFileSync(join(root, 'data', `r${n}.bin`), rng.bytes(9 * KiB));
  rmSync(join(root, 'data', 'r07.bin'));
  writeFileSync(join(root, 'docs', 'new.txt'), 'added in layer 2\n'.repeat(300));
  // New content enough for several packs (the changed chunk of b1.bin below is stored as a small delta).
  writeFileSync(join(root, 'data', 'r20.bin'), rng.bytes(100 * KiB));
  const b1 = readFileSync(join(root, 'big', 'b1.bin'));
  rng.fill(b1.subarray(70 * KiB, 80 * KiB));
  writeFileSync(join(root, 'big', 'b1.bin'), b1);
}

// ---------------------------------------------------------------------------------------------------------------
// An independent reader of the index text (docs: src/formats/index-format.ts), used as the test's oracle

interface ParsedEntry {
  readonly path: string;
  readonly key: string;
  readonly kind: string;
  readonly packs: ReadonlySet<string>;
  /** Hashes of the members holding its content. */
  readonly hashes: ReadonlySet<string>;
}

interface ParsedIndex {
  readonly stem: string;
  readonly layer: number;
  readonly seq: number;
  readonly pack: string | null;
  readonly after: string;
  readonly through: string;
  readonly entries: ParsedEntry[];
  readonly members: string[];
}

function pathOfKey(key: string): string {
  if (key === '!') return '(start)';
  if (key === '~') return '(end)';
  return key === ROOT_KEY ? '/' : displayPath(keyToPath(key));
}

async function parseIndexes(archive: string): Promise<ParsedIndex[]> {
  const out: ParsedIndex[] = [];
  for (const layerDir of readdirSync(join(archive, 'layers')).sort()) {
    for (const name of readdirSync(join(archive, 'layers', layerDir)).sort()) {
      if (!name.endsWith('.idx.zst')) continue;
      const text = (await decompress(readFileSync(join(archive, 'layers', layerDir, name)))).toString('latin1');
      const lines = text.split('\n');
      const header = new Map<string, string>();
      const entries: ParsedEntry[] = [];
      const members: string[] = [];
      for (let i = 0; i < lines.length; i++) {
        const f = lines[i]!.split('\t');
        if (f[0] === 'E') {
          const loc = f[14]!;
          const packs = new Set<string>();
          const hashes = new Set<string>();
          if (loc.startsWith('+')) {
            const n = Number(loc.slice(1));
            for (let k = 1; k <= n; k++) {
              const chunk = lines[i + k]!.split('\t');
              hashes.add(chunk[1]!);
              packs.add(chunk[3]!);
            }
            i += n;
          } else if (loc !== '-') {
            packs.add(loc);
            hashes.add(f[13]!);
          }
          entries.push({ key: f[1]!, path: pathOfKey(f[1]!), kind: f[2]!, packs, hashes });
        } else if (f[0] === 'H') {
          // A delta holds its target's content too (docs/FORMAT.md, H lines).
          members.push(f[3] === 'rdiff' ? f[4]! : f[1]!);
        }
        else if (f.length === 2 && f[0] !== 'end') header.set(f[0]!, f[1]!);
      }
      const stem = `${layerDir}/${name.slice(0, 8)}`;
      out.push({
        stem,
        layer: Number(header.get('layer')),
        seq: Number(header.get('seq')),
        pack: header.get('pack') === '-' ? null : header.get('pack')!,
        after: header.get('after')!,
        through: header.get('through')!,
        entries,
        members,
      });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

function cli(args: string[]): Promise<CliResult> {
  return blanket(args, { timeoutMs: RUN_TIMEOUT_MS });
}

function noCrash(t: Test, r: CliResult, what: string): void {
  t.notOk(r.timedOut, `${what}: finished within ${RUN_TIMEOUT_MS} ms`);
  t.equal(r.signal, null, `${what}: not killed by a signal`);
  t.notMatch(r.stderr, /unexpected error|\n\s+at .*\.js:\d+/, `${what}: no unexpected error or stack trace`);
}

/** "DAMAGED object: problem" blocks of verify's report: object → its "affects" lines. */
function verifyReport(stdout: string): Map<string, { problem: string; affects: string[] }> {
  const out = new Map<string, { problem: string; affects: string[] }>();
  let current: { problem: string; affects: string[] } | null = null;
  for (const line of stdout.split('\n')) {
    const m = /^DAMAGED (\S+): (.*)$/.exec(line);
    if (m) {
      current = { problem: m[2]!, affects: [] };
      out.set(m[1]!, current);
      continue;
    }
    const a = /^ {4}affects (.*)$/.exec(line);
    if (a && current) current.affects.push(a[1]!);
    else if (!line.startsWith(' ')) current = null;
  }
  return out;
}

function filesOf(snapshot: TreeSnapshot): Map<string, TreeEntry> {
  return new Map(snapshot.filter((e) => e.type === 'file').map((e) => [e.path, e]));
}

/** Names of leftover temporary files (restore must not leave any). */
function temporaries(snapshot: TreeSnapshot): string[] {
  return snapshot.filter((e) => /(^|\/)\.?\.blanket-tmp-|\.blanket-tmp-/.test(e.path)).map((e) => e.path);
}

type Damage = 'flip' | 'truncate' | 'delete';
const DAMAGES: readonly Damage[] = ['flip', 'truncate', 'delete'];

function damageFile(file: string, damage: Damage): void {
  const bytes = readFileSync(file);
  if (damage === 'delete') rmSync(file);
  else if (damage === 'truncate') truncateSync(file, Math.floor(bytes.length / 2));
  else {
    const at = Math.floor(bytes.length / 2);
    bytes[at] = bytes[at]! ^ 0xff;
    writeFileSync(file, bytes);
  }
}

/** Name of the tar member whose content holds byte `offset` of `tar`, or null (a header, padding, the end). */
function tarMemberAt(tar: Buffer, offset: number): string | null {
  let at = 0;
  while (at + 512 <= tar.length && tar[at] !== 0) {
    const name = tar.toString('latin1', at, at + 100).replace(/\0.*$/s, '');
    const size = parseInt(tar.toString('latin1', at + 124, at + 136).trim(), 8);
    if (offset >= at + 512 && offset < at + 512 + size) return name;
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------------------

t.test('damaged archive objects', async (t) => {
  const root = tmpDir(t, 'blanket-damage-');
  const src = join(root, 'src');
  const pristine = join(root, 'pristine');
  mkdirSync(src);
  writeTree(src);
  const v1 = await snapshotTree(src);
  let r = await cli(['backup', src, pristine, '--pack-size', '64K']);
  t.equal(r.code, 0, 'layer 1 backup', { stderr: r.stderr });
  mutateTree(src);
  const v2 = await snapshotTree(src);
  r = await cli(['backup', src, pristine, '--pack-size', '64K']);
  t.equal(r.code, 0, 'layer 2 backup', { stderr: r.stderr });
  r = await cli(['verify', pristine]);
  t.equal(r.code, 0, 'the undamaged archive verifies', { stdout: r.stdout, stderr: r.stderr });

  const indexes = await parseIndexes(pristine);
  const layer1 = indexes.filter((i) => i.layer === 1);
  const layer2 = indexes.filter((i) => i.layer === 2);
  t.ok(layer1.length >= 4, `layer 1 has several packs (${layer1.length})`);
  t.ok(layer2.length >= 3, `layer 2 has several packs (${layer2.length})`);
  for (const i of indexes) {
    t.comment(`${i.stem}: pack ${i.pack ?? '-'}, (${pathOfKey(i.after)}, ${pathOfKey(i.through)}], ${i.members.length} members, entries: ${i.entries.map((e) => e.path).join(' ')}`);
  }
  const v1Files = filesOf(v1);
  const v2Files = filesOf(v2);

  /** Newest entry of each path (layer 2 records replace layer 1's within its segments; v2 is the truth). */
  const newest = new Map<string, ParsedEntry>();
  for (const index of indexes) for (const e of index.entries) newest.set(e.path, e);
  /** Files of the newest state whose content uses pack `stem`. */
  const usersNow = (stem: string): Set<string> => new Set([...v2Files.keys()].filter((p) => newest.get(p)?.packs.has(stem)));
  /** "path (layer N)" of every index entry (any layer) whose content uses pack `stem`, as verify reports them. */
  const usersAnyLayer = (stem: string): Set<string> =>
    new Set(indexes.flatMap((i) => i.entries.filter((e) => e.packs.has(stem)).map((e) => `${e.path} (layer ${i.layer})`)));

  // The pack: a layer-1 pack used by some but not all current files, holding random data, where a byte flipped
  // in the middle decompresses without any zstd error to wrong bytes of a member that a current file uses.
  const hashesNow = new Set([...v2Files.keys()].flatMap((p) => [...(newest.get(p)?.hashes ?? [])]));
  let packStem: string | null = null;
  let packUsers = 0;
  for (const index of layer1) {
    if (index.pack === null) continue;
    const users = usersNow(index.pack);
    if (users.size < 2 || users.size > v2Files.size / 2) continue;
    const bytes = readFileSync(join(pristine, 'layers', `${index.pack}.tar.zst`));
    const flipped = Buffer.from(bytes);
    flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
    let silent = false;
    try {
      const good = await decompress(bytes);
      const bad = await decompress(flipped);
      let at = 0;
      while (at < good.length && good[at] === bad[at]) at++;
      const member = tarMemberAt(good, at);
      silent = bad.length === good.length && at < good.length && member !== null && hashesNow.has(member);
    } catch {
      silent = false;
    }
    if (silent && users.size > packUsers) {
      packStem = index.pack;
      packUsers = users.size;
    }
  }
  if (packStem === null) throw new Error('test setup: no layer-1 pack with 2+ users where a middle flip decompresses silently');
  t.comment(`pack under test: ${packStem} (used by ${[...usersNow(packStem)].join(', ')})`);

  // The indexes: one in the middle of layer 1 that records files, and one of layer 2 that records files.
  const fileCount = (i: ParsedIndex) => i.entries.filter((e) => e.kind === 'f').length;
  const mostFiles = (list: ParsedIndex[]) => [...list].sort((a, b) => fileCount(b) - fileCount(a))[0];
  const index1 = mostFiles(layer1.filter((i) => i.seq > 1 && i !== layer1[layer1.length - 1]));
  // Not the newest layer's last index: without it, the layer just looks partial (see the last test).
  const index2 = mostFiles(layer2.filter((i) => i.seq > 1 && i !== layer2[layer2.length - 1]));
  if (!index1 || !index2 || fileCount(index1) < 2 || fileCount(index2) < 1) throw new Error('test setup: no suitable index');
  t.comment(`indexes under test: ${index1.stem} (${index1.entries.length} entries), ${index2.stem} (${index2.entries.length} entries)`);

  const cases: Array<{ object: string; kind: 'header' | 'index1' | 'index2' | 'pack' }> = [
    { object: 'blanket.json', kind: 'header' },
    { object: `layers/${index1.stem}.idx.zst`, kind: 'index1' },
    { object: `layers/${index2.stem}.idx.zst`, kind: 'index2' },
    { object: `layers/${packStem}.tar.zst`, kind: 'pack' },
  ];

  for (const { object, kind } of cases) {
    for (const damage of DAMAGES) {
      await t.test(`${damage} ${object} (${kind})`, async (t) => {
        const dir = tmpDir(t, 'blanket-damage-case-');
        const archive = join(dir, 'archive');
        const out = join(dir, 'out');
        cpSync(pristine, archive, { recursive: true });
        damageFile(join(archive, object), damage);

        // --- verify
        const v = await cli(['verify', archive]);
        noCrash(t, v, 'verify');
        t.equal(v.code, 3, 'verify exits 3', { stdout: v.stdout, stderr: v.stderr });
        const report = verifyReport(v.stdout);
        t.ok(report.has(object), `verify names ${object}`, { stdout: v.stdout });

        // --- verify --quick: indexes are read, packs only listed. A flipped byte inside a pack keeps its size,
        // and a local folder reports no checksum, so only a full verify finds that one.
        const q = await cli(['verify', '--quick', archive]);
        noCrash(t, q, 'verify --quick');
        if (kind === 'pack' && damage === 'flip') {
          t.equal(q.code, 0, 'verify --quick cannot see a flipped byte in a pack on a local folder (exit 0)', { stdout: q.stdout });
          t.match(q.stdout, /quick: listing only, no content read/, 'and says it read no content');
        } else {
          t.equal(q.code, 3, 'verify --quick exits 3', { stdout: q.stdout, stderr: q.stderr });
          const quickReport = verifyReport(q.stdout);
          t.ok(quickReport.has(object), `verify --quick names ${object}`, { stdout: q.stdout });
          if (kind === 'pack') {
            t.match(quickReport.get(object)?.problem, damage === 'delete' ? /missing/ : /truncated: \d+ bytes, \d+ when written/, 'and says how');
            t.same(new Set(quickReport.get(object)?.affects), usersAnyLayer(packStem!), 'and every file whose content the pack holds');
          }
        }

        // --- restore
        const res = await cli(['restore', archive, out]);
        noCrash(t, res, 'restore');
        t.equal(res.code, 3, 'restore exits 3', { stdout: res.stdout, stderr: res.stderr });
        t.match(res.stderr, object, `restore names ${object}`);
        const restored = existsSync(out) ? await snapshotTree(out) : [];
        t.same(temporaries(restored), [], 'restore leaves no temporary files');
        const restoredFiles = filesOf(restored);
        // Never wrong content: every restored file is exactly its current or (only where layer 2's record is
        // lost) its layer-1 version.
        for (const [path, entry] of restoredFiles) {
          const ok = v2Files.get(path)?.sha256 === entry.sha256 || (kind === 'index2' && v1Files.get(path)?.sha256 === entry.sha256);
          if (!ok) t.fail(`restored ${path} has content that is no version of it`, { sha256: entry.sha256 });
        }

        if (kind === 'header') {
          compareTrees(t, v2, restored, { message: 'despite the header damage, everything restored exactly', mtimePrecisionNs: 1000n });
          // Backup must not write into an archive whose header it cannot read, and must say why.
          const before = readdirSync(join(archive, 'layers')).length;
          const b = await cli(['backup', src, archive, '--pack-size', '64K']);
          noCrash(t, b, 'backup');
          t.equal(b.code, 1, 'backup refuses (exit 1)', { stderr: b.stderr });
          t.match(b.stderr, 'blanket.json', 'backup names blanket.json');
          t.equal(readdirSync(join(archive, 'layers')).length, before, 'backup wrote no new layer');
          return;
        }

        if (kind === 'pack') {
          const stem = packStem!;
          const users = usersNow(stem);
          const damaged = report.get(object)!;
          const expectedAffects = usersAnyLayer(stem);
          if (damage === 'delete') {
            t.same(new Set(damaged?.affects), expectedAffects, 'verify lists every file whose content the pack holds');
          } else {
            t.ok(damaged && damaged.affects.length > 0, 'verify lists affected files');
            for (const a of damaged?.affects ?? []) t.ok(expectedAffects.has(a), `verify's "${a}" uses the pack`);
          }
          const failed = new Set<string>();
          for (const path of users) {
            if (restoredFiles.has(path)) continue;
            failed.add(path);
            t.match(res.stderr, `warning: ${path}: `, `restore reports ${path} by name`);
          }
          t.ok(failed.size > 0, `some files are lost with the pack (${[...failed].join(', ')})`);
          if (damage === 'delete') t.same(failed, users, 'all files using the deleted pack are reported');
          const expected = v2.filter((e) => !failed.has(e.path));
          compareTrees(t, expected, restored, { message: 'every file not using the damaged content restored exactly', mtimePrecisionNs: 1000n });
          return;
        }

        // An index: its pack and the other indexes are intact; what it recorded is lost.
        const index = kind === 'index1' ? index1 : index2;
        const prev = indexes.find((i) => i.layer === index.layer && i.seq === index.seq - 1)!;
        const inRange = (path: string): boolean => {
          const key = newest.get(path)?.key; // every path of v1 or v2 has an entry in some index
          return key !== undefined && key > index.after && key <= index.through;
        };
        t.equal(index.after, prev.through, 'oracle: the index continues its predecessor');
        // Restore names the range of paths whose record is lost, and every file it restored from an older layer.
        t.match(res.stderr, `paths after ${pathOfKey(index.after)} through ${pathOfKey(index.through)}`, 'restore names the lost range');
        t.match(v.stdout, `paths after ${pathOfKey(index.after)} through ${pathOfKey(index.through)}`, 'verify names the lost range');
        for (const [path, entry] of restoredFiles) {
          // What layer 2 recorded there is lost, so its files come from layer 1.
          if (kind === 'index2' && inRange(path) && index.entries.some((e) => e.path === path) && entry.type === 'file') {
            t.match(res.stderr, `warning: ${path}: restored as of an older layer`, `restore says ${path} may be out of date`);
          }
        }
        const outside = v2.filter((e) => !inRange(e.path));
        const restoredOutside = restored.filter((e) => !inRange(e.path));
        compareTrees(t, outside, restoredOutside, { message: 'every path outside the lost range restored exactly', mtimePrecisionNs: 1000n });
        if (kind === 'index1') {
          const lost = [...v2Files.keys()].filter((p) => inRange(p) && !restoredFiles.has(p));
          t.ok(lost.length > 0, `files recorded only by the lost layer-1 index are missing (${lost.join(', ')})`);
        }
      });
    }
  }

  // The newest layer's last index is the one object whose loss the format cannot tell from a crash: a run killed
  // between that pack's data and its index leaves exactly this. The archive is consistent (layer 2 looks partial,
  // the pack an orphan), restore gives layer 2's covered part over layer 1, and the next backup completes it.
  await t.test(`delete the newest index (${layer2[layer2.length - 1]!.stem}): reads as an interrupted run`, async (t) => {
    const dir = tmpDir(t, 'blanket-damage-case-');
    const archive = join(dir, 'archive');
    cpSync(pristine, archive, { recursive: true });
    const last = layer2[layer2.length - 1]!;
    rmSync(join(archive, 'layers', `${last.stem}.idx.zst`));
    const v = await cli(['verify', archive]);
    noCrash(t, v, 'verify');
    t.equal(v.code, 0, 'verify exits 0', { stdout: v.stdout, stderr: v.stderr });
    if (last.pack !== null) t.match(v.stdout, `layers/${last.pack}.tar.zst`, 'verify lists the orphan pack');
    const out1 = join(dir, 'out1');
    const res = await cli(['restore', archive, out1]);
    noCrash(t, res, 'restore');
    t.equal(res.code, 0, 'restore exits 0', { stderr: res.stderr });
    for (const [path, entry] of filesOf(await snapshotTree(out1))) {
      const ok = v2Files.get(path)?.sha256 === entry.sha256 || v1Files.get(path)?.sha256 === entry.sha256;
      if (!ok) t.fail(`restored ${path} has content that is no version of it`);
    }
    const b = await cli(['backup', src, archive, '--pack-size', '64K', '--json']);
    noCrash(t, b, 'backup');
    t.equal(b.code, 0, 'the next backup completes the layer', { stderr: b.stderr });
    t.match(b.stdout, /"type":"finished".*"resumedAfter":"[^"]+"/, 'it resumes layer 2');
    const out2 = join(dir, 'out2');
    const again = await cli(['restore', archive, out2]);
    t.equal(again.code, 0, 'restore exits 0', { stderr: again.stderr });
    compareTrees(t, v2, await snapshotTree(out2), { message: 'then everything restores exactly', mtimePrecisionNs: 1000n });
  });
});
