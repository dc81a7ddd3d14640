// rdiff deltas through the CLI: a big file's changed chunks are stored as deltas against their previous version
// (a 4 KiB overwrite, an append, an insertion at the start), over many layers; every layer restores exactly;
// chains stop at their cap; a delta is readable by the real rdiff; damage fails only the files that need it.

import t from 'tap';
import { appendFileSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { tmpDir } from '../helpers/cli.js';
import { blanket, expectExit, finishedEvent, US } from '../helpers/integration.js';
import { compareTrees, Prng, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { ensureDebianTools } from '../helpers/tools.js';
import { LocalStore } from '../../src/stores/local.js';
import { readCatalog, readIndex } from '../../src/stages/state-reader.js';
import { readMembers } from '../../src/stages/pack-reader.js';
import type { DeltaMember, PackMember } from '../../src/formats/index-format.js';
import { DeltaRestorer, REBUILT_TOGETHER } from '../../src/stages/delta-restorer.js';
import { RecordingStore } from '../../src/stores/recording.js';

const PACK_SIZE = '256K'; // chunks of 128 KiB
const CHUNK = 128 << 10;
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** Every member of every index of `layer`, with the pack it is in. */
async function membersOf(archive: string, layer: number): Promise<Array<PackMember & { stem: string }>> {
  const store = new LocalStore(archive);
  const catalog = await readCatalog(store);
  const out: Array<PackMember & { stem: string }> = [];
  for (const ref of catalog.indexes.filter((r) => r.id.layer === layer)) {
    for (const member of (await readIndex(store, ref.stem)).members) out.push({ ...member, stem: ref.stem });
  }
  return out;
}

/** The bytes of member `hash` of pack `stem` (checked against its name by the pack reader). */
async function memberBytes(archive: string, stem: string, hash: string): Promise<Buffer> {
  const bytes = (await readMembers(new LocalStore(archive), stem, new Set([hash]))).members.get(hash);
  if (bytes === undefined) throw new Error(`member ${hash} of ${stem} not delivered`);
  return bytes;
}

function overwrite(file: string, at: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+');
  writeSync(fd, bytes, 0, bytes.length, at);
  closeSync(fd);
}

t.test('changed chunks of big files are stored as deltas; every layer restores exactly', async (t) => {
  ensureDebianTools([{ command: 'rdiff', pkg: 'rdiff' }]);
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  const env = { XDG_CACHE_HOME: join(work, 'cache') };
  await mkdir(source);
  const prng = new Prng(4);
  writeFileSync(join(source, 'disk.img'), prng.bytes(2 * 1024 * 1024 + 333));
  writeFileSync(join(source, 'mail.log'), Array.from({ length: 20_000 }, (_, i) => `line ${i}: a message of the log ${prng.int(1e9)}\n`).join(''));
  writeFileSync(join(source, 'shift.bin'), prng.bytes(1024 * 1024));
  writeFileSync(join(source, 'small.txt'), 'a small file\n');
  const layers: TreeSnapshot[] = [];
  const backup = async (what: string): Promise<number> => {
    const run = await blanket(['backup', '--json', '--pack-size', PACK_SIZE, source, archive], { env });
    expectExit(t, run, 0, what);
    layers.push(await snapshotTree(source, { includeRoot: true }));
    return (finishedEvent(run.stdout)?.storedBytes as number) ?? Infinity;
  };
  const initial = await backup('initial backup');
  t.ok(initial > 3 * 1024 * 1024, `the initial backup stores the content (${initial} bytes)`);
  const signatures = (await membersOf(archive, 1)).filter((m) => m.kind === 'signature');
  t.equal(signatures.length, Math.ceil((2 * 1024 * 1024 + 333) / CHUNK) + Math.ceil(1024 * 1024 / CHUNK) + Math.ceil(readFileSync(join(source, 'mail.log')).length / CHUNK), 'one signature per chunk of each big file');

  // 4 KiB overwritten in the middle of the image.
  overwrite(join(source, 'disk.img'), 1024 * 1024 + 5000, prng.bytes(4096));
  const edited = await backup('4 KiB overwritten');
  const editDeltas = (await membersOf(archive, 2)).filter((m): m is DeltaMember & { stem: string } => m.kind === 'delta');
  t.equal(editDeltas.length, 1, 'one chunk stored as a delta');
  t.ok(editDeltas[0]!.size < 8 * 1024, `the delta is small (${editDeltas[0]!.size} bytes)`);
  t.ok(edited < 32 * 1024, `the run stores little: delta and the chunk's new signature (${edited} bytes)`);

  // The real rdiff patches the base chunk with our delta into the new chunk.
  const delta = editDeltas[0]!;
  const base = await memberBytes(archive, delta.baseStem, delta.base);
  const deltaBytes = await memberBytes(archive, delta.stem, delta.hash);
  writeFileSync(join(work, 'base'), base);
  writeFileSync(join(work, 'delta'), deltaBytes);
  execFileSync('rdiff', ['patch', join(work, 'base'), join(work, 'delta'), join(work, 'patched')]);
  t.equal(sha256(readFileSync(join(work, 'patched'))), delta.target, 'rdiff patch rebuilds the chunk the delta names');

  // 64 KiB appended to the log.
  appendFileSync(join(source, 'mail.log'), Array.from({ length: 1500 }, (_, i) => `appended ${i}: a later message of the log\n`).join(''));
  const appended = await backup('log appended');
  t.ok(appended < 96 * 1024, `an append stores little more than what was appended, compressed (${appended} bytes)`);

  // 1,000 bytes inserted at the start: every chunk after shifts, each delta costs about the shift.
  const shifted = Buffer.concat([prng.bytes(1000), readFileSync(join(source, 'shift.bin'))]);
  writeFileSync(join(source, 'shift.bin'), shifted);
  const inserted = await backup('1,000 bytes inserted at the start');
  const insertDeltas = (await membersOf(archive, 4)).filter((m) => m.kind === 'delta');
  t.ok(insertDeltas.length >= 7, `the shifted chunks are deltas (${insertDeltas.length})`);
  t.ok(inserted < shifted.length / 4, `an insertion stores far less than the file (${inserted} of ${shifted.length} bytes)`);

  // The same chunk edited again and again: its chain stops at 8 deltas, and starts again from a whole chunk.
  for (let round = 0; round < 10; round++) {
    overwrite(join(source, 'disk.img'), 1024 * 1024 + 5000 + round * 512, prng.bytes(256));
    await backup(`edit round ${round + 1}`);
  }
  let deepest = 0;
  let wholeAgain = false;
  for (let layer = 5; layer <= layers.length; layer++) {
    for (const member of await membersOf(archive, layer)) {
      if (member.kind === 'delta') deepest = Math.max(deepest, member.depth);
      else if (member.kind === undefined && deepest >= 8) wholeAgain = true;
    }
  }
  t.equal(deepest, 8, 'chains reach 8 deltas and no more');
  t.ok(wholeAgain, 'then the chunk is stored whole again');

  expectExit(t, await blanket(['verify', archive], { env }), 0, 'verify');
  for (const [i, expected] of layers.entries()) {
    const dest = join(tmpDir(t), 'dest');
    expectExit(t, await blanket(['restore', '--layer', String(i + 1), archive, dest], { env }), 0, `restore --layer ${i + 1}`);
    compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: `layer ${i + 1} restores exactly` });
  }
});

t.test('a damaged delta or a missing base fails only the file that needs it, naming it', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const env = { XDG_CACHE_HOME: join(work, 'cache') };
  await mkdir(source);
  const prng = new Prng(5);
  writeFileSync(join(source, 'a.img'), prng.bytes(1024 * 1024));
  writeFileSync(join(source, 'b.txt'), 'another file\n');
  const archive = join(work, 'archive');
  expectExit(t, await blanket(['backup', '--pack-size', PACK_SIZE, source, archive], { env }), 0, 'backup 1');
  overwrite(join(source, 'a.img'), 300_000, prng.bytes(2000));
  writeFileSync(join(source, 'c.txt'), 'a new file\n');
  expectExit(t, await blanket(['backup', '--pack-size', PACK_SIZE, source, archive], { env }), 0, 'backup 2');
  const delta = (await membersOf(archive, 2)).find((m): m is DeltaMember & { stem: string } => m.kind === 'delta')!;
  t.ok(delta, 'a delta was stored');

  for (const [label, damage] of [
    ['the delta damaged', (dir: string) => {
      const file = join(dir, 'layers', `${delta.stem}.tar.zst`);
      const bytes = readFileSync(file);
      for (let at = 64; at < bytes.length; at += 401) bytes[at] = bytes[at]! ^ 0x5a;
      writeFileSync(file, bytes);
    }],
    ['its base missing', (dir: string) => rmSync(join(dir, 'layers', `${delta.baseStem}.tar.zst`))],
  ] as const) {
    const copy = join(tmpDir(t), 'archive');
    execFileSync('cp', ['-a', archive, copy]);
    damage(copy);
    const dest = join(tmpDir(t), 'dest');
    const restored = await blanket(['restore', copy, dest], { env });
    t.equal(restored.code, 3, `${label}: restore exits 3`, { stdout: restored.stdout });
    t.match(restored.stdout + restored.stderr, /a\.img/, `${label}: names the file`);
    t.equal(readFileSync(join(dest, 'b.txt'), 'utf8'), 'another file\n', `${label}: other files restore`);
    // A new file of the second run is in the delta's pack (flipped all over) but not in its base's.
    if (label === 'its base missing') t.equal(readFileSync(join(dest, 'c.txt'), 'utf8'), 'a new file\n', `${label}: and files of the same layer`);
    t.notOk(readdirSync(dest).includes('a.img'), `${label}: no wrong a.img is left`);
  }
});

t.test('another machine (no signature cache) still stores deltas: signatures come from the archive', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(source);
  const prng = new Prng(6);
  writeFileSync(join(source, 'a.img'), prng.bytes(1024 * 1024));
  const archive = join(work, 'archive');
  expectExit(t, await blanket(['backup', '--pack-size', PACK_SIZE, source, archive], { env: { XDG_CACHE_HOME: join(work, 'cache-1') } }), 0, 'backup on machine 1');
  overwrite(join(source, 'a.img'), 600_000, prng.bytes(3000));
  const second = await blanket(['backup', '--json', '--pack-size', PACK_SIZE, source, archive], { env: { XDG_CACHE_HOME: join(work, 'cache-2') } });
  expectExit(t, second, 0, 'backup on machine 2, with an empty cache');
  const deltas = (await membersOf(archive, 2)).filter((m) => m.kind === 'delta');
  t.equal(deltas.length, 1, 'the changed chunk is a delta all the same');
  t.ok((finishedEvent(second.stdout)?.storedBytes as number) < 32 * 1024, 'and the run stores little');
  t.ok(readdirSync(join(work, 'cache-2'), { recursive: true }).length > 2, "machine 2's cache now holds signatures");
  const dest = join(work, 'dest');
  expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore');
  t.equal(sha256(readFileSync(join(dest, 'a.img'))), sha256(readFileSync(join(source, 'a.img'))), 'restores exactly');
});

t.test('contents rebuilt together read each pack of their chains once', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const env = { XDG_CACHE_HOME: join(work, 'cache') };
  await mkdir(source);
  const prng = new Prng(7);
  writeFileSync(join(source, 'shift.bin'), prng.bytes(1024 * 1024));
  const archive = join(work, 'archive');
  expectExit(t, await blanket(['backup', '--pack-size', PACK_SIZE, source, archive], { env }), 0, 'backup 1');
  writeFileSync(join(source, 'shift.bin'), Buffer.concat([prng.bytes(500), readFileSync(join(source, 'shift.bin'))]));
  expectExit(t, await blanket(['backup', '--pack-size', PACK_SIZE, source, archive], { env }), 0, 'backup 2');
  const deltas = (await membersOf(archive, 2)).filter((m): m is DeltaMember & { stem: string } => m.kind === 'delta');
  t.ok(deltas.length >= 4, `several chunks are deltas (${deltas.length})`);
  const group = deltas.slice(0, REBUILT_TOGETHER);
  const packs = new Set(group.flatMap((d) => [d.stem, d.baseStem]));
  const recording = new RecordingStore(new LocalStore(archive));
  const restorer = new DeltaRestorer(recording);
  const forget = await restorer.prefetch(group.map((d) => ({ hash: d.target, stem: d.stem })));
  for (const d of group) t.equal(sha256(await restorer.content(d.target, d.stem, d.targetSize)), d.target, `${d.target.slice(0, 12)} rebuilt`);
  forget();
  const packReads = recording.calls.filter((c) => c.operation === 'get' && (c.name ?? '').endsWith('.tar.zst')).length;
  t.equal(packReads, packs.size, `${group.length} contents rebuilt with one read of each of their ${packs.size} packs`);
});
