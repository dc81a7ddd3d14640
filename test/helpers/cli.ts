// Test helpers: run the compiled Blanket CLI (dist/src/cli/main.js) as a
// child process (never through a shell), and make throw-away directories.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (this file is test/helpers/cli.ts). */
export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
/** The compiled CLI entry point; build first (`npm run build`, or `npm ci` runs it). */
export const CLI_PATH = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

export interface CliOptions {
  cwd?: string;
  /** Merged over process.env (NO_COLOR=1 is always added; an inherited FORCE_COLOR is dropped). */
  env?: Record<string, string>;
  /** Written to the child's stdin, which is then closed. Without it stdin is closed at once. */
  input?: string;
  /** Kill the child with SIGKILL after this many ms (default 300000). */
  timeoutMs?: number;
}

export interface CliResult {
  /** Exit code, or null if killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True if runCli killed the child because timeoutMs elapsed. */
  timedOut: boolean;
}

function childEnv(env?: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = { ...process.env };
  delete base.FORCE_COLOR; // would override NO_COLOR in Node's own colouring
  return { ...base, ...env, NO_COLOR: '1' };
}

/**
 * Start `node dist/src/cli/main.js ...args` and return the ChildProcess
 * (stdio all piped), e.g. to kill -9 it mid-run. The caller must consume or
 * ignore stdout/stderr and close stdin as needed.
 */
export function spawnCli(args: string[], options: Pick<CliOptions, 'cwd' | 'env'> = {}): ChildProcess {
  return spawnNodeScript(CLI_PATH, args, options);
}

/** Run the CLI to completion and collect its output (never rejects on non-zero exit). */
export function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  return runNodeScript(CLI_PATH, args, options);
}

/** Like spawnCli, for any script (used to test these helpers). */
export function spawnNodeScript(script: string, args: string[], options: Pick<CliOptions, 'cwd' | 'env'> = {}): ChildProcess {
  return spawn(process.execPath, [script, ...args], {
    cwd: options.cwd,
    env: childEnv(options.env),
    stdio: ['pipe', 'pipe', 'pipe'],
    shell: false,
  });
}

/** Like runCli, for any script (used to test these helpers). */
export function runNodeScript(script: string, args: string[], options: CliOptions = {}): Promise<CliResult> {
  // A child that hangs is asked for a diagnostic report (its JavaScript stack) before it is killed.
  const reportDir = mkdtempSync(join(tmpdir(), 'blanket-report-'));
  const nodeOptions = `${options.env?.['NODE_OPTIONS'] ?? process.env['NODE_OPTIONS'] ?? ''} --report-on-signal --report-signal=SIGUSR2 --report-directory=${reportDir}`.trim();
  return new Promise((resolve, reject) => {
    const child = spawnNodeScript(script, args, { ...options, env: { ...options.env, NODE_OPTIONS: nodeOptions } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    child.stdout!.on('data', (c: Buffer) => out.push(c));
    child.stderr!.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGUSR2');
      setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    }, options.timeoutMs ?? 300_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let stderr = Buffer.concat(err).toString('utf8');
      if (timedOut) stderr += `\n[runCli] killed after ${options.timeoutMs ?? 300_000} ms timeout\n${hangReport(reportDir)}`;
      rmSync(reportDir, { recursive: true, force: true });
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr, timedOut });
    });
    // a child that exits without reading stdin would make write() emit EPIPE
    child.stdin!.on('error', () => {});
    child.stdin!.end(options.input ?? undefined);
  });
}

/** The JavaScript stack and pending handles of a diagnostic report the child wrote, if any. */
function hangReport(dir: string): string {
  try {
    const file = readdirSync(dir).find((f) => f.endsWith('.json'));
    if (file === undefined) return '[runCli] no diagnostic report\n';
    const report = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { javascriptStack?: { stack?: string[] }; libuv?: Array<{ type: string; is_active: boolean }> };
    const handles = (report.libuv ?? []).filter((h) => h.is_active).map((h) => h.type);
    return `[runCli] JavaScript stack when it hung:\n${(report.javascriptStack?.stack ?? []).join('\n')}\n[runCli] active handles: ${handles.join(', ')}\n`;
  } catch (error) {
    return `[runCli] report unreadable: ${(error as Error).message}\n`;
  }
}

/** What tmpDir needs from a tap Test. */
export interface TeardownTarget {
  teardown(fn: () => unknown): unknown;
}

/** Make a fresh directory under os.tmpdir(); it is removed (recursively) in t.teardown. */
export function tmpDir(t: TeardownTarget, prefix = 'blanket-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
