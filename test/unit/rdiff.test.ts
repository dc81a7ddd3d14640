// rdiff signature/delta/patch formats checked against the real `rdiff` (librsync 2.3): identical signatures, interoperating deltas, and the same accept/reject decisions on malformed input.
import t from 'tap';
import { closeSync, openSync, readSync } from 'node:fs';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { ErrorCodes, isBlanketError } from '../../src/formats/errors.js';
import {
  RDIFF_DELTA_MAGIC,
  RdiffError,
  RdiffRollingSum,
  generateRdiffKernelModule,
  loadRdiffHashes,
  rdiffKernels,
  rabinKarpUpdate,
  rdiffWeakSum,
  rollsumUpdate,
} from '../../src/formats/rdiff-checksums.js';
import {
  RdiffDeltaDecoder,
  RdiffDeltaEncoder,
  RdiffDeltaGenerator,
  rdiffDelta,
} from '../../src/formats/rdiff-delta.js';
import {
  RdiffAsyncPatcher,
  RdiffPatcher,
  applyRdiffPatch,
  rdiffBufferBasis,
  rdiffPatchStream,
  type RdiffAsyncBasis,
} from '../../src/formats/rdiff-patch.js';
import {
  RdiffMatchTable,
  RdiffSignatureReader,
  RdiffSignatureWriter,
  parseRdiffSignature,
  rdiffSignature,
  rdiffSignatureParams,
  type RdiffSignatureOptions,
} from '../../src/formats/rdiff-signature.js';
import { RDIFF_KERNEL_MODULE_DEFLATED } from '../../src/formats/rdiff-kernel-module.js';
import { tmpDir } from '../helpers/cli.js';
import { RdiffWorkspace, SIG_KINDS, type SigKind, concat, foxText, piecesOf, randomEdits, shake } from '../helpers/rdiff-vectors.js';
import { ensureDebianTools } from '../helpers/tools.js';

ensureDebianTools([{ command: 'rdiff', pkg: 'rdiff' }]);

const hashes = await loadRdiffHashes();
const KINDS = Object.keys(SIG_KINDS) as SigKind[];
const CHUNKINGS = [1, 7, 4093];

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

function u32(...values: number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeUInt32BE(v >>> 0, 4 * i));
  return b;
}

function ourOptions(kind: SigKind, extra: { blockLen?: number; strongLen?: number } = {}): RdiffSignatureOptions {
  return { weak: SIG_KINDS[kind].weak, strong: SIG_KINDS[kind].strong, ...extra };
}

function signatureInPieces(basis: Uint8Array, opts: RdiffSignatureOptions, size: number): Buffer {
  const w = new RdiffSignatureWriter(hashes, rdiffSignatureParams(basis.length, opts));
  const parts: Uint8Array[] = [];
  for (const p of piecesOf(basis, size)) parts.push(...w.push(p));
  parts.push(...w.end());
  return concat(parts);
}

function deltaInPieces(sig: Uint8Array, newFile: Uint8Array, size: number): Buffer {
  const reader = new RdiffSignatureReader();
  for (const p of piecesOf(sig, size)) reader.push(p);
  const gen = new RdiffDeltaGenerator(hashes, reader.end());
  const parts: Uint8Array[] = [];
  for (const p of piecesOf(newFile, size)) parts.push(...gen.push(p));
  parts.push(...gen.end());
  return concat(parts);
}

function patchInPieces(basis: Uint8Array, delta: Uint8Array, size: number): Buffer {
  const patcher = new RdiffPatcher(rdiffBufferBasis(basis), { maxReadLength: 1000 });
  const out: Buffer[] = [];
  for (const p of piecesOf(delta, size)) patcher.push(p, (b) => out.push(Buffer.from(b))); // copy: views of p
  patcher.end();
  return Buffer.concat(out);
}

/** Runs fn; returns the RdiffError it throws, or undefined if it returns. */
function rdiffErrorOf(fn: () => unknown): RdiffError | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof RdiffError) return e;
    throw e;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------

t.test('the kernel module held ready is exactly what the generator makes', async (t) => {
  const generated = Buffer.from(generateRdiffKernelModule());
  const held = inflateRawSync(Buffer.from(RDIFF_KERNEL_MODULE_DEFLATED, 'base64'));
  const fresh = deflateRawSync(generated, { level: 9 }).toString('base64');
  t.ok(held.equals(generated), held.equals(generated) ? 'same bytes' : `rdiff-kernel-module.ts is stale; its new value:\n${fresh}`);
  t.ok(WebAssembly.validate(generated), 'a valid module');
  t.ok(rdiffKernels() !== undefined, 'the kernels load from it (this Node has WebAssembly SIMD)');
});

t.test('weak sums: check values, word loop == byte loop at every alignment, rolling == closed form', async (t) => {
  t.equal(rdiffWeakSum('rabinkarp', Buffer.from('A')), 0x08104266);
  t.equal(rdiffWeakSum('rabinkarp', Buffer.from('hello world\n')), 0x38aec4d7);
  t.equal(rdiffWeakSum('rabinkarp', new Uint8Array(0)), 1);
  t.equal(rdiffWeakSum('rollsum', Buffer.from('A')), 0x00600060);
  t.equal(rdiffWeakSum('rollsum', Buffer.from('hello world\n')), 0x27d805da);
  t.equal(rdiffWeakSum('rollsum', new Uint8Array(0)), 0);

  const data = shake('weak', 5000);
  const naiveRk = (s: number, e: number): number => {
    let h = 1;
    for (let i = s; i < e; i++) h = (Math.imul(h, 0x08104225) + data[i]!) >>> 0;
    return h;
  };
  const naiveRs = (s: number, e: number): number => {
    let s1 = 0;
    let s2 = 0;
    for (let i = s; i < e; i++) {
      s1 = (s1 + data[i]! + 31) & 0xffff;
      s2 = (s2 + s1) & 0xffff;
    }
    return ((s2 << 16) | s1) >>> 0;
  };
  let bad = 0;
  for (const start of [0, 1, 2, 3, 5, 8, 13]) {
    for (const len of [0, 1, 15, 63, 64, 65, 100, 1000, 4093]) {
      if (rabinKarpUpdate(1, data, start, start + len) !== naiveRk(start, start + len)) bad++;
      if (rollsumUpdate(0, data, start, start + len) !== naiveRs(start, start + len)) bad++;
      // continuing from a partial sum gives the same as one pass
      const mid = start + (len >> 1);
      if (rabinKarpUpdate(rabinKarpUpdate(1, data, start, mid), data, mid, start + len) !== naiveRk(start, start + len)) bad++;
      if (rollsumUpdate(rollsumUpdate(0, data, start, mid), data, mid, start + len) !== naiveRs(start, start + len)) bad++;
    }
  }
  t.equal(bad, 0, 'all alignments and lengths agree with the byte-at-a-time definitions');

  for (const kind of ['rabinkarp', 'rollsum'] as const) {
    const r = new RdiffRollingSum(kind);
    const L = 300;
    r.update(data, 0, L);
    let ok = true;
    for (let p = 0; p + L < 2000; p++) {
      r.rotate(data[p]!, data[p + L]!);
      if (r.digest !== rdiffWeakSum(kind, data, p + 1, p + 1 + L)) ok = false;
    }
    for (let p = 2000 - L; r.count > 0; p++) {
      r.rollout(data[p]!);
      if (r.digest !== rdiffWeakSum(kind, data, p + 1, 2000)) ok = false;
    }
    t.ok(ok, `${kind}: rotate and rollout agree with the closed form`);
  }
});

t.test('signature parameters match rs_sig_args (table verified with rdiff 2.3.2)', async (t) => {
  // size -> [default block_len, default strong_len, -S -1 strong_len]; from rdiff headers (FORMAT.md 2.1)
  const table: Array<[number | undefined, number, number, number]> = [
    [0, 256, 32, 5],
    [255, 256, 32, 5],
    [256, 256, 32, 6],
    [65536, 256, 32, 6],
    [65537, 256, 32, 6],
    [1_000_000, 896, 32, 7],
    [1 << 20, 1024, 32, 7],
    [16777215, 3968, 32, 7],
    [16777216, 4096, 32, 7],
    [100_000_000, 9984, 32, 7],
    [2 ** 30, 32768, 32, 8],
    [2 ** 32, 65536, 32, 8],
    [2 ** 34, 131072, 32, 9],
    [undefined, 2048, 32, 12],
  ];
  for (const [size, bl, sl, minSl] of table) {
    const d = rdiffSignatureParams(size);
    const m = rdiffSignatureParams(size, { strongLen: -1 });
    t.same([d.magic, d.blockLen, d.strongLen, m.blockLen, m.strongLen], [0x72730147, bl, sl, bl, minSl], `size ${size}`);
  }
  t.equal(rdiffSignatureParams(100, { strong: 'md4' }).strongLen, 16);
  t.equal(rdiffSignatureParams(100, { blockLen: 100, strongLen: 8 }).blockLen, 100);
  const e = rdiffErrorOf(() => rdiffSignatureParams(100, { strong: 'md4', strongLen: 17 }));
  t.equal(e?.rdiffResult, 108, 'strong_len above the hash length: like rdiff exit 108');
  t.ok(isBlanketError(e, ErrorCodes.RDIFF_SIGNATURE));
  t.throws(() => rdiffSignatureParams(100, { strongLen: 33 }));
  t.throws(() => rdiffSignatureParams(100, { blockLen: -5 }));
});

t.test('signatures are byte-identical to rdiff signature', async (t) => {
  const ws = new RdiffWorkspace(tmpDir(t, 'blanket-rdiff-'));
  const text = foxText();
  const basis1m = shake('rdiff-vectors/basis', 1_000_000);
  const inputs: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['one byte', Buffer.from('A')],
    ['text 200', text.subarray(0, 200)],
    ['text 5300', text],
    ['zeros 4096', Buffer.alloc(4096)],
    ['random 255', shake('s255', 255)],
    ['random 256', shake('s256', 256)],
    ['random 257', shake('s257', 257)],
    ['random 65535', shake('s65535', 65535)],
    ['random 65536', shake('s65536', 65536)],
    ['random 65537', shake('s65537', 65537)],
    ['random 300000', shake('s300000', 300_000)],
    ['random 896000 (whole blocks)', shake('s896000', 896_000)],
    ['random 1,000,000', basis1m],
  ];
  const optionSets: Array<[string, string[], { blockLen?: number; strongLen?: number }]> = [
    ['defaults', [], {}],
    ['-b 100 -S 8', ['--block-size=100', '--sum-size=8'], { blockLen: 100, strongLen: 8 }],
    ['-S -1', ['--sum-size=-1'], { strongLen: -1 }],
    ['-b 1 -S 1', ['--block-size=1', '--sum-size=1'], { blockLen: 1, strongLen: 1 }],
  ];
  let checked = 0;
  for (const [name, basis] of inputs) {
    for (const kind of KINDS) {
      for (const [optName, args, extra] of optionSets) {
        if (extra.blockLen === 1 && basis.length > 70000) continue; // one record per byte: keep it fast
        const theirs = ws.signature(basis, kind, args);
        const ours = rdiffSignature(hashes, basis, ourOptions(kind, extra));
        if (hex(ours) !== hex(theirs)) t.fail(`${name} / ${kind} / ${optName}: signature differs (ours ${ours.length} B, rdiff ${theirs.length} B)`);
        else checked++;
      }
    }
  }
  t.ok(checked > 200, `${checked} signatures identical to rdiff's`);

  // the same whole or fed in odd-sized pieces
  for (const [name, basis] of [inputs[3]!, inputs[12]!, inputs[13]!]) {
    for (const kind of ['default', 'legacy'] as const) {
      const whole = rdiffSignature(hashes, basis, ourOptions(kind));
      for (const size of CHUNKINGS) {
        if (size === 1 && basis.length > 300_000) continue;
        t.equal(hex(signatureInPieces(basis, ourOptions(kind), size)), hex(whole), `${name} / ${kind} in ${size}-byte pieces`);
      }
    }
  }
  t.equal(hex(signatureInPieces(basis1m, ourOptions('default'), 1)), hex(rdiffSignature(hashes, basis1m)), '1 MB in 1-byte pieces');
});

t.test('deltas interoperate with rdiff both ways (random files, random edits)', async (t) => {
  const ws = new RdiffWorkspace(tmpDir(t, 'blanket-rdiff-'));
  const blockChoices: Array<[string[], { blockLen?: number; strongLen?: number }]> = [
    [[], {}],
    [['--block-size=64'], { blockLen: 64 }],
    [['--block-size=100', '--sum-size=4'], { blockLen: 100, strongLen: 4 }],
    [['--sum-size=-1'], { strongLen: -1 }],
    [['--block-size=2048'], { blockLen: 2048 }],
  ];
  let identical = 0;
  const SEEDS = 30;
  for (let seed = 1; seed <= SEEDS; seed++) {
    const size = [0, 1, 300, 5000, 70_000, 150_000, 400_000][seed % 7]!;
    // random bytes, or text-like lines (repetitive: many equal weak sums) for some seeds
    const base = seed % 3 === 0 ? Buffer.from(Array.from({ length: Math.ceil(size / 53) }, (_, i) => `row ${i % 97} of seed ${seed}: lorem ipsum dolor sit\n`).join('')).subarray(0, size) : shake(`base-${seed}`, size);
    const { bytes: next, edits } = randomEdits(base, seed, 1 + (seed % 5));
    const kind = KINDS[seed % 4]!;
    const [args, extra] = blockChoices[seed % blockChoices.length]!;
    const label = `seed ${seed}: ${size} B -> ${next.length} B, ${kind} ${args.join(' ') || 'defaults'}, ${edits.join(' ')}`;

    // our signature -> rdiff delta -> our patch
    const ourSig = rdiffSignature(hashes, base, ourOptions(kind, extra));
    const rdiffSig = ws.signature(base, kind, args);
    t.equal(hex(ourSig), hex(rdiffSig), `${label}: signature`);
    const theirDelta = ws.delta(ourSig, next);
    t.ok(same(applyRdiffPatch(base, theirDelta), next), `${label}: our patch of rdiff's delta`);

    // rdiff signature -> our delta -> rdiff patch
    const ourDelta = rdiffDelta(hashes, parseRdiffSignature(rdiffSig), next);
    const patched = ws.patch(base, ourDelta);
    t.equal(patched.status, 0, `${label}: rdiff patch accepts our delta ${patched.stderr}`);
    t.ok(patched.output?.equals(next), `${label}: rdiff patch of our delta`);
    if (hex(ourDelta) === hex(theirDelta)) identical++;

    // ours all the way, and in odd-sized pieces
    t.ok(same(applyRdiffPatch(base, ourDelta), next), `${label}: our patch of our delta`);
    const pieceSize = CHUNKINGS[seed % 3]!;
    if (pieceSize > 1 || next.length < 200_000) {
      t.equal(hex(deltaInPieces(ourSig, next, pieceSize)), hex(ourDelta), `${label}: delta in ${pieceSize}-byte pieces`);
      t.ok(patchInPieces(base, ourDelta, pieceSize).equals(next), `${label}: patch in ${pieceSize}-byte pieces`);
    }
  }
  // Not required (any delta that patches is valid), but the greedy matcher is rdiff's own.
  t.equal(identical, SEEDS, `our deltas are byte-identical to rdiff's in ${identical}/${SEEDS} cases`);
});

t.test('delta special cases', async (t) => {
  const ws = new RdiffWorkspace(tmpDir(t, 'blanket-rdiff-'));
  const text = foxText();
  // empty basis (signature without blocks): all literal, cut like rdiff does (at block_len)
  for (const args of [[], ['--block-size=1000'], ['--block-size=100000']]) {
    const sig = ws.signature(Buffer.alloc(0), 'default', args);
    for (const newFile of [Buffer.alloc(0), text.subarray(0, 300), shake('e', 250_000)]) {
      const ours = rdiffDelta(hashes, parseRdiffSignature(sig), newFile);
      t.equal(hex(ours), hex(ws.delta(sig, newFile)), `empty basis ${args.join(' ')}, new ${newFile.length} B: same as rdiff`);
      t.ok(same(applyRdiffPatch(Buffer.alloc(0), ours), newFile));
    }
  }
  // empty new file, identical files, reordered blocks, zeros, the vectors' small cases
  const basis = shake('rdiff-vectors/basis', 1_000_000);
  const cases: Array<[string, Buffer, Buffer]> = [
    ['empty new', basis, Buffer.alloc(0)],
    ['identical 1 MB', basis, basis],
    ['one byte', Buffer.from('A'), Buffer.from('BA')],
    ['prefix + short block', text.subarray(0, 200), Buffer.concat([Buffer.from('PREFIX-' + 'x'.repeat(56) + '\n'), text.subarray(0, 200)])],
    ['zeros', Buffer.alloc(4096), Buffer.alloc(5000)],
    ['append', basis, Buffer.concat([basis, shake('rdiff-vectors/append', 5000)])],
    ['long literal runs', basis, shake('rdiff-vectors/different', 300_000)],
  ];
  for (const [name, old, next] of cases) {
    for (const kind of KINDS) {
      const sig = ws.signature(old, kind);
      const ours = rdiffDelta(hashes, parseRdiffSignature(sig), next);
      t.equal(hex(ours), hex(ws.delta(sig, next)), `${name} / ${kind}: same delta as rdiff`);
    }
  }
  // tiny blocks
  for (const bl of [1, 2, 3, 7]) {
    const old = text.subarray(0, 700);
    const next = Buffer.concat([text.subarray(300, 500), Buffer.from('changed!'), text.subarray(0, 250), text.subarray(600, 700)]);
    const sig = ws.signature(old, 'default', [`--block-size=${bl}`, '--sum-size=2']);
    const ours = rdiffDelta(hashes, parseRdiffSignature(sig), next);
    t.equal(hex(ours), hex(ws.delta(sig, next)), `block_len ${bl}: same delta as rdiff`);
    t.ok(same(applyRdiffPatch(old, ours), next));
  }

  const identical = rdiffDelta(hashes, parseRdiffSignature(rdiffSignature(hashes, basis)), basis);
  t.equal(hex(identical), '72730236' + '47' + '00' + '000f4240' + '00', 'identical 1 MB file: one COPY');

  // bounded memory: 8 MB of unrelated data in 1 MiB pieces against 256-byte blocks
  const gen = new RdiffDeltaGenerator(hashes, parseRdiffSignature(rdiffSignature(hashes, shake('m', 100_000))));
  let maxCap = 0;
  for (let i = 0; i < 8; i++) {
    gen.push(shake(`m${i}`, 1 << 20));
    maxCap = Math.max(maxCap, gen.bufferCapacity);
  }
  gen.end();
  t.ok(maxCap <= 256 * 1024, `generator buffer stays at ${maxCap} bytes`);

  // a prebuilt table can be reused
  const table = new RdiffMatchTable(parseRdiffSignature(rdiffSignature(hashes, basis)));
  t.equal(hex(rdiffDelta(hashes, table, basis)), hex(identical));
});

t.test('delta encoder and decoder: every command width', async (t) => {
  const enc = new RdiffDeltaEncoder();
  const lits = [1, 64, 65, 255, 256, 65535, 65536];
  for (const n of lits) enc.literal(shake(`l${n}`, n));
  const copies: Array<[number, number]> = [
    [0, 1],
    [255, 256],
    [65536, 70000],
    [2 ** 32, 5],
    [7, 2 ** 32 + 1],
    [2 ** 40, 2 ** 33],
  ];
  for (const [p, l] of copies) enc.copy(p, l);
  enc.end();
  const bytes = concat(enc.take());
  t.equal(enc.length, bytes.length);
  t.equal(bytes.readUInt32BE(0), RDIFF_DELTA_MAGIC);
  const dec = new RdiffDeltaDecoder();
  const events = piecesOf(bytes, 3).flatMap((p) => dec.push(p).map((e) => (e.type === 'literal' ? { ...e, data: Buffer.from(e.data) } : e)));
  dec.end();
  const literalLengths: number[] = [];
  let cur = -1;
  for (const e of events) {
    if (e.type === 'literal') {
      if (e.offset !== cur) literalLengths.push(0);
      cur = e.offset;
      literalLengths[literalLengths.length - 1]! += e.data.length;
    }
  }
  t.same(literalLengths, lits);
  t.same(
    events.filter((e) => e.type === 'copy').map((e) => [(e as { position: number }).position, (e as { length: number }).length]),
    copies,
  );
  t.equal(events.at(-1)?.type, 'end');
  // opcodes rdiff writes: 0x40 for 64, 0x41 for 65..255, 0x42 to 65535, 0x43 beyond; copy widths chosen per field
  const small = new RdiffDeltaEncoder();
  small.literal(Buffer.alloc(64));
  small.copy(0, 1_000_000);
  small.copy(2 ** 32, 1);
  small.end();
  const b = concat(small.take());
  t.equal(b[4], 0x40);
  t.equal(hex(b.subarray(4 + 65)), '47' + '00' + '000f4240' + '51' + '0000000100000000' + '01' + '00');
});

t.test('patch edge cases: accepted or rejected exactly as rdiff patch does', async (t) => {
  const ws = new RdiffWorkspace(tmpDir(t, 'blanket-rdiff-'));
  const basis = Buffer.from('abcdefghij');
  const M = u32(RDIFF_DELTA_MAGIC);
  const h = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
  const cases: Array<[string, Buffer]> = [
    // the reference vectors' patch-edge set
    ['err-bad-magic', h('7273013600')],
    ['err-copy-len0', Buffer.concat([M, h('45 00 00 00')])],
    ['err-copy-past-end', Buffer.concat([M, h('45 08 05 00')])],
    ['err-copy-start-past-end', Buffer.concat([M, h('45 20 05 00')])],
    ['err-empty-file', Buffer.alloc(0)],
    ['err-literal-len0', Buffer.concat([M, h('41 00 00')])],
    ['err-magic-only', M],
    ['err-no-end', Buffer.concat([M, h('03 78 79 7a')])],
    ['err-reserved-opcode', Buffer.concat([M, h('55 00')])],
    ['err-truncated-literal', Buffer.concat([M, h('05 61 62')])],
    ['ok-copy-n2-n4', Buffer.concat([M, h('4b 0002 00000003 00')])],
    ['ok-copy-n8-n8', Buffer.concat([M, h('54 0000000000000002 0000000000000003 00')])],
    ['ok-copy-reuse', Buffer.concat([M, h('45 05 05 45 00 05 45 00 05 00')])],
    ['ok-empty-output', Buffer.concat([M, h('00')])],
    ['ok-literal-n1-short', Buffer.concat([M, h('41 03 78797a 00')])],
    ['ok-literal-n8', Buffer.concat([M, h('44 0000000000000003 78797a 00')])],
    ['ok-trailing-after-end', Buffer.concat([M, h('03 78797a 00'), Buffer.from('GARBAGE')])],
    // more
    ['short magic', h('7273')],
    ['copy exactly to the end', Buffer.concat([M, h('45 05 05 00')])],
    ['copy position 2^63', Buffer.concat([M, h('54 8000000000000000 0000000000000001 00')])],
    ['copy length 2^63+1', Buffer.concat([M, h('54 0000000000000000 8000000000000001 00')])],
    ['copy length 2^63-1', Buffer.concat([M, h('54 0000000000000000 7fffffffffffffff 00')])],
    ['copy position u32 max', Buffer.concat([M, h('4d ffffffff 01 00')])],
    ['literal length 2^63+1', Buffer.concat([M, h('44 8000000000000001 616263 00')])],
    ['literal length 2^32-1, 4 bytes present', Buffer.concat([M, h('43 ffffffff 61626300')])],
    ['literal length 0 (2-byte)', Buffer.concat([M, h('42 0000 00')])],
    ['reserved 0xff', Buffer.concat([M, h('ff')])],
    ['reserved after a literal', Buffer.concat([M, h('01 61 60 00')])],
    ['literal then copy past end', Buffer.concat([M, h('03 78797a 45 08 05 00')])],
    ['valid copy then truncated copy', Buffer.concat([M, h('45 00 05 45')])],
    ['truncated copy parameters', Buffer.concat([M, h('46 00 05')])],
    ['END then reserved bytes', Buffer.concat([M, h('00 ff ff ff')])],
    ['every copy form', Buffer.concat([M, h('45 01 01 46 01 0001 47 01 00000001 48 01 0000000000000001 49 0001 01 4e 00000001 0001 51 0000000000000001 01 00')])],
  ];
  for (const [name, delta] of cases) {
    const theirs = ws.patch(basis, delta);
    for (const size of [delta.length || 1, 1]) {
      let out: Buffer | undefined;
      const err = rdiffErrorOf(() => {
        out = patchInPieces(basis, delta, size);
      });
      if (theirs.status === 0) {
        t.equal(err, undefined, `${name}: accepted like rdiff (${size}-byte pieces)`);
        t.equal(out?.toString('hex'), theirs.output?.toString('hex'), `${name}: same output as rdiff`);
      } else {
        t.ok(err, `${name}: rejected like rdiff (exit ${theirs.status}) (${size}-byte pieces)`);
        t.equal(err?.rdiffResult, theirs.status, `${name}: ${err?.message} | rdiff: ${theirs.stderr.trim().split('\n')[0]}`);
        t.ok(isBlanketError(err, ErrorCodes.RDIFF_DELTA));
        if (theirs.status !== 104 && name !== 'err-empty-file' && name !== 'short magic') t.match(err?.message ?? '', /offset \d+/, 'says where');
      }
    }
  }
});

t.test('signature reader: accepts and rejects malformed signatures as rdiff does', async (t) => {
  const ws = new RdiffWorkspace(tmpDir(t, 'blanket-rdiff-'));
  const basis = Buffer.from('hello world, this is a new file\n');
  const good = ws.signature(basis, 'default', ['--block-size=8', '--sum-size=4']); // 4 records of 8 bytes
  const full = ws.signature(basis, 'default', ['--block-size=8']);
  const md4 = ws.signature(basis, 'md4', ['--block-size=8']);
  const hdr = (magic: number, bl: number, sl: number): Buffer => u32(magic, bl, sl);
  const cases: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['3 bytes', good.subarray(0, 3)],
    ['magic only', good.subarray(0, 4)],
    ['10 bytes', good.subarray(0, 10)],
    ['header only', good.subarray(0, 12)],
    ['good', good],
    ['delta magic', hdr(0x72730236, 256, 32)],
    ['bad magic, 4 bytes', u32(0x12345678)],
    ['bad magic and block_len 0', hdr(0, 0, 32)],
    ['block_len 0', hdr(0x72730147, 0, 32)],
    ['block_len 0, cut header', hdr(0x72730147, 0, 32).subarray(0, 10)],
    ['block_len 2^31', hdr(0x72730147, 0x80000000, 8)],
    ['block_len 2^32-1', hdr(0x72730147, 0xffffffff, 8)],
    ['block_len 2^31-1', hdr(0x72730147, 0x7fffffff, 8)],
    ['strong_len 33', hdr(0x72730147, 256, 33)],
    ['strong_len -1', hdr(0x72730147, 256, 0xffffffff)],
    ['strong_len 64, bad magic', hdr(0, 256, 64)],
    ['MD4 strong_len 17', hdr(0x72730146, 256, 17)],
    ['MD4 strong_len 16', hdr(0x72730146, 256, 16)],
    ['legacy magic', hdr(0x72730136, 256, 16)],
    ['strong_len 0 (BLAKE2b, 36-byte records)', Buffer.concat([full.subarray(0, 8), u32(0), full.subarray(12)])],
    ['strong_len 0 (MD4, 20-byte records)', Buffer.concat([md4.subarray(0, 8), u32(0), md4.subarray(12)])],
    ...[1, 2, 3, 4, 5, 6, 7, 8, 9].map((k): [string, Buffer] => [`${k} stray bytes`, Buffer.concat([good, Buffer.alloc(k, 1)])]),
    ['last record cut', good.subarray(0, good.length - 1)],
  ];
  for (const [name, sig] of cases) {
    const theirs = ws.loadSignatureStatus(sig);
    for (const size of [sig.length || 1, 1]) {
      let parsed: ReturnType<RdiffSignatureReader['end']> | undefined;
      const err = rdiffErrorOf(() => {
        const r = new RdiffSignatureReader('test.sig');
        for (const p of piecesOf(sig, size)) r.push(p);
        parsed = r.end();
      });
      if (theirs.status === 0) {
        t.equal(err, undefined, `${name}: accepted like rdiff (${size}-byte pieces) ${err?.message ?? ''}`);
      } else {
        t.ok(err, `${name}: rejected like rdiff (exit ${theirs.status}, ${size}-byte pieces)`);
        t.equal(err?.rdiffResult, theirs.status, `${name}: ${err?.message} | rdiff: ${theirs.stderr.trim().split('\n')[0]}`);
        t.ok(isBlanketError(err, ErrorCodes.RDIFF_SIGNATURE));
        t.match(err?.message ?? '', /test\.sig/, 'names the signature');
      }
      if (name.startsWith('strong_len 0')) {
        t.equal(parsed?.blockCount, 4, `${name}: strong_len 0 is read as the full hash length`);
        t.equal(parsed?.strongLen, name.includes('MD4') ? 16 : 32);
      }
      if (name === '8 stray bytes') t.equal(parsed?.blockCount, 5, 'a whole extra record is a block');
    }
  }
  // a signature with strong_len 0 still gives a working delta, as it does for rdiff
  const sl0 = Buffer.concat([full.subarray(0, 8), u32(0), full.subarray(12)]);
  const d = rdiffDelta(hashes, parseRdiffSignature(sl0), basis);
  t.ok(same(applyRdiffPatch(basis, d), basis));
  t.equal(hex(d), hex(ws.delta(sl0, basis)));
});

t.test('patching from a file basis, async and streaming', async (t) => {
  const ws = new RdiffWorkspace(tmpDir(t, 'blanket-rdiff-'));
  const base = shake('file-basis', 600_000);
  const { bytes: next } = randomEdits(base, 99, 4);
  const delta = rdiffDelta(hashes, parseRdiffSignature(rdiffSignature(hashes, base)), next);
  const fd = openSync(ws.file(base, 'basis'), 'r');
  t.teardown(() => closeSync(fd));
  let reads = 0;
  const fileBasis: RdiffAsyncBasis = {
    size: base.length,
    read: async (position, length) => {
      reads++;
      const b = Buffer.alloc(length);
      const n = readSync(fd, b, 0, length, position);
      return b.subarray(0, n);
    },
  };
  const out: Buffer[] = [];
  for await (const piece of rdiffPatchStream(fileBasis, piecesOf(delta, 4093), { maxReadLength: 64 * 1024 })) out.push(Buffer.from(piece));
  t.ok(Buffer.concat(out).equals(next), 'rdiffPatchStream from positioned file reads');
  t.ok(reads > 0);

  const patcher = new RdiffAsyncPatcher(fileBasis);
  const out2: Buffer[] = [];
  for (const p of piecesOf(delta, 7)) await patcher.push(p, async (b) => void out2.push(Buffer.from(b)));
  patcher.end();
  t.ok(Buffer.concat(out2).equals(next), 'RdiffAsyncPatcher');
  t.equal(patcher.outputLength, next.length);

  // a basis shorter than the signature's: COPY past the end is refused before any read
  const short: RdiffAsyncBasis = { size: 1000, read: () => Promise.reject(new Error('must not read')) };
  const copyPast = Buffer.concat([u32(RDIFF_DELTA_MAGIC), Buffer.from('4600 07d0 00', 'hex')]);
  await t.rejects(async () => {
    for await (const _ of rdiffPatchStream(short, [copyPast])) void _;
  }, { code: ErrorCodes.RDIFF_DELTA, rdiffResult: 103 });
  // a reader returning too few bytes is an error too
  const lying = { size: 10, read: () => new Uint8Array(2) };
  t.throws(() => new RdiffPatcher(lying).push(Buffer.concat([u32(RDIFF_DELTA_MAGIC), Buffer.from('450005', 'hex')]), () => {}), { code: ErrorCodes.RDIFF_DELTA });
});

t.test('a patch stops as soon as the output would outgrow the size the caller expects', async (t) => {
  const hashes = await loadRdiffHashes();
  const basis = shake('rdiff-test/limit-basis', 50_000);
  const target = concat([basis.subarray(0, 20_000), shake('rdiff-test/limit-new', 3_000), basis.subarray(20_000)]);
  const delta = rdiffDelta(hashes, parseRdiffSignature(rdiffSignature(hashes, basis)), target);
  t.same(Buffer.from(applyRdiffPatch(basis, delta, { maxOutputLength: target.length })), Buffer.from(target), 'the exact size is accepted');
  for (const limit of [target.length - 1, 10_000, 0]) {
    t.throws(() => applyRdiffPatch(basis, delta, { maxOutputLength: limit }), { code: ErrorCodes.RDIFF_DELTA, message: new RegExp(`longer than the ${limit} bytes expected`) }, `limit ${limit}: an error`);
  }
});
