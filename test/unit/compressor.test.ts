import t, { type Test } from 'tap';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { decompress } from '@mongodb-js/zstd';
import { createCompressor } from '../../src/stages/compressor.js';
import { createDecompressor } from '../../src/stages/decompressor.js';
import { splitFrames } from '../../src/formats/zstd-frames.js';
import { ErrorCodes, isBlanketError } from '../../src/formats/errors.js';
import { chunkBy, compressibleBytes, prng, randomBytes, zstdCli } from '../helpers/bytes.js';

const OBJECT = 'packs/test-object.pack';
const BLOCK = 4096;

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

t.test('compressor round-trips at block boundaries', { timeout: 20_000 }, async (t) => {
  const sizes = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5.5 * BLOCK, 40 * BLOCK + 17];
  for (const size of sizes) {
    for (const [kind, data] of [
      ['random', randomBytes(size, size + 1)],
      ['compressible', compressibleBytes(size, size + 2)],
    ] as const) {
      for (const [chunking, chunks] of [
        ['whole', data.length ? [data] : []],
        ['7-byte', chunkBy(data, () => 7)],
        ['random', randomChunks(data, 3 * BLOCK)],
      ] as const) {
        const name = `${kind} ${size} bytes, ${chunking} chunks`;
        const stage = createCompressor({ blockSize: BLOCK, concurrency: 3 });
        const packed = await through(stage, [...chunks]);
        const frames = [...splitFrames(packed)];
        t.equal(frames.length, Math.max(1, Math.ceil(size / BLOCK)), `${name}: one frame per block`);
        const blocks = await Promise.all(frames.map((frame) => decompress(frame)));
        t.ok(
          blocks.every((block, i) => block.length === (i < frames.length - 1 ? BLOCK : size - BLOCK * i)),
          `${name}: frames hold whole blocks`,
        );
        t.ok(Buffer.concat(blocks).equals(data), `${name}: round-trips`);
        t.equal(stage.bytesIn, size, `${name}: bytesIn`);
        t.equal(stage.bytesOut, packed.length, `${name}: bytesOut`);
        if (chunking === 'random') {
          t.ok((await zstdCli(['-d', '-q', '-c'], Readable.from([packed]))).equals(data), `${name}: zstd -d agrees`);
          const back = await through(createDecompressor({ objectName: OBJECT }), randomChunks(packed, 5000));
          t.ok(back.equals(data), `${name}: our decompressor agrees`);
        }
      }
    }
  }
});

t.test('compressor output piped straight into zstd -d', async (t) => {
  const data = Buffer.concat([compressibleBytes(3_000_000, 3), randomBytes(500_000, 4)]);
  const stage = createCompressor({ level: 1 });
  const decoded = zstdCli(['-d', '-q', '-c'], stage);
  Readable.from(chunkBy(data, () => 65536)).pipe(stage);
  t.ok((await decoded).equals(data));
});

t.test('an empty input still makes a valid .zst', async (t) => {
  const packed = await through(createCompressor(), []);
  t.equal([...splitFrames(packed)].length, 1);
  t.equal((await zstdCli(['-d', '-q', '-c'], packed)).length, 0);
  t.equal((await through(createDecompressor({ objectName: OBJECT }), [packed])).length, 0);
});

t.test('default block size is 1 MiB and the level is honoured', async (t) => {
  const data = compressibleBytes(2.5 * 1024 * 1024, 5);
  const packed = await through(createCompressor(), [data]);
  t.equal([...splitFrames(packed)].length, 3);
  t.ok((await through(createDecompressor(), [packed])).equals(data));
  const sample = data.subarray(0, 300_000);
  const fast = await through(createCompressor({ level: 1 }), [sample]);
  const strong = await through(createCompressor({ level: 19 }), [sample]);
  t.ok(strong.length < fast.length, `level 19 (${strong.length}) beats level 1 (${fast.length})`);
});

t.test('rejects bad options', async (t) => {
  t.throws(() => createCompressor({ blockSize: 0 }), RangeError);
  t.throws(() => createCompressor({ concurrency: 1.5 }), RangeError);
  t.throws(() => createCompressor({ level: Number.NaN }), RangeError);
  t.throws(() => createDecompressor({ maxFrameSize: -1 }), RangeError);
});

/** Writes `count` chunks without reading the output; reports how many writes were acknowledged. */
async function stalledWrites(stage: Transform, chunks: Buffer[]): Promise<{ acknowledged: () => number; falseWrites: number }> {
  let acknowledged = 0;
  let falseWrites = 0;
  for (const chunk of chunks) if (!stage.write(chunk, () => acknowledged++)) falseWrites++;
  await sleep(300);
  return { acknowledged: () => acknowledged, falseWrites };
}

t.test('compressor backpressure with a stalled reader', async (t) => {
  const concurrency = 2;
  const data = randomBytes(200 * BLOCK, 6);
  const chunks = chunkBy(data, () => BLOCK);
  const stage = createCompressor({ blockSize: BLOCK, concurrency });
  const { acknowledged, falseWrites } = await stalledWrites(stage, chunks);
  t.ok(falseWrites > 0, 'write() reports a full buffer');
  // Acknowledged blocks are compressed and parked in the readable buffer or in flight, so this bounds memory.
  t.ok(acknowledged() <= concurrency + 2, `only ${acknowledged()} of ${chunks.length} writes acknowledged`);
  // New blocks start only while the readable buffer is below its high-water mark.
  const bound = stage.readableHighWaterMark + concurrency * (BLOCK + 64);
  t.ok(stage.readableLength <= bound, `readable side holds ${stage.readableLength} bytes`);
  t.ok(stage.bytesOut <= bound, `${stage.bytesOut} bytes compressed before the reader reads`);
  stage.end();
  const out = await collect(stage);
  t.equal(acknowledged(), chunks.length, 'all writes acknowledged once read');
  t.ok(Buffer.concat((await Promise.all([...splitFrames(out)].map((f) => decompress(f))))).equals(data));
});

t.test('compressor with a slow consumer keeps a bounded backlog', async (t) => {
  const blockSize = 64 * 1024;
  const data = compressibleBytes(40 * blockSize, 7);
  const stage = createCompressor({ blockSize, concurrency: 2 });
  const frames: Buffer[] = [];
  let taken = 0;
  let maxBacklog = 0;
  const source = new Readable({
    read() {
      // Input taken but not yet delivered as frames: blocks in flight, the partial block, stream buffers.
      maxBacklog = Math.max(maxBacklog, taken - frames.length * blockSize);
      const chunk = data.subarray(taken, taken + 10_000);
      taken += chunk.length;
      this.push(chunk.length ? chunk : null);
    },
  });
  const slowSink = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _encoding, callback) {
      frames.push(chunk);
      setTimeout(callback, 5);
    },
  });
  await pipeline(source, stage, slowSink);
  t.ok(Buffer.concat(await Promise.all(frames.map((f) => decompress(f)))).equals(data));
  t.ok(maxBacklog <= 5 * blockSize, `backlog peaked at ${(maxBacklog / blockSize).toFixed(1)} blocks`);
});

t.test('abort signal destroys the compressor with the reason', async (t) => {
  const controller = new AbortController();
  const stage = createCompressor({ blockSize: BLOCK, signal: controller.signal });
  const reason = new Error('stop now');
  const block = randomBytes(BLOCK, 8);
  const endless = Readable.from(
    (function* () {
      for (;;) yield block;
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
  const packed = await through(createCompressor({ blockSize: BLOCK }), [data]);
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
  const packed = await through(createCompressor({ blockSize: BLOCK }), [data]);
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

t.test('decompressor backpressure with a stalled reader', async (t) => {
  const data = randomBytes(100 * BLOCK, 16);
  const packed = await through(createCompressor({ blockSize: BLOCK }), [data]);
  const stage = createDecompressor({ objectName: OBJECT, concurrency: 2 });
  const chunks = chunkBy(packed, () => BLOCK);
  const { acknowledged, falseWrites } = await stalledWrites(stage, chunks);
  t.ok(falseWrites > 0, 'write() reports a full buffer');
  t.ok(acknowledged() <= 5, `only ${acknowledged()} of ${chunks.length} writes acknowledged`);
  t.ok(stage.bytesOut <= stage.readableHighWaterMark + 2 * BLOCK, `${stage.bytesOut} bytes decompressed before the reader reads`);
  stage.end();
  t.ok((await collect(stage)).equals(data));
});
