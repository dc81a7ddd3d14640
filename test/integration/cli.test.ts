// The command line itself, through the real CLI: help texts, option and argument errors (exit 2, naming the
// option), a missing source, archive-location checks (never writing into a folder that is not an archive),
// init twice, the lock (live and stale), --json events, excludes, restore --layer and PATH errors, and FIFOs.

import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, chown, lstat, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { CLI_PATH, tmpDir } from '../helpers/cli.js';
import { compareTrees, snapshotTree } from '../helpers/tree.js';
import { blanket, US, expectExit, finishedEvent, ndjson, rawPath } from '../helpers/integration.js';

/** What a local store names its temporary files (src/stores/local.ts), restated: the test must not follow a rename. */
const TEMP_PREFIX = '.tmp-';

/** Every command and the options it must document. */
const COMMANDS: Record<string, string[]> = {
  init: ['--help'],
  backup: ['--max-time', '--max-bytes', '--pack-size', '--exclude', '--exclude-from', '--paranoid', '--compression-level', '--workers', '--json', '--help'],
  layers: ['--json', '--help'],
  ls: ['--layer', '--json', '--help'],
  restore: ['--layer', '--devices', '--json', '--help'],
  verify: ['--json', '--help'],
};

/** Runs tasks a few at a time (CLI runs are independent; the machine has few cores), results in order. */
async function inParallel<T>(tasks: Array<() => Promise<T>>, concurrency = 3): Promise<T[]> {
  const results: T[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]!();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

/** Every file and directory below `dir`, relative, sorted (to see that nothing was written). */
async function listing(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    out.push(rel);
    if (entry.isDirectory()) out.push(...(await listing(dir, rel)));
  }
  return out.sort();
}

async function smallTree(root: string): Promise<void> {
  await mkdir(join(root, 'sub'), { recursive: true });
  await writeFile(join(root, 'a.txt'), 'a\n');
  await writeFile(join(root, 'sub', 'b.txt'), 'b\n'.repeat(1000));
}

t.test('help', async (t) => {
  const commands = Object.keys(COMMANDS);
  const [top, ...helps] = await inParallel([() => blanket(['--help']), ...commands.map((command) => () => blanket([command, '--help']))]);
  expectExit(t, top, 0, '--help');
  for (const command of Object.keys(COMMANDS)) t.match(top.stdout, new RegExp(`^\\s+${command}\\b`, 'm'), `--help lists ${command}`);
  t.match(top.stdout, /--version/);
  t.match(top.stdout, /Exit codes:/, '--help explains exit codes');
  for (const [i, [command, options]] of Object.entries(COMMANDS).entries()) {
    const help = helps[i]!;
    expectExit(t, help, 0, `${command} --help`);
    t.match(help.stdout, new RegExp(`^Usage: blanket ${command} `, 'm'));
    for (const option of options) t.match(help.stdout, new RegExp(`^\\s+(-\\w, )?${option}\\b`, 'm'), `${command} --help mentions ${option}`);
  }
});

t.test('the executable itself, with the V8 flags of its #! line, backs up and restores with its worker threads', async (t) => {
  // Other tests run `node main.js`; users (and the bench) run the file, whose flags the worker pools must cope with.
  const dir = tmpDir(t);
  const source = join(dir, 'src');
  await mkdir(join(source, 'sub'), { recursive: true });
  await writeFile(join(source, 'a.txt'), 'some text\n'.repeat(5000));
  await writeFile(join(source, 'sub', 'b.bin'), Buffer.alloc(300_000, 7));
  // Where Node can, it says when a CommonJS module (Piscina's worker) loads an ES module with require().
  const trace = process.allowedNodeEnvironmentFlags.has('--trace-require-module') ? '--trace-require-module=all' : '';
  const env = { ...process.env, NODE_OPTIONS: trace };
  const run = (args: string[]) => spawnSync(CLI_PATH, args, { env, encoding: 'utf8' });
  const backup = run(['backup', source, join(dir, 'archive')]);
  t.equal(backup.status, 0, `backup: ${backup.stderr}`);
  const restored = join(dir, 'out');
  const restore = run(['restore', join(dir, 'archive'), restored]);
  t.equal(restore.status, 0, `restore: ${restore.stderr}`);
  t.notMatch(restore.stderr + backup.stderr, /ExperimentalWarning|using require\(\)/, 'no worker module is loaded with require(esm)');
  compareTrees(t, await snapshotTree(source), await snapshotTree(restored), { mtimePrecisionNs: US });
});

t.test('restore into a setgid directory still gives files their own group', { skip: process.getuid?.() !== 0 ? 'needs root (chown)' : false }, async (t) => {
  // Directories made in a setgid DEST inherit the bit, and files made in those take DEST's group, not ours.
  const dir = tmpDir(t);
  const source = join(dir, 'src');
  await mkdir(join(source, 'sub', 'deeper'), { recursive: true });
  await writeFile(join(source, 'top.txt'), 'top\n');
  await writeFile(join(source, 'sub', 'mine.txt'), 'mine\n');
  await writeFile(join(source, 'sub', 'deeper', 'other.txt'), 'other\n');
  await chown(join(source, 'sub', 'deeper', 'other.txt'), 1234, 1234);
  expectExit(t, await blanket(['backup', source, join(dir, 'archive')]), 0, 'backup');
  const dest = join(dir, 'dest');
  await mkdir(dest);
  await chown(dest, 0, 65534);
  await chmod(dest, 0o2755);
  expectExit(t, await blanket(['restore', join(dir, 'archive'), dest]), 0, 'restore');
  for (const path of ['top.txt', join('sub', 'mine.txt'), join('sub', 'deeper', 'other.txt')]) {
    const [want, got] = [await lstat(join(source, path)), await lstat(join(dest, path))];
    t.same([got.uid, got.gid], [want.uid, want.gid], `${path}: owner and group as in the source, not DEST's group`);
  }
});

t.test('bad option values are usage errors naming the option', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await smallTree(source);
  const archive = join(work, 'archive');
  const cases: Array<[string[], string]> = [
    [['backup', '--max-time', 'abc', source, archive], '--max-time'],
    [['backup', '--pack-size', '-1', source, archive], '--pack-size'],
    [['backup', '--pack-size', '0', source, archive], '--pack-size'],
    [['backup', '--max-bytes', '12Q', source, archive], '--max-bytes'],
    [['backup', '--workers', '0', source, archive], '--workers'],
    [['backup', '--compression-level', '1.5', source, archive], '--compression-level'],
    [['restore', '--layer', '0', archive, join(work, 'dest')], '--layer'],
    [['ls', '--layer', '-3', archive], '--layer'],
  ];
  const results = await inParallel(cases.map(([args]) => () => blanket(args)));
  for (const [i, [args, option]] of cases.entries()) {
    const result = results[i]!;
    expectExit(t, result, 2, args.slice(0, 3).join(' '));
    t.match(result.stderr, option, `the message names ${option}`);
    t.notMatch(result.stderr, /unexpected error|\n\s+at /, 'no stack trace');
  }
  const unknown = await blanket(['backup', '--frobnicate', source, archive]);
  expectExit(t, unknown, 2, 'an unknown option');
  t.match(unknown.stderr, /--frobnicate/);
  const missingArgument = await blanket(['backup', source]);
  expectExit(t, missingArgument, 2, 'a missing argument');
  t.match(missingArgument.stderr, /archive/);
  const unknownCommand = await blanket(['frobnicate']);
  expectExit(t, unknownCommand, 2, 'an unknown command');
  t.match(unknownCommand.stderr, /frobnicate/);
  expectExit(t, await blanket(['--version']), 0, '--version');
  await t.rejects(lstat(archive), { code: 'ENOENT' }, 'no archive was created by any of them');
  await t.rejects(lstat(join(work, 'dest')), { code: 'ENOENT' }, 'no restore destination was created');
});

t.test('a missing source', async (t) => {
  const work = tmpDir(t);
  const missing = join(work, 'no-such-source');
  const archive = join(work, 'archive');
  const result = await blanket(['backup', missing, archive]);
  expectExit(t, result, 1, 'backup of a missing source');
  t.match(result.stderr, 'BLANKET_E_SOURCE');
  t.match(result.stderr, missing, 'the message names the path');
  await t.rejects(lstat(archive), { code: 'ENOENT' }, 'no archive is created for a source that does not exist');

  // A source that is a file, not a directory.
  const file = join(work, 'file');
  await writeFile(file, 'x');
  const notDir = await blanket(['backup', file, archive]);
  expectExit(t, notDir, 1, 'backup of a file');
  t.match(notDir.stderr, /BLANKET_E_SOURCE/);
  t.match(notDir.stderr, file);
});

t.test('the archive location', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await smallTree(source);

  // Folders that hold something else are never written to, whatever their file names look like.
  const contents: Array<[string, Record<string, string>]> = [
    ['a plain file', { 'notes.txt': 'mine\n' }],
    ['only upper-case names', { 'README': 'mine\n', 'Docs/Report.PDF': 'pdf' }],
    ['only a directory with a space', { 'My Files/x': 'x' }],
    ['a dot file', { '.profile': 'x' }],
  ];
  const folders = contents.map(([label]) => join(work, `other-${label.replace(/\W+/g, '-')}`));
  const before: string[][] = [];
  for (const [i, [, files]] of contents.entries()) {
    for (const [name, text] of Object.entries(files)) {
      await mkdir(join(folders[i]!, name, '..'), { recursive: true });
      await writeFile(join(folders[i]!, name), text);
    }
    before.push(await listing(folders[i]!));
  }
  const results = await inParallel(folders.map((folder) => () => blanket(['backup', source, folder])));
  for (const [i, [label]] of contents.entries()) {
    expectExit(t, results[i]!, 1, `backup into a folder with ${label}`);
    t.match(results[i]!.stderr, /BLANKET_E_NOT_AN_ARCHIVE/, 'refused as not an archive');
    t.same(await listing(folders[i]!), before[i], `nothing written into the folder with ${label}`);
  }
  const initOther = await blanket(['init', folders[1]!]);
  expectExit(t, initOther, 1, 'init of a folder that is not empty');
  t.match(initOther.stderr, /BLANKET_E_NOT_AN_ARCHIVE/);
  t.same(await listing(folders[1]!), before[1], 'init wrote nothing either');

  // An empty folder is fine.
  const empty = join(work, 'empty');
  await mkdir(empty);
  expectExit(t, await blanket(['backup', source, empty]), 0, 'backup into an empty folder');

  // init twice.
  const archive = join(work, 'archive');
  const init = await blanket(['init', archive]);
  expectExit(t, init, 0, 'init');
  t.match(init.stdout, /created archive/);
  const header = await readFile(join(archive, 'blanket.json'), 'utf8');
  const again = await blanket(['init', archive]);
  t.not(again.code, 0, 'init of an existing archive fails');
  t.match(again.stderr, /already a Blanket archive/);
  t.equal(await readFile(join(archive, 'blanket.json'), 'utf8'), header, 'the header is untouched');
  expectExit(t, await blanket(['layers', archive]), 0, 'layers of an empty archive');

  // Commands that read an archive refuse a folder that is not one.
  const readers = [['ls', source], ['restore', source, join(work, 'dest')]];
  const readResults = await inParallel(readers.map((args) => () => blanket(args)));
  for (const [i, args] of readers.entries()) {
    const result = readResults[i]!;
    expectExit(t, result, 1, `${args[0]} of a non-archive`);
    t.match(result.stderr, /BLANKET_E_NOT_AN_ARCHIVE/);
  }
});

/** Process start time in clock ticks (/proc/PID/stat field 22), read here independently of src. */
function startTicks(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

t.test('the archive lock', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await smallTree(source);
  const archive = join(work, 'archive');
  expectExit(t, await blanket(['init', archive]), 0, 'init');
  const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const lock = (pid: number, ticks: string): string =>
    JSON.stringify({ host: hostname(), pid, bootId, startTicks: ticks, command: 'backup', token: '0123456789abcdef', created: new Date().toISOString() }) + '\n';

  // Held by a live process (this one).
  const live = lock(process.pid, startTicks(process.pid));
  await writeFile(join(archive, 'lock'), live);
  // The holder's write in flight: a run that finds the archive locked must not sweep it as a leftover.
  await mkdir(join(archive, 'layers', '000001'), { recursive: true });
  const inFlight = join(archive, 'layers', '000001', `${TEMP_PREFIX}00000001.tar.zst.0123456789abcdef`);
  await writeFile(inFlight, 'pack data being written');
  const locked = await blanket(['backup', source, archive]);
  expectExit(t, locked, 1, 'backup while the archive is locked');
  t.match(locked.stderr, /BLANKET_E_LOCKED/);
  t.match(locked.stderr, String(process.pid), 'the message names the holder');
  t.equal(await readFile(join(archive, 'lock'), 'utf8'), live, 'a live lock is left alone');
  t.equal(await readFile(inFlight, 'utf8'), 'pack data being written', "the holder's write in flight is left alone");
  await rm(join(archive, 'layers'), { recursive: true });
  t.same(await readdir(archive), ['blanket.json', 'lock'], 'nothing else was written');

  // Left by a process that has exited.
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const deadPid = Number(dead.stdout);
  t.ok(deadPid > 0, `a process ${deadPid} that has exited`);
  await writeFile(join(archive, 'lock'), lock(deadPid, '12345'));
  const stale = await blanket(['backup', '--json', source, archive]);
  expectExit(t, stale, 0, 'backup with a stale lock');
  const warning = ndjson(stale.stdout).find((e) => e.type === 'warning' && e.code === 'stale-lock');
  t.ok(warning, 'a warning says the stale lock was cleared');
  t.match(warning?.message, String(deadPid));
  t.match(finishedEvent(stale.stdout), { complete: true });
  await t.rejects(lstat(join(archive, 'lock')), { code: 'ENOENT' }, 'the lock is released after the run');

  // The same pid, but a different process (pid reused): stale too.
  await writeFile(join(archive, 'lock'), lock(process.pid, '1'));
  const reused = await blanket(['backup', source, archive]);
  expectExit(t, reused, 0, 'backup with a lock from a reused pid');
  t.match(reused.stderr, /warning: cleared a stale lock/);
});

t.test('--json prints NDJSON events', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await smallTree(source);
  const archive = join(work, 'archive');
  for (const [args, events] of [
    [['backup', '--json', source, archive], ['started', 'pack-written', 'finished']],
    [['verify', '--json', archive], ['started', 'finished']],
    [['restore', '--json', archive, join(work, 'dest')], ['started', 'finished']],
  ] as Array<[string[], string[]]>) {
    const result = await blanket(args);
    expectExit(t, result, 0, args.slice(0, 2).join(' '));
    const lines = result.stdout.split('\n');
    t.equal(lines.pop(), '', 'output ends with a newline');
    let parsed: Array<Record<string, unknown>> = [];
    t.doesNotThrow(() => (parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>)), 'every line is one JSON object');
    t.ok(parsed.every((e) => typeof e.type === 'string'), 'every event has a type');
    const types = parsed.map((e) => e.type);
    for (const type of events) t.ok(types.includes(type), `${args[0]} prints a ${type} event`);
    t.equal(types[0], 'started', 'started comes first');
    t.equal(types.at(-1), 'finished', 'finished comes last');
    t.equal(parsed.at(-1)?.command, args[0]);
  }
  const backupEvents = ndjson((await blanket(['backup', '--json', source, archive])).stdout);
  t.match(backupEvents.find((e) => e.type === 'started'), { command: 'backup', layer: 2, resumedAfter: null });
  t.match(backupEvents.find((e) => e.type === 'pack-written'), { pack: '000002/00000001', complete: true, through: '~' });
  t.match(backupEvents.at(-1), { type: 'finished', layer: 2, complete: true, stoppedBy: 'complete' });
});

t.test('excludes', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  const archive = join(work, 'archive');
  const files = [
    'keep.txt',
    'app.log',
    'sub/deep.log',
    'sub/keep.c',
    'build/out.o',
    'build/nested/x',
    'sub/build/y',
    'notbuild/build', // a file named build: 'build/' matches directories only
    'secret-one',
    'sub/secret-two',
    'docs/manual.txt',
    'docs/draft.tmp',
    'sub/keep-me.log', // re-included by "!keep-me.log"
    'top-only', // "/top-only" is anchored at the root...
    'sub/top-only', // ...so this one is kept
  ];
  for (const f of files) {
    await mkdir(join(source, f, '..'), { recursive: true });
    await writeFile(join(source, f), `${f}\n`);
  }
  const excludeFile = join(work, 'excludes');
  await writeFile(excludeFile, '# my excludes\n\nsecret-*\n*.tmp\n!keep-me.log\n/top-only\n');
  const excluded = (path: string): boolean =>
    (/\.log$/.test(path) && !/(^|\/)keep-me\.log$/.test(path)) ||
    path === 'top-only' || /(^|\/)build(\/|$)/.test(path.replace(/^notbuild\/build$/, '')) || /(^|\/)secret-/.test(path) || /\.tmp$/.test(path);

  // Layer 1 without excludes, layer 2 with them: what is excluded now is deleted from layer 2's state.
  expectExit(t, await blanket(['backup', source, archive]), 0, 'backup without excludes');
  const run = await blanket(['backup', '--json', '--exclude', '*.log', '--exclude', 'build/', '--exclude-from', excludeFile, source, archive]);
  expectExit(t, run, 0, 'backup with excludes');
  const gone = files.filter(excluded);
  t.equal(gone.length, 9, 'nine of the files are excluded');
  t.equal(finishedEvent(run.stdout)?.deleted, gone.length + 3, 'their entries (and the three build directories) are deleted from the new layer');

  const paths = (stdout: string): string[] => ndjson(stdout).map((e) => e.path as string);
  const layer1 = paths((await blanket(['ls', '--json', '--layer', '1', archive])).stdout);
  const layer2 = paths((await blanket(['ls', '--json', archive])).stdout);
  for (const f of files) t.ok(layer1.includes(f), `layer 1 has ${f}`);
  for (const f of files) {
    if (excluded(f)) t.notOk(layer2.includes(f), `layer 2 leaves out ${f}`);
    else t.ok(layer2.includes(f), `layer 2 keeps ${f}`);
  }
  t.notOk(layer2.includes('build') || layer2.includes('sub/build'), 'excluded directories are left out');
  t.ok(layer2.includes('notbuild/build'), 'a file named build is kept');

  const dest = join(tmpDir(t), 'dest');
  expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore');
  const snap = await snapshotTree(source, { includeRoot: true });
  const expected = snap.filter((e) => !excluded(rawPath(e).toString()));
  compareTrees(t, expected, await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US, message: 'restore = the source without the excluded paths' });

  // A first backup with excludes never stores them at all.
  const fresh = join(work, 'fresh');
  const first = await blanket(['backup', '--exclude', '*.log', '--exclude', 'build/', '--exclude-from', excludeFile, source, fresh]);
  expectExit(t, first, 0, 'first backup with excludes');
  t.same(paths((await blanket(['ls', '--json', fresh])).stdout), layer2, 'the same paths as the layer that deleted them');

  const missingFile = await blanket(['backup', '--exclude-from', join(work, 'no-such-file'), source, archive]);
  expectExit(t, missingFile, 2, 'an exclude file that does not exist');
  t.match(missingFile.stderr, /no-such-file/);
});

t.test('restore --layer that does not exist', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await smallTree(source);
  const archive = join(work, 'archive');
  expectExit(t, await blanket(['backup', source, archive]), 0, 'backup');
  const dest = join(work, 'dest');
  const result = await blanket(['restore', '--layer', '99', archive, dest]);
  expectExit(t, result, 1, 'restore --layer 99');
  t.match(result.stderr, /layer 99 does not exist/);
  t.match(result.stderr, /BLANKET_E_NOT_FOUND/);
  t.match(result.stderr, /layers: 1\.\.1/, 'the message says which layers there are');
  await t.rejects(lstat(dest), { code: 'ENOENT' }, 'DEST is not created');
  const ls = await blanket(['ls', '--layer', '99', archive]);
  expectExit(t, ls, 1, 'ls --layer 99');
  t.match(ls.stderr, /layer 99 does not exist/);
});

t.test('restore of a path that is not in the archive', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await smallTree(source);
  const archive = join(work, 'archive');
  expectExit(t, await blanket(['backup', source, archive]), 0, 'backup');
  const dest = join(work, 'dest');
  const result = await blanket(['restore', '--json', archive, dest, 'sub', 'no/such/path']);
  expectExit(t, result, 3, 'restore of an existing and a missing path: finished, but incomplete');
  const events = ndjson(result.stdout);
  t.ok(
    events.some((e) => e.type === 'warning' && /no\/such\/path: not in the archive/.test(e.message as string)),
    'a warning names the missing path',
  );
  t.match(finishedEvent(result.stdout), { failedFiles: 1, restoredFiles: 1 });
  t.equal(await readFile(join(dest, 'sub', 'b.txt'), 'utf8'), 'b\n'.repeat(1000), 'the existing path is restored all the same');
  const text = await blanket(['restore', archive, join(work, 'dest2'), 'nothing-here']);
  expectExit(t, text, 3, 'restore of only a missing path');
  t.match(text.stderr, /nothing-here: not in the archive/);
});

t.test('a FIFO is restored as a FIFO', async (t) => {
  const work = tmpDir(t);
  const source = join(work, 'source');
  await mkdir(join(source, 'pipes'), { recursive: true });
  execFileSync('mkfifo', ['-m', '0640', join(source, 'pipes', 'fifo')]);
  execFileSync('mkfifo', ['-m', '0604', join(source, 'top-fifo')]);
  const archive = join(work, 'archive');
  const backup = await blanket(['backup', source, archive]);
  expectExit(t, backup, 0, 'backup with FIFOs (never opened, so it does not hang)');
  const dest = join(work, 'dest');
  expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore');
  for (const [name, mode] of [['pipes/fifo', 0o640], ['top-fifo', 0o604]] as const) {
    const st = await lstat(join(dest, name));
    t.ok(st.isFIFO(), `${name} is a FIFO`);
    t.equal(st.mode & 0o7777, mode, `${name} keeps its mode`);
  }
  compareTrees(t, await snapshotTree(source, { includeRoot: true }), await snapshotTree(dest, { includeRoot: true }), { mtimePrecisionNs: US });
});
