import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createExcludeMatcher, decodePath, readExcludeFile } from '../../src/stages/exclude.js';
import { walk, type WalkFs } from '../../src/stages/walker.js';
import { BlanketError, ErrorCodes } from '../../src/formats/errors.js';

const B = (s: string | number[]): Buffer => (typeof s === 'string' ? Buffer.from(s) : Buffer.from(s));

function tmpRoot(t: { teardown(fn: () => void): void }): string {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'blanket-exclude-')));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function build(root: string, files: string[], dirs: string[] = []): void {
  for (const d of dirs) fs.mkdirSync(path.join(root, d), { recursive: true });
  for (const f of files) {
    fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    fs.writeFileSync(path.join(root, f), f);
  }
}

async function walkedPaths(root: string, isExcluded: (rel: Buffer, isDir: boolean) => boolean, wfs?: WalkFs): Promise<string[]> {
  const out: string[] = [];
  for await (const e of walk({ root, isExcluded, ...(wfs ? { fs: wfs } : {}) })) out.push(e.path.toString());
  return out;
}

const PATTERNS = ['*.log', 'build/', '!keep.log', 'a/**/tmp'];

t.test('gitignore semantics', async (t) => {
  const ex = createExcludeMatcher(PATTERNS);
  const cases: [string, boolean, boolean][] = [
    ['x.log', false, true],
    ['d/e/y.log', false, true],
    ['keep.log', false, false],
    ['d/keep.log', false, false],
    ['build', true, true],
    ['build', false, false], // `build/` matches directories only
    ['src/build', true, true], // at any depth
    ['src/build', false, false],
    ['a/tmp', true, true],
    ['a/tmp', false, true],
    ['a/x/tmp', true, true],
    ['a/x/y/tmp', false, true],
    ['b/tmp', true, false],
    ['tmp', true, false],
    ['a', true, false],
    ['a/tmpx', true, false],
    ['X.LOG', false, false], // case-sensitive by default, like git on Linux
    ['notes.txt', false, false],
  ];
  for (const [p, isDir, expected] of cases) t.equal(ex(B(p), isDir), expected, `${p}${isDir ? '/' : ''} -> ${expected}`);
  t.equal(createExcludeMatcher(['*.log'], { ignoreCase: true })(B('X.LOG'), false), true, 'ignoreCase option');
  t.equal(ex(Buffer.alloc(0), true), false, 'the root is never excluded');
  t.equal(createExcludeMatcher([])(B('anything'), false), false, 'no patterns');
  t.equal(createExcludeMatcher(['', '   '])(B('anything'), false), false, 'blank patterns ignored');
  t.equal(createExcludeMatcher(['/top'])(B('top'), false), true, 'anchored pattern');
  t.equal(createExcludeMatcher(['/top'])(B('sub/top'), false), false, 'anchored pattern, deeper');
  t.equal(createExcludeMatcher(['.*'])(B('.hidden'), true), true, 'dotfiles');
});

t.test('awkward names: non-UTF-8 bytes pass through as latin1, odd names never throw', async (t) => {
  const ex = createExcludeMatcher(['*.log', 'f\u00ff*', '\u00e9t\u00e9']);
  t.equal(ex(Buffer.concat([B([0xff, 0xfe]), B('.log')]), false), true, '*.log on a non-UTF-8 name');
  t.equal(ex(B([0x66, 0xff, 0x80]), false), true, 'invalid byte 0xff matched as latin1 \\u00ff');
  t.equal(ex(B('été'), false), true, 'valid UTF-8 decoded as UTF-8');
  t.equal(ex(B([0xc3]), false), false, 'truncated sequence does not throw');
  for (const name of ['...', '..foo', '.../x', 'a\nb', 'a\\b', ' lead', 'trail ', '#hash', '!bang', 'x'.repeat(255)]) {
    t.doesNotThrow(() => ex(B(name), false), JSON.stringify(name));
    t.doesNotThrow(() => ex(B(name), true), JSON.stringify(name) + '/');
  }
  t.equal(decodePath(B([0x61, 0xff, 0xc3, 0xa9, 0x80])), 'a\u00ffé\u0080');
  t.equal(decodePath(B([0xef, 0xbf, 0xbd, 0xff])), '\ufffd\u00ff', 'a real U+FFFD stays U+FFFD');
  t.equal(decodePath(B([0xed, 0xa0, 0x80])), '\u00ed\u00a0\u0080', 'surrogate encoding is invalid: latin1');
});

t.test('readExcludeFile: comments, blank lines, CRLF; errors name the file', async (t) => {
  const dir = tmpRoot(t);
  const file = path.join(dir, 'excludes');
  fs.writeFileSync(file, '\ufeff# a comment\n\n*.log\r\nbuild/\n\\#literal-hash\n   \n!keep.log\n  # indented is a pattern\na/**/tmp');
  t.same(readExcludeFile(file), ['*.log', 'build/', '\\#literal-hash', '!keep.log', '  # indented is a pattern', 'a/**/tmp']);
  const matcher = createExcludeMatcher(readExcludeFile(file));
  t.equal(matcher(B('#literal-hash'), false), true, 'escaped hash is a pattern');
  t.equal(matcher(B('keep.log'), false), false);

  const missing = path.join(dir, 'nope');
  t.throws(() => readExcludeFile(missing), { name: 'BlanketError', code: ErrorCodes.USAGE });
  try {
    readExcludeFile(missing);
  } catch (error) {
    t.ok(error instanceof BlanketError && error.message.includes(missing), 'message names the file');
  }
  t.throws(() => readExcludeFile(dir), { code: ErrorCodes.USAGE }, 'a directory');
});

t.test('walking with excludes: excluded entries neither yielded nor descended', async (t) => {
  const root = tmpRoot(t);
  build(
    root,
    [
      'x.log',
      'keep.log',
      'build/out.o',
      'build/deep/more.o',
      'sub/build',
      'sub/build2/f',
      'sub/deeper/build/z',
      'a/tmp/f',
      'a/x/tmp/f',
      'a/x/y/tmp',
      'a/x/keep',
      'b/tmp/f',
      'tmp/f',
      'src/app.ts',
      'src/debug.log',
      'src/keep.log',
    ],
    ['empty-build/build'],
  );
  const listed: string[] = [];
  const lstated: string[] = [];
  const rel = (p: Buffer): string => p.toString().slice(root.length + 1);
  const wfs: WalkFs = {
    readdirSync: (p, o) => {
      listed.push(rel(p));
      return fs.readdirSync(p, o);
    },
    lstatSync: (p, o) => {
      lstated.push(rel(p));
      return fs.lstatSync(p, o);
    },
    readlinkSync: (p, o) => fs.readlinkSync(p, o),
  };
  const got = await walkedPaths(root, createExcludeMatcher(PATTERNS), wfs);
  t.same(got.sort(), [
    '',
    'a',
    'a/x',
    'a/x/keep',
    'a/x/y',
    'b',
    'b/tmp',
    'b/tmp/f',
    'empty-build',
    'keep.log',
    'src',
    'src/app.ts',
    'src/keep.log',
    'sub',
    'sub/build',
    'sub/build2',
    'sub/build2/f',
    'sub/deeper',
    'tmp',
    'tmp/f',
  ]);
  const touchedExcluded = [...listed, ...lstated].filter((p) => /^(build|a\/tmp|a\/x\/tmp|sub\/deeper\/build|empty-build\/build)(\/|$)|\.log$/.test(p) && !p.endsWith('keep.log'));
  t.same(touchedExcluded, [], 'excluded paths were not stat-ed or listed');

  // The same patterns read from a file.
  const file = path.join(root, '..', path.basename(root) + '.excludes');
  fs.writeFileSync(file, '# excludes\n' + PATTERNS.join('\n') + '\n');
  t.teardown(() => fs.rmSync(file, { force: true }));
  t.same((await walkedPaths(root, createExcludeMatcher(readExcludeFile(file)))).sort(), got);
});
