// The walk in a thread of its own gives what the walk in this thread gives: items, batches, problems and errors.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { WalkItem, WalkOptions, WalkProblem } from '../../src/stages/walker.js';
import type { ThreadWalkOptions, WalkThread as WalkThreadClass } from '../../src/stages/walk-thread.js';
import { createExcludeMatcher } from '../../src/stages/exclude.js';
import { pathToKey } from '../../src/formats/path-key.js';

// The thread runs the build (a worker loads .js), so the walks compared are both the build's.
const thread = (await import(new URL('../../dist/src/stages/walk-thread.js', import.meta.url).href)) as {
  WalkThread: typeof WalkThreadClass;
  SHARED_AHEAD: number;
};
const walker = (await import(new URL('../../dist/src/stages/walker.js', import.meta.url).href)) as typeof import('../../src/stages/walker.js');

function tmpRoot(t: { teardown(fn: () => void): void }): string {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'blanket-walk-thread-')));
  t.teardown(() => execFileSync('rm', ['-rf', dir])); // rm -rf: fs.rmSync fails on paths longer than PATH_MAX
  return dir;
}

/** A tree with what a walk must carry: odd names (non-UTF-8, tab, newline), symlinks, a fifo, a deep directory too long to stat. */
function awkwardTree(root: string): void {
  const at = (...parts: (string | Buffer)[]): Buffer => Buffer.concat([Buffer.from(root), ...parts.map((p) => Buffer.concat([Buffer.from('/'), Buffer.from(p)]))]);
  fs.mkdirSync(at('a', 'b', 'c'), { recursive: true });
  fs.mkdirSync(at('a-b'));
  for (let i = 0; i < 800; i++) fs.writeFileSync(at('a', `f${i}`), String(i).repeat(i % 50));
  fs.writeFileSync(at('a-b', 'x'), 'x');
  fs.writeFileSync(at(Buffer.from([0x66, 0xff, 0x09, 0x0a])), 'not UTF-8');
  fs.writeFileSync(at('.hidden'), 'h');
  fs.symlinkSync(Buffer.from([0x2e, 0x2e, 0x2f, 0xfe]), at('a', 'b', 'link'));
  fs.symlinkSync('/etc/passwd', at('abs-link'));
  execFileSync('mkfifo', [path.join(root, 'a', 'fifo')]);
  fs.writeFileSync(at('a', 'b', 'c', 'deep'), 'd');
  // Deeper than PATH_MAX: the walk reports a problem there and goes on.
  const name = 'd'.repeat(200);
  execFileSync('mkdir', ['-p', Array.from({ length: 25 }, () => name).join('/')], { cwd: path.join(root, 'a', 'b') });
}

interface Walked {
  batches: WalkItem[][];
  problems: WalkProblem[];
}

async function viaThread(options: ThreadWalkOptions): Promise<Walked> {
  const problems: WalkProblem[] = [];
  const batches: WalkItem[][] = [];
  for await (const batch of new thread.WalkThread().walk({ ...options, onProblem: (p) => problems.push(p) })) batches.push(batch);
  return { batches, problems };
}

async function here(options: WalkOptions): Promise<Walked> {
  const problems: WalkProblem[] = [];
  const batches: WalkItem[][] = [];
  for await (const batch of walker.walkBatches({ ...options, onProblem: (p) => problems.push(p) })) batches.push(batch);
  return { batches, problems };
}

/** Items as plain values: stats compared field by field (a thread's stat is another object). */
function plain(items: WalkItem[]): unknown[] {
  return items.map((item) => {
    if (walker.isUnlisted(item)) return { ...item, path: item.path.toString('hex') };
    const st = item.stat;
    return {
      key: item.key,
      path: item.path.toString('hex'),
      linkTarget: item.linkTarget?.toString('hex'),
      contentsUnknown: item.contentsUnknown,
      stat: [st.ino, st.mode, st.nlink, st.uid, st.gid, st.rdev, st.size, st.mtimeNs, st.ctimeNs].join(' ') + [st.isFile(), st.isDirectory(), st.isSymbolicLink(), st.isFIFO()].join(' '),
    };
  });
}

function same(t: Test, got: Walked, want: Walked, what: string): void {
  // As JSON text: tap's deep comparison of thousands of objects takes seconds.
  t.equal(JSON.stringify(got.batches.map(plain)), JSON.stringify(want.batches.map(plain)), `${what}: same items in the same batches`);
  t.same(
    got.problems.map((p) => ({ ...p, path: p.path.toString('hex') })),
    want.problems.map((p) => ({ ...p, path: p.path.toString('hex') })),
    `${what}: same problems`,
  );
}

t.test('the same walk as walkBatches: whole, resumed, excluded', async (t) => {
  const root = tmpRoot(t);
  awkwardTree(root);
  const whole = await here({ root });
  t.ok(whole.batches.length > 3, 'several batches');
  t.ok(whole.problems.length > 0, 'the deep directory gives a problem');
  t.ok(
    whole.batches.flat().some((item) => !walker.isUnlisted(item) && item.linkTarget?.equals(Buffer.from([0x2e, 0x2e, 0x2f, 0xfe]))),
    'a raw link target',
  );
  same(t, await viaThread({ root }), whole, 'whole');
  for (const after of ['a/f350', 'a/b', 'a/b/c/deep', 'a-b/x', 'zzz']) {
    const key = pathToKey(Buffer.from(after));
    same(t, await viaThread({ root, after: key }), await here({ root, after: key }), `after ${after}`);
  }
  const excludes = ['f1*', 'b/', '!a/f100'];
  same(t, await viaThread({ root, excludes }), await here({ root, isExcluded: createExcludeMatcher(excludes) }), 'excluded');
});

t.test('errors cross as BlanketErrors with their codes', async (t) => {
  const root = tmpRoot(t);
  await t.rejects(viaThread({ root: path.join(root, 'missing') }), { code: 'BLANKET_E_SOURCE', message: /does not exist/ });
  fs.writeFileSync(path.join(root, 'file'), 'x');
  await t.rejects(viaThread({ root: path.join(root, 'file') }), { code: 'BLANKET_E_SOURCE', message: /not a directory/ });
  const controller = new AbortController();
  controller.abort();
  await t.rejects(viaThread({ root, signal: controller.signal }), { code: 'BLANKET_E_ABORTED' });
});

t.test('the thread waits for its consumer, stops when it stops, and on abort', async (t) => {
  const root = tmpRoot(t);
  for (let d = 0; d < 8; d++) {
    fs.mkdirSync(path.join(root, `d${d}`));
    for (let f = 0; f < 200; f++) fs.writeFileSync(path.join(root, `d${d}`, `f${f}`), '');
  }
  const walkThread = new thread.WalkThread();
  const walk = walkThread.walk({ root });
  const first = await walk.next();
  t.notOk(first.done, 'a first batch');
  // Unread, the thread may run at most SHARED_AHEAD batches ahead: about a thousand of the 1,600 entries.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const queued = (walkThread as unknown as { inbox: unknown[] }).inbox.length;
  t.ok(queued <= thread.SHARED_AHEAD, `at most ${thread.SHARED_AHEAD} batches wait (${queued})`);
  t.ok(queued >= 1, 'and it did run ahead');
  await walk.return(undefined);
  const worker = (walkThread as unknown as { worker: import('node:worker_threads').Worker }).worker;
  t.equal(worker.threadId, -1, 'a consumer that stops early has stopped the thread');

  const controller = new AbortController();
  const aborted = new thread.WalkThread().walk({ root, signal: controller.signal });
  await aborted.next();
  controller.abort();
  await t.rejects(aborted.next(), { code: 'BLANKET_E_ABORTED' }, 'abort ends the walk with ABORTED');
});

t.test('a batch survives its encoding: extreme stat values, link targets, unlisted notices, problems', async (t) => {
  const { encodeBatch, decodeBatch } = await import('../../src/stages/walk-thread.js');
  const { LeanStat } = await import('../../src/stages/walker.js');
  const max = 2n ** 64n - 1n;
  const items: WalkItem[] = [
    { key: '-', path: Buffer.alloc(0), stat: new LeanStat(1n, 0o40755n, 2n, 0n, 0n, 0n, 4096n, 0n, 0n) },
    { key: '066.', path: Buffer.from('f'), stat: new LeanStat(max, 0o100644n, 1n, 4294967294n, 65534n, 0n, 2n ** 53n + 1n, -1_500_000_000_123_456_789n, 2n ** 63n - 1n) },
    { key: '06c.', path: Buffer.from('l'), stat: new LeanStat(3n, 0o120777n, 1n, 0n, 0n, 0n, 3n, 5n, 6n), linkTarget: Buffer.from([0x2e, 0x2e, 0x2f, 0xff]) },
    { unlisted: true, contentsPrefix: '164.', path: Buffer.from('d') },
    { key: '064.', path: Buffer.from('d'), stat: new LeanStat(4n, 0o40700n, 2n, 0n, 0n, 0x0801n, 0n, 7n, 8n), contentsUnknown: true },
    { key: '0ff0a.', path: Buffer.from([0xff, 0x0a]), stat: new LeanStat(5n, 0o60600n, 1n, 0n, 0n, 2n ** 40n, 0n, 9n, 10n) },
  ];
  const problems: WalkProblem[] = [
    { kind: 'unreadable', path: Buffer.from('d'), message: 'cannot list directory', code: 'EACCES' },
    { kind: 'vanished', path: Buffer.from([0xfe]), message: 'vanished during the walk' },
  ];
  const { batch, transfer } = encodeBatch(items, problems);
  t.equal(transfer.length, 4, 'four buffers to transfer');
  // What the thread boundary does: a structured clone, the buffers moved.
  const crossed = structuredClone(batch, { transfer });
  t.same(plain(decodeBatch(crossed)), plain(items), 'the same items back');
  t.same(
    crossed.problems.map((p) => ({ ...p, path: Buffer.from(p.path).toString('hex') })),
    problems.map((p) => ({ ...p, path: p.path.toString('hex') })),
    'the same problems back',
  );
  t.same(plain(decodeBatch(structuredClone(encodeBatch([], []).batch))), [], 'an empty batch');
});
