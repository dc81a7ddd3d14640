// IndexChain: a layer's indexes run 1, 2, 3... each continuing the previous one's range, and a layer followed by a
// newer one ends at "~". Missing and damaged indexes are found, with the stretch of paths their loss costs.
import t from 'tap';
import { IndexChain, describeLostRange, type IndexRef, type LostRange } from '../../src/stages/state-reader.js';
import type { IndexHeader } from '../../src/formats/index-format.js';
import { AFTER_ALL, BEFORE_ALL, pathToKey } from '../../src/formats/path-key.js';

const key = (p: string): string => pathToKey(Buffer.from(p));
const ref = (seq: number): IndexRef => ({ id: { layer: 2, seq }, stem: `000002/${String(seq).padStart(8, '0')}`, size: 100 });
const header = (seq: number, after: string, through: string): IndexHeader => ({ layer: 2, seq, pack: null, after, through, time: 0 });

function follow(steps: Array<[number, IndexHeader | null]>, complete: boolean, previousSeq = 0): LostRange[] {
  const lost: LostRange[] = [];
  const chain = new IndexChain(2, (range) => lost.push(range), previousSeq);
  for (const [seq, h] of steps) chain.next(ref(seq), h);
  chain.end(complete);
  return lost;
}

t.test('an intact chain loses nothing', async (t) => {
  t.same(follow([[1, header(1, BEFORE_ALL, key('a'))], [2, header(2, key('a'), key('c'))], [3, header(3, key('c'), AFTER_ALL)]], true), []);
  t.same(follow([[1, header(1, BEFORE_ALL, key('a'))], [2, header(2, key('a'), key('a'))], [3, header(3, key('a'), key('b'))]], false), [], 'a partial newest layer, with a chunks-only index');
});

t.test('a missing index in the middle', async (t) => {
  const lost = follow([[1, header(1, BEFORE_ALL, key('a'))], [3, header(3, key('c'), AFTER_ALL)]], true);
  t.same(lost, [{ layer: 2, stems: ['000002/00000002'], after: key('a'), through: key('c') }]);
  t.match(describeLostRange(lost[0]!), 'what layer 2 recorded for paths after a through c is lost');
});

t.test('a damaged index, and a missing one after it', async (t) => {
  const lost = follow([[1, header(1, BEFORE_ALL, key('a'))], [2, null], [4, header(4, key('d'), AFTER_ALL)]], true);
  t.same(lost, [{ layer: 2, stems: ['000002/00000002', '000002/00000003'], after: key('a'), through: key('d') }]);
});

t.test('the first index missing', async (t) => {
  const lost = follow([[2, header(2, key('b'), AFTER_ALL)]], true);
  t.same(lost, [{ layer: 2, stems: ['000002/00000001'], after: BEFORE_ALL, through: key('b') }]);
});

t.test('the end of a complete layer missing or damaged', async (t) => {
  t.same(follow([[1, header(1, BEFORE_ALL, key('a'))]], true), [{ layer: 2, stems: ['000002/00000002'], after: key('a'), through: AFTER_ALL }], 'missing');
  t.same(follow([[1, header(1, BEFORE_ALL, key('a'))], [2, null]], false), [{ layer: 2, stems: ['000002/00000002'], after: key('a'), through: AFTER_ALL }], 'damaged, newest layer');
  t.same(follow([[1, header(1, BEFORE_ALL, key('a'))]], false), [], 'the newest layer may just be partial');
});

t.test('an index that does not continue its predecessor', async (t) => {
  const lost = follow([[1, header(1, BEFORE_ALL, key('a'))], [2, header(2, key('b'), AFTER_ALL)]], true);
  t.same(lost, [{ layer: 2, stems: ['000002/00000002'], after: key('a'), through: key('b') }]);
});

t.test('followed from the middle of a layer', async (t) => {
  t.same(follow([[5, header(5, key('e'), key('f'))], [6, header(6, key('f'), AFTER_ALL)]], true, 4), [], 'the first range is not checked');
  t.same(follow([[6, header(6, key('f'), AFTER_ALL)]], true, 4), [{ layer: 2, stems: ['000002/00000005'], after: BEFORE_ALL, through: key('f') }], 'gaps still are');
});

t.test('an empty lost range costs no path', async (t) => {
  const lost = follow([[1, header(1, BEFORE_ALL, key('a'))], [3, header(3, key('a'), AFTER_ALL)]], true);
  t.match(describeLostRange(lost[0]!), 'recorded no paths there');
});
