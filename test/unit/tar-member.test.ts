// Tar member framing: headers byte-identical to tar-stream's, and archives that GNU tar reads.

import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tarStream from 'tar-stream';
import { memberTarSize, TAR_BLOCK, TarReader, writeMemberHeader, type TarHeader } from '../../src/formats/tar-member.js';
import { chunkBy, prng } from '../helpers/bytes.js';
import { tarOfMembers } from '../helpers/tar.js';
import { ensureTestTools } from '../helpers/tools.js';

ensureTestTools();

async function tarStreamMember(name: string, content: Buffer): Promise<Buffer> {
  const pack = tarStream.pack();
  const parts: Buffer[] = [];
  const done = (async () => {
    for await (const part of pack as unknown as AsyncIterable<Buffer>) parts.push(part);
  })();
  pack.entry({ name, size: content.length, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0, type: 'file' }, content);
  pack.finalize();
  await done;
  return Buffer.concat(parts);
}


t.test('member sizes round up to whole blocks after the header', async (t) => {
  t.equal(memberTarSize(0), 512);
  t.equal(memberTarSize(1), 1024);
  t.equal(memberTarSize(512), 1024);
  t.equal(memberTarSize(513), 1536);
});

t.test('headers are the bytes tar-stream writes', async (t) => {
  for (const size of [0, 1, 511, 512, 513, 4 << 20, 0o77777777777]) {
    const name = 'ab'.repeat(32);
    const content = size <= 1 << 22 ? Buffer.alloc(size, 0x61) : Buffer.alloc(0);
    const expected = size <= 1 << 22 ? (await tarStreamMember(name, content)).subarray(0, TAR_BLOCK) : null;
    const header = Buffer.alloc(TAR_BLOCK, 0xff); // whatever was there before is overwritten
    writeMemberHeader(header, 0, name, size);
    if (expected) t.ok(header.equals(expected), `size ${size}: same header as tar-stream`);
    t.equal(header.toString('latin1', 0, 64), name);
  }
  const whole = await tarStreamMember('x'.repeat(100), Buffer.from('hello'));
  t.ok(tarOfMembers([{ name: 'x'.repeat(100), content: Buffer.from('hello') }]).equals(whole), 'a whole archive matches tar-stream, end blocks included');
});

t.test('sizes from 8 GiB up use base-256, as tar-stream does', async (t) => {
  const header = Buffer.alloc(TAR_BLOCK);
  writeMemberHeader(header, 0, 'big', 2 ** 34 + 5);
  t.equal(header[124], 0x80);
  t.equal(header.readUIntBE(130, 6), 2 ** 34 + 5);
});

t.test('rejects names and sizes tar cannot hold', async (t) => {
  const header = Buffer.alloc(TAR_BLOCK);
  t.throws(() => writeMemberHeader(header, 0, '', 1), RangeError);
  t.throws(() => writeMemberHeader(header, 0, 'x'.repeat(101), 1), RangeError);
  t.throws(() => writeMemberHeader(header, 0, 'a b', 1), RangeError);
  t.throws(() => writeMemberHeader(header, 0, 'name', -1), RangeError);
  t.throws(() => writeMemberHeader(header, 0, 'name', 1.5), RangeError);
});

t.test('GNU tar extracts what we frame', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'blanket-tar-member-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const members = [0, 1, 512, 1000, 70_000].map((size, i) => ({ name: `${i}`.repeat(64).slice(0, 64), content: Buffer.alloc(size, 48 + i) }));
  writeFileSync(join(dir, 'pack.tar'), tarOfMembers(members));
  execFileSync('tar', ['-xf', 'pack.tar'], { cwd: dir });
  t.same(readdirSync(dir).sort(), ['pack.tar', ...members.map((m) => m.name)].sort());
  for (const m of members) t.ok(readFileSync(join(dir, m.name)).equals(m.content), `${m.content.length} bytes`);
});

/** What a TarReader delivers for `tar` pushed in `chunks`, with the content of members whose name `wants` accepts. */
function readTar(chunks: Buffer[], wants: (header: TarHeader) => boolean = () => true, maxMemberSize?: number) {
  const members: Array<{ header: TarHeader; content: Buffer | null }> = [];
  let parts: Buffer[] | null = null;
  const reader = new TarReader(
    {
      header: (header) => {
        const wanted = wants(header);
        parts = wanted ? [] : null;
        members.push({ header, content: null });
        return wanted;
      },
      data: (bytes) => parts!.push(Buffer.from(bytes)),
      memberEnd: () => {
        members[members.length - 1]!.content = parts && Buffer.concat(parts);
      },
    },
    maxMemberSize,
  );
  for (const chunk of chunks) reader.push(chunk);
  reader.end();
  return { members, finished: reader.finished };
}

t.test('TarReader reads what we frame and what tar-stream writes, whole and in odd-sized chunks', async (t) => {
  const random = prng(7);
  const members = [0, 1, 511, 512, 513, 70_000, 3].map((size, i) => ({ name: `${i}`.repeat(64), content: Buffer.alloc(size, 48 + i) }));
  const ours = tarOfMembers(members);
  const theirs = await tarStreamMember('x'.repeat(100), Buffer.from('hello'));
  for (const [what, chunks] of [
    ['whole', [ours]],
    ['1-byte chunks', chunkBy(ours, () => 1)],
    ['odd chunks', chunkBy(ours, () => 1 + Math.floor(random() * 1500))],
  ] as const) {
    const read = readTar([...chunks]);
    t.ok(read.finished, `${what}: the end-of-archive block is seen`);
    t.same(
      read.members.map((m) => [m.header.name, m.header.size, m.header.type]),
      members.map((m) => [m.name, m.content.length, '0']),
      `${what}: every header`,
    );
    t.ok(read.members.every((m, i) => m.content!.equals(members[i]!.content)), `${what}: every content`);
  }
  const read = readTar([theirs]);
  t.same(read.members.map((m) => [m.header.name, m.content!.toString()]), [['x'.repeat(100), 'hello']], 'a tar-stream archive');
});

t.test('TarReader skips what the sink does not want, and what follows the end block', async (t) => {
  const members = [10, 2000, 5].map((size, i) => ({ name: `${i}`.repeat(64), content: Buffer.alloc(size, 65 + i) }));
  const tar = Buffer.concat([tarOfMembers(members), Buffer.from('garbage after the end')]);
  const read = readTar(chunkBy(tar, () => 333), (header) => header.name.startsWith('1'));
  t.same(read.members.map((m) => m.content?.length ?? null), [null, 2000, null], 'only the wanted member is delivered');
  t.same(read.members.length, 3, 'nothing after the end block is parsed');
});

t.test('TarReader: pax and GNU headers are members of other types; base-256 sizes are read', async (t) => {
  const pack = tarStream.pack();
  const parts: Buffer[] = [];
  const done = (async () => {
    for await (const part of pack as unknown as AsyncIterable<Buffer>) parts.push(part);
  })();
  pack.entry({ name: 'n'.repeat(150), size: 3, type: 'file', pax: { comment: 'x' } }, Buffer.from('abc'));
  pack.entry({ name: 'dir/', type: 'directory' });
  pack.finalize();
  await done;
  const read = readTar([Buffer.concat(parts)]);
  t.same(
    read.members.map((m) => m.header.type),
    ['x', '0', '5'],
    'a pax header, the file it describes, a directory',
  );
  const header = Buffer.alloc(TAR_BLOCK);
  writeMemberHeader(header, 0, 'big', 2 ** 34 + 5);
  const seen: TarHeader[] = [];
  const reader = new TarReader({ header: (h) => (seen.push(h), false), data: () => undefined, memberEnd: () => undefined });
  reader.push(header);
  t.equal(seen[0]!.size, 2 ** 34 + 5, 'a base-256 size');
});

t.test('TarReader rejects damage with the byte it is at', async (t) => {
  const members = [{ name: 'a'.repeat(64), content: Buffer.alloc(1000, 1) }, { name: 'b'.repeat(64), content: Buffer.alloc(10, 2) }];
  const tar = tarOfMembers(members);
  const flipped = Buffer.from(tar);
  flipped[1536 + 10] ^= 0x40; // a name byte of the second header: its checksum no longer matches
  t.throws(() => readTar([flipped]), { name: 'TarFormatError', message: /bad tar header checksum at byte 1536/ });
  t.throws(() => readTar([tar.subarray(0, 1536 + 100)]), { name: 'TarFormatError', message: /ends inside a header, at byte 1636/ });
  t.throws(() => readTar([tar.subarray(0, 700)]), /ends inside a member, 836 bytes short/);
  t.throws(() => readTar([tar.subarray(0, 2560)]), /ends at byte 2560 without its end-of-archive block/);
  t.throws(() => readTar([tar], () => true, 999), /declares 1000 bytes, more than any member holds/);
  const badSize = Buffer.from(tar);
  badSize.write('9', 124); // not an octal digit (checksum fixed below)
  let sum = 8 * 0x20;
  for (let i = 0; i < TAR_BLOCK; i++) if (i < 148 || i >= 156) sum += badSize[i]!;
  badSize.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  t.throws(() => readTar([badSize]), /unreadable size in the tar header at byte 0/);
});
