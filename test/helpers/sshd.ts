// Test helper: a real OpenSSH sshd on 127.0.0.1 (its own keys, config and port) for the SFTP store tests.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';

const SSHD = '/usr/sbin/sshd';
/** The lock test/helpers/tools.ts takes too, so parallel test files do not fight over dpkg. */
const APT_LOCK = '/tmp/blanket-test-apt.lock';

export interface SshServer {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly privateKey: Buffer;
  /** "SHA256:base64", as `ssh-keygen -lf` prints it. */
  readonly hostKeySha256: string;
  /** Holds `[127.0.0.1]:PORT <host key>`. */
  readonly knownHostsFile: string;
  /** A scratch folder (local, so the same files the server sees). */
  readonly dir: string;
  readonly pid: () => number;
  /** Kills the sshd processes serving open sessions (the listener stays) and waits until they are gone. */
  readonly killSessions: () => Promise<number>;
  /** Kills the listener and every session (the server is down); up() brings it back on the same port and keys. */
  readonly down: () => Promise<void>;
  readonly up: () => Promise<void>;
  /** Stops the server for good and removes its keys and scratch folder (for teardown). */
  readonly stop: () => Promise<void>;
}

function ensureSshd(): void {
  if (existsSync(SSHD)) return;
  process.stderr.write('[sshd] installing openssh-server\n');
  const script = `set -eu
export DEBIAN_FRONTEND=noninteractive
[ -x ${SSHD} ] && exit 0
apt-get update
apt-get install -y --no-install-recommends openssh-server`;
  // The package's own service start fails where there is no init system; the binary is all we need.
  try {
    execFileSync('flock', ['-w', '1800', APT_LOCK, 'sh', '-c', script], { stdio: ['ignore', 2, 2] });
  } catch (error) {
    if (!existsSync(SSHD)) throw new Error(`cannot install openssh-server (needs root and apt): ${(error as Error).message}`);
  }
  if (!existsSync(SSHD)) throw new Error(`${SSHD} still missing after installing openssh-server`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Direct children of `pid` (pgrep -P). */
function childrenOf(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

/** `pid`'s descendants, deepest last. */
function descendantsOf(pid: number): number[] {
  const all: number[] = [];
  for (const child of childrenOf(pid)) all.push(child, ...descendantsOf(child));
  return all;
}

async function waitGone(pids: number[], what: string): Promise<void> {
  for (let i = 0; pids.some(alive); i++) {
    if (i > 500) throw new Error(`${what} did not exit: ${pids.filter(alive).join(' ')}`);
    await sleep(10);
  }
}

export async function startSshd(): Promise<SshServer> {
  ensureSshd();
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const dir = mkdtempSync(join(os.tmpdir(), 'blanket-sshd-'));
  const keygen = (file: string): void => {
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'blanket-test', '-f', join(dir, file)]);
  };
  keygen('host_ed25519');
  keygen('client_ed25519');
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_ed25519.pub')));
  const hostKeySha256 = execFileSync('ssh-keygen', ['-lf', join(dir, 'host_ed25519.pub')], { encoding: 'utf8' }).split(' ')[1]!;
  const hostPub = readFileSync(join(dir, 'host_ed25519.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
  const knownHostsFile = join(dir, 'known_hosts');
  const config = join(dir, 'sshd_config');
  const configure = (port: number): void => {
    writeFileSync(knownHostsFile, `[127.0.0.1]:${port} ${hostPub}\n`);
    writeFileSync(
      config,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${join(dir, 'host_ed25519')}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PermitRootLogin prohibit-password',
        'UsePAM no',
        'StrictModes no', // the keys live under world-writable /tmp
        'MaxStartups 100',
        'MaxSessions 100',
        'Subsystem sftp internal-sftp',
        '',
      ].join('\n'),
    );
    execFileSync(SSHD, ['-t', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  };

  let port = 0;
  let child: ChildProcess | null = null;
  /** Runs sshd and waits for its own "Server listening" line: a bare connect could reach whoever else took the port. */
  const run = (): Promise<boolean> =>
    new Promise((resolve, reject) => {
      const proc = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      child = proc;
      let log = '';
      const timer = setTimeout(() => reject(new Error(`sshd did not start on port ${port}: ${log}`)), 20_000);
      proc.stderr!.on('data', (data: Buffer) => {
        log = (log + data.toString()).slice(-4000);
        if (log.includes(`Server listening on 127.0.0.1 port ${port}.`)) {
          clearTimeout(timer);
          resolve(true);
        }
      });
      proc.once('exit', () => {
        clearTimeout(timer);
        if (child === proc) child = null;
        if (/Address already in use|Cannot bind/.test(log)) resolve(false);
        else reject(new Error(`sshd exited (${proc.exitCode ?? proc.signalCode}) on port ${port}: ${log}`));
      });
    });
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    configure(port);
    if (await run()) break;
    if (attempt >= 5) throw new Error('sshd: no free port after 5 tries');
  }
  const up = async (): Promise<void> => {
    if (!(await run())) throw new Error(`sshd: port ${port} was taken while the server was down`);
  };
  const down = async (): Promise<void> => {
    const proc = child;
    if (proc === null || proc.pid === undefined) return;
    child = null;
    const pids = [proc.pid, ...descendantsOf(proc.pid)];
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await waitGone(pids, 'sshd');
  };
  return {
    host: '127.0.0.1',
    port,
    username: 'root',
    privateKey: readFileSync(join(dir, 'client_ed25519')),
    hostKeySha256,
    knownHostsFile,
    dir,
    pid: () => child?.pid ?? -1,
    killSessions: async () => {
      const proc = child;
      if (proc === null || proc.pid === undefined) return 0;
      const sessions = descendantsOf(proc.pid);
      for (const pid of sessions) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await waitGone(sessions, 'sshd sessions');
      return sessions.length;
    },
    down,
    up,
    stop: async () => {
      await down();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
