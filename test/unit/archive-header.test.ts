// The archive header: round trip, the check field, and every single-bit flip of it is an error naming it.
import t from 'tap';
import { createHash } from 'node:crypto';
import { decodeHeader, encodeHeader, headerCheck, type ArchiveHeader } from '../../src/formats/archive-layout.js';

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
