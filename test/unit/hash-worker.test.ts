import t from 'tap';
import { mayStoreRaw } from '../../src/stages/hash-worker.js';
import { compressibleBytes, randomBytes } from '../helpers/bytes.js';

const MIB = 1024 * 1024;

/** A tar-like buffer: a 512-byte header before each content, and where each content lies ([start, end) pairs). */
function layout(contents: Buffer[]): { tar: Buffer; ranges: number[] } {
  const parts: Buffer[] = [];
  const ranges: number[] = [];
  let at = 0;
  for (const content of contents) {
    parts.push(Buffer.alloc(512), content);
    ranges.push(at + 512, at + 512 + content.length);
    at += 512 + content.length;
  }
  return { tar: Buffer.concat(parts), ranges };
}

t.test('one random member filling the block: raw; a text one: compressed', async (t) => {
  const random = layout([randomBytes(2 * MIB, 1)]);
  t.ok(mayStoreRaw(random.tar, random.ranges, 0, MIB), 'first block (with the header)');
  t.ok(mayStoreRaw(random.tar, random.ranges, MIB, 2 * MIB), 'a middle block');
  const text = layout([compressibleBytes(2 * MIB, 2)]);
  t.notOk(mayStoreRaw(text.tar, text.ranges, 0, MIB));
});

t.test('many members: raw only if every judged piece is random and little is left unjudged', async (t) => {
  const randoms = Array.from({ length: 16 }, (_, i) => randomBytes(64 * 1024 - 512, 10 + i));
  const allRandom = layout(randoms);
  t.ok(mayStoreRaw(allRandom.tar, allRandom.ranges, 0, allRandom.tar.length), '16 random files of ~64 KiB');
  const oneText = layout(randoms.map((r, i) => (i === 9 ? compressibleBytes(r.length, 3) : r)));
  t.notOk(mayStoreRaw(oneText.tar, oneText.ranges, 0, oneText.tar.length), 'one text file among them');
  const small = layout(Array.from({ length: 200 }, (_, i) => randomBytes(3000, 40 + i)));
  t.notOk(mayStoreRaw(small.tar, small.ranges, 0, small.tar.length), 'files under 4 KiB are not judged: headers and all stay compressed');
});

t.test('only the members within the block count', async (t) => {
  const { tar, ranges } = layout([compressibleBytes(MIB, 4), randomBytes(2 * MIB, 5)]);
  const secondStart = ranges[2]!;
  t.notOk(mayStoreRaw(tar, ranges, 0, MIB), 'the text member');
  t.ok(mayStoreRaw(tar, ranges, secondStart, secondStart + MIB), 'a block within the random member');
});
