// Index codec: encode → decode round trip, fed whole and in odd-sized chunks; every malformation is a named error.
import t from 'tap';
import { createHash } from 'node:crypto';
import {
  decodeIndex,
  EntryBytes,
  EntryLine,
  escapeField,
  IndexDecoder,
  IndexEncoder,
  MEMBER_CONTENT,
  MEMBER_DELTA,
  MEMBER_SIGNATURE,
  unescapeField,
  type DeltaMember,
  type IndexHeader,
  type IndexParts,
  type MemberWords,
  type PackIndex,
  type PackMember,
} from '../../src/formats/index-format.js';
import { contentHash, type Entry } from '../../src/formats/entry.js';
import { AFTER_ALL, BEFORE_ALL, pathToKey } from '../../src/formats/path-key.js';

const NAME = 'layers/000002/00000003.idx.zst';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

/** `text` with its end line made again: a checksum that matches whatever was changed in it. */
function rehash(text: string): Buffer {
  const body = text.slice(0, text.lastIndexOf('end\t'));
  return Buffer.from(body + `end\t${createHash('sha256').update(Buffer.from(body, 'latin1')).digest('hex')}\n`, 'latin1');
}

/** Decodes `bytes` reading `parts` of it, fed in chunks of `size` bytes. */
function decodeFed(bytes: Buffer, parts: IndexParts, size = bytes.length): PackIndex {
  const decoder = new IndexDecoder(NAME, parts);
  for (let at = 0; at < bytes.length; at += size) decoder.push(bytes.subarray(at, at + size));
  return decoder.end();
}

function entry(path: string | Buffer, over: Partial<Entry> = {}): Entry {
  return {
    key: pathToKey(Buffer.isBuffer(path) ? path : Buffer.from(path)),
    kind: 'file',
    mode: 0o644,
    mtimeNs: 1_700_000_000_123_456_789n,
    ctimeNs: 1_700_000_001_000_000_001n,
    ino: 123456789012n,
    nlink: 1,
    size: 5,
    uid: 1000,
    gid: 1000,
    user: 'jo hn',
    group: 'ünïcode',
    hash: sha('hello'),
    chunks: [{ hash: sha('hello'), size: 5, pack: '000002/00000003' }],
    linkTarget: null,
    rdev: 0,
    ...over,
  };
}

const header: IndexHeader = { layer: 2, seq: 3, pack: '000002/00000003', packSize: 123_456, packChecksum: 'md5-etag:9e107d9d372bb6826bd81d3542a419d6-3', after: pathToKey(Buffer.from('a')), through: '~', time: 1_700_000_000_000 };

function sample(): { bytes: Buffer; segments: { first: string; last: string; entries: Entry[] }[] } {
  const big = entry('c/big', {
    size: 20,
    hash: contentHash([sha('1'), sha('2')]),
    chunks: [
      { hash: sha('1'), size: 8, pack: '000001/00000001' },
      { hash: sha('2'), size: 12, pack: '000002/00000003' },
    ],
  });
  const segments = [
    { first: pathToKey(Buffer.from('b')), last: pathToKey(Buffer.from('b')), entries: [entry('b')] },
    {
      first: pathToKey(Buffer.from('c')),
      last: pathToKey(Buffer.from([0x63, 0x2f, 0xff, 0xff])),
      entries: [
        entry('c', { kind: 'dir', size: 0, hash: null, chunks: [], mode: 0o2755 }),
        big,
        entry('c/empty', { size: 0, hash: sha(''), chunks: [] }),
        entry('c/fifo', { kind: 'fifo', size: 0, hash: null, chunks: [] }),
        entry('c/tty', { kind: 'chardev', size: 0, hash: null, chunks: [], rdev: 0x0501 }),
        entry(Buffer.from([0x63, 0x2f, 0xff, 0x0a]), { kind: 'symlink', size: 0, hash: null, chunks: [], linkTarget: Buffer.from('../% -\t\xff', 'latin1') }),
      ],
    },
    { first: pathToKey(Buffer.from('d/gone')), last: pathToKey(Buffer.from('d/gone2')), entries: [] },
  ];
  const encoder = new IndexEncoder();
  for (const s of segments) encoder.addSegment(s);
  encoder.addMember({ hash: sha('hello'), size: 5 });
  encoder.addMember({ hash: sha('2'), size: 12 });
  return { bytes: encoder.finish(header), segments };
}

t.test('round trip, whole and in odd-sized chunks', async (t) => {
  const { bytes, segments } = sample();
  const whole = decodeIndex(bytes, NAME);
  t.same(whole.header, header);
  t.same(whole.segments, segments);
  t.same(whole.members.map((m) => m.size), [5, 12]);
  for (const size of [1, 2, 3, 7, 13, 64, 4093]) {
    t.same(decodeFed(bytes, 'all', size), whole, `chunks of ${size}`);
  }
  t.match(bytes.toString('latin1'), /^blanket-index\t5\n/, 'starts with the magic line');
  t.match(bytes.toString('latin1'), /\npack\t000002\/00000003\npacksize\t123456\npacksum\tmd5-etag:9e107d9d372bb6826bd81d3542a419d6-3\n/, 'the data object, its size and store checksum');
  t.notOk(/[^\x20-\x7e\t\n]/.test(bytes.toString('latin1')), 'plain ASCII text');
});

t.test('a records read keeps E lines as EntryLines that parse to the same entries, whole and in odd-sized chunks', async (t) => {
  const { bytes, segments } = sample();
  for (const size of [bytes.length, 1, 3, 7, 64]) {
    const decoder = new IndexDecoder(NAME, 'records');
    for (let at = 0; at < bytes.length; at += size) decoder.push(bytes.subarray(at, at + size));
    const index = decoder.endRecords();
    t.same(index.members, [], `chunks of ${size}: no members`);
    t.same(
      index.segments.map((s) => ({ first: s.first, last: s.last, entries: s.entries.map((e) => (e instanceof EntryLine ? e.entry() : e)) })),
      segments,
      `chunks of ${size}: same segments once parsed`,
    );
    // A chunked file's line is parsed at once (its C lines follow it); every other line is kept as text.
    const kept = index.segments.flatMap((s) => s.entries).map((e) => (e instanceof EntryLine ? 'line' : e.chunks.length > 1 ? 'chunked' : 'entry'));
    t.same(kept, ['line', 'line', 'chunked', 'line', 'line', 'line', 'line'], `chunks of ${size}: kept as text where they can be`);
  }
  const decoder = new IndexDecoder(NAME, 'records');
  decoder.push(bytes);
  t.throws(() => decoder.end(), /records read ends with endRecords/, 'a records read has no plain end()');
});

/** A history read's members, one row each: kind, size, the words of the hash its lifetime follows and of a delta's base, its base pack. */
function memberWordsOf(words: MemberWords): Array<[number, number, number[], string | null]> {
  return Array.from({ length: words.count }, (_, i) => [
    words.kinds[i]!,
    words.sizes[i]!,
    [...words.words.subarray(6 * i, 6 * i + (words.kinds[i] === MEMBER_DELTA ? 6 : 3))],
    words.baseStems[i]! >= 0 ? words.stems[words.baseStems[i]!]! : null,
  ]);
}

/** memberWordsOf's row of a member as a whole read has it. */
function memberWordsOfMember(member: PackMember): [number, number, number[], string | null] {
  const words = (hash: string): number[] => [0, 8, 16].map((at) => parseInt(hash.slice(at, at + 8), 16) | 0);
  if (member.kind === undefined) return [MEMBER_CONTENT, member.size, words(member.hash), null];
  if (member.kind === 'signature') return [MEMBER_SIGNATURE, member.size, words(member.target), null];
  return [MEMBER_DELTA, member.size, [...words(member.target), ...words(member.base)], member.baseStem];
}

t.test("a history read: a records read with the members too; EntryLines give their chunk and copy as they were", async (t) => {
  const { bytes, segments } = sample();
  const all = decodeIndex(bytes, NAME);
  for (const size of [bytes.length, 1, 5, 64]) {
    const decoder = new IndexDecoder(NAME, 'history');
    for (let at = 0; at < bytes.length; at += size) decoder.push(bytes.subarray(at, at + size));
    const index = decoder.endRecords();
    t.same(index.members, [], `chunks of ${size}: the members come as numbers`);
    t.same(memberWordsOf(index.memberWords!), all.members.map(memberWordsOfMember), `chunks of ${size}: the members, as a whole read has them`);
    const records = index.segments.flatMap((s) => s.entries);
    t.same(
      records.map((e) => (e instanceof EntryLine ? e.entry() : e)),
      segments.flatMap((s) => s.entries),
      `chunks of ${size}: the same entries once parsed`,
    );
    for (const record of records) {
      if (!(record instanceof EntryLine)) continue;
      const entry = record.entry();
      t.ok(record instanceof EntryBytes, `chunks of ${size}: ${entry.key}: kept as its bytes`);
      t.equal(record.contentChunkHash(), entry.chunks[0]?.hash ?? null, `chunks of ${size}: ${entry.key}: its one chunk's hash, or none`);
      const words = new Int32Array(3);
      const hash = entry.chunks[0]?.hash;
      t.equal((record as EntryBytes).contentChunkWords(words), hash !== undefined, `chunks of ${size}: ${entry.key}: chunk words, or none`);
      if (hash !== undefined) t.same([...words], [0, 8, 16].map((at) => parseInt(hash.slice(at, at + 8), 16) | 0), `chunks of ${size}: ${entry.key}: the hash's first 96 bits`);
      const plain = new IndexDecoder(NAME, 'records');
      plain.push(bytes);
      const asLine = plain.endRecords().segments.flatMap((s) => s.entries).find((e) => e.key === entry.key) as EntryLine;
      t.equal(record.text, asLine.text, `chunks of ${size}: ${entry.key}: the same text as a records read's`);
      t.equal(record.location, asLine.location, `chunks of ${size}: ${entry.key}: the same location`);
    }
    // The records, added again to an encoder, make the same index (an EntryLine's text is copied as it is).
    const encoder = new IndexEncoder();
    for (const segment of index.segments) {
      encoder.openSegment(segment.first);
      for (const record of segment.entries) encoder.addRecord(record);
      encoder.closeSegment(segment.last);
    }
    for (const member of all.members) encoder.addMember(member);
    t.same(encoder.finish(header), bytes, `chunks of ${size}: re-encoded from the records, the same bytes`);
  }
  // A line whose hash is not hex: contentChunkHash refuses it as entry() does, naming the line.
  const text = bytes.toString('latin1');
  const line = text.split('\n').find((l) => l.startsWith('E\t') && /\t[0-9a-f]{64}\t\d{6}\/\d{8}\t/.test(l))!;
  const broken = line.replace(/\t([0-9a-f])([0-9a-f]{63})\t(\d{6}\/\d{8})\t/, '\tZ$2\t$3\t');
  t.not(broken, line, 'a line with a content location');
  const decoder = new IndexDecoder(NAME, 'history');
  decoder.push(rehash(text.replace(line, broken)));
  const bad = decoder.endRecords().segments.flatMap((s) => s.entries).find((e) => e instanceof EntryLine && e.text === broken) as EntryBytes;
  t.throws(() => bad.contentChunkHash(), /content hash/, 'a bad hash is refused when asked for');
  t.throws(() => bad.contentChunkWords(new Int32Array(3)), /content hash/, 'and when its words are');
});

t.test('a records read checks the structure of each E line, and the rest when it is parsed', async (t) => {
  const good = sample().bytes.toString('latin1');
  const line = good.split('\n').find((l) => l.startsWith('E\t') && l.includes('\tf\t'))!;
  const fields = line.split('\t');
  const read = (text: string): PackIndex<Entry | EntryLine> => {
    const decoder = new IndexDecoder(NAME, 'records');
    decoder.push(rehash(text));
    return decoder.endRecords();
  };
  // Structure: refused while reading.
  t.throws(() => read(good.replace(line, fields.slice(0, 16).join('\t'))), /entry has 16 fields/, 'field count');
  // Fields: kept as text, refused when parsed, naming the index and the line.
  const badMtime = [...fields.slice(0, 4), '12x4', ...fields.slice(5)].join('\t');
  const index = read(good.replace(line, badMtime));
  const record = index.segments.flatMap((s) => s.entries).find((e) => e.key === fields[1])!;
  t.ok(record instanceof EntryLine, 'a line with a malformed field is kept as text');
  t.throws(() => (record as EntryLine).entry(), { code: 'BLANKET_E_CORRUPT_OBJECT', message: new RegExp(`${NAME.replace(/[./]/g, '\\$&')} \\(line \\d+\\): malformed mtime`) }, 'and refused when parsed');
  // A key that sorts inside its segment but is not a key ("062" lacks its final "."): refused when parsed.
  const encoder = new IndexEncoder();
  encoder.addSegment({ first: pathToKey(Buffer.from('a')), last: pathToKey(Buffer.from('c')), entries: [entry('b')] });
  const plain = encoder.finish({ ...header, after: '!' }).toString('latin1');
  t.ok(plain.includes(`\t${pathToKey(Buffer.from('b'))}\t`) && pathToKey(Buffer.from('b')) === '062.', 'the key of b is 062.');
  const record2 = read(plain.replace('\t062.\t', '\t062\t')).segments[0]!.entries[0]!;
  t.ok(record2 instanceof EntryLine && record2.key === '062', 'kept as text');
  t.throws(() => (record2 as EntryLine).entry(), /malformed entry key/, 'a malformed key is refused when parsed');
});

t.test('an index-only, segment-less index (no-change run) round-trips', async (t) => {
  const bytes = new IndexEncoder().finish({ ...header, pack: null, after: '!' });
  const index = decodeIndex(bytes, NAME);
  t.same(index.segments, []);
  t.equal(index.header.pack, null);
  t.ok(bytes.length < 300, `${bytes.length} bytes`);
});

t.test('field escaping', async (t) => {
  for (const s of ['', '-', '%', 'a b', '\t\n', 'plain', '\xff\x00']) {
    const raw = Buffer.from(s, 'latin1');
    t.same(unescapeField(escapeField(raw)), raw, JSON.stringify(s));
  }
  t.equal(unescapeField('%zz'), undefined);
});

/** Position of the last S line of an index's lines. */
function lastSegmentLine(lines: readonly string[]): number {
  let at = -1;
  lines.forEach((line, i) => {
    if (line.startsWith('S\t')) at = i;
  });
  return at;
}

t.test('malformed indexes are errors naming the object', async (t) => {
  const good = sample().bytes.toString('latin1');
  const lines = good.split('\n');
  const mutate = (fn: (ls: string[]) => string[]): Buffer => rehash(fn([...lines]).join('\n'));
  const cases: Array<[string, Buffer]> = [
    ['truncated', Buffer.from(good.slice(0, good.length / 2), 'latin1')],
    ['no end line', Buffer.from(lines.slice(0, -2).join('\n') + '\n', 'latin1')],
    ['flipped byte', Buffer.from(good.replace('jo%20hn', 'jo%20hm'), 'latin1')],
    ['wrong magic', mutate((ls) => ['blanket-index\t9', ...ls.slice(1)])],
    ['entry outside its segment', mutate((ls) => ls.map((l) => l.replace(/^E\t062\./, `E\t${pathToKey(Buffer.from('bb'))}`)))],
    ['segments out of order', mutate((ls) => { const i = ls.findIndex((l) => l.startsWith('S')); const j = ls.findIndex((l, k) => k > i && l.startsWith('S\t')); [ls[i], ls[j]] = [ls[j]!, ls[i]!]; return ls; })],
    // The S lines after the first (read without splitting them): fields, keys, order, bytes.
    ['segment line with a third key', mutate((ls) => ls.map((l, i) => (i === lastSegmentLine(ls) ? `${l}\t${l.split('\t')[2]}` : l)))],
    ['segment line with one key', mutate((ls) => ls.map((l, i) => (i === lastSegmentLine(ls) ? l.split('\t').slice(0, 2).join('\t') : l)))],
    ['segment key that is no key', mutate((ls) => ls.map((l, i) => (i === lastSegmentLine(ls) ? l.replace(/^S\t[^\t]+/, 'S\tzz') : l)))],
    ['segment key not ASCII', mutate((ls) => ls.map((l, i) => (i === lastSegmentLine(ls) ? l.replace(/^S\t1/, 'S\t\xe9') : l)))],
    ['inverted segment', mutate((ls) => ls.map((l, i) => (i === lastSegmentLine(ls) ? ['S', l.split('\t')[2], l.split('\t')[1]].join('\t') : l)))],
    ['segment before the range', mutate((ls) => ls.map((l) => (l.startsWith('after') ? `after\t${pathToKey(Buffer.from('dir/zz'))}` : l)))],
    ['chunk count mismatch', mutate((ls) => ls.map((l) => l.replace('\t+2\t', '\t+3\t')))],
    ['bad kind', mutate((ls) => ls.map((l) => l.replace(/^(E\t[^\t]+\t)f/, '$1q')))],
    ['non-ASCII', mutate((ls) => ls.map((l) => l.replace('jo%20hn', 'jö')))],
    ['negative size', mutate((ls) => ls.map((l) => l.replace(/^(E(?:\t[^\t]+){7}\t)5\t/, '$1-5\t')))],
    ['mode out of range', mutate((ls) => ls.map((l) => l.replace(/^(E\t[^\t]+\tf\t)644/, '$177777')))],
    ['unsafe key', mutate((ls) => ls.map((l) => l.replace(/^E\t062\./, 'E\t02e2e.')))],
    ['unknown record', mutate((ls) => [...ls.slice(0, 12), 'X\tfoo', ...ls.slice(12)])],
    ['unknown header field', mutate((ls) => [...ls.slice(0, 3), 'colour\tblue', ...ls.slice(3)])],
    ['missing header field', mutate((ls) => ls.filter((l) => !l.startsWith('seq')))],
    ['version 3 without packsize', mutate((ls) => ls.filter((l) => !l.startsWith('packsize')))],
    ['version 3 without packsum', mutate((ls) => ls.filter((l) => !l.startsWith('packsum')))],
    ['negative packsize', mutate((ls) => ls.map((l) => (l.startsWith('packsize') ? 'packsize\t-1' : l)))],
    ['malformed packsum', mutate((ls) => ls.map((l) => (l.startsWith('packsum') ? 'packsum\tno kind' : l)))],
    ['packsize without a data object', mutate((ls) => ls.map((l) => (l.startsWith('pack\t') ? 'pack\t-' : l)))],
    ['packsize in a version 2 index', mutate((ls) => ['blanket-index\t2', ...ls.slice(1)])],
  ];
  for (const [what, bytes] of cases) {
    t.throws(() => decodeIndex(bytes, NAME), { code: /BLANKET_E_(CORRUPT_OBJECT|FORMAT_VERSION)/, message: new RegExp(NAME.replace(/\./g, '\\.')) }, what);
  }
});

t.test('members-only decoding: same header and members, no segments, still checksummed', async (t) => {
  const { bytes } = sample();
  const full = decodeIndex(bytes, NAME);
  for (const size of [bytes.length, 1, 7, 64]) {
    const index = decodeFed(bytes, 'members', size);
    t.same(index.header, full.header, `header, fed in ${size}-byte chunks`);
    t.same(index.members, full.members, `members, fed in ${size}-byte chunks`);
    t.same(index.segments, [], 'no segments');
    const big = full.segments[1]!.entries[1]!;
    t.same(
      index.chunkedFiles,
      [{ key: big.key, size: big.size, mtimeNs: big.mtimeNs, ctimeNs: big.ctimeNs, ino: big.ino }],
      `the stamp of the chunked file, and of no other entry, fed in ${size}-byte chunks`,
    );
  }
  t.same(full.chunkedFiles, [], 'a full read gives its entries instead');
  t.ok(full.members.length > 0, 'the sample lists members');
  // A flipped byte inside an entry line, which members-only decoding does not parse, still fails the checksum.
  const at = bytes.indexOf('\nE\t') + 5;
  const flipped = Buffer.from(bytes);
  flipped[at] = flipped[at]! ^ 0x01;
  t.throws(() => decodeFed(flipped, 'members'), /checksum mismatch/);
});

t.test('entries-only decoding: same header and segments, no members, still checksummed', async (t) => {
  const { bytes } = sample();
  const full = decodeIndex(bytes, NAME);
  t.ok(full.members.length > 0, 'the sample lists members');
  for (const size of [bytes.length, 1, 7, 64]) {
    const index = decodeFed(bytes, 'entries', size);
    t.same(index.header, full.header, `header, fed in ${size}-byte chunks`);
    t.same(index.segments, full.segments, `segments, fed in ${size}-byte chunks`);
    t.same(index.members, [], 'no members');
  }
  // A flipped byte inside a member line, which entries-only decoding does not parse, still fails the checksum.
  const at = bytes.indexOf('\nH\t') + 5;
  const flipped = Buffer.from(bytes);
  flipped[at] = flipped[at]! ^ 0x01;
  t.throws(() => decodeFed(flipped, 'entries'), /checksum mismatch/);
  // An entry after the members is still out of place.
  const text = bytes.toString('latin1');
  const firstMember = text.indexOf('\nH\t') + 1;
  const memberLine = text.slice(firstMember, text.indexOf('\n', firstMember) + 1);
  const misplaced = rehash(text.replace(memberLine, '').replace(/\nE\t/, `\n${memberLine}E\t`));
  t.throws(() => decodeIndex(misplaced, NAME), /entry after members/, 'a full read refuses it');
  t.throws(() => decodeFed(misplaced, 'entries'), /entry after members/, 'so does an entries-only read');
});

t.test('content hash: one chunk is its own hash; several are hashed as a list; none is the empty SHA-256', async (t) => {
  t.equal(contentHash([sha('x')]), sha('x'));
  t.equal(contentHash([]), sha(''));
  t.equal(contentHash([sha('1'), sha('2')]), sha(`${sha('1')}\n${sha('2')}\n`), 'what `sha256sum` of the chunks, piped to sha256sum, prints');
});

/** The sample index rewritten: another version line, another hash on the chunked entry, a fixed end line. */
function variant(version: string, bigHash: string): Buffer {
  const text = sample().bytes.toString('latin1');
  const older = Number(version) < 3 ? text.replace(/^packsize\t.*\n/m, '').replace(/^packsum\t.*\n/m, '') : text;
  return rehash(older.replace(/^blanket-index\t\d+\n/, `blanket-index\t${version}\n`).replace(contentHash([sha('1'), sha('2')]), bigHash));
}

t.test('version 2 rejects a chunked entry whose hash is not that of its chunk list', async (t) => {
  t.equal(decodeIndex(variant('2', contentHash([sha('1'), sha('2')])), NAME).segments.length, 3, 'the sample itself decodes');
  t.throws(() => decodeIndex(variant('2', sha('big')), NAME), /content hash does not match its chunks/);
  t.throws(() => encodeBad(), /content hash does not match its chunks/, 'the encoder refuses one too');
});

function encodeBad(): never {
  const encoder = new IndexEncoder();
  encoder.addSegment({
    first: pathToKey(Buffer.from('f')),
    last: pathToKey(Buffer.from('f')),
    entries: [entry('f', { size: 3, hash: sha('whole'), chunks: [{ hash: sha('1'), size: 1, pack: '000001/00000001' }, { hash: sha('2'), size: 2, pack: '000001/00000001' }] })],
  });
  throw new Error('encoder accepted a chunked entry with a wrong hash');
}

t.test('version 3 records the data object: size always, the store checksum when there is one; older versions have neither', async (t) => {
  const plain = sample().bytes.toString('latin1');
  const noChecksum = rehash(plain.replace(/^packsum\t.*$/m, 'packsum\t-'));
  const { packChecksum: _, ...withoutChecksum } = header;
  t.same(decodeIndex(noChecksum, NAME).header, withoutChecksum, 'packsum "-": no checksum');
  t.notOk('packChecksum' in decodeIndex(noChecksum, NAME).header, 'and no checksum field');
  const v2 = decodeIndex(variant('2', contentHash([sha('1'), sha('2')])), NAME).header;
  t.equal(v2.packSize, undefined, 'version 2: no recorded size');
  t.equal(v2.pack, header.pack, 'version 2: the data object all the same');
  const indexOnly = new IndexEncoder().finish({ ...header, pack: null, packSize: undefined, packChecksum: undefined });
  t.notMatch(indexOnly.toString('latin1'), /packsize|packsum/, 'an index-only pack writes neither');
  t.throws(() => new IndexEncoder().finish({ ...header, packSize: undefined }), /records its size/, 'the encoder wants the size of a data object');
  t.throws(() => new IndexEncoder().finish({ ...header, packChecksum: 'md5 etag' }), /malformed store checksum/, 'and a well-formed checksum');
});

t.test('version 1 indexes (whole-file SHA-256 on chunked entries) still read, with the chunk-list hash', async (t) => {
  const index = decodeIndex(variant('1', sha('a whole-file hash')), NAME);
  const big = index.segments[1]!.entries.find((e) => e.chunks.length === 2)!;
  t.equal(big.hash, contentHash([sha('1'), sha('2')]));
  t.throws(() => decodeIndex(variant('6', contentHash([sha('1'), sha('2')])), NAME), /format version 6 is not supported/);
});

t.test('names that change from entry to entry, and back, decode as written (the decoder keeps the last one)', async (t) => {
  const users = ['root', 'jo hn', 'root', 'ünï%', '', 'root', 'x'.repeat(40), 'x'.repeat(40)];
  const entries = users.map((user, i) => entry(`u${i}`, { user, group: users[users.length - 1 - i]!, uid: i, gid: 7 * i }));
  const encoder = new IndexEncoder();
  encoder.addSegment({ first: entries[0]!.key, last: entries[entries.length - 1]!.key, entries });
  const bytes = encoder.finish(header);
  for (const size of [bytes.length, 3, 11]) {
    t.same(decodeFed(bytes, 'all', size).segments[0]!.entries, entries, `fed in ${size}-byte chunks`);
  }
});

t.test('each field of an entry line is checked: the message names what is wrong', async (t) => {
  const good = sample().bytes.toString('latin1');
  // The first E line (path "b", a one-chunk file): replace field n (0 = "E").
  const first = good.split('\n').find((l) => l.startsWith('E\t'))!;
  const withField = (n: number, value: string): Buffer => {
    const fields = first.split('\t');
    fields[n] = value;
    return rehash(good.replace(first, fields.join('\t')));
  };
  const cases: Array<[string, Buffer, RegExp]> = [
    ['16 fields', rehash(good.replace(first, first.slice(0, first.lastIndexOf('\t')))), /entry has 16 fields, expected 17/],
    ['18 fields', rehash(good.replace(first, first + '\t0')), /entry has 18 fields, expected 17/],
    ['mode with a 9', withField(3, '649'), /malformed mode/],
    ['empty mode', withField(3, ''), /malformed mode/],
    ['six-digit mode', withField(3, '000644'), /malformed mode/],
    ['mtime with a plus sign', withField(4, '+1'), /malformed mtime/],
    ['mtime of 31 digits', withField(4, '1'.repeat(31)), /malformed mtime/],
    ['empty ctime', withField(5, ''), /malformed ctime/],
    ['inode with a leading zero', withField(6, '0123'), /malformed inode/],
    ['nlink not a number', withField(7, 'x'), /malformed nlink/],
    ['size beyond 2^53', withField(8, '9007199254740993'), /size out of range/],
    ['negative uid', withField(9, '-1'), /malformed uid/],
    ['gid with a space', withField(10, '1 0'), /non-ASCII or control bytes|malformed gid/],
    ['bad escape in the user', withField(11, 'a%zz'), /malformed user name/],
    ['bad escape in the group', withField(12, '%4'), /malformed group name/],
    ['uppercase hash', withField(13, sha('hello').toUpperCase()), /file entry without a valid content hash/],
    ['63-digit hash', withField(13, sha('hello').slice(1)), /file entry without a valid content hash/],
    ['bad stem', withField(14, '000002/3'), /malformed content location/],
    ['target on a file', withField(15, 'x'), /symlink target on a non-symlink entry/],
    ['rdev negative', withField(16, '-1'), /malformed rdev/],
  ];
  for (const [what, bytes, message] of cases) {
    t.throws(() => decodeIndex(bytes, NAME), { code: 'BLANKET_E_CORRUPT_OBJECT', message }, what);
  }
  t.equal(decodeIndex(withField(4, '-1'), NAME).segments[0]!.entries[0]!.mtimeNs, -1n, 'a time before 1970 is fine');
  t.equal(decodeIndex(withField(4, '0'), NAME).segments[0]!.entries[0]!.mtimeNs, 0n);
  t.equal(decodeIndex(withField(8, '9007199254740991'), NAME).segments[0]!.entries[0]!.size, 2 ** 53 - 1, 'the largest safe integer is a size');
});

t.test('segments built entry by entry are byte-identical to whole ones; misuse is refused', async (t) => {
  const entries = Array.from({ length: 3000 }, (_, i) => entry(`dir/f${String(i).padStart(5, '0')}`, { user: i % 7 === 0 ? 'seven' : 'jo hn' }));
  const whole = new IndexEncoder();
  whole.addSegment({ first: entries[0]!.key, last: entries[2999]!.key, entries });
  whole.addSegment({ first: pathToKey(Buffer.from('dir/zz')), last: pathToKey(Buffer.from('dir/zz')), entries: [] });
  whole.addMember({ hash: sha('m'), size: 9 });
  const streamed = new IndexEncoder();
  streamed.openSegment(entries[0]!.key);
  for (const e of entries) streamed.addEntry(e);
  t.equal(streamed.entries, 3000, 'entries of the open segment count');
  streamed.closeSegment(entries[2999]!.key);
  streamed.openSegment(pathToKey(Buffer.from('dir/zz')));
  streamed.closeSegment(pathToKey(Buffer.from('dir/zz')));
  streamed.addMember({ hash: sha('m'), size: 9 });
  const a = whole.finish(header);
  t.ok(a.length > 3000 * 200, 'the text spans several buffers');
  t.same(streamed.finish(header), a);
  t.same(decodeIndex(a, NAME).segments[0]!.entries, entries);

  const misuse = new IndexEncoder();
  t.throws(() => misuse.addEntry(entries[0]!), /outside any segment/);
  misuse.openSegment(entries[5]!.key);
  t.throws(() => misuse.openSegment(entries[6]!.key), /while one is open/);
  t.throws(() => misuse.addEntry(entries[4]!), /out of order/);
  misuse.addEntry(entries[5]!);
  t.throws(() => misuse.addEntry(entries[5]!), /out of order/);
  t.throws(() => misuse.finish(header), /still open/);
  t.throws(() => misuse.closeSegment(entries[4]!.key), /inverted|ends before/);
  misuse.closeSegment(entries[6]!.key);
  t.throws(() => misuse.openSegment(entries[6]!.key), /out of order/);
});

t.test('a large index: segments moved, not copied, and written as several zstd frames that read back', async (t) => {
  const { compressIndexText } = await import('../../src/stages/index-compression.js');
  const { splitFrames } = await import('../../src/formats/zstd-frames.js');
  const { zstdDecompress } = await import('../../src/stages/zstd.js');
  // One big segment (over the 64 KiB taken over whole) between two small ones (copied).
  const names = Array.from({ length: 20_000 }, (_, i) => `f/${String(i).padStart(6, '0')}`);
  const encoder = new IndexEncoder();
  const small = { first: pathToKey(Buffer.from('b')), last: pathToKey(Buffer.from('b')), entries: [entry('b')] };
  const bigSegment = { first: pathToKey(Buffer.from(names[0]!)), last: pathToKey(Buffer.from(names.at(-1)!)), entries: names.map((n) => entry(n)) };
  const tail = { first: pathToKey(Buffer.from('h/x')), last: pathToKey(Buffer.from('h/x')), entries: [entry('h/x')] };
  for (const s of [small, bigSegment, tail]) encoder.addSegment(s);
  for (let i = 0; i < 20_000; i++) encoder.addMember({ hash: sha(String(i)), size: 5 });
  const parts = encoder.finishParts(header);
  const text = Buffer.concat(parts);
  t.ok(text.length > 3 << 20, `${text.length} bytes of text`);
  const decoded = decodeIndex(text, NAME);
  t.same(decoded.segments.map((s) => s.entries.length), [1, 20_000, 1], 'every entry in its segment');
  const compressed = await compressIndexText(parts, 3);
  const frames = [...splitFrames(compressed)];
  t.ok(frames.length >= 3, `${frames.length} frames`);
  const back = Buffer.concat(await Promise.all(frames.map((f) => zstdDecompress(f))));
  t.ok(back.equals(text), 'the frames decompress to the text');
  t.same(await compressIndexText([Buffer.from('short\n')], 3).then((c) => [...splitFrames(c)].length), 1, 'a small index is one frame');
});

t.test('version 4 members: content, rdiff deltas and signatures round-trip; malformed ones are damage', async (t) => {
  const members: PackMember[] = [
    { hash: sha('chunk'), size: 4096 },
    { kind: 'delta', hash: sha('delta'), size: 321, target: sha('new'), targetSize: 4_194_304, base: sha('old'), baseStem: '000001/00000007', depth: 2, chainBytes: 900 },
    { kind: 'signature', hash: sha('sig'), size: 24_588, target: sha('new') },
  ];
  const encoder = new IndexEncoder();
  encoder.addSegment({ first: pathToKey(Buffer.from('b')), last: pathToKey(Buffer.from('b')), entries: [entry('b')] });
  for (const member of members) encoder.addMember(member);
  const bytes = encoder.finish(header);
  const text = bytes.toString('latin1');
  t.match(text, `H\t${sha('delta')}\t321\trdiff\t${sha('new')}\t4194304\t${sha('old')}\t000001/00000007\t2\t900\n`, 'a delta line');
  t.match(text, `H\t${sha('sig')}\t24588\tsig\t${sha('new')}\n`, 'a signature line');
  const history = (bytes: Buffer, size = bytes.length): PackIndex<Entry | EntryLine> => {
    const decoder = new IndexDecoder(NAME, 'history');
    for (let at = 0; at < bytes.length; at += size) decoder.push(bytes.subarray(at, at + size));
    return decoder.endRecords();
  };
  for (const size of [bytes.length, 1, 7, 64]) {
    t.same(decodeFed(bytes, 'all', size).members, members, `whole members, fed in ${size}-byte chunks`);
    t.same(decodeFed(bytes, 'members', size).members, members, `members-only read, ${size}-byte chunks`);
    t.same(memberWordsOf(history(bytes, size).memberWords!), members.map(memberWordsOfMember), `history read: the members as numbers, ${size}-byte chunks`);
  }
  // A history read takes content members ("H hash size") from their bytes: what it cannot take so is read as any
  // other read reads it, and refused alike.
  const contentLine = text.split('\n').find((l) => l.startsWith('H\t') && l.split('\t').length === 3)!;
  for (const [what, line] of [
    ['a hash not hex', contentLine.replace(/^H\t./, 'H\tZ')],
    ['a hash too short', contentLine.replace(/^H\t./, 'H\t')],
    ['a size with a leading zero', contentLine.replace(/\t(\d+)$/, '\t0$1')],
    ['a size not a number', contentLine.replace(/\t(\d+)$/, '\t4k')],
    ['no size', contentLine.replace(/\t(\d+)$/, '\t')],
    ['a size past 2^53', contentLine.replace(/\t(\d+)$/, '\t99999999999999999')],
  ] as const) {
    const damaged = rehash(text.replace(contentLine, line));
    t.throws(() => decodeIndex(damaged, NAME), { code: 'BLANKET_E_CORRUPT_OBJECT' }, `whole read: ${what}`);
    t.throws(() => history(damaged), { code: 'BLANKET_E_CORRUPT_OBJECT' }, `history read: ${what}`);
  }
  const big = rehash(text.replace(contentLine, contentLine.replace(/\t(\d+)$/, '\t4503599627370496')));
  t.same(memberWordsOf(history(big).memberWords!)[0]![1], 4503599627370496, 'a 16-digit size (2^52) is read too');
  const deltaLine = text.split('\n').find((l) => l.includes('\trdiff\t'))!;
  const bad = (what: string, line: string): [string, Buffer] => [what, rehash(text.replace(deltaLine, line))];
  const fields = deltaLine.split('\t');
  const withField = (n: number, value: string): string => fields.map((f, i) => (i === n ? value : f)).join('\t');
  for (const [what, damaged] of [
    bad('unknown kind', withField(3, 'xdelta')),
    bad('target not a hash', withField(4, 'zz')),
    bad('base stem malformed', withField(7, '1/2')),
    bad('depth 0', withField(8, '0')),
    bad('chain smaller than the delta', withField(9, '10')),
    bad('a field missing', fields.slice(0, 9).join('\t')),
    bad('a field too many', `${deltaLine}\t1`),
    bad('a signature of nothing', `H\t${sha('s')}\t5\tsig`),
  ]) {
    t.throws(() => decodeIndex(damaged, NAME), { code: 'BLANKET_E_CORRUPT_OBJECT' }, what);
  }
  // Before version 4 an H line has three fields.
  const v3 = rehash(text.replace(/^blanket-index\t5\n/, 'blanket-index\t3\n'));
  t.throws(() => decodeIndex(v3, NAME), /malformed member line/, 'a delta in a version 3 index');
  t.throws(() => new IndexEncoder().addMember({ ...(members[1] as DeltaMember), depth: 0 }), RangeError, 'the encoder refuses a delta of depth 0');
});

t.test('base indexes (version 5): `base yes`, no data object; refused in older versions and with a pack', async (t) => {
  const entries = sample().segments.flatMap((segment) => segment.entries);
  const encoder = new IndexEncoder();
  encoder.openSegment(entries[0]!.key);
  for (const entry of entries) encoder.addEntry(entry);
  encoder.closeSegment(entries[entries.length - 1]!.key);
  const baseHeader = { layer: 7, seq: 2, pack: null, after: BEFORE_ALL, through: AFTER_ALL, time: 1_700_000_000_000, base: true as const };
  const bytes = encoder.finish(baseHeader);
  t.match(bytes.toString('latin1'), /^blanket-index\t5\n[\s\S]*\nbase\tyes\n/, 'written as version 5 with the base line');
  const decoded = decodeIndex(bytes, NAME);
  t.same(decoded.header, baseHeader, 'the header reads back');
  t.equal(decoded.segments[0]!.entries.length, entries.length, 'and its entries');
  for (const piece of [1, 7, 4093]) {
    const decoder = new IndexDecoder(NAME);
    for (let i = 0; i < bytes.length; i += piece) decoder.push(bytes.subarray(i, i + piece));
    t.same(decoder.end().header, baseHeader, `fed in ${piece}-byte pieces`);
  }
  const text = bytes.toString('latin1');
  t.throws(() => decodeIndex(rehash(text.replace(/^blanket-index\t5\n/, 'blanket-index\t4\n')), NAME), /base in a version 4 index/);
  t.throws(() => decodeIndex(rehash(text.replace(/^base\tyes$/m, 'base\tno')), NAME), /malformed base/);
  t.throws(() => decodeIndex(rehash(text.replace(/^pack\t-$/m, 'pack\t000007/00000002\npacksize\t10\npacksum\t-')), NAME), /base index with a data object/);
  t.notOk('base' in decodeIndex(sample().bytes, NAME).header, 'an index of a pack has no base field');
});
