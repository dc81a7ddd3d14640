import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { BigIntStats, Dirent } from 'node:fs';
import { isUnlisted, walk, walkSync, type UnlistedContents, type WalkedEntry, type WalkFs, type WalkOptions, type WalkProblem } from '../../src/stages/walker.js';
import {
  AFTER_ALL,
  BEFORE_ALL,
  ROOT_KEY,
  comparePaths,
  pathToContentsPrefix,
  pathToKey,
} from '../../src/formats/path-key.js';
import { BlanketError, ErrorCodes } from '../../src/formats/errors.js';

const B = (s: string | number[]): Buffer => (typeof s === 'string' ? Buffer.from(s) : Buffer.from(s));

function tmpRoot(t: { teardown(fn: () => void): void }): string {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'blanket-walker-')));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function abs(root: string, rel: Buffer): Buffer {
  return Buffer.concat([Buffer.from(root + '/'), rel]);
}
function join(parent: Buffer, name: Buffer): Buffer {
  return parent.length === 0 ? name : Buffer.concat([parent, B('/'), name]);
}
function mkdir(root: string, rel: Buffer | string): void {
  fs.mkdirSync(abs(root, B(typeof rel === 'string' ? rel : [...rel])), { recursive: true });
}
function write(root: string, rel: Buffer | string, data = 'x'): void {
  fs.writeFileSync(abs(root, typeof rel === 'string' ? B(rel) : rel), data);
}

/** Independent reference: every path under root (lstat-based, no symlink following). */
function referencePaths(root: string): Buffer[] {
  const out: Buffer[] = [];
  const visit = (rel: Buffer): void => {
    for (const name of fs.readdirSync(abs(root, rel), { encoding: 'buffer' })) {
      const child = join(rel, name);
      out.push(child);
      if (fs.lstatSync(abs(root, child)).isDirectory()) visit(child);
    }
  };
  visit(Buffer.alloc(0));
  return out;
}

async function collect(options: WalkOptions): Promise<{ entries: WalkedEntry[]; problems: WalkProblem[]; unlisted: UnlistedContents[] }> {
  const problems: WalkProblem[] = [];
  const entries: WalkedEntry[] = [];
  const unlisted: UnlistedContents[] = [];
  for await (const item of walk({ ...options, onProblem: (p) => problems.push(p) })) {
    if (isUnlisted(item)) unlisted.push(item);
    else entries.push(item);
  }
  return { entries, problems, unlisted };
}

interface Calls {
  readdir: Buffer[];
  lstat: Buffer[];
  readlink: Buffer[];
}
interface Hooks {
  readdir?: (rel: Buffer) => void;
  afterReaddir?: (rel: Buffer, listing: Dirent<Buffer>[]) => Dirent<Buffer>[];
  lstat?: (rel: Buffer) => void;
  afterLstat?: (rel: Buffer, stat: BigIntStats) => BigIntStats;
  readlink?: (rel: Buffer) => void;
}
/** A WalkFs over the real node:fs that records (root-relative) paths of every call and lets tests inject failures. */
function instrumentedFs(root: string, hooks: Hooks = {}): { fs: WalkFs; calls: Calls } {
  const calls: Calls = { readdir: [], lstat: [], readlink: [] };
  const rootBuf = B(root);
  const rel = (p: Buffer): Buffer => (p.equals(rootBuf) ? Buffer.alloc(0) : Buffer.from(p.subarray(rootBuf.length + 1)));
  return {
    calls,
    fs: {
      readdirSync(p, o) {
        calls.readdir.push(rel(p));
        hooks.readdir?.(rel(p));
        const listing = fs.readdirSync(p, o);
        return hooks.afterReaddir ? hooks.afterReaddir(rel(p), listing) : listing;
      },
      lstatSync(p, o) {
        calls.lstat.push(rel(p));
        hooks.lstat?.(rel(p));
        const stat = fs.lstatSync(p, o);
        return hooks.afterLstat ? hooks.afterLstat(rel(p), stat) : stat;
      },
      readlinkSync(p, o) {
        calls.readlink.push(rel(p));
        hooks.readlink?.(rel(p));
        return fs.readlinkSync(p, o);
      },
    },
  };
}

function errno(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

/** Deterministic pseudo-random generator (mulberry32). */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const AWKWARD_NAMES: Buffer[] = [
  B('a'),
  B('a-b'),
  B('a b'),
  B('a\nb'),
  B('a.b'),
  B('a0'),
  B('ab'),
  B('A'),
  B('!'),
  B('\x01ctl'),
  B('.hidden'),
  B('.a'),
  B('...'),
  B('~tilde'),
  B('é'),
  B([0x66, 0xff, 0x80]),
  B([0xc3]),
  B([0xff]),
  B('x'.repeat(200)),
  B('y'.repeat(199) + 'z'),
];

/** Builds the awkward tree; returns nothing, the reference listing is read back from disk. */
function buildAwkwardTree(root: string): void {
  const random = rng(42);
  let budget = 260; // entries created at random (the fixed ones below come on top)
  const fill = (rel: Buffer, depth: number): void => {
    for (const name of AWKWARD_NAMES) {
      if (budget <= 0) return;
      const r = random();
      const child = join(rel, name);
      if (depth < 6 && r < (depth === 1 ? 0.3 : 0.12)) {
        budget--;
        fs.mkdirSync(abs(root, child));
        fill(child, depth + 1);
      } else if (r < 0.5) {
        budget--;
        fs.writeFileSync(abs(root, child), name);
      }
    }
  };
  fill(Buffer.alloc(0), 1);
  // Always present: 'a' directory next to 'a-b' directory and 'a b' file, and a depth-6 chain.
  for (const name of ['a', 'a-b']) {
    fs.rmSync(abs(root, B(name)), { recursive: true, force: true });
    mkdir(root, name);
    write(root, `${name}/x`);
    mkdir(root, `${name}/sub`);
    write(root, `${name}/sub/y`);
  }
  fs.rmSync(abs(root, B('a b')), { recursive: true, force: true });
  write(root, 'a b');
  mkdir(root, 'd1/d2/d3/d4/d5/d6');
  write(root, 'd1/d2/d3/d4/d5/d6/leaf');
  mkdir(root, 'empty');
  fs.mkdirSync(abs(root, B([0x64, 0xfe])));
  fs.writeFileSync(abs(root, B([0x64, 0xfe, 0x2f, 0x0a])), 'newline-only name');
}

t.test('order equals sorting all keys, on an awkward tree', async (t) => {
  const root = tmpRoot(t);
  buildAwkwardTree(root);
  const { entries, problems } = await collect({ root });
  t.same(problems, []);
  const keys = entries.map((e) => e.key);
  t.equal(keys[0], ROOT_KEY, 'root first');
  t.equal(entries[0]!.path.length, 0);
  t.ok(entries[0]!.stat.isDirectory());
  t.same(keys, [...keys].sort(), 'yielded order equals plain string sort of the keys');
  t.equal(new Set(keys).size, keys.length, 'no duplicates');
  for (const e of entries) if (e.key !== ROOT_KEY) t.equal(e.key, pathToKey(e.path), 'key matches path');
  let ordered = true;
  for (let i = 1; i < entries.length; i++) if (comparePaths(entries[i - 1]!.path, entries[i]!.path) >= 0) ordered = false;
  t.ok(ordered, 'order agrees with comparePaths');

  const reference = referencePaths(root).map((p) => pathToKey(p));
  t.same(keys.slice(1), [...reference].sort(), 'every entry exactly once');
  t.ok(entries.length > 150, `tree is large enough (${entries.length})`);
  t.ok(entries.some((e) => e.path.equals(B('d1/d2/d3/d4/d5/d6/leaf'))), 'depth-6 leaf');
  t.ok(entries.some((e) => e.path.equals(B([0x64, 0xfe, 0x2f, 0x0a]))), 'non-UTF-8 dir, newline file');
  t.ok(entries.some((e) => e.path.length > 200), '200-byte names');

  // 'a' (dir) before 'a b', 'a-b'; a's contents before a-b's contents although "a-b/" < "a/" as plain strings.
  const index = (p: string): number => entries.findIndex((e) => e.path.equals(B(p)));
  t.ok(index('a') < index('a b') && index('a b') < index('a-b'), 'direct children by name bytes');
  t.ok(index('a-b') < index('a/x') && index('a/x') < index('a/sub/y') && index('a/sub/y') < index('a-b/x'), 'contents contiguous');
  t.ok(index('a/x') < index('a/sub/y'), 'direct children of a before anything deeper');

  const fromSync = [...walkSync({ root })].map((e) => ('key' in e ? e.key : ''));
  t.same(fromSync, keys, 'walkSync yields the same sequence');

  // stat and path for every entry match lstat of the file.
  let statsOk = true;
  for (const e of entries) {
    const st = fs.lstatSync(e.path.length === 0 ? B(root) : abs(root, e.path), { bigint: true });
    if (st.ino !== e.stat.ino || st.mode !== e.stat.mode) statsOk = false;
  }
  t.ok(statsOk, 'stats are lstat of each path');
});

t.test('resume: every after value yields exactly the suffix, and skipped subtrees cost nothing', async (t) => {
  const root = tmpRoot(t);
  buildAwkwardTree(root);
  const full = (await collect({ root })).entries.map((e) => e.key);
  const afters = [BEFORE_ALL, AFTER_ALL, ...full];
  // Strings between keys too: just past a key, and directory contents prefixes (not keys themselves).
  for (const p of referencePaths(root).filter((_, i) => i % 7 === 0)) {
    afters.push(pathToKey(p) + '0', pathToContentsPrefix(p));
  }
  let failures = 0;
  let checked = 0;
  for (const after of afters) {
    const { fs: wfs, calls } = instrumentedFs(root);
    const { entries, problems } = await collect({ root, after, fs: wfs });
    const got = entries.map((e) => e.key);
    const expected = full.filter((k) => k > after);
    checked++;
    if (JSON.stringify(got) !== JSON.stringify(expected) || problems.length > 0) {
      failures++;
      if (failures < 4) t.same(got, expected, `suffix after ${after}`);
      continue;
    }
    // lstat: the root, plus one per yielded entry, nothing else (Dirent types are known on this fs).
    const yieldedNonRoot = got.filter((k) => k !== ROOT_KEY).length;
    if (calls.lstat.length !== 1 + yieldedNonRoot) {
      failures++;
      if (failures < 4) t.equal(calls.lstat.length, 1 + yieldedNonRoot, `lstat count after ${after}`);
    }
    for (const p of calls.lstat) {
      if (p.length > 0 && !(pathToKey(p) > after)) {
        failures++;
        if (failures < 4) t.fail(`lstat of skipped ${JSON.stringify(p.toString('latin1'))} after ${after}`);
      }
    }
    // readdir: only directories whose contents range is not entirely <= after.
    for (const p of calls.readdir) {
      const cp = pathToContentsPrefix(p);
      if (after > cp && !after.startsWith(cp)) {
        failures++;
        if (failures < 4) t.fail(`readdir of skipped directory ${JSON.stringify(p.toString('latin1'))} after ${after}`);
      }
    }
    if (calls.readlink.length > got.length) failures++;
  }
  t.equal(failures, 0, `${checked} resume points checked`);
  t.ok(checked > full.length, 'every key was a resume point');
});

t.test('resume: a skipped subtree is never touched, even when touching it would fail', async (t) => {
  const root = tmpRoot(t);
  for (const d of ['a', 'b', 'c']) {
    mkdir(root, `${d}/deep/deeper`);
    write(root, `${d}/f`);
    write(root, `${d}/deep/deeper/g`);
  }
  write(root, 'z');
  const after = pathToKey(B('b/deep/deeper/g')); // a/... entirely before; b/f, b/deep before; c/... after
  // Everything in a/ and the entries b/f, b/deep themselves (b/deep must still be listed: g's successors may follow).
  const poisoned = (p: Buffer): boolean => p.toString().startsWith('a') || p.equals(B('b/f')) || p.equals(B('b/deep'));
  const { fs: wfs } = instrumentedFs(root, {
    readdir: (p) => {
      if (p.toString().startsWith('a')) throw errno('EIO', 'poisoned readdir');
    },
    lstat: (p) => {
      if (poisoned(p)) throw errno('EIO', 'poisoned lstat');
    },
  });
  const { entries, problems } = await collect({ root, after, fs: wfs });
  t.same(problems, [], 'no poisoned path was touched');
  t.same(
    entries.map((e) => e.path.toString()),
    ['c/deep', 'c/f', 'c/deep/deeper', 'c/deep/deeper/g'],
  );
  // Control: the same poison without `after` does fail, so this test can fail.
  const control = await collect({ root, fs: wfs });
  t.ok(control.problems.length > 0, 'poison is effective when not skipping');
});

t.test('symlinks are yielded with raw targets and never followed; fifo yielded', async (t) => {
  const root = tmpRoot(t);
  mkdir(root, 'sub');
  write(root, 'sub/file');
  const links: [string, Buffer][] = [
    ['dangling', B('does/not/exist')],
    ['loop1', B('loop2')],
    ['loop2', B('loop1')],
    ['self', B('self')],
    ['todir', B('sub')],
    ['toroot', B('..')],
    ['absolute', B('/etc')],
    ['rawbytes', B([0x66, 0xff, 0x80, 0x0a])],
  ];
  for (const [name, target] of links) fs.symlinkSync(target, abs(root, B(name)));
  execFileSync('mkfifo', [path.join(root, 'pipe')]);
  const { entries, problems } = await collect({ root });
  t.same(problems, []);
  t.same(
    entries.map((e) => e.path.toString('latin1')).sort(),
    ['', 'pipe', 'sub', 'sub/file', ...links.map(([n]) => n)].sort(),
    'nothing below the symlinks',
  );
  for (const [name, target] of links) {
    const e = entries.find((x) => x.path.equals(B(name)))!;
    t.ok(e.stat.isSymbolicLink(), `${name} is a symlink`);
    t.ok(Buffer.isBuffer(e.linkTarget) && e.linkTarget.equals(target), `${name} target bytes`);
    t.equal(e.contentsUnknown, undefined);
  }
  const pipe = entries.find((x) => x.path.equals(B('pipe')))!;
  t.ok(pipe.stat.isFIFO(), 'fifo stat');
  t.equal(pipe.linkTarget, undefined);
  t.same(entries.map((e) => e.key), entries.map((e) => e.key).sort());
});

t.test('a symlink given as the root is resolved once', async (t) => {
  const base = tmpRoot(t);
  mkdir(base, 'real');
  write(base, 'real/f');
  fs.symlinkSync('real', path.join(base, 'link'));
  const { entries } = await collect({ root: path.join(base, 'link') });
  t.same(entries.map((e) => e.path.toString()), ['', 'f']);
  t.ok(entries[0]!.stat.isDirectory());
});

t.test('missing or non-directory root throws SOURCE', async (t) => {
  const base = tmpRoot(t);
  write(base, 'file');
  for (const root of [path.join(base, 'missing'), path.join(base, 'file')]) {
    const error = await collect({ root }).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(error instanceof BlanketError && error.code === ErrorCodes.SOURCE && error.message.includes(root), `SOURCE naming ${root}`);
  }
  t.throws(() => [...walkSync({ root: path.join(base, 'missing') })], { code: ErrorCodes.SOURCE });
});

t.test('unreadable directory: entry yielded with contentsUnknown, problem reported, walk goes on', async (t) => {
  const root = tmpRoot(t);
  mkdir(root, 'locked/inner');
  write(root, 'locked/inner/secret');
  write(root, 'locked/f');
  mkdir(root, 'other');
  write(root, 'other/f');
  fs.symlinkSync('target', path.join(root, 'badlink'));
  fs.symlinkSync('target', path.join(root, 'goodlink'));
  const { fs: wfs } = instrumentedFs(root, {
    readdir: (p) => {
      if (p.equals(B('locked'))) throw errno('EACCES', 'permission denied');
    },
    readlink: (p) => {
      if (p.equals(B('badlink'))) throw errno('EIO', 'i/o error');
    },
  });
  const { entries, problems, unlisted } = await collect({ root, fs: wfs });
  t.same(
    entries.map((e) => e.path.toString()),
    ['', 'goodlink', 'locked', 'other', 'other/f'],
  );
  const locked = entries.find((e) => e.path.equals(B('locked')))!;
  t.equal(locked.contentsUnknown, true);
  t.ok(locked.stat.isDirectory());
  t.equal(entries.find((e) => e.path.equals(B('other')))!.contentsUnknown, undefined);
  t.equal(problems.length, 2);
  t.match(problems.find((p) => p.path.equals(B('locked'))), { kind: 'unreadable', code: 'EACCES' });
  t.match(problems.find((p) => p.path.equals(B('badlink'))), { kind: 'unreadable', code: 'EIO' });
  t.ok(problems.every((p) => p.message.length > 0));

  t.same(unlisted, [], 'its entry says so: no UnlistedContents needed');

  // Resumed into the unreadable directory (its entry is not yielded again): problem, and an UnlistedContents
  // in its place, before anything after its contents.
  const resumed = await collect({ root, after: pathToKey(B('other')), fs: wfs });
  t.same(resumed.entries.map((e) => e.path.toString()), ['other/f']);
  t.match(resumed.problems, [{ kind: 'unreadable', code: 'EACCES' }]);
  t.same(resumed.unlisted, [{ unlisted: true, contentsPrefix: pathToContentsPrefix(B('locked')), path: B('locked') }]);

  // Unreadable root: SOURCE.
  const { fs: badRoot } = instrumentedFs(root, {
    readdir: (p) => {
      if (p.length === 0) throw errno('EACCES', 'permission denied');
    },
  });
  await t.rejects(collect({ root, fs: badRoot }), { code: ErrorCodes.SOURCE });
});

t.test('children vanishing between readdir and lstat, and directories between lstat and readdir', async (t) => {
  const root = tmpRoot(t);
  write(root, 'a-stays');
  write(root, 'gone-file');
  mkdir(root, 'gone-dir/x');
  mkdir(root, 'flaky-dir');
  write(root, 'flaky-dir/f');
  write(root, 'z-stays');
  const { fs: wfs } = instrumentedFs(root, {
    afterReaddir: (p, listing) => {
      if (p.length === 0) {
        fs.rmSync(path.join(root, 'gone-file'));
        fs.rmSync(path.join(root, 'gone-dir'), { recursive: true });
      }
      return listing;
    },
    afterLstat: (p, stat) => {
      if (p.equals(B('flaky-dir'))) fs.rmSync(path.join(root, 'flaky-dir'), { recursive: true });
      return stat;
    },
  });
  const { entries, problems } = await collect({ root, fs: wfs });
  t.same(entries.map((e) => e.path.toString()), ['', 'a-stays', 'z-stays']);
  t.same(
    problems.map((p) => [p.kind, p.path.toString(), p.code]).sort(),
    [
      ['vanished', 'flaky-dir', 'ENOENT'],
      ['vanished', 'gone-dir', 'ENOENT'],
      ['vanished', 'gone-file', 'ENOENT'],
    ],
  );
});

t.test('unknown Dirent types fall back to lstat and give the same walk', async (t) => {
  const root = tmpRoot(t);
  buildAwkwardTree(root);
  const full = (await collect({ root })).entries.map((e) => e.key);
  const typeless = (listing: Dirent<Buffer>[]): Dirent<Buffer>[] =>
    listing.map(
      (d) =>
        ({
          name: d.name,
          isDirectory: () => false,
          isFile: () => false,
          isSymbolicLink: () => false,
          isFIFO: () => false,
          isSocket: () => false,
          isCharacterDevice: () => false,
          isBlockDevice: () => false,
        }) as unknown as Dirent<Buffer>,
    );
  const afters = [BEFORE_ALL, ...full.filter((_, i) => i % 5 === 0)];
  let failures = 0;
  for (const after of afters) {
    const { fs: wfs, calls } = instrumentedFs(root, { afterReaddir: (_p, listing) => typeless(listing) });
    const { entries, problems } = await collect({ root, after, fs: wfs });
    if (JSON.stringify(entries.map((e) => e.key)) !== JSON.stringify(full.filter((k) => k > after)) || problems.length) failures++;
    // Only entries that are yielded or whose contents reach past `after` are lstat-ed.
    for (const p of calls.lstat) {
      if (p.length === 0) continue;
      const cp = pathToContentsPrefix(p);
      if (!(pathToKey(p) > after) && after > cp && !after.startsWith(cp)) failures++;
    }
  }
  t.equal(failures, 0, `${afters.length} walks with typeless dirents`);
});

t.test('oneFileSystem: directories on another device are yielded but not descended', async (t) => {
  const root = tmpRoot(t);
  mkdir(root, 'mnt/inside');
  write(root, 'mnt/inside/f');
  write(root, 'mnt/g');
  write(root, 'plain');
  const otherDevice = (p: Buffer, stat: BigIntStats): BigIntStats => {
    if (!p.equals(B('mnt'))) return stat;
    const fake = Object.assign(Object.create(Object.getPrototypeOf(stat) as object) as BigIntStats, stat);
    fake.dev = stat.dev + 1n;
    return fake;
  };
  const { fs: wfs } = instrumentedFs(root, { afterLstat: otherDevice });
  const one = await collect({ root, fs: wfs, oneFileSystem: true });
  t.same(one.entries.map((e) => e.path.toString()), ['', 'mnt', 'plain']);
  t.equal(one.entries[1]!.contentsUnknown, undefined);
  const all = await collect({ root, fs: wfs });
  t.same(all.entries.map((e) => e.path.toString()), ['', 'mnt', 'plain', 'mnt/g', 'mnt/inside', 'mnt/inside/f']);
  // Resuming inside the other device with oneFileSystem does not descend there either.
  const resumed = await collect({ root, fs: wfs, oneFileSystem: true, after: pathToKey(B('mnt/g')) });
  t.same(resumed.entries.map((e) => e.path.toString()), []);
  const resumedAll = await collect({ root, fs: wfs, after: pathToKey(B('mnt/g')) });
  t.same(resumedAll.entries.map((e) => e.path.toString()), ['mnt/inside', 'mnt/inside/f']);
});

t.test('gives the event loop turns, and honours the AbortSignal', async (t) => {
  const root = tmpRoot(t);
  for (let d = 0; d < 10; d++) {
    mkdir(root, `d${d}`);
    for (let f = 0; f < 100; f++) write(root, `d${d}/f${f}`);
  }
  let turns = 0;
  let running = true;
  const spin = (): void => {
    turns++;
    if (running) setImmediate(spin);
  };
  setImmediate(spin);
  let count = 0;
  for await (const _ of walk({ root })) count++;
  running = false;
  const turnsDuringWalk = turns;
  t.equal(count, 1 + 10 + 1000);
  t.ok(turnsDuringWalk >= 3, `event loop ran ${turnsDuringWalk} times during the walk`);

  const controller = new AbortController();
  let seen = 0;
  await t.rejects(
    (async () => {
      for await (const _ of walk({ root, signal: controller.signal })) {
        seen++;
        if (seen === 1) controller.abort();
      }
    })(),
    { name: 'BlanketError', code: ErrorCodes.ABORTED },
  );
  t.ok(seen < 300, `stopped soon after the abort (${seen} entries)`);
  await t.rejects(collect({ root, signal: AbortSignal.abort() }), { code: ErrorCodes.ABORTED });
});

t.test('isExcluded: consulted with isDir before lstat, excluded entries neither yielded nor descended', async (t) => {
  const root = tmpRoot(t);
  mkdir(root, 'skip/deep');
  write(root, 'skip/deep/f');
  write(root, 'skip.txt');
  mkdir(root, 'keep');
  write(root, 'keep/skip.txt');
  write(root, 'keep/f');
  const asked: [string, boolean][] = [];
  const isExcluded = (rel: Buffer, isDir: boolean): boolean => {
    asked.push([rel.toString(), isDir]);
    return rel.toString().endsWith('skip') || rel.toString().endsWith('skip.txt');
  };
  const { fs: wfs, calls } = instrumentedFs(root);
  const { entries } = await collect({ root, isExcluded, fs: wfs });
  t.same(entries.map((e) => e.path.toString()), ['', 'keep', 'keep/f']);
  t.same(
    asked.sort(),
    [
      ['keep', true],
      ['keep/f', false],
      ['keep/skip.txt', false],
      ['skip', true],
      ['skip.txt', false],
    ],
  );
  t.notOk(calls.lstat.some((p) => p.toString().includes('skip')), 'excluded entries not lstat-ed');
  t.notOk(calls.readdir.some((p) => p.toString().includes('skip')), 'excluded directory not listed');

  // With `after`, skipped children are not even asked about.
  asked.length = 0;
  await collect({ root, isExcluded, after: pathToKey(B('keep/f')) });
  t.same(
    asked.sort(),
    [
      ['keep', true],
      ['keep/skip.txt', false],
      ['skip', true],
    ],
    'only children yielded or whose contents reach past after',
  );
});
