import t from 'tap';
import { pathToKey, comparePaths } from '../../src/formats/path-key.js';
t.test('smoke', async (t) => {
  t.equal(pathToKey(Buffer.from('a')), '061.');
  t.equal(comparePaths(Buffer.from('a/b/x'), Buffer.from('a-b/x')), -1);
});
