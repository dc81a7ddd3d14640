import t, { type Test } from 'tap';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { decompress } from '@mongodb-js/zstd';
import { compressFrames, compressFramesInto, looksIncompressible } from '../../src/stages/compressor.js';
import { createDecompressor } from '../../src/stages/decompressor.js';
import { NoRoomForFrameError, rawZstdFrame, rawZstdFrameSize, splitFrames, zstdCompressBound } from '../../src/formats/zstd-frames.js';
import { ErrorCodes, isBlanketError } from '../../src/formats/errors.js';
import { chunkBy, compressibleBytes, prng, randomBytes, zstdCli } from '../helpers/bytes.js';

const OBJECT = 'packs/test-object.pack';
const BLOCK = 4096;
const MIB = 1024 * 1024;

function randomChunks(buf: Buffer, max: number): Buffer[] {
  const next = prng(buf.length + max);
  return chunkBy(buf, () => Math.floor(next() * max));
}

/** Runs `input` through `stage` (chunked as given) and collects the output. */
async function through(stage: Transform, chunks: Buffer[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(chunks), stage, async function* (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) out.push(chunk);
  });
  return Buffer.concat(out);
}

async function collect(stage: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const chunk of stage) out.push(chunk as Buffer);
  return Buffer.concat(out);
}

function withTimeout<T>(promise: Promise<T>, ms = 5000): Promise<T> {
  return Promise.race([
    promise,
    sleep(ms, undefined, { ref: false }).then(() => {
      throw new Error(`timed out after ${ms} ms`);
    }),
  ]);
}

async function expectCorrupt(t: Test, promise: Promise<unknown>, pattern?: RegExp): Promise<void> {
  try {
    await withTimeout(promise);
    t.ok(false, 'expected a corrupt-data error');
  } catch (error) {
    t.ok(isBlanketError(error, ErrorCodes.CORRUPT_OBJECT), `CORRUPT_OBJECT: ${String(error)}`);
    t.equal((error as { subject?: string }).subject, OBJECT);
    t.match((error as Error).message, new RegExp(OBJECT.replace(/\./g, '\\.')));
    if (pattern) t.match((error as Error).message, pattern);
  }
}

t.test('compressFrames makes one frame per block, and the frames round-trip', { timeout: 20_000 }, async (t) => {
  const sizes = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5.5 * BLOCK, 40 * BLOCK + 17];
  for (const size of sizes) {
    for (const [kind, data] of [
      ['random', randomBytes(size, size + 1)],
      ['compressible', compressibleBytes(size, size + 2)],
    ] as const) {
      const name = `${kind} ${size} bytes`;
      const packed = Buffer.concat(await compressFrames(data, 3, BLOCK));
      const frames = [...splitFrames(packed)];
      t.equal(frames.length, Math.ceil(size / BLOCK), `${name}: one frame per block`);
      const blocks = await Promise.all(frames.map((frame) => decompress(frame)));
      t.ok(
        blocks.every((block, i) => block.length === (i < frames.length - 1 ? BLOCK : size - BLOCK * i)),
        `${name}: frames hold whole blocks`,
      );
      t.ok(Buffer.concat(blocks).equals(data), `${name}: round-trips`);
      if (size > 0) {
        t.ok((await zstdCli(['-d', '-q', '-c'], Readable.from([packed]))).equals(data), `${name}: zstd -d agrees`);
        const back = await through(createDecompressor({ objectName: OBJECT }), randomChunks(packed, 5000));
        t.ok(back.equals(data), `${name}: our decompressor agrees, fed in odd-sized chunks`);
      }
    }
  }
});

t.test('frames of a subarray hold exactly that range', async (t) => {
  const whole = compressibleBytes(5 * BLOCK, 11);
  const part = whole.subarray(BLOCK + 3, 4 * BLOCK - 5);
  const packed = Buffer.concat(await compressFrames(part, 3, BLOCK));
  t.ok((await zstdCli(['-d', '-q', '-c'], Readable.from([packed]))).equals(part));
});

t.test('default block size is 1 MiB and the level is honoured', async (t) => {
  const data = compressibleBytes(2.5 * 1024 * 1024, 5);
  const packed = Buffer.concat(await compressFrames(data));
  t.equal([...splitFrames(packed)].length, 3);
  t.ok((await through(createDecompressor(), [packed])).equals(data));
  const sample = data.subarray(0, 300_000);
  const fast = Buffer.concat(await compressFrames(sample, 1));
  const strong = Buffer.concat(await compressFrames(sample, 19));
  t.ok(strong.length < fast.length, `level 19 (${strong.length}) beats level 1 (${fast.length})`);
});

t.test('raw frames: any zstd decoder reads back the bytes, and they fit the compress bound', { timeout: 20_000 }, async (t) => {
  for (const size of [0, 1, 4095, 128 * 1024 - 1, 128 * 1024, 128 * 1024 + 1, MIB, 3 * MIB + 5]) {
    const data = randomBytes(size, size + 3);
    const frame = rawZstdFrame(data);
    t.equal(frame.length, rawZstdFrameSize(size), `${size} bytes: size as computed`);
    t.ok(frame.length <= zstdCompressBound(size), `${size} bytes: within zstd's compress bound (the frame ring's reservation)`);
    t.equal([...splitFrames(frame)].length, 1, `${size} bytes: one frame for the splitter`);
    t.ok((await decompress(frame)).equals(data), `${size} bytes: the binding decompresses it`);
    t.ok((await zstdCli(['-d', '-q', '-c'], Readable.from([frame]))).equals(data), `${size} bytes: zstd -d agrees`);
    t.ok((await through(createDecompressor({ objectName: OBJECT }), randomChunks(frame, 3000))).equals(data), `${size} bytes: our decompressor, odd chunks`);
  }
});

t.test('looksIncompressible: random bytes yes; text, zeros, short data and a text sample no', async (t) => {
  t.ok(looksIncompressible(randomBytes(MIB, 1)), 'random MiB');
  t.ok(looksIncompressible(randomBytes(5000, 2), 1), 'random 5000 bytes, one sample');
  t.notOk(looksIncompressible(compressibleBytes(MIB, 3)), 'text-like MiB');
  t.notOk(looksIncompressible(Buffer.alloc(MIB)), 'zeros');
  t.notOk(looksIncompressible(randomBytes(4095, 4)), 'shorter than one sample');
  // Random but for a stretch of text under one of the samples (the third of four, centred at 5/8).
  const mixed = randomBytes(MIB, 5);
  compressibleBytes(64 * 1024, 6).copy(mixed, Math.floor((5 / 8) * MIB) - 32 * 1024);
  t.notOk(looksIncompressible(mixed), 'text under one sample');
  // A structured header at the very start (as image and archive files have) does not decide it.
  const withHeader = randomBytes(MIB, 7);
  withHeader.fill(0, 0, 2048);
  t.ok(looksIncompressible(withHeader), 'random after a 2 KiB header');
});

t.test('compressFrames stores a block raw only when allowed and it looks incompressible', async (t) => {
  const random = randomBytes(3 * MIB, 8);
  const text = compressibleBytes(MIB, 9);
  const data = Buffer.concat([random.subarray(0, MIB), text, random.subarray(MIB)]);
  const isRaw = (frame: Buffer): boolean => frame.length === rawZstdFrameSize(MIB) && frame[4] === 0xa0;
  const allowed = await compressFrames(data, 3, MIB, () => true);
  t.same(allowed.map(isRaw), [true, false, true, true], 'random blocks raw, the text block compressed');
  t.ok(allowed[1]!.length < MIB / 2, 'the text block shrank');
  const refused = await compressFrames(data, 3, MIB, (start) => start !== 2 * MIB);
  t.same(refused.map(isRaw), [true, false, false, true], 'a block not allowed raw is compressed');
  const asked: Array<[number, number]> = [];
  await compressFrames(data.subarray(0, 2 * MIB + 10), 3, MIB, (start, end) => (asked.push([start, end]), false));
  t.same(asked, [[0, MIB], [MIB, 2 * MIB], [2 * MIB, 2 * MIB + 10]], 'asked once per block with its range');
  t.ok((await zstdCli(['-d', '-q', '-c'], Readable.from([Buffer.concat(allowed)]))).equals(data), 'zstd -d reads the mixed frames back');
});

t.test('rejects bad options', async (t) => {
  await t.rejects(compressFrames(Buffer.alloc(10), 3, 0), RangeError);
  await t.rejects(compressFrames(Buffer.alloc(10), Number.NaN), RangeError);
  t.throws(() => createDecompressor({ maxFrameSize: -1 }), RangeError);
  t.throws(() => createDecompressor({ concurrency: 1.5 }), RangeError);
});

t.test('decompressor with a slow consumer keeps a bounded backlog', async (t) => {
  const blockSize = 64 * 1024;
  const data = compressibleBytes(40 * blockSize, 7);
  const frames = await compressFrames(data, 3, blockSize);
  const stage = createDecompressor({ concurrency: 2 });
  const blocks: Buffer[] = [];
  let taken = 0;
  let maxBacklog = 0;
  const source = new Readable({
    read() {
      // Frames taken but not yet delivered: frames in flight, stream buffers.
      maxBacklog = Math.max(maxBacklog, taken - blocks.length);
      this.push(taken < frames.length ? frames[taken++]! : null);
    },
  });
  const slowSink = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _encoding, callback) {
      blocks.push(chunk);
      setTimeout(callback, 5);
    },
  });
  await pipeline(source, stage, slowSink);
  t.ok(Buffer.concat(blocks).equals(data));
  t.ok(maxBacklog <= 24, `backlog peaked at ${maxBacklog} frames of ${frames.length}`);
});

t.test('abort signal destroys the decompressor with the reason', async (t) => {
  const controller = new AbortController();
  const stage = createDecompressor({ signal: controller.signal });
  const reason = new Error('stop now');
  const [frame] = await compressFrames(randomBytes(BLOCK, 8), 3, BLOCK);
  const endless = Readable.from(
    (function* () {
      for (;;) yield frame!;
    })(),
  );
  const failed = pipeline(endless, stage, new Writable({ write: (_chunk, _encoding, callback) => callback() }));
  setTimeout(() => controller.abort(reason), 50);
  await t.rejects(withTimeout(failed), reason);
  t.ok(stage.bytesOut > 0, 'it was running when aborted');

  const already = AbortSignal.abort(reason);
  await t.rejects(withTimeout(through(createDecompressor({ signal: already }), [Buffer.alloc(10)])), reason);
});

t.test('decompressor round-trips our packs with odd chunking', async (t) => {
  const data = Buffer.concat([compressibleBytes(30 * BLOCK + 5, 9), randomBytes(10 * BLOCK, 10)]);
  const packed = Buffer.concat(await compressFrames(data, 3, BLOCK));
  for (const [chunking, chunks] of [
    ['whole', [packed]],
    ['1-byte', chunkBy(packed, () => 1)],
    ['7-byte', chunkBy(packed, () => 7)],
    ['4093-byte', chunkBy(packed, () => 4093)],
    ['random', randomChunks(packed, 20_000)],
  ] as const) {
    for (const concurrency of chunking === '1-byte' ? [2] : [1, 2, 5]) {
      const stage = createDecompressor({ objectName: OBJECT, concurrency });
      const out = await through(stage, [...chunks]);
      t.ok(out.equals(data), `${chunking}, concurrency ${concurrency}`);
      t.equal(stage.bytesIn, packed.length);
      t.equal(stage.bytesOut, data.length);
    }
  }
});

t.test('decompressor reads zstd CLI output', async (t) => {
  const text = compressibleBytes(2_000_000, 11);
  const random = randomBytes(300_000, 12);
  const skippable = Buffer.alloc(8 + 5);
  skippable.writeUInt32LE(0x184d2a53, 0);
  skippable.writeUInt32LE(5, 4);
  const packed = Buffer.concat([
    await zstdCli(['-q', '-c'], text),
    skippable,
    await zstdCli(['-q', '--no-check', '-c'], random),
    await zstdCli(['-19', '-q', '-c'], text.subarray(0, 100_000)),
  ]);
  const out = await through(createDecompressor({ objectName: OBJECT }), randomChunks(packed, 65536));
  t.ok(out.equals(Buffer.concat([text, random, text.subarray(0, 100_000)])));
});

t.test('decompressor rejects corrupt data without hanging', async (t) => {
  const data = compressibleBytes(20 * BLOCK, 13);
  const packed = Buffer.concat(await compressFrames(data, 3, BLOCK));
  const frames = [...splitFrames(packed)];
  const run = (input: Buffer, maxFrameSize?: number) =>
    through(createDecompressor({ objectName: OBJECT, maxFrameSize }), randomChunks(input, 3000));

  await expectCorrupt(t, run(Buffer.concat([packed, Buffer.from('trailing garbage')])), /bad frame magic/);
  await expectCorrupt(t, run(packed.subarray(0, packed.length - 10)), /truncated/);
  await expectCorrupt(t, run(Buffer.from('not zstd at all')), /at byte 0: bad frame magic/);

  // Damage inside a compressed block: the frame splits fine, but zstd cannot decode it.
  const damaged = Buffer.from(packed);
  const victim = frames[0]!.length + frames[1]!.length + Math.floor(frames[2]!.length / 2);
  damaged.fill(0xff, victim, victim + 8);
  await expectCorrupt(t, run(damaged), /frame 3 cannot be decompressed/);

  // Reserved block type in the second frame.
  const reserved = Buffer.from(packed);
  reserved[frames[0]!.length + 6]! |= 0x06;
  await expectCorrupt(t, run(reserved));

  const big = await zstdCli(['-q', '-c'], randomBytes(1_000_000, 14));
  await expectCorrupt(t, run(big, 256 * 1024), /exceeds the limit of 262144 bytes/);
  t.ok((await run(big)).length === 1_000_000, 'within the default limit');

  // Every single-byte flip: an error or the right data, never a hang or wrong data.
  const small = await zstdCli(['-q', '-c'], compressibleBytes(3000, 15));
  const expected = await decompress(small);
  const problems: string[] = [];
  for (let i = 0; i < small.length; i++) {
    const flipped = Buffer.from(small);
    flipped[i]! ^= 0x5a;
    try {
      const out = await withTimeout(through(createDecompressor({ objectName: OBJECT }), chunkBy(flipped, () => 13)));
      if (!out.equals(expected)) problems.push(`byte ${i}: wrong data`);
    } catch (error) {
      if (!isBlanketError(error, ErrorCodes.CORRUPT_OBJECT) || error.subject !== OBJECT) problems.push(`byte ${i}: ${String(error)}`);
    }
  }
  t.same(problems, [], `all ${small.length} flips handled`);
});

/** Writes `count` chunks without reading the output; reports how many writes were acknowledged. */
async function stalledWrites(stage: Transform, chunks: Buffer[]): Promise<{ acknowledged: () => number; falseWrites: number }> {
  let acknowledged = 0;
  let falseWrites = 0;
  for (const chunk of chunks) if (!stage.write(chunk, () => acknowledged++)) falseWrites++;
  await sleep(300);
  return { acknowledged: () => acknowledged, falseWrites };
}

t.test('decompressor backpressure with a stalled reader', async (t) => {
  const data = randomBytes(100 * BLOCK, 16);
  const packed = Buffer.concat(await compressFrames(data, 3, BLOCK));
  const stage = createDecompressor({ objectName: OBJECT, concurrency: 2 });
  const chunks = chunkBy(packed, () => BLOCK);
  const { acknowledged, falseWrites } = await stalledWrites(stage, chunks);
  t.ok(falseWrites > 0, 'write() reports a full buffer');
  t.ok(acknowledged() <= 5, `only ${acknowledged()} of ${chunks.length} writes acknowledged`);
  t.ok(stage.bytesOut <= stage.readableHighWaterMark + 2 * BLOCK, `${stage.bytesOut} bytes decompressed before the reader reads`);
  stage.end();
  t.ok((await collect(stage)).equals(data));
});

t.test('compressFramesInto writes the same frames in place, and refuses a target without room', async (t) => {
  const data = Buffer.concat([randomBytes(2 * MIB, 21), compressibleBytes(MIB + 77, 22)]);
  const expected = Buffer.concat(await compressFrames(data, 3, MIB, () => true));
  const target = Buffer.alloc(expected.length + 100, 0xee);
  const written = await compressFramesInto(data, target, 50, 3, MIB, () => true);
  t.equal(written, expected.length);
  t.ok(target.subarray(50, 50 + written).equals(expected), 'byte-identical to compressFrames');
  t.ok(target.subarray(0, 50).every((b) => b === 0xee) && target.subarray(50 + written).every((b) => b === 0xee), 'nothing outside');
  await t.rejects(compressFramesInto(data, Buffer.alloc(expected.length - 1), 0, 3, MIB, () => true), NoRoomForFrameError);
});
