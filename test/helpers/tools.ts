// Test helper: make sure external Debian tools exist, installing missing ones
// with apt-get (tests run as root on Debian bookworm). Tests never skip for a
// missing tool: they install it, or fail loudly.

import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';

export interface DebianTool {
  /** Command looked up on PATH. */
  command: string;
  /** Debian package that provides it. */
  pkg: string;
}

/** Tools the integration tests use. */
export const DEBIAN_TEST_TOOLS: readonly DebianTool[] = [
  { command: 'zstd', pkg: 'zstd' },
  { command: 'tar', pkg: 'tar' },
  { command: 'rdiff', pkg: 'rdiff' },
  { command: 'gpg', pkg: 'gnupg' },
];

/** Absolute path of `command` if an executable of that name is on PATH. */
export function findOnPath(command: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    if (!dir) continue;
    const p = join(dir, command);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

let aptUpdated = false;
const LOCK = '/tmp/blanket-test-apt.lock';

// Runs under flock so parallel tap test files don't fight over the dpkg lock;
// re-checks each command once the lock is held (another process may have
// installed it meanwhile). Args: update-flag (1/0), then command pkg pairs.
const SCRIPT = `
set -eu
export DEBIAN_FRONTEND=noninteractive
need_update=$1; shift
while [ $# -gt 0 ]; do
  cmd=$1; pkg=$2; shift 2
  if command -v "$cmd" >/dev/null 2>&1; then continue; fi
  if [ "$need_update" = 1 ]; then
    echo "[ensureDebianTools] apt-get update" >&2
    apt-get update
    need_update=0
  fi
  echo "[ensureDebianTools] installing $pkg (for $cmd)" >&2
  apt-get install -y --no-install-recommends "$pkg"
done
`;

/**
 * For each tool whose command is not on PATH: `apt-get update` (once per
 * process) and `apt-get install -y --no-install-recommends PKG`. Logs to
 * stderr (stdout is the TAP stream). Throws if a tool is still missing.
 */
export function ensureDebianTools(tools: readonly DebianTool[]): void {
  const missing = tools.filter((t) => !findOnPath(t.command));
  if (missing.length === 0) return;
  process.stderr.write(`[ensureDebianTools] missing: ${missing.map((t) => `${t.command} (${t.pkg})`).join(', ')}\n`);
  const args = ['-c', SCRIPT, 'sh', aptUpdated ? '0' : '1', ...missing.flatMap((t) => [t.command, t.pkg])];
  const flock = findOnPath('flock');
  try {
    if (flock) execFileSync(flock, ['-w', '1800', LOCK, 'sh', ...args], { stdio: ['ignore', 2, 2] });
    else execFileSync('sh', args, { stdio: ['ignore', 2, 2] });
  } catch (e) {
    throw new Error(
      `ensureDebianTools: installing ${missing.map((t) => t.pkg).join(' ')} failed ` +
        `(needs root and apt on Debian): ${(e as Error).message}`,
    );
  }
  aptUpdated = true;
  const still = missing.filter((t) => !findOnPath(t.command));
  if (still.length) {
    throw new Error(`ensureDebianTools: still missing after install: ${still.map((t) => t.command).join(', ')}`);
  }
  process.stderr.write(`[ensureDebianTools] installed: ${missing.map((t) => t.pkg).join(', ')}\n`);
}

/** ensureDebianTools(DEBIAN_TEST_TOOLS). */
export function ensureTestTools(): void {
  ensureDebianTools(DEBIAN_TEST_TOOLS);
}
