import t, { type Test } from 'tap';
import { compress, decompress } from '@mongodb-js/zstd';
import { rawZstdFrame, storedFrameContent, ZstdFrameSplitter, splitFrames } from '../../src/formats/zstd-frames.js';
import { ErrorCodes, isBlanketError } from '../../src/formats/errors.js';
import { chunkBy, compressibleBytes, prng, randomBytes, zstdCli } from '../helpers/bytes.js';

const OBJECT = 'packs/test-object.pack';

function skippableFrame(magicLowNibble: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(8);
  header.writeUInt32LE(0x184d2a50 + magicLowNibble, 0);
  header.writeUInt32LE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

/** A single-segment frame (1-byte content size) followed by the given raw block headers and bodies. */
function handmadeFrame(contentSize: number, blocks: Array<{ header: number; body: Buffer }>, descriptor = 0x20): Buffer {
  const parts: Buffer[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, descriptor, contentSize])];
  for (const { header, body } of blocks) {
    const h = Buffer.alloc(3);
    h.writeUIntLE(header, 0, 3);
    parts.push(h, body);
  }
  return Buffer.concat(parts);
}

function blockHeader(last: boolean, type: number, size: number): number {
  return (last ? 1 : 0) | (type << 1) | (size << 3);
}

const chunkings: Array<[string, (buf: Buffer) => Buffer[]]> = [
  ['whole', (buf) => [buf]],
  ['1-byte', (buf) => chunkBy(buf, () => 1)],
  ['7-byte', (buf) => chunkBy(buf, () => 7)],
  ['4093-byte', (buf) => chunkBy(buf, () => 4093)],
  [
    'random',
    (buf) => {
      const next = prng(buf.length);
      return chunkBy(buf, () => Math.floor(next() * 70000));
    },
  ],
];

function splitChunks(chunks: Buffer[], objectName?: string): Buffer[] {
  const splitter = new ZstdFrameSplitter(objectName);
  const frames = chunks.flatMap((chunk) => splitter.push(chunk));
  splitter.end();
  return frames;
}

/** Expects `fn` to throw a CORRUPT_OBJECT BlanketError naming OBJECT; returns its message. */
function expectCorrupt(t: Test, fn: () => unknown, messagePattern?: RegExp): string {
  try {
    fn();
  } catch (error) {
    t.ok(isBlanketError(error, ErrorCodes.CORRUPT_OBJECT), 'is a CORRUPT_OBJECT BlanketError');
    const message = (error as Error).message;
    t.match(message, OBJECT, 'message names the object');
    t.equal((error as { subject?: string }).subject, OBJECT, 'subject is the object');
    if (messagePattern) t.match(message, messagePattern);
    return message;
  }
  t.fail('expected a corrupt-data error');
  return '';
}

t.test('splits well-formed streams', async (t) => {
  const random = randomBytes(300_000, 1);
  const text = compressibleBytes(700_000, 2);
  const data = Buffer.concat([random, text]);
  const libFrames = [
    await compress(random.subarray(0, 100_000), 3),
    await compress(text, 3),
    await compress(Buffer.alloc(0), 3),
    await compress(Buffer.alloc(200_000, 7), 3), // RLE blocks
  ];
  const cases: Array<[string, Buffer[], Buffer[]]> = [
    ['@mongodb-js/zstd frames', libFrames, []],
    ['zstd -q --no-check (no content size)', [await zstdCli(['-q', '--no-check', '-c'], data)], []],
    ['zstd -q (checksum)', [await zstdCli(['-q', '-c'], data)], []],
    ['zstd -19 with content size', [await zstdCli(['-19', '-q', '-c', `--stream-size=${text.length}`], text)], []],
    ['zstd -1 on empty input', [await zstdCli(['-1', '-q', '-c'], Buffer.alloc(0))], []],
    ['zstd -q on 1 byte', [await zstdCli(['-q', '-c'], Buffer.from('x'))], []],
    [
      'concatenated CLI frames',
      [
        await zstdCli(['-q', '-c'], random),
        await zstdCli(['-q', '--no-check', '-c'], text.subarray(0, 1000)),
        await zstdCli(['-19', '-q', '-c'], text),
      ],
      [],
    ],
  ];
  const withSkippable = [await zstdCli(['-q', '-c'], text.subarray(0, 5000)), libFrames[0]!];
  const skippables = [skippableFrame(0, Buffer.from('skip me please')), skippableFrame(0xf, Buffer.alloc(0)), skippableFrame(7, randomBytes(70_000, 3))];
  const stream = Buffer.concat([skippables[0]!, withSkippable[0]!, skippables[1]!, skippables[2]!, withSkippable[1]!, skippables[0]!]);

  for (const [name, frames] of cases) {
    const whole = Buffer.concat(frames);
    // Each CLI output above is a single frame unless stated; confirm what we expect by decompressing.
    for (const [chunking, split] of chunkings) {
      const got = splitChunks(split(whole), OBJECT);
      t.equal(got.length, frames.length, `${name}, ${chunking}: frame count`);
      t.ok(
        got.every((frame, i) => frame.equals(frames[i]!)),
        `${name}, ${chunking}: frames are byte-identical`,
      );
    }
    const decompressed = await Promise.all([...splitFrames(whole)].map((frame) => decompress(frame)));
    t.ok(Buffer.concat(decompressed).equals(await decompress(whole)), `${name}: frames decompress individually`);
  }

  for (const [chunking, split] of chunkings) {
    const got = splitChunks(split(stream), OBJECT);
    t.equal(got.length, 2, `skippable frames dropped (${chunking})`);
    t.ok(got[0]!.equals(withSkippable[0]!) && got[1]!.equals(withSkippable[1]!), `frames around skippables intact (${chunking})`);
  }
});

t.test('a frame within one chunk is returned without copying', async (t) => {
  const frame = await compress(compressibleBytes(50_000, 4), 3);
  const stream = Buffer.concat([frame, frame]);
  const [first, second] = splitChunks([stream]);
  t.equal(first!.buffer, stream.buffer);
  t.equal(second!.byteOffset, stream.byteOffset + frame.length);
});

t.test('pushParts gives each frame as views of the chunks it spans; heldBytes counts what the splitter still refers to', async (t) => {
  const frames = [rawZstdFrame(randomBytes(5000, 41)), await compress(compressibleBytes(20_000, 42)), rawZstdFrame(randomBytes(300, 43))];
  const stream = Buffer.concat(frames);
  const random = prng(44);
  for (let round = 0; round < 20; round++) {
    const splitter = new ZstdFrameSplitter('packs/x');
    const got: Buffer[] = [];
    let pushed = 0;
    let frameBytes = 0;
    for (const chunk of chunkBy(stream, () => 1 + Math.floor(random() * 4000))) {
      for (const parts of splitter.pushParts(chunk)) {
        if (round % 2 === 0) t.ok(parts.every((part) => part.buffer === stream.buffer), 'views of the pushed chunks, not copies');
        got.push(Buffer.concat(parts));
      }
      pushed += chunk.length;
      frameBytes = got.reduce((sum, frame) => sum + frame.length, 0);
      if (round % 2 === 0) t.equal(splitter.heldBytes, pushed - frameBytes, 'held: the bytes of the frame under way');
      else t.ok(splitter.heldBytes <= chunk.length, 'held: at most this chunk, the rest was copied');
      if (round % 2 === 1) {
        splitter.copyHeld();
        t.equal(splitter.heldBytes, 0, 'after copyHeld, nothing pushed is referred to');
      }
    }
    splitter.end();
    t.same(got, frames, `round ${round}: the frames, exact`);
  }
});

t.test('an empty stream has no frames', async (t) => {
  t.same(splitChunks([]), []);
  t.same(splitChunks([Buffer.alloc(0)]), []);
  t.same([...splitFrames(Buffer.alloc(0))], []);
});

t.test('accepts the largest blocks and zero-length blocks', async (t) => {
  const body = Buffer.alloc(128 * 1024, 1);
  const header = (value: number): Buffer => Buffer.from([value & 0xff, (value >> 8) & 0xff, value >> 16]);
  const frame = Buffer.concat([
    Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xa0]), // single segment, 4-byte content size
    Buffer.from([0x00, 0x00, 0x02, 0x00]),
    header(blockHeader(false, 0, 0)),
    header(blockHeader(true, 0, body.length)),
    body,
  ]);
  for (const [chunking, split] of chunkings) {
    const got = splitChunks(split(frame), OBJECT);
    t.equal(got.length, 1, chunking);
    t.ok(got[0]!.equals(frame), chunking);
  }
  t.ok((await decompress(frame)).equals(body), 'zstd agrees the frame is valid');
});

t.test('throughput: a 64 MiB stream in 64 KiB chunks', async (t) => {
  const frame = await compress(randomBytes(1024 * 1024, 5), 3);
  const frames = 64;
  const stream = Buffer.concat(Array.from({ length: frames }, () => frame));
  const chunks = chunkBy(stream, () => 64 * 1024);
  const started = performance.now();
  const splitter = new ZstdFrameSplitter(OBJECT);
  let count = 0;
  let bytes = 0;
  for (const chunk of chunks) {
    for (const f of splitter.push(chunk)) {
      count++;
      bytes += f.length;
    }
  }
  splitter.end();
  const ms = performance.now() - started;
  t.equal(count, frames);
  t.equal(bytes, stream.length);
  t.ok(ms < 2000, `split ${stream.length >> 20} MiB in ${ms.toFixed(0)} ms`);
});

t.test('rejects corrupt input with the object name and offset', async (t) => {
  const good = await zstdCli(['-q', '-c'], compressibleBytes(10_000, 6));

  t.test('bad magic', async (t) => {
    expectCorrupt(t, () => splitChunks([Buffer.from('hello, world')], OBJECT), /at byte 0: bad frame magic 0x6c6c6568/);
    expectCorrupt(t, () => splitChunks([good, Buffer.from('garbage!')], OBJECT), new RegExp(`at byte ${good.length}: bad frame magic`));
    expectCorrupt(t, () => splitChunks(chunkBy(Buffer.concat([good, Buffer.from('garbage!')]), () => 3), OBJECT), /bad frame magic/);
  });

  t.test('truncated', async (t) => {
    for (const cut of [1, 3, 4, 5, 10, good.length - 4, good.length - 1]) {
      for (const [chunking, split] of chunkings) {
        expectCorrupt(t, () => splitChunks(split(good.subarray(0, cut)), OBJECT), /truncated inside the frame starting at byte 0/);
        t.pass(`cut at ${cut}, ${chunking}`);
      }
    }
    const skippable = skippableFrame(1, Buffer.alloc(100));
    expectCorrupt(t, () => splitChunks([good, skippable.subarray(0, 50)], OBJECT), new RegExp(`frame starting at byte ${good.length}`));
  });

  t.test('reserved block type', async (t) => {
    const frame = handmadeFrame(5, [{ header: blockHeader(true, 3, 5), body: Buffer.from('hello') }]);
    expectCorrupt(t, () => splitChunks([frame], OBJECT), /at byte 6: reserved block type/);
  });

  t.test('reserved descriptor bit', async (t) => {
    const frame = handmadeFrame(5, [{ header: blockHeader(true, 0, 5), body: Buffer.from('hello') }], 0x28);
    expectCorrupt(t, () => splitChunks([frame], OBJECT), /at byte 4: reserved bit/);
  });

  t.test('block larger than 128 KiB', async (t) => {
    const size = 128 * 1024 + 1;
    const frame = handmadeFrame(0, [{ header: blockHeader(true, 0, size), body: Buffer.alloc(size) }]);
    expectCorrupt(t, () => splitChunks([frame], OBJECT), /at byte 6: block size 131073 exceeds/);
  });

  t.test('frame size limit', async (t) => {
    const big = await zstdCli(['-q', '-c'], randomBytes(1_000_000, 7));
    const limited = (objectName: string, maxFrameSize: number) => () => {
      const splitter = new ZstdFrameSplitter(objectName, { maxFrameSize });
      for (const chunk of chunkBy(big, () => 65536)) splitter.push(chunk);
      splitter.end();
    };
    expectCorrupt(t, limited(OBJECT, 500_000), /at byte 0: frame exceeds the limit of 500000 bytes/);
    t.doesNotThrow(limited(OBJECT, 2_000_000));
    const declared = await zstdCli(['-q', '-c', '--stream-size=1000000'], randomBytes(1_000_000, 7));
    expectCorrupt(t, () => new ZstdFrameSplitter(OBJECT, { maxFrameSize: 500_000 }).push(declared.subarray(0, 20)), /content size 1000000 exceeds/);
  });

  t.test('errors are sticky', async (t) => {
    const splitter = new ZstdFrameSplitter(OBJECT);
    expectCorrupt(t, () => splitter.push(Buffer.from('nonsense')));
    expectCorrupt(t, () => splitter.push(good));
    expectCorrupt(t, () => splitter.end());
  });

  t.test('without an object name', async (t) => {
    t.throws(() => splitChunks([Buffer.from('nonsense')]), { code: ErrorCodes.CORRUPT_OBJECT, message: /^Corrupt zstd data at byte 0/ });
  });

  t.test('flipped bytes never hang and never yield wrong data', { timeout: 15_000 }, async (t) => {
    const original = compressibleBytes(20_000, 8);
    const frame = await zstdCli(['-q', '-c'], original); // with checksum
    let errors = 0;
    const problems: string[] = [];
    for (let i = 0; i < frame.length; i++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const damaged = Buffer.from(frame);
        damaged[i]! ^= mask;
        try {
          const parts = await Promise.all(splitChunks(chunkBy(damaged, () => 97), OBJECT).map((f) => decompress(f)));
          if (!Buffer.concat(parts).equals(original)) problems.push(`byte ${i} ^ ${mask}: wrong data`);
        } catch (error) {
          errors++;
          const ours = isBlanketError(error, ErrorCodes.CORRUPT_OBJECT) && error.subject === OBJECT;
          if (!ours && !/^zstd: /.test((error as Error).message)) problems.push(`byte ${i} ^ ${mask}: ${String(error)}`);
        }
      }
    }
    t.same(problems, [], 'each flip is rejected (by us or by zstd) or harmless');
    t.ok(errors > frame.length * 2, `${errors} of ${frame.length * 3} flips detected`);
  });
});

t.test('storedFrameContent reads frames of raw and RLE blocks in place, and leaves the rest to zstd', async (t) => {
  for (const size of [0, 1, 128 * 1024, 128 * 1024 + 1, 1 << 20]) {
    const data = randomBytes(size, size + 1);
    const frame = rawZstdFrame(data);
    const parts = storedFrameContent(frame);
    t.ok(parts !== null && Buffer.concat(parts).equals(data), `${size} bytes of raw blocks`);
    t.ok(parts!.every((part) => part.buffer === frame.buffer), `${size} bytes: views of the frame, not copies`);
    t.ok((await decompress(frame)).equals(data), `${size} bytes: zstd agrees`);
  }
  // zstd itself stores incompressible blocks raw, and runs of one byte as RLE blocks
  const random = randomBytes(300_000, 3);
  const zeros = Buffer.alloc(300_000);
  for (const [what, data] of [['random', random], ['zeros', zeros]] as const) {
    const frame = await zstdCli(['-3', '-c', '--no-check'], data);
    const parts = storedFrameContent(frame);
    if (parts !== null) t.ok(Buffer.concat(parts).equals(data), `${what} compressed by zstd: read in place`);
    else t.pass(`${what} compressed by zstd: left to the decoder`);
  }
  const compressible = await compress(Buffer.from('abc'.repeat(100_000)));
  t.equal(storedFrameContent(compressible), null, 'a compressed block: left to the decoder');
  const checked = await zstdCli(['-c', '--check', '-1'], random);
  t.equal(storedFrameContent(checked), null, 'a frame with a checksum: left to the decoder, which verifies it');
  const frame = rawZstdFrame(randomBytes(1000, 9));
  t.equal(storedFrameContent(frame.subarray(0, frame.length - 1)), null, 'cut short: left to the decoder to report');
  const lying = Buffer.from(frame);
  lying.writeUInt32LE(999, 5); // declares 999 bytes, holds 1000
  t.equal(storedFrameContent(lying), null, 'a content size that does not add up: left to the decoder');
  t.same(storedFrameContent(Buffer.concat([frame, Buffer.alloc(1)])), null, 'bytes after the last block');
});
