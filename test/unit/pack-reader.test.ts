// PackDecoder: what reaches the sink (content as frames end, then end with the verdict), fed whole, in odd
// chunks, and through a small ring whose memory is reused as soon as the decoder lets go of it.

import t from 'tap';
import { createHash } from 'node:crypto';
import { memberTarSize, TAR_BLOCK } from '../../src/formats/tar-member.js';
import { compressFrames } from '../../src/stages/compressor.js';
import { PackDecoder, type MemberSink } from '../../src/stages/pack-reader.js';
import { chunkBy, compressibleBytes, prng, randomBytes } from '../helpers/bytes.js';
import { tarOfMembers } from '../helpers/tar.js';

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

interface Member {
  readonly name: string;
  readonly content: Buffer;
}


/** A pack as Blanket writes one: the tar in zstd frames of `blockSize` tar bytes, random content stored raw. */
async function packOf(members: readonly Member[], blockSize: number): Promise<Buffer> {
  return Buffer.concat(await compressFrames(tarOfMembers(members), 3, blockSize, () => true));
}

const memberOf = (content: Buffer): Member => ({ name: sha256(content), content });

/** Records what the sink is given, copying the parts (they are only valid during the call). */
class RecordingSink implements MemberSink {
  readonly calls: Array<{ kind: 'content' | 'end'; hash: string; bytes: Buffer; intact?: boolean }> = [];

  content(hash: string, parts: readonly Buffer[]): void {
    this.calls.push({ kind: 'content', hash, bytes: Buffer.concat(parts) });
  }

  end(hash: string, parts: readonly Buffer[], _size: number, intact: boolean): void {
    this.calls.push({ kind: 'end', hash, bytes: Buffer.concat(parts), intact });
  }

  /** Each member's bytes, as content() and end() gave them, by hash, for the members that ended intact. */
  delivered(): Map<string, Buffer> {
    const pending = new Map<string, Buffer[]>();
    const done = new Map<string, Buffer>();
    for (const call of this.calls) {
      const parts = pending.get(call.hash) ?? [];
      parts.push(call.bytes);
      pending.set(call.hash, parts);
      if (call.kind === 'end') {
        pending.delete(call.hash);
        if (call.intact) done.set(call.hash, Buffer.concat(parts));
      }
    }
    return done;
  }
}

const members = [
  memberOf(compressibleBytes(3000, 1)),
  memberOf(randomBytes(700_000, 2)), // spans frames of 256 KiB
  memberOf(Buffer.alloc(0)),
  memberOf(compressibleBytes(90_000, 3)),
  memberOf(randomBytes(10, 4)),
];

t.test('members reach the sink exactly, whole and in odd chunks, one frame ahead or two', async (t) => {
  const pack = await packOf(members, 256 << 10);
  const random = prng(7);
  for (const framesAhead of [1, 2]) {
    for (const [label, chunks] of [
      ['whole', [pack]],
      ['odd chunks', chunkBy(pack, () => 1 + Math.floor(random() * 70_000))],
      ['one byte at a time, in part', [...chunkBy(pack.subarray(0, 4000), () => 1), pack.subarray(4000)]],
    ] as const) {
      const sink = new RecordingSink();
      const wanted = new Set(members.map((m) => m.name));
      const decoder = new PackDecoder('packs/test', { wants: (hash) => wanted.has(hash), sink, framesAhead, wantedCount: wanted.size });
      for (const chunk of chunks) await decoder.push(chunk);
      await decoder.end();
      const delivered = sink.delivered();
      t.equal(delivered.size, members.length, `${label}, ${framesAhead} ahead: every member delivered`);
      for (const m of members) t.ok(delivered.get(m.name)?.equals(m.content), `${label}, ${framesAhead} ahead: ${m.content.length} bytes exact`);
      t.same(decoder.badMembers, []);
      t.equal(decoder.delivered.size, members.length);
      t.ok(decoder.finished, 'every wanted member delivered: finished');
    }
  }
});

t.test('content() comes only for a member that goes on in a later frame, never for one within a frame', async (t) => {
  const pack = await packOf(members, 256 << 10);
  const sink = new RecordingSink();
  const decoder = new PackDecoder('packs/test', { wants: () => true, sink, framesAhead: 1 });
  await decoder.push(pack);
  await decoder.end();
  // Which members' content crosses a frame boundary (frames hold 256 KiB of tar each).
  const spanning = new Set<string>();
  for (let i = 0, at = 0; i < members.length; at += memberTarSize(members[i]!.content.length), i++) {
    const start = at + TAR_BLOCK;
    const end = start + members[i]!.content.length;
    if (end > start && Math.floor(start / (256 << 10)) !== Math.floor((end - 1) / (256 << 10))) spanning.add(members[i]!.name);
  }
  t.ok(spanning.has(members[1]!.name), 'the 700,000-byte member spans frames');
  const contentCalls = sink.calls.filter((c) => c.kind === 'content');
  t.same(new Set(contentCalls.map((c) => c.hash)), spanning, 'exactly the members that span frames get content() calls');
  t.ok(
    contentCalls.every((c) => c.bytes.length <= 256 << 10),
    'no call carries more than a frame',
  );
  t.same(
    sink.calls.filter((c) => c.kind === 'end').map((c) => c.hash),
    members.map((m) => m.name),
    'end() once per member, in tar order',
  );
});

t.test('a member whose bytes do not match its name ends not intact, after its bytes went to the sink', async (t) => {
  const good = memberOf(randomBytes(600_000, 11));
  const bad = { name: sha256(Buffer.from('something else')), content: randomBytes(600_000, 12) };
  const after = memberOf(compressibleBytes(5000, 13));
  const pack = await packOf([bad, good, after], 128 << 10);
  const sink = new RecordingSink();
  const decoder = new PackDecoder('packs/test', { wants: () => true, sink, framesAhead: 1 });
  for (const chunk of chunkBy(pack, () => 50_000)) await decoder.push(chunk);
  await decoder.end();
  const ends = sink.calls.filter((c) => c.kind === 'end');
  t.same(
    ends.map((c) => [c.hash, c.intact]),
    [
      [bad.name, false],
      [good.name, true],
      [after.name, true],
    ],
  );
  t.ok(sink.calls.some((c) => c.kind === 'content' && c.hash === bad.name), 'the damaged member was streamed before its hash was known');
  t.same(decoder.badMembers, [bad.name]);
  t.notOk(decoder.delivered.has(bad.name));
  t.ok(sink.delivered().get(good.name)?.equals(good.content));
});

t.test('a second copy of a member is not delivered again; a good copy after a damaged one is', async (t) => {
  const content = randomBytes(5000, 21);
  const name = sha256(content);
  const damaged = Buffer.from(content);
  damaged[100]! ^= 1;
  const pack = await packOf(
    [
      { name, content: damaged },
      { name, content },
      { name, content },
    ],
    64 << 10,
  );
  const sink = new RecordingSink();
  const decoder = new PackDecoder('packs/test', { wants: () => true, sink, framesAhead: 1 });
  await decoder.push(pack);
  await decoder.end();
  t.same(
    sink.calls.filter((c) => c.kind === 'end').map((c) => c.intact),
    [false, true],
    'the damaged copy ends not intact, the first good one is delivered, the third is not handed over',
  );
  t.ok(sink.delivered().get(name)?.equals(content));
});

t.test('through a ring: bytes pushed before heldBytes may be overwritten as soon as push() resolves', async (t) => {
  const big = [memberOf(randomBytes(1_500_000, 31)), memberOf(compressibleBytes(900_000, 32)), memberOf(randomBytes(40_000, 33))];
  const pack = await packOf(big, 200 << 10);
  for (const ringBytes of [600 << 10, 256 << 10]) {
    const ring = Buffer.alloc(ringBytes);
    const sink = new RecordingSink();
    const decoder = new PackDecoder('packs/test', { wants: () => true, sink, framesAhead: 1 });
    let read = 0; // stream offset of the bytes put in the ring
    let released = 0; // stream offset before which the decoder needs nothing
    let copies = 0;
    while (read < pack.length) {
      const at = read % ringBytes;
      const room = Math.min(ringBytes - at, ringBytes - (read - released), 70_000, pack.length - read);
      t.ok(room > 0, 'the ring always has room again');
      if (room <= 0) break;
      pack.copy(ring, at, read, read + room);
      read += room;
      await decoder.push(ring.subarray(at, at + room));
      if (decoder.heldBytes > ringBytes / 2) {
        decoder.copyHeld();
        copies++;
      }
      t.equal(decoder.heldBytes <= ringBytes / 2, true);
      released = read - decoder.heldBytes;
      // Poison every slot not holding [released, read): a decoder that kept a view of one would deliver garbage.
      for (let n = 0, free = ringBytes - (read - released); n < free; n++) ring[(read + n) % ringBytes] = 0xa5;
    }
    await decoder.end();
    const delivered = sink.delivered();
    for (const m of big) t.ok(delivered.get(m.name)?.equals(m.content), `ring of ${ringBytes}: ${m.content.length} bytes exact`);
    t.same(decoder.badMembers, []);
    if (ringBytes === 256 << 10) t.ok(copies > 0, 'frames larger than half the ring are copied out of it');
  }
});

t.test('damage in the compressed stream is an error naming the pack', async (t) => {
  const pack = await packOf(members, 256 << 10);
  const cut = pack.subarray(0, pack.length - 10);
  const decoder = new PackDecoder('packs/ab/cd', { wants: () => true, sink: new RecordingSink(), framesAhead: 1 });
  await decoder.push(cut);
  await t.rejects(decoder.end(), { code: 'BLANKET_E_CORRUPT_OBJECT', message: /packs\/ab\/cd/ });
});
