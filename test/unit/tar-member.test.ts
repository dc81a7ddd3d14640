// Tar member framing: headers byte-identical to tar-stream's, and archives that GNU tar reads.

import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tarStream from 'tar-stream';
import { END_OF_TAR_SIZE, memberTarSize, TAR_BLOCK, writeMemberHeader } from '../../src/formats/tar-member.js';
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

function ourTar(members: Array<{ name: string; content: Buffer }>): Buffer {
  const out = Buffer.alloc(members.reduce((sum, m) => sum + memberTarSize(m.content.length), 0) + END_OF_TAR_SIZE);
  let at = 0;
  for (const { name, content } of members) {
    writeMemberHeader(out, at, name, content.length);
    content.copy(out, at + TAR_BLOCK);
    at += memberTarSize(content.length);
  }
  return out;
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
  t.ok(ourTar([{ name: 'x'.repeat(100), content: Buffer.from('hello') }]).equals(whole), 'a whole archive matches tar-stream, end blocks included');
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
  writeFileSync(join(dir, 'pack.tar'), ourTar(members));
  execFileSync('tar', ['-xf', 'pack.tar'], { cwd: dir });
  t.same(readdirSync(dir).sort(), ['pack.tar', ...members.map((m) => m.name)].sort());
  for (const m of members) t.ok(readFileSync(join(dir, m.name)).equals(m.content), `${m.content.length} bytes`);
});
