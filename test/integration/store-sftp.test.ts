// The SFTP store against a real OpenSSH sshd on loopback: the store conformance suite, host key checks (never trust
// on first use), and what happens when the connection is killed (transient errors, reconnection, no half objects).

import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BlanketError, ErrorCodes } from '../../src/formats/errors.js';
import { RetryingStore } from '../../src/stores/retry.js';
import { SftpStore, type SftpStoreOptions } from '../../src/stores/sftp.js';
import { getBuffer } from '../../src/stores/store.js';
import { randomBytes } from '../helpers/bytes.js';
import { startSshd, type SshServer } from '../helpers/sshd.js';
import { startFlakyProxy } from '../helpers/flaky-proxy.js';
import { storeConformance } from '../helpers/store-conformance.js';

const server: SshServer = await startSshd();
t.teardown(() => server.stop());

const noSleep = { sleep: async (): Promise<void> => undefined };
let roots = 0;

/** A fresh remote root (not created yet: the store makes it); the same folder is local to this test. */
function freshRoot(): string {
  return join(server.dir, 'roots', `r${++roots}`, 'archive');
}

function options(root: string, extra: Partial<SftpStoreOptions> = {}): SftpStoreOptions {
  return { host: server.host, port: server.port, username: server.username, root, privateKey: server.privateKey, knownHostsFile: server.knownHostsFile, ...extra };
}

/** Every file under `dir`, relative (what the server holds, looked at directly). */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[])
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath ?? entry.path, entry.name).slice(dir.length + 1))
    .sort();
}

/** The outcome of a call: its value, or the error it threw. */
async function outcome<T>(call: Promise<T>): Promise<{ value: T } | { error: unknown }> {
  try {
    return { value: await call };
  } catch (error) {
    return { error };
  }
}

t.test('conformance', async (t) => {
  await storeConformance(t, 'sftp', async () => {
    const root = freshRoot();
    const store = new SftpStore(options(root));
    return {
      store,
      dispose: async () => {
        await store.close();
        rmSync(join(root, '..'), { recursive: true, force: true });
      },
    };
  });
});

t.test('location names user, host, port and root, and no key', async (t) => {
  const root = freshRoot();
  const store = new SftpStore(options(root));
  t.equal(store.location, `sftp://root@127.0.0.1:${server.port}${root}`);
  t.notMatch(store.location, server.privateKey.toString('utf8').slice(40, 80));
  t.throws(() => new SftpStore(options('relative/root')), RangeError, 'a relative root is refused');
});

t.test('objects land where the server sees them, temporary files are neither listed nor kept', async (t) => {
  const root = freshRoot();
  const store = new SftpStore(options(root));
  t.teardown(() => store.close());
  await store.put('layers/000001/a.pack', Buffer.from('abc'));
  t.same(filesUnder(root), ['layers/000001/a.pack'], 'one file, at its name');
  t.equal(readFileSync(join(root, 'layers/000001/a.pack'), 'utf8'), 'abc');
  writeFileSync(join(root, 'layers/000001/.tmp-0123456789ab'), 'leftover');
  writeFileSync(join(root, '.tmp-ba9876543210'), 'leftover');
  const listed: string[] = [];
  for await (const info of store.list('')) listed.push(info.name);
  t.same(listed, ['layers/000001/a.pack'], 'temporary files are not listed');
  await store.cleanup();
  t.same(filesUnder(root), ['layers/000001/a.pack'], 'cleanup removed them');

  // A body that fails, or a signal that aborts, on a live connection: the temporary file goes at once.
  async function* failing(): AsyncGenerator<Uint8Array> {
    yield Buffer.alloc(300_000, 1);
    throw new Error('source failed');
  }
  await t.rejects(store.put('layers/000001/b.pack', failing()), { code: ErrorCodes.STORE_IO, transient: false, message: /source failed/ });
  const controller = new AbortController();
  async function* aborted(): AsyncGenerator<Uint8Array> {
    yield Buffer.alloc(300_000, 2);
    controller.abort(new Error('stop'));
    yield Buffer.alloc(300_000, 3);
  }
  await t.rejects(store.put('layers/000001/c.pack', aborted(), { signal: controller.signal }), { code: ErrorCodes.STORE_IO, transient: false });
  t.same(filesUnder(root), ['layers/000001/a.pack'], 'no object and no temporary file left by a failed or aborted put');

  const empty = freshRoot();
  mkdirSync(empty, { recursive: true });
  writeFileSync(join(empty, '.tmp-0123456789ab'), 'leftover');
  const other = new SftpStore(options(empty));
  t.teardown(() => other.close());
  t.equal(await other.isEmpty(), true, 'a root with only a temporary file of ours is empty');
  writeFileSync(join(empty, 'foreign.txt'), 'x');
  t.equal(await other.isEmpty(), false, 'a foreign file makes it not empty');
});

t.test('putIfAbsent is exclusive under concurrency', async (t) => {
  const root = freshRoot();
  const store = new SftpStore(options(root));
  t.teardown(() => store.close());
  const results = await Promise.all(Array.from({ length: 8 }, (_, i) => store.putIfAbsent('locks/backup', Buffer.from(`run ${i}`))));
  t.equal(results.filter(Boolean).length, 1, 'exactly one create wins');
  const winner = results.indexOf(true);
  t.equal(readFileSync(join(root, 'locks/backup'), 'utf8'), `run ${winner}`, 'and its bytes are the object');
  t.same(filesUnder(root), ['locks/backup'], 'the losers left no temporary files');
});

t.test('an unknown host key is refused, with the fingerprint it offered, and nothing is written', async (t) => {
  const fingerprint = new RegExp(server.hostKeySha256.replace(/[+/]/g, '\\$&'));
  const refused = async (label: string, extra: Partial<SftpStoreOptions>, reason: RegExp): Promise<void> => {
    const root = freshRoot();
    const store = new SftpStore(options(root, extra));
    t.teardown(() => store.close());
    for (const [call, run] of [
      ['put', () => store.put('blanket.json', Buffer.from('{}'))],
      ['putIfAbsent', () => store.putIfAbsent('locks/backup', Buffer.from('x'))],
      ['stat', () => store.stat('blanket.json')],
      ['isEmpty', () => store.isEmpty()],
    ] as const) {
      const result = await outcome<unknown>(run());
      const error = 'error' in result ? result.error : undefined;
      t.ok(error instanceof BlanketError, `${label}: ${call} is refused`);
      if (!(error instanceof BlanketError)) continue;
      t.equal(error.code, ErrorCodes.STORE_IO, `${label}: ${call}: STORE_IO`);
      t.equal(error.transient, false, `${label}: ${call}: not transient (retrying cannot help)`);
      t.match(error.message, fingerprint, `${label}: ${call}: names the fingerprint offered`);
      t.match(error.message, /127\.0\.0\.1/, `${label}: ${call}: names the host`);
      t.match(error.message, /hostKeySha256/, `${label}: ${call}: says how to pin it`);
      t.match(error.message, reason, `${label}: ${call}: says why`);
    }
    t.notOk(existsSync(join(root, '..')), `${label}: nothing was created on the server`);
  };

  await refused('a wrong pinned fingerprint', { hostKeySha256: 'SHA256:' + 'A'.repeat(43), knownHostsFile: server.knownHostsFile }, /does not match the pinned/);

  // The right key under other names (another port, plain host for a non-22 port, a hashed other host), and another key
  // under this host's name: none of it trusts this server.
  const otherKeyDir = join(server.dir, 'other-key');
  mkdirSync(otherKeyDir, { recursive: true });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(otherKeyDir, 'key')]);
  const otherKey = readFileSync(join(otherKeyDir, 'key.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
  const hostKey = readFileSync(server.knownHostsFile, 'utf8').trim().split(' ').slice(1).join(' ');
  const strangers = join(server.dir, 'known_hosts_strangers');
  writeFileSync(strangers, [`[127.0.0.1]:${server.port + 1} ${hostKey}`, `otherhost,10.0.0.1 ${hostKey}`, `[127.0.0.1]:${server.port} ${otherKey}`, ''].join('\n'));
  const hashedOther = join(server.dir, 'known_hosts_hashed_other');
  writeFileSync(hashedOther, `[127.0.0.2]:${server.port} ${hostKey}\n`);
  execFileSync('ssh-keygen', ['-H', '-f', hashedOther], { stdio: 'ignore' });
  const before = readFileSync(strangers, 'utf8');
  await refused('a known_hosts without this host', { knownHostsFile: strangers }, /has no such key/);
  await refused('a hashed known_hosts without this host', { knownHostsFile: hashedOther }, /has no such key/);
  await refused('a missing known_hosts', { knownHostsFile: join(server.dir, 'no-such-file') }, /has no such key/);
  t.equal(readFileSync(strangers, 'utf8'), before, 'known_hosts is not changed (no trust on first use)');

  const revoked = join(server.dir, 'known_hosts_revoked');
  writeFileSync(revoked, `[127.0.0.1]:${server.port} ${hostKey}\n@revoked * ${hostKey}\n`);
  await refused('a revoked key', { knownHostsFile: revoked }, /revoked/);
});

t.test('a trusted host key is accepted: pinned, in known_hosts, or hashed in known_hosts', async (t) => {
  const hostKey = readFileSync(server.knownHostsFile, 'utf8').trim().split(' ').slice(1).join(' ');
  const hashed = join(server.dir, 'known_hosts_hashed');
  writeFileSync(hashed, `otherhost ${hostKey}\n[127.0.0.1]:${server.port} ${hostKey}\n`);
  execFileSync('ssh-keygen', ['-H', '-f', hashed], { stdio: 'ignore' });
  t.match(readFileSync(hashed, 'utf8'), /^\|1\|/, 'the file is hashed');
  const wildcard = join(server.dir, 'known_hosts_wildcard');
  writeFileSync(wildcard, `[127.0.0.?]:${server.port},!10.* ${hostKey}\n`);
  for (const [label, extra] of [
    ['pinned', { hostKeySha256: server.hostKeySha256, knownHostsFile: join(server.dir, 'no-such-file') }],
    ['known_hosts', { knownHostsFile: server.knownHostsFile }],
    ['hashed known_hosts', { knownHostsFile: hashed }],
    ['a wildcard pattern', { knownHostsFile: wildcard }],
  ] as const) {
    const store = new SftpStore(options(freshRoot(), extra));
    t.teardown(() => store.close());
    await store.put('a', Buffer.from(label));
    t.equal((await getBuffer(store, 'a')).toString(), label, `${label}: connects and works`);
  }
});

t.test('after the connection is killed, calls fail as transient or succeed, and the next one reconnects', async (t) => {
  const root = freshRoot();
  const store = new SftpStore(options(root));
  t.teardown(() => store.close());
  const retrying = new RetryingStore(store, {}, noSleep);
  const a = randomBytes(300_000, 31);
  const big = randomBytes(8_000_000, 32);
  await store.put('keep/a', a);
  await store.put('keep/big', big);

  // Idle connection killed.
  t.ok((await server.killSessions()) >= 1, 'an sshd session was killed');
  const first = await outcome(store.stat('keep/a'));
  if ('error' in first) t.match(first.error, { code: ErrorCodes.STORE_IO, transient: true }, 'the call on the dead connection fails as transient');
  else t.same(first.value, { name: 'keep/a', size: a.length }, 'or it already reconnected');
  t.same(await retrying.stat('keep/a'), { name: 'keep/a', size: a.length }, 'through the retry wrapper: the answer');
  t.ok((await getBuffer(retrying, 'keep/a')).equals(a), 'the data written before is intact');

  // A read in progress when the connection dies: the stream fails as transient...
  const stream = await store.get('keep/big');
  const iterator = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const head = await iterator.next();
  t.ok(head.done !== true && head.value.length > 0, 'the read had started');
  await server.killSessions();
  let broken: unknown;
  try {
    for (let next = await iterator.next(); next.done !== true; next = await iterator.next());
  } catch (error) {
    broken = error;
  }
  t.match(broken, { code: ErrorCodes.STORE_IO, transient: true }, 'a read cut off by the connection fails as transient');
  stream.destroy();

  // ...and through the retry wrapper it carries on from where it broke, on a new connection.
  const resumed = await retrying.get('keep/big');
  const parts: Buffer[] = [];
  let killed = false;
  for await (const chunk of resumed) {
    parts.push(chunk as Buffer);
    if (!killed) {
      killed = true;
      t.ok((await server.killSessions()) >= 1, 'killed mid-read');
    }
  }
  t.ok(Buffer.concat(parts).equals(big), 'the resumed read gives every byte once, in order');

  // The whole server down: transient; back on the same port: the retry wrapper gets through.
  await server.down();
  await t.rejects(store.stat('keep/a'), { code: ErrorCodes.STORE_IO, transient: true }, 'server down: transient');
  await t.rejects(store.stat('keep/a'), { code: ErrorCodes.STORE_IO, transient: true, message: /cannot connect/ }, 'still down: connection refused, transient');
  await server.up();
  t.same(await retrying.stat('keep/a'), { name: 'keep/a', size: a.length }, 'server back: reconnected');
  t.ok((await getBuffer(retrying, 'keep/big')).equals(big), 'and the data is intact');
});

t.test('a streamed put over a killed connection goes on over a new one; one whose server stays down fails and leaves no object', async (t) => {
  const root = freshRoot();
  const store = new SftpStore({ ...options(root), retryPolicy: { attempts: 4, baseDelayMs: 20, maxDelayMs: 100 } });
  t.teardown(() => store.close());
  const old = randomBytes(5000, 41);
  await store.put('layers/000001/obj.pack', old);
  const bytes = randomBytes(6_000_000, 42);
  async function* body(killAt: number): AsyncGenerator<Uint8Array> {
    for (let at = 0; at < bytes.length; at += 1_000_000) {
      if (at === killAt) await server.killSessions();
      yield bytes.subarray(at, at + 1_000_000);
    }
  }
  // Killed with writes in flight, and between two chunks.
  t.match(await store.put('layers/000001/obj.pack', body(2_000_000)), { size: bytes.length }, 'the put over a killed connection completes');
  t.ok(readFileSync(join(root, 'layers/000001/obj.pack')).equals(bytes), 'the object is whole, on the server');
  t.match(await store.put('layers/000001/new.pack', body(5_000_000)), { size: bytes.length }, 'so does a new object');
  t.ok(readFileSync(join(root, 'layers/000001/new.pack')).equals(bytes), 'whole too');
  t.equal(store.writeStats.resumed, 2, 'each went on after a reconnect');

  // The server goes away mid-put and stays away past the retry policy: the put fails, no object.
  const first = randomBytes(3_000_000, 43);
  await t.rejects(
    store.put('layers/000001/obj.pack', (async function* () {
      yield first.subarray(0, 1_000_000);
      await server.down();
      await server.killSessions();
      yield first.subarray(1_000_000);
    })()),
    { code: ErrorCodes.STORE_IO, message: /gave up on write layers\/000001\/obj\.pack .* after 4 attempts.*ECONNREFUSED/ },
    'a put whose server stays down fails once the retry policy is spent, naming the object',
  );
  await server.up();
  const retrying = new RetryingStore(store, {}, noSleep);
  t.ok((await getBuffer(retrying, 'layers/000001/obj.pack')).equals(bytes), 'the earlier version is whole');
  const names: string[] = [];
  for await (const info of retrying.list('')) names.push(info.name);
  t.same(names.sort(), ['layers/000001/new.pack', 'layers/000001/obj.pack'], 'only whole objects are listed');
  t.ok(
    filesUnder(root).every((file) => /^layers\/000001\/(obj|new)\.pack$/.test(file) || /^layers\/000001\/\.tmp-[0-9a-f]{12}$/.test(file)),
    'on the server: the objects and at most temporary files',
  );
  await retrying.cleanup();
  t.same(filesUnder(root).sort(), ['layers/000001/new.pack', 'layers/000001/obj.pack'], 'after cleanup: only the objects');
});


t.test('a link that stalls mid-read: the read fails as transient within the idle timeout instead of hanging', async (t) => {
  const root = freshRoot();
  const direct = new SftpStore(options(root));
  t.teardown(() => direct.close());
  const bytes = randomBytes(3_000_000, 51);
  await direct.put('layers/000001/big.pack', bytes);
  // Every connection through the proxy stops forwarding after 40-100 KB: past the handshake, inside the data.
  const proxy = await startFlakyProxy({ targetPort: server.port, seed: 9, cutProbability: 0, cutWithinBytes: 60_000, laterCutWithinBytes: 60_000, stallProbability: 1 });
  t.teardown(() => proxy.close());
  const stalled = new SftpStore({ ...options(root), port: proxy.port, hostKeySha256: server.hostKeySha256, idleTimeoutMs: 1500 });
  t.teardown(() => stalled.close());
  const started = Date.now();
  const result = await outcome(
    (async () => {
      const parts: Buffer[] = [];
      for await (const chunk of await stalled.get('layers/000001/big.pack')) parts.push(chunk as Buffer);
      return Buffer.concat(parts);
    })(),
  );
  const seconds = (Date.now() - started) / 1000;
  t.ok('error' in result, 'the read fails');
  t.match('error' in result ? result.error : undefined, { code: ErrorCodes.STORE_IO, transient: true }, 'as a transient store error (retried by the retry policy)');
  t.ok(seconds < 20, `within the idle timeout and a reconnect, not a hang (${seconds.toFixed(1)} s)`);
  t.ok(proxy.stats.stalled >= 1, 'the link did stall');
});
