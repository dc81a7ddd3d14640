// The archive header: round trip, the check field, and every single-bit flip of it is an error naming it.
import t from 'tap';
import { createHash } from 'node:crypto';
import { baseIndexStem, classifyObjectName, decodeHeader, encodeHeader, headerCheck, objectNameOf, parseIndexStem, type ArchiveHeader, type ObjectKind } from '../../src/formats/archive-layout.js';

const header: ArchiveHeader = { format: 'blanket', version: 1, id: '0123456789abcdef0123456789abcdef', created: '2026-12-01T23:30:00.000Z' };

t.test('round trip, and the check is what sha256sum prints for the fields', async (t) => {
  const bytes = encodeHeader(header);
  t.same(decodeHeader(bytes), header);
  const json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  t.equal(json.check, createHash('sha256').update(`blanket\n1\n${header.id}\n${header.created}\n`).digest('hex'));
  t.equal(json.check, headerCheck(header));
});

t.test('every single-bit flip is detected', async (t) => {
  const bytes = encodeHeader(header);
  const missed: string[] = [];
  for (let at = 0; at < bytes.length; at++) {
    for (let bit = 0; bit < 8; bit++) {
      const flipped = Buffer.from(bytes);
      flipped[at]! ^= 1 << bit;
      try {
        decodeHeader(flipped);
        missed.push(`byte ${at} bit ${bit}`);
      } catch (error) {
        if (!/blanket\.json/.test((error as Error).message) || !/^BLANKET_E_/.test((error as { code?: string }).code ?? '')) missed.push(`byte ${at}: ${(error as Error).message}`);
      }
    }
  }
  t.same(missed, [], `${bytes.length * 8} flips, each an error naming blanket.json`);
});

t.test('a header without check (older) is accepted; a wrong check or an unknown field is not', async (t) => {
  const plain = Buffer.from(JSON.stringify(header));
  t.same(decodeHeader(plain), header);
  const tampered = Buffer.from(JSON.stringify({ ...header, id: header.id.replace('0', '1'), check: headerCheck(header) }));
  t.throws(() => decodeHeader(tampered), { code: 'BLANKET_E_CORRUPT_OBJECT', message: /checksum mismatch/ });
  t.throws(() => decodeHeader(Buffer.from(JSON.stringify({ ...header, extra: 1 }))), { code: 'BLANKET_E_CORRUPT_OBJECT', message: /unknown field "extra"/ });
});

t.test('version 2 (archives with a base) is read; a newer version is refused, saying to upgrade', async (t) => {
  const v2 = { ...header, version: 2 };
  t.same(decodeHeader(encodeHeader(v2)), v2);
  t.throws(() => decodeHeader(encodeHeader({ ...header, version: 3 })), { code: 'BLANKET_E_FORMAT_VERSION', message: /upgrade Blanket/ });
});

t.test('object names: packs, indexes, base indexes and base markers classify and name each other', async (t) => {
  const cases: Array<[string, ObjectKind, number, number, boolean]> = [
    ['layers/000003/00000012.tar.zst', 'pack', 3, 12, false],
    ['layers/000003/00000012.idx.zst', 'index', 3, 12, false],
    ['layers/000031/base-00000002.idx.zst', 'index', 31, 2, true],
    ['layers/000031/base', 'base-marker', 31, 0, true],
  ];
  for (const [name, kind, layer, seq, base] of cases) {
    const parsed = classifyObjectName(name);
    t.same(parsed && { kind: parsed.kind, layer: parsed.id.layer, seq: parsed.id.seq, base: parsed.base }, { kind, layer, seq, base }, name);
    t.equal(objectNameOf(kind, { layer, seq }, base), name, `${name} named back`);
  }
  t.equal(baseIndexStem({ layer: 31, seq: 2 }), '000031/base-00000002');
  t.same(parseIndexStem('000031/base-00000002'), { layer: 31, seq: 2, base: true });
  t.same(parseIndexStem('000031/00000002'), { layer: 31, seq: 2, base: false });
  for (const name of ['layers/000031/base-00000000.idx.zst', 'layers/000000/base', 'layers/000031/base.tar.zst', 'layers/000031/basex', 'layers/31/base']) {
    t.equal(classifyObjectName(name), undefined, `${name} is no archive object`);
  }
});
