// Path order and keys: string order of keys must equal apath order on raw bytes, for every pair.
import t from 'tap';
import {
  AFTER_ALL,
  BEFORE_ALL,
  comparePaths,
  displayPath,
  isInSubtree,
  isValidKey,
  keyToContentsPrefix,
  keyToPath,
  normaliseRelativePath,
  parentKey,
  parseDisplayPath,
  pathToContentsPrefix,
  pathToKey,
  ROOT_KEY,
} from '../../src/formats/path-key.js';

const b = (s: string | number[]): Buffer => (typeof s === 'string' ? Buffer.from(s) : Buffer.from(s));

/** Awkward names: bytes below '/', '.'-prefixed, prefixes of each other, non-UTF-8, high bytes. */
const NAMES: Buffer[] = [
  b('a'),
  b('a-b'),
  b('a.b'),
  b('ab'),
  b('b'),
  b('.hidden'),
  b('.'.repeat(3)),
  b('A'),
  b(' '),
  b('!'),
  b([0x01]),
  b([0x2e, 0x2e, 0x2e, 0x2d]),
  b([0xff]),
  b([0xc3, 0xa9]),
  b([0x66, 0xff, 0xfe]),
  b('a\nb'),
  b('x'.repeat(200)),
];

function allPaths(): Buffer[] {
  const paths: Buffer[] = [b('')];
  const some = NAMES.slice(0, 8);
  for (const n1 of NAMES) {
    paths.push(n1);
    for (const n2 of some) {
      paths.push(Buffer.concat([n1, b('/'), n2]));
      for (const n3 of some.slice(0, 4)) paths.push(Buffer.concat([n1, b('/'), n2, b('/'), n3]));
    }
  }
  return paths;
}

t.test('key order equals apath order for every pair of paths', async (t) => {
  const paths = allPaths();
  const keys = paths.map(pathToKey);
  let checked = 0;
  for (let i = 0; i < paths.length; i++) {
    for (let j = 0; j < paths.length; j++) {
      const byPath = Math.sign(comparePaths(paths[i]!, paths[j]!));
      const byKey = Math.sign(keys[i]! < keys[j]! ? -1 : keys[i]! > keys[j]! ? 1 : 0);
      if (byPath !== byKey) t.fail(`order differs for ${displayPath(paths[i]!)} vs ${displayPath(paths[j]!)}`);
      checked++;
    }
  }
  t.ok(checked > 100_000, `${checked} pairs compared`);
  t.ok(keys.every((k) => k > BEFORE_ALL && k < AFTER_ALL), 'sentinels bound every key');
});

t.test('apath order: direct children first, subtrees contiguous, bytes below "/"', async (t) => {
  const order = ['a', 'b', 'c', 'a/x', 'a/y', 'a/x/1', 'b/z'].map((p) => pathToKey(b(p)));
  t.same([...order].sort(), order, 'children of a directory come before anything deeper');
  t.ok(comparePaths(b('a/b/x'), b('a-b/x')) < 0, 'a/b/x before a-b/x: component-wise, not bytewise');
  t.ok(pathToKey(b('a/b/x')) < pathToKey(b('a-b/x')));
  t.ok(pathToKey(b('.hidden')) < pathToKey(b('a')), '"." sorts by its byte value');
  t.ok(pathToKey(b('ab')) > pathToKey(b('a')), 'a prefix name sorts first');
  t.ok(pathToKey(b([0xff])) > pathToKey(b('z')), 'non-UTF-8 bytes compare as bytes');
  t.equal(pathToKey(b('')), ROOT_KEY);
  // Subtree contiguity: everything below a/ lies between a/'s contents prefix bounds, nothing else does.
  const prefix = pathToContentsPrefix(b('a'));
  for (const path of allPaths()) {
    const key = pathToKey(path);
    const below = path.length > 2 && path[0] === 0x61 && path[1] === 0x2f;
    t.equal(key.startsWith(prefix), below, `${displayPath(path)} is${below ? '' : ' not'} below a/`);
  }
});

t.test('keys round-trip and reject unsafe components', async (t) => {
  for (const path of allPaths()) t.same(keyToPath(pathToKey(path)), path);
  t.equal(parentKey(pathToKey(b('a/b/c'))), pathToKey(b('a/b')));
  t.equal(parentKey(pathToKey(b('a'))), ROOT_KEY);
  t.equal(keyToContentsPrefix(pathToKey(b('a/b'))), pathToContentsPrefix(b('a/b')));
  t.ok(isInSubtree(pathToKey(b('a/b/c')), pathToKey(b('a'))));
  t.notOk(isInSubtree(pathToKey(b('ab/c')), pathToKey(b('a'))));
  for (const bad of ['', '0.', '02e.', '02e2e.', '02f.', '000.', '0612f62.', '061', '0A1.', '0611.', '2aa.', '161.', '0zz.', '061..']) {
    t.notOk(isValidKey(bad), `rejects ${JSON.stringify(bad)}`);
    t.throws(() => keyToPath(bad), { code: 'BLANKET_E_CORRUPT_OBJECT' });
  }
  for (const bad of ['a/../b', '..', 'a/./b', 'a//b']) t.throws(() => pathToKey(b(bad)), { code: 'BLANKET_E_USAGE' });
});

t.test('display form round-trips raw bytes', async (t) => {
  for (const path of allPaths()) t.same(parseDisplayPath(displayPath(path)), path, displayPath(path));
  t.equal(displayPath(b([0x66, 0xff])), 'f\\xff');
  t.equal(displayPath(b('é')), 'é');
  t.same(normaliseRelativePath(b('./a//b/')), b('a/b'));
});
