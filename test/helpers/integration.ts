// Shared helpers for the CLI integration tests (test/integration/): exit-code checks, NDJSON parsing, the
// CLI's path display, subtree filters on snapshots, Blanket's path order, and the size of an archive on disk.
//
// Written independently of src/, so that the tests do not agree with a bug by construction.

import { lstat, readdir } from 'node:fs/promises';
import type { Test } from 'tap';
import { join } from 'node:path';
import { runCli, type CliOptions, type CliResult } from './cli.js';
import { displayBytes, type TreeEntry, type TreeSnapshot } from './tree.js';

/**
 * runCli without tap's hooks in NODE_OPTIONS: the CLI is compiled JavaScript (dist/), so the TypeScript and mock
 * loaders have nothing to do in it, and the process-info hook only records coverage, which this project does not
 * collect. Loaded into every CLI child, they doubled each run's start-up time, and once crashed one in Node's
 * require(esm) path (a V8 fatal error, "IsGraphAsync must be used on an instantiated module").
 */
export function blanket(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const nodeOptions = (process.env.NODE_OPTIONS ?? '')
    .split(/\s+/)
    .filter((option) => option !== '' && !option.includes('/@tapjs/'))
    .join(' ');
  return runCli(args, { ...options, env: { NODE_OPTIONS: nodeOptions, ...options.env } });
}

/** mtimes are compared at microsecond precision: Node cannot set nanoseconds (see test/helpers/tree.ts). */
export const US = 1000n;

/** What expectExit needs from a tap Test. */
export type EqualTarget = Pick<Test, 'equal'>;

/** Asserts an exit code, showing the tail of stderr/stdout when it is wrong. */
export function expectExit(t: EqualTarget, result: CliResult, code: number, what: string): boolean {
  const good = result.code === code;
  t.equal(result.code, code, `${what} exits ${code}`, good ? {} : { stderr: result.stderr.slice(-4000), stdout: result.stdout.slice(-3000) });
  return good;
}

/** Parses NDJSON (throws on a line that is not JSON). */
export function ndjson(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** The `finished` event of a --json run. */
export function finishedEvent(stdout: string): Record<string, unknown> | undefined {
  return ndjson(stdout).find((e) => e.type === 'finished');
}

/**
 * How the CLI shows a path: valid UTF-8 as is, a backslash as \\, control characters and bytes that are not
 * valid UTF-8 as \xNN.
 */
export function cliPath(raw: Buffer): string {
  return displayBytes(raw).replace(/\\(\\|n|t|r)/g, (_m, c: string) =>
    c === '\\' ? '\\\\' : `\\x${({ n: '0a', t: '09', r: '0d' } as Record<string, string>)[c]}`,
  );
}

export function rawPath(entry: TreeEntry): Buffer {
  return Buffer.from(entry.pathHex, 'hex');
}

/** True when `raw` is one of `prefixes` or below one of them. */
export function isUnder(raw: Buffer, prefixes: readonly Buffer[]): boolean {
  return prefixes.some((p) => raw.equals(p) || (raw.length > p.length && raw.subarray(0, p.length).equals(p) && raw[p.length] === 0x2f));
}

/** The entries of a snapshot that are one of `prefixes` or below one. */
export function under(snapshot: TreeSnapshot, prefixes: readonly Buffer[]): TreeSnapshot {
  return snapshot.filter((e) => isUnder(rawPath(e), prefixes));
}

/** The directories that hold the given paths (not the paths themselves). */
export function parentsOf(snapshot: TreeSnapshot, paths: readonly Buffer[]): TreeSnapshot {
  const wanted = new Set<string>();
  for (const p of paths) {
    for (let i = p.indexOf(0x2f); i >= 0; i = p.indexOf(0x2f, i + 1)) wanted.add(p.subarray(0, i).toString('hex'));
  }
  return snapshot.filter((e) => wanted.has(e.pathHex));
}

/**
 * Blanket's path order: component by component; where two paths first differ, one that ends there (a direct
 * child of the common directory) comes first, otherwise the names compare as bytes. The root ('') is first.
 */
export function comparePathOrder(a: Buffer, b: Buffer): number {
  const split = (p: Buffer): Buffer[] => {
    const out: Buffer[] = [];
    if (p.length === 0) return out;
    let start = 0;
    for (let i = 0; i <= p.length; i++) {
      if (i === p.length || p[i] === 0x2f) {
        out.push(p.subarray(start, i));
        start = i + 1;
      }
    }
    return out;
  };
  const ac = split(a);
  const bc = split(b);
  if (ac.length === 0 || bc.length === 0) return ac.length - bc.length;
  for (let i = 0; ; i++) {
    const aLast = i === ac.length - 1;
    const bLast = i === bc.length - 1;
    const byName = Buffer.compare(ac[i]!, bc[i]!);
    if (aLast && bLast) return byName;
    if (aLast) return -1;
    if (bLast) return 1;
    if (byName !== 0) return byName;
  }
}

/** Bytes of every regular file below `dir` (like `du -b --apparent-size`, files only). */
export async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += await treeBytes(path);
    else if (entry.isFile()) total += (await lstat(path)).size;
  }
  return total;
}

/** Sorts a snapshot by raw path bytes (the order snapshotTree returns). */
export function sortSnapshot(snapshot: TreeSnapshot): TreeSnapshot {
  return [...snapshot].sort((a, b) => Buffer.compare(rawPath(a), rawPath(b)));
}

/** Parses the CLI's path display (see cliPath) back to raw bytes; "/" is the root. */
export function parseCliPath(text: string): Buffer {
  if (text === '/') return Buffer.alloc(0);
  const out: Buffer[] = [];
  let literal = '';
  const flush = (): void => {
    out.push(Buffer.from(literal, 'utf8'));
    literal = '';
  };
  for (let i = 0; i < text.length; i++) {
    if (text.startsWith('\\\\', i)) {
      literal += '\\';
      i++;
    } else if (/^\\x[0-9a-f]{2}$/.test(text.slice(i, i + 4))) {
      flush();
      out.push(Buffer.from([parseInt(text.slice(i + 2, i + 4), 16)]));
      i += 3;
    } else {
      literal += text[i];
    }
  }
  flush();
  return Buffer.concat(out);
}

/**
 * The part of a snapshot that `keep` selects, as snapshotTree would see a tree holding only that part:
 * hard-link groups are recomputed among the entries kept (a group left with one name is no group).
 */
export function restrictSnapshot(snapshot: TreeSnapshot, keep: (entry: TreeEntry) => boolean): TreeSnapshot {
  const kept = snapshot.filter(keep);
  const groups = new Map<string, TreeEntry[]>();
  for (const e of kept) {
    if (e.hardLinkGroup === null) continue;
    const list = groups.get(e.hardLinkGroup) ?? [];
    list.push(e);
    groups.set(e.hardLinkGroup, list);
  }
  return kept.map((e) => {
    if (e.hardLinkGroup === null) return e;
    const group = groups.get(e.hardLinkGroup)!;
    if (group.length < 2) return { ...e, hardLinkGroup: null };
    const first = group.map(rawPath).sort(Buffer.compare)[0]!;
    return { ...e, hardLinkGroup: first.toString('hex') };
  });
}
