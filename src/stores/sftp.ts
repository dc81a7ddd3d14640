// Store on an SFTP server (OpenSSH): host key always verified, each put a temporary file renamed into place, one lazy connection that is reopened after it drops.

import { createHash, createHmac, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import SftpClient from 'ssh2-sftp-client';
import type { ConnectConfig, FileEntryWithStats, SFTPWrapper, Stats } from 'ssh2';
import { BlanketError, ErrorCodes, errnoCode } from '../formats/errors.js';
import { DEFAULT_RETRY_POLICY, retryTransient, type RetryHooks, type RetryPolicy } from './retry.js';
import { destroyOnAbort, isValidObjectName, type GetOptions, type ObjectInfo, type PutBody, type PutOptions, type Store, type StoreCapabilities } from './store.js';

export interface SftpStoreOptions {
  readonly host: string;
  /** Default 22. */
  readonly port?: number;
  readonly username: string;
  /** Absolute remote directory that holds the objects. */
  readonly root: string;
  readonly privateKey?: Buffer;
  /** Path of an ssh-agent socket (SSH_AUTH_SOCK). */
  readonly agent?: string;
  /** Pinned host key fingerprint, "SHA256:base64" as `ssh-keygen -lf` prints it; checked instead of known_hosts. */
  readonly hostKeySha256?: string;
  /** Default ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts. */
  readonly knownHostsFile?: string;
  /** A connection whose peer stays silent this long (no answer to keepalives) is dropped; default 30 s. */
  readonly idleTimeoutMs?: number;
  /** Reconnects within one streamed put (its body cannot be read again, so RetryingStore cannot replay it). */
  readonly retryPolicy?: Partial<RetryPolicy>;
  readonly retryHooks?: RetryHooks;
}

const TEMP_PREFIX = '.tmp-';
/** Exactly the names put() and putIfAbsent() give their temporary files. */
const TEMP_NAME = /^\.tmp-[0-9a-f]{12}$/;

/** SFTP v3 status codes (draft-ietf-secsh-filexfer-02). */
const FX_NO_SUCH_FILE = 2;
const FX_FAILURE = 4;
const FX_NO_CONNECTION = 6;
const FX_CONNECTION_LOST = 7;

/** Bytes per write or read request, and how many are in flight at once (one round trip each otherwise). */
const PIECE = 64 * 1024;
const WRITES_IN_FLIGHT = 64;
const READS_IN_FLIGHT = 16;

interface Connection {
  readonly client: SftpClient;
  readonly sftp: SFTPWrapper;
  dead: boolean;
  /** Requests sent and not yet answered: failed at once when the connection goes (ssh2 may never answer them). */
  readonly pending: Set<(error: Error) => void>;
  /** When a request was last answered (or the first of those pending was sent): for the silence watchdog. */
  lastAnswer: number;
  watchdog?: NodeJS.Timeout;
}

type Done<T> = (error?: Error | null, value?: T) => void;

export class SftpStore implements Store {
  readonly capabilities: StoreCapabilities = { atomicRename: true, parallelism: 4, checksums: [], exclusiveCreate: true };
  readonly location: string;
  private readonly root: string;
  private readonly port: number;
  private readonly knownDirs = new Set<string>();
  private conn: Connection | undefined;
  private connecting: Promise<Connection> | undefined;

  private readonly retryPolicy: RetryPolicy;
  private readonly retryHooks: RetryHooks;
  /** Streamed puts that went on over a new connection after theirs dropped. */
  readonly writeStats = { resumed: 0 };

  constructor(private readonly options: SftpStoreOptions) {
    this.retryPolicy = { ...DEFAULT_RETRY_POLICY, ...options.retryPolicy };
    this.retryHooks = options.retryHooks ?? {};
    if (!path.posix.isAbsolute(options.root)) throw new RangeError(`the SFTP root must be an absolute path, not ${JSON.stringify(options.root)}`);
    this.root = path.posix.normalize(options.root).replace(/(.)\/$/, '$1');
    this.port = options.port ?? 22;
    const host = options.host.includes(':') ? `[${options.host}]` : options.host;
    this.location = `sftp://${options.username}@${host}:${this.port}${this.root}`;
  }

  async put(name: string, body: PutBody, options: PutOptions = {}): Promise<ObjectInfo> {
    const target = this.pathOf(name);
    if (!(body instanceof Uint8Array)) return this.putStreamed(name, target, body, options);
    const conn = await this.connection('write', name);
    const dir = path.posix.dirname(target);
    const temp = tempPath(dir);
    let handle: Buffer | undefined;
    try {
      options.signal?.throwIfAborted();
      handle = await this.createTemp(conn, temp);
      const size = await this.writeAll(conn, handle, body, options.signal);
      if (options.durable !== false) await this.fsync(conn, handle);
      const written = handle;
      handle = undefined;
      await request<void>(conn, (done) => conn.sftp.close(written, done));
      options.signal?.throwIfAborted();
      // posix-rename@openssh.com replaces the target in one step, as rename(2) does.
      await request<void>(conn, (done) => conn.sftp.ext_openssh_rename(temp, target, done));
      return { name, size };
    } catch (error) {
      await this.abandon(conn, handle, temp);
      throw this.ioError('write', name, error, conn);
    }
  }

  /**
   * A streamed body, written so that a dropped connection costs only the writes in flight: each piece is kept
   * until the server acknowledges it (at most WRITES_IN_FLIGHT), and after a reconnect the temporary file is
   * opened again and the kept pieces written again; acknowledged ones are in the file already. The closing
   * fsync, close and rename are repeated on a new connection too (a rename whose answer was lost finds the object
   * in place).
   *
   *   chunk ─▶ 64 KiB pieces ─▶ write, ≤ 64 in flight, each kept until acknowledged
   *   connection lost ─▶ (retry policy) reconnect, reopen the temporary file, write the kept pieces ─▶ go on
   */
  private async putStreamed(name: string, target: string, body: AsyncIterable<Uint8Array>, options: PutOptions): Promise<ObjectInfo> {
    const signal = options.signal;
    const temp = tempPath(path.posix.dirname(target));
    const retry = <T>(call: () => Promise<T>): Promise<T> =>
      retryTransient(call, { operation: 'write', name, location: this.location, policy: this.retryPolicy, hooks: this.retryHooks, ...(signal ? { signal } : {}) });
    let conn: Connection | undefined;
    let handle: Buffer | undefined;
    /** Pieces written but not yet acknowledged, by position. */
    const unacked = new Map<number, Buffer>();
    let failure: { error: unknown } | undefined;
    let pending = 0;
    let wake: (() => void) | undefined;
    const send = (position: number, piece: Buffer): void => {
      const c = conn!;
      const h = handle!;
      unacked.set(position, piece);
      pending++;
      request<void>(c, (done) => c.sftp.write(h, piece, 0, piece.length, position, done)).then(
        () => void unacked.delete(position),
        (error: unknown) => void (failure ??= { error }),
      ).finally(() => {
        pending--;
        wake?.();
      });
    };
    const inFlightAtMost = async (count: number, evenAfterFailure = false): Promise<void> => {
      while (pending > count && (evenAfterFailure || failure === undefined)) await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    };
    /** (Re)opens the temporary file on a usable connection. */
    const reopen = async (): Promise<void> => {
      conn = await this.connection('write', name);
      const c = conn;
      try {
        handle = await request<Buffer>(c, (done) => c.sftp.open(temp, 'r+', done));
      } catch (error) {
        throw this.ioError('write', name, error, c);
      }
    };
    /** After a failed write: once nothing is in flight, reconnects and writes the unacknowledged pieces again. */
    const recover = async (): Promise<void> => {
      while (failure !== undefined) {
        await inFlightAtMost(0, true);
        const mapped = this.ioError('write', name, failure.error, conn!);
        if (!mapped.transient) throw mapped;
        failure = undefined;
        await retry(reopen);
        this.writeStats.resumed++;
        for (const [position, piece] of [...unacked]) {
          send(position, piece);
          await inFlightAtMost(WRITES_IN_FLIGHT - 1);
          if (failure !== undefined) break;
        }
        await inFlightAtMost(0);
      }
    };
    try {
      signal?.throwIfAborted();
      // Nothing of the body is read before the file exists, so creating it can be retried like any call.
      await retry(async () => {
        conn = await this.connection('write', name);
        const c = conn;
        try {
          handle = await this.createTemp(c, temp);
        } catch (error) {
          throw this.ioError('write', name, error, c);
        }
      });
      let size = 0;
      for await (const chunk of body) {
        signal?.throwIfAborted();
        // A streamed chunk is the producer's memory, reused once the next is asked for; ssh2 may still be sending
        // from it then, and a piece may have to be written again after a reconnect.
        const bytes = Buffer.from(chunk);
        for (let at = 0; at < bytes.length; at += PIECE) {
          send(size + at, bytes.subarray(at, at + PIECE));
          await inFlightAtMost(WRITES_IN_FLIGHT - 1);
          if (failure !== undefined) await recover();
        }
        size += bytes.length;
      }
      await inFlightAtMost(0);
      await recover();
      signal?.throwIfAborted();
      await retry(async () => {
        if (handle === undefined || !usable(conn!)) {
          try {
            await reopen();
          } catch (error) {
            // A rename whose answer was lost: the temporary file is gone and the object is in place.
            if (statusOf((error as BlanketError).cause) === FX_NO_SUCH_FILE && (await this.statPath(conn!, target).catch(() => undefined))?.size === size) return;
            throw error;
          }
        }
        const c = conn!;
        try {
          if (options.durable !== false) await this.fsync(c, handle!);
          const written = handle!;
          handle = undefined;
          await request<void>(c, (done) => c.sftp.close(written, done));
          await request<void>(c, (done) => c.sftp.ext_openssh_rename(temp, target, done));
        } catch (error) {
          throw this.ioError('write', name, error, c);
        }
      });
      return { name, size };
    } catch (error) {
      await inFlightAtMost(0, true);
      if (conn !== undefined) await this.abandon(conn, handle, temp);
      throw conn !== undefined ? this.ioError('write', name, signal?.aborted ? signal.reason : error, conn) : error;
    }
  }

  async putIfAbsent(name: string, body: Buffer): Promise<boolean> {
    const target = this.pathOf(name);
    const conn = await this.connection('create', name);
    const temp = tempPath(path.posix.dirname(target));
    let handle: Buffer | undefined;
    try {
      handle = await this.createTemp(conn, temp);
      await this.writeAll(conn, handle, body, undefined);
      await this.fsync(conn, handle);
      const written = handle;
      handle = undefined;
      await request<void>(conn, (done) => conn.sftp.close(written, done));
      // Plain SFTP v3 rename refuses an existing target (OpenSSH links, then unlinks the temporary name), so the
      // object appears whole and only once.
      try {
        await request<void>(conn, (done) => conn.sftp.rename(temp, target, done));
        return true;
      } catch (error) {
        if (statusOf(error) === undefined || (await this.statPath(conn, target)) === undefined) throw error;
        await request<void>(conn, (done) => conn.sftp.unlink(temp, done)).catch(() => undefined);
        return false;
      }
    } catch (error) {
      await this.abandon(conn, handle, temp);
      throw this.ioError('create', name, error, conn);
    }
  }

  async get(name: string, options: GetOptions = {}): Promise<Readable> {
    const remote = this.pathOf(name);
    options.signal?.throwIfAborted();
    const conn = await this.connection('read', name);
    let handle: Buffer;
    try {
      handle = await request<Buffer>(conn, (done) => conn.sftp.open(remote, 'r', done));
    } catch (error) {
      if (statusOf(error) === FX_NO_SUCH_FILE) {
        throw new BlanketError(ErrorCodes.MISSING_OBJECT, `object ${name} is missing from ${this.location}`, { subject: name });
      }
      throw this.ioError('read', name, error, conn);
    }
    const start = options.range?.start ?? 0;
    const end = options.range?.end ?? Infinity;
    const stream = Readable.from(this.readRange(conn, handle, name, start, end), { objectMode: false, highWaterMark: 1 << 20 });
    return destroyOnAbort(stream, options.signal);
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    const remote = this.pathOf(name);
    const conn = await this.connection('stat', name);
    try {
      const st = await this.statPath(conn, remote);
      return st?.isFile() ? { name, size: st.size } : undefined;
    } catch (error) {
      throw this.ioError('stat', name, error, conn);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const conn = await this.connection('list', prefix || '.');
    // Walk only the directories that can hold names with this prefix.
    const slash = prefix.lastIndexOf('/');
    yield* this.listDir(conn, slash >= 0 ? prefix.slice(0, slash) : '', prefix);
  }

  private async *listDir(conn: Connection, relDir: string, prefix: string): AsyncIterable<ObjectInfo> {
    let entries: FileEntryWithStats[];
    try {
      entries = await this.readDir(conn, relDir ? `${this.root}/${relDir}` : this.root);
    } catch (error) {
      throw this.ioError('list', relDir || '.', error, conn);
    }
    for (const entry of entries) {
      if (entry.filename.startsWith(TEMP_PREFIX)) continue;
      const name = relDir ? `${relDir}/${entry.filename}` : entry.filename;
      if (entry.attrs.isDirectory()) {
        if (prefix.startsWith(name + '/') || (name + '/').startsWith(prefix)) yield* this.listDir(conn, name, prefix);
      } else if (entry.attrs.isFile() && name.startsWith(prefix) && isValidObjectName(name)) {
        yield { name, size: entry.attrs.size };
      }
    }
  }

  async delete(name: string): Promise<void> {
    const remote = this.pathOf(name);
    const conn = await this.connection('delete', name);
    try {
      await request<void>(conn, (done) => conn.sftp.unlink(remote, done));
    } catch (error) {
      if (statusOf(error) === FX_NO_SUCH_FILE) return;
      throw this.ioError('delete', name, error, conn);
    }
  }

  async isEmpty(): Promise<boolean> {
    const conn = await this.connection('list', '.');
    try {
      // A temporary file of ours is what a run killed while creating the archive leaves: that is still empty.
      return (await this.readDir(conn, this.root)).every((entry) => TEMP_NAME.test(entry.filename));
    } catch (error) {
      throw this.ioError('list', '.', error, conn);
    }
  }

  async cleanup(): Promise<void> {
    const conn = await this.connection('clean up', '.');
    const sweep = async (dir: string): Promise<void> => {
      for (const entry of await this.readDir(conn, dir)) {
        const full = `${dir}/${entry.filename}`;
        if (entry.attrs.isDirectory()) await sweep(full);
        else if (TEMP_NAME.test(entry.filename)) {
          await request<void>(conn, (done) => conn.sftp.unlink(full, done)).catch((error: unknown) => {
            if (statusOf(error) !== FX_NO_SUCH_FILE) throw error;
          });
        }
      }
    };
    try {
      await sweep(this.root);
    } catch (error) {
      throw this.ioError('clean up', '.', error, conn);
    }
  }

  /** Ends the connection (a later call opens a new one). */
  async close(): Promise<void> {
    const pending = this.connecting;
    this.connecting = undefined;
    const conn = this.conn ?? (pending ? await pending.catch(() => undefined) : undefined);
    this.conn = undefined;
    if (conn === undefined) return;
    const wasAlive = usable(conn);
    clearInterval(conn.watchdog);
    for (const fail of [...conn.pending]) fail(Object.assign(new Error('Not connected: the store was closed'), { code: 'ERR_NOT_CONNECTED' }));
    conn.dead = true;
    // A peer that stopped answering must not hold up the caller: the socket goes when ssh2 gives up on it.
    if (wasAlive) await Promise.race([conn.client.end().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
  }

  // --- connection ---

  /** The open connection, or a new one; failures to connect become BlanketErrors naming the call. */
  private async connection(action: string, name: string): Promise<Connection> {
    if (this.conn !== undefined && usable(this.conn)) return this.conn;
    if (this.conn !== undefined) this.drop(this.conn);
    this.connecting ??= this.open().finally(() => {
      this.connecting = undefined;
    });
    try {
      return await this.connecting;
    } catch (error) {
      if (error instanceof BlanketError) throw error;
      const detail = error instanceof Error ? error.message : String(error);
      throw new BlanketError(ErrorCodes.STORE_IO, `cannot ${action} ${name} at ${this.location}: cannot connect: ${detail}`, {
        subject: name,
        cause: error,
        transient: isConnectionError(error),
      });
    }
  }

  private async open(): Promise<Connection> {
    const trusted = this.options.hostKeySha256 === undefined ? await this.readKnownHosts() : [];
    let refusal: BlanketError | undefined;
    let conn: Connection | undefined;
    let closedEarly = false;
    const lost = (): void => {
      if (conn === undefined) closedEarly = true;
      else this.drop(conn);
    };
    // The library's default handlers print to the console; a lost connection is only noted, the next call reconnects.
    const client = new SftpClient('blanket', { error: lost, end: lost, close: lost });
    const config: ConnectConfig = {
      host: this.options.host,
      port: this.port,
      username: this.options.username,
      readyTimeout: Math.min(20_000, Math.max(1000, 2 * (this.options.idleTimeoutMs ?? 30_000))),
      // A peer that vanished without a reset, or a stalled link, is noticed within the idle timeout instead of
      // hanging every request: the connection is dropped, its requests fail as transient, the next reconnects.
      keepaliveInterval: Math.max(500, Math.floor((this.options.idleTimeoutMs ?? 30_000) / 3)),
      keepaliveCountMax: 3,
      hostVerifier: (key: Buffer): boolean => {
        refusal = this.checkHostKey(key, trusted);
        return refusal === undefined;
      },
      ...(this.options.privateKey !== undefined ? { privateKey: this.options.privateKey } : {}),
      ...(this.options.agent !== undefined ? { agent: this.options.agent } : {}),
    };
    let sftp: SFTPWrapper;
    try {
      sftp = await client.connect(config);
    } catch (error) {
      if (refusal !== undefined) throw refusal;
      throw error;
    }
    conn = { client, sftp, dead: closedEarly, pending: new Set(), lastAnswer: Date.now() };
    // A connection that leaves requests unanswered for the idle timeout is dropped: a stalled link, or a server
    // that keeps the session alive (keepalives answered) but no longer serves it.
    const idleMs = this.options.idleTimeoutMs ?? 30_000;
    const watched = conn;
    watched.watchdog = setInterval(() => {
      if (watched.pending.size > 0 && Date.now() - watched.lastAnswer > idleMs) {
        this.drop(watched, new Error(`No response from server for ${Math.round(idleMs / 1000)} s`));
      }
    }, Math.max(250, Math.floor(idleMs / 4)));
    watched.watchdog.unref();
    const onLost = (): void => this.drop(conn!);
    sftp.on('error', onLost);
    sftp.on('end', onLost);
    sftp.on('close', onLost);
    if (conn.dead) throw Object.assign(new Error('Not connected: the connection closed as it opened'), { code: 'ECONNRESET' });
    this.conn = conn;
    return conn;
  }

  /** Forgets a connection that failed or closed, so that the next call opens a new one; its pending requests fail. */
  private drop(conn: Connection, reason: Error = new Error('Connection lost')): void {
    if (this.conn === conn) this.conn = undefined;
    clearInterval(conn.watchdog);
    for (const fail of [...conn.pending]) fail(Object.assign(new Error(reason.message), { code: 'ERR_NOT_CONNECTED' }));
    if (conn.dead) return;
    conn.dead = true;
    conn.client.end().catch(() => undefined);
  }

  /** The known_hosts lines of this host (an absent file holds none). */
  private async readKnownHosts(): Promise<string[]> {
    const files = this.options.knownHostsFile !== undefined ? [this.options.knownHostsFile] : [path.join(os.homedir(), '.ssh', 'known_hosts'), '/etc/ssh/ssh_known_hosts'];
    const lines: string[] = [];
    for (const file of files) {
      try {
        lines.push(...(await readFile(file, 'utf8')).split('\n'));
      } catch (error) {
        if (errnoCode(error) !== 'ENOENT') {
          const detail = error instanceof Error ? error.message : String(error);
          throw new BlanketError(ErrorCodes.STORE_IO, `cannot read known hosts file ${file} to check ${this.location}: ${detail}`, { cause: error });
        }
      }
    }
    return lines;
  }

  /** Undefined if the key is trusted, else the error that says why not and how to trust it. Never trust on first use. */
  private checkHostKey(key: Buffer, knownHosts: readonly string[]): BlanketError | undefined {
    const offered = 'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '');
    const type = keyType(key);
    const hostPort = `${this.options.host}:${this.port}`;
    const pinned = this.options.hostKeySha256;
    let problem: string;
    if (pinned !== undefined) {
      if (pinned.trim().replace(/=+$/, '') === offered) return undefined;
      problem = `it does not match the pinned hostKeySha256 ${pinned}`;
    } else {
      // OpenSSH names a host on port 22 plainly, on any other port as [host]:port.
      const hostName = this.port === 22 ? this.options.host : `[${this.options.host}]:${this.port}`;
      const verdict = knownHostsVerdict(knownHosts, hostName, key);
      if (verdict === 'trusted') return undefined;
      const file = this.options.knownHostsFile ?? '~/.ssh/known_hosts';
      problem = verdict === 'revoked' ? `it is marked @revoked in ${file}` : `${file} has no such key for ${hostName}`;
    }
    return new BlanketError(
      ErrorCodes.STORE_IO,
      `refusing ${this.location}: the host key of ${hostPort} (${type} ${offered}) is not trusted: ${problem}. ` +
        `If that is the server's key (check with ssh-keygen -lf on the server's host key .pub file), pin it with ` +
        `hostKeySha256 "${offered}" or add it to known_hosts (ssh-keyscan -p ${this.port} ${this.options.host}).`,
      { subject: hostPort },
    );
  }

  // --- file operations ---

  /** The temporary file, created exclusively, with its directory made first when missing. */
  private async createTemp(conn: Connection, temp: string): Promise<Buffer> {
    const dir = path.posix.dirname(temp);
    const create = (): Promise<Buffer> => request<Buffer>(conn, (done) => conn.sftp.open(temp, 'wx', { mode: 0o644 }, done));
    if (!this.knownDirs.has(dir)) {
      await this.mkdirs(conn, dir);
      this.knownDirs.add(dir);
      return create();
    }
    try {
      return await create();
    } catch (error) {
      if (statusOf(error) !== FX_NO_SUCH_FILE) throw error;
      // The folder went away since (deleted by hand): make it again.
      await this.mkdirs(conn, dir);
      return create();
    }
  }

  private async mkdirs(conn: Connection, dir: string): Promise<void> {
    if (await this.tryMkdir(conn, dir)) return;
    const parent = path.posix.dirname(dir);
    if (parent === dir) throw new Error(`cannot create ${dir}`);
    await this.mkdirs(conn, parent);
    if (!(await this.tryMkdir(conn, dir))) throw new Error(`cannot create ${dir}: its parent vanished`);
  }

  /** True if `dir` is a directory now (made, or there already, perhaps by a concurrent put); false if its parent is missing. */
  private async tryMkdir(conn: Connection, dir: string): Promise<boolean> {
    try {
      await request<void>(conn, (done) => conn.sftp.mkdir(dir, done));
      return true;
    } catch (error) {
      const status = statusOf(error);
      if (status !== FX_FAILURE && status !== FX_NO_SUCH_FILE) throw error;
      const st = await this.statPath(conn, dir);
      if (st?.isDirectory()) return true;
      if (st !== undefined || status !== FX_NO_SUCH_FILE) throw error;
      return false;
    }
  }

  /** Writes the body from offset 0 with several requests in flight, pulling the next chunk only when there is room. */
  private async writeAll(conn: Connection, handle: Buffer, body: PutBody, signal: AbortSignal | undefined): Promise<number> {
    let size = 0;
    let pending = 0;
    let failure: { error: unknown } | undefined;
    let wake: (() => void) | undefined;
    const settled = (): void => {
      pending--;
      wake?.();
    };
    const waitUntil = async (atMost: number): Promise<void> => {
      while (pending > atMost && failure === undefined) await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
      if (failure !== undefined) throw failure.error;
    };
    const inMemory = body instanceof Uint8Array;
    for await (const chunk of inMemory ? [body] : body) {
      signal?.throwIfAborted();
      // A streamed chunk is the producer's memory, reused once the next is asked for; ssh2 may still be sending from
      // it then (it splits pieces larger than the server's packet limit and sends the rest after each answer).
      const bytes = inMemory ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) : Buffer.from(chunk);
      for (let at = 0; at < bytes.length; at += PIECE) {
        const piece = bytes.subarray(at, at + PIECE);
        const position = size + at;
        pending++;
        request<void>(conn, (done) => conn.sftp.write(handle, piece, 0, piece.length, position, done)).then(settled, (error: unknown) => {
          failure ??= { error };
          settled();
        });
        await waitUntil(WRITES_IN_FLIGHT - 1);
      }
      size += bytes.length;
    }
    await waitUntil(0);
    return size;
  }

  private async fsync(conn: Connection, handle: Buffer): Promise<void> {
    try {
      await request<void>(conn, (done) => conn.sftp.ext_openssh_fsync(handle, (error) => done(error)));
    } catch (error) {
      // A server without fsync@openssh.com: the rename still makes the object whole, if not crash-proof.
      if (!/does not support/i.test(error instanceof Error ? error.message : '')) throw error;
    }
  }

  /** After a failed write: closes the handle and removes the temporary file, as far as the connection allows (cleanup() does the rest). */
  private async abandon(conn: Connection, handle: Buffer | undefined, temp: string): Promise<void> {
    if (!usable(conn)) return;
    if (handle !== undefined) await request<void>(conn, (done) => conn.sftp.close(handle, done)).catch(() => undefined);
    await request<void>(conn, (done) => conn.sftp.unlink(temp, done)).catch(() => undefined);
  }

  /** The bytes [start, end) of an open file, several reads ahead; closes the handle when done. */
  private async *readRange(conn: Connection, handle: Buffer, name: string, start: number, end: number): AsyncGenerator<Buffer> {
    interface Read {
      readonly at: number;
      readonly length: number;
      readonly bytes: Promise<Buffer>;
    }
    const queue: Read[] = [];
    let next = start;
    const issue = (): void => {
      const at = next;
      const length = Math.min(PIECE, end - at);
      next += length;
      const bytes = request<Buffer>(conn, (done) =>
        conn.sftp.read(handle, Buffer.allocUnsafe(length), 0, length, at, (error, count, buffer) =>
          error ? done(error) : done(undefined, buffer.subarray(0, count)),
        ),
      );
      bytes.catch(() => undefined); // awaited in turn, or dropped after a short read
      queue.push({ at, length, bytes });
    };
    try {
      for (;;) {
        while (queue.length < READS_IN_FLIGHT && next < end) issue();
        const read = queue.shift();
        if (read === undefined) return;
        const bytes = await read.bytes;
        if (bytes.length === 0) return; // end of file
        yield bytes;
        if (bytes.length < read.length) {
          // A short read: the reads queued after it would leave a gap; carry on from where it stopped.
          queue.length = 0;
          next = read.at + bytes.length;
        }
      }
    } catch (error) {
      throw this.ioError('read', name, error, conn);
    } finally {
      if (usable(conn)) await request<void>(conn, (done) => conn.sftp.close(handle, done)).catch(() => undefined);
    }
  }

  /** stat of a remote path, undefined if absent. */
  private async statPath(conn: Connection, remote: string): Promise<Stats | undefined> {
    try {
      return await request<Stats>(conn, (done) => conn.sftp.stat(remote, done));
    } catch (error) {
      if (statusOf(error) === FX_NO_SUCH_FILE) return undefined;
      throw error;
    }
  }

  /** A directory's entries, none if it is absent. */
  private async readDir(conn: Connection, dir: string): Promise<FileEntryWithStats[]> {
    try {
      const entries = await request<FileEntryWithStats[]>(conn, (done) => conn.sftp.readdir(dir, done));
      return entries.filter((entry) => entry.filename !== '.' && entry.filename !== '..');
    } catch (error) {
      if (statusOf(error) === FX_NO_SUCH_FILE) return [];
      throw error;
    }
  }

  private pathOf(name: string): string {
    if (!isValidObjectName(name)) throw new RangeError(`invalid object name ${JSON.stringify(name)}`);
    return `${this.root}/${name}`;
  }

  /** A BlanketError for a failed call; transient (and the connection dropped) when the connection was the cause. */
  private ioError(action: string, name: string, cause: unknown, conn?: Connection): BlanketError {
    if (cause instanceof BlanketError) return cause;
    const transient = isConnectionError(cause);
    if (transient && conn !== undefined) this.drop(conn);
    const detail = cause instanceof Error ? cause.message : String(cause);
    return new BlanketError(ErrorCodes.STORE_IO, `cannot ${action} ${name} at ${this.location}: ${detail}`, { subject: name, cause, transient });
  }
}

/**
 * One SFTP request as a promise; refused at once on a closed connection (ssh2 would never answer it), and failed
 * when the connection is dropped while it waits.
 */
function request<T>(conn: Connection, issue: (done: Done<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (!usable(conn)) {
      reject(Object.assign(new Error('Not connected: the SFTP connection closed'), { code: 'ERR_NOT_CONNECTED' }));
      return;
    }
    let settled = false;
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      conn.pending.delete(fail);
      reject(error);
    };
    if (conn.pending.size === 0) conn.lastAnswer = Date.now(); // silence is counted from the first request waiting
    conn.pending.add(fail);
    try {
      issue((error, value) => {
        if (settled) return;
        settled = true;
        conn.pending.delete(fail);
        conn.lastAnswer = Date.now();
        if (error) reject(error);
        else resolve(value as T);
      });
    } catch (error) {
      fail(error as Error);
    }
  });
}

function usable(conn: Connection): boolean {
  // ssh2 marks the channel unreadable when the connection goes, before any event reaches us.
  return !conn.dead && (conn.sftp as unknown as { readable?: boolean }).readable !== false;
}

/** The SFTP status code of a server's answer, or undefined for anything else. */
function statusOf(error: unknown): number | undefined {
  const code = typeof error === 'object' && error !== null && 'code' in error ? (error as { code: unknown }).code : undefined;
  return typeof code === 'number' ? code : undefined;
}

const CONNECTION_CODES = new Set(['ECONNRESET', 'ETIMEDOUT', 'ECONNREFUSED', 'EPIPE', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EAI_AGAIN', 'ERR_NOT_CONNECTED']);
const CONNECTION_MESSAGES =
  /No SFTP connection|Not connected|No response from server|Unexpected (?:close|end) event|channel (?:is )?closed|Keepalive timeout|Timed out while waiting for handshake|socket hang up|Connection lost|not writable/i;

/** Whether the connection, rather than the request, failed: the same call may then succeed on a new one. */
function isConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const status = statusOf(error);
  if (status === FX_NO_CONNECTION || status === FX_CONNECTION_LOST) return true;
  const level = (error as { level?: unknown }).level;
  if (level === 'client-socket' || level === 'client-timeout') return true;
  return CONNECTION_CODES.has(errnoCode(error) ?? '') || CONNECTION_MESSAGES.test(error.message);
}

/** 'trusted' if a known_hosts line names `hostName` with exactly this key. */
function knownHostsVerdict(lines: readonly string[], hostName: string, key: Buffer): 'trusted' | 'revoked' | 'unknown' {
  let verdict: 'trusted' | 'unknown' = 'unknown';
  for (const line of lines) {
    const fields = line.trim().split(/\s+/);
    if (fields[0] === undefined || fields[0] === '' || fields[0].startsWith('#')) continue;
    const marker = fields[0].startsWith('@') ? fields.shift() : undefined;
    const [hosts, , blob] = fields;
    if (hosts === undefined || blob === undefined || !hostsMatch(hosts, hostName)) continue;
    if (!Buffer.from(blob, 'base64').equals(key)) continue;
    if (marker === '@revoked') return 'revoked';
    if (marker === undefined) verdict = 'trusted';
  }
  return verdict;
}

/** known_hosts host field: hashed `|1|salt|hmac`, or comma-separated patterns with `*`, `?` and `!` negation. */
function hostsMatch(field: string, hostName: string): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    if (salt === undefined || hash === undefined) return false;
    return createHmac('sha1', Buffer.from(salt, 'base64')).update(hostName).digest('base64') === hash;
  }
  let matched = false;
  for (const pattern of field.split(',')) {
    const negated = pattern.startsWith('!');
    const glob = (negated ? pattern.slice(1) : pattern).toLowerCase();
    const regex = new RegExp('^' + glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
    if (regex.test(hostName.toLowerCase())) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

/** The algorithm name at the start of an SSH public key blob (e.g. ssh-ed25519). */
function keyType(key: Buffer): string {
  if (key.length < 4) return 'unknown';
  const length = key.readUInt32BE(0);
  return length > 0 && length < 64 && key.length >= 4 + length ? key.subarray(4, 4 + length).toString('latin1') : 'unknown';
}

function tempPath(dir: string): string {
  return `${dir}/${TEMP_PREFIX}${randomBytes(6).toString('hex')}`;
}
