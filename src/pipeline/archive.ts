// Opening and creating archives: the header object, and refusing to write into a folder that is not an archive.

import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { classifyObjectName, encodeHeader, FORMAT_NAME, FORMAT_VERSION, HEADER_OBJECT, type ArchiveHeader } from '../formats/archive-layout.js';
import type { Store } from '../stores/store.js';
import { CachingStore } from '../stores/cache.js';
import { LocalStore } from '../stores/local.js';
import { StreamOutStore, type ByteSink } from '../stores/stream-out.js';
import { RetryingStore, type RetryHooks } from '../stores/retry.js';
import { readArchiveHeader } from '../stages/state-reader.js';

export interface StoreLocationOptions {
  /** Endpoint of an S3-compatible service (e.g. http://127.0.0.1:9000); AWS's own when absent. */
  readonly s3Endpoint?: string;
  /** S3 and SFTP: a connection silent this long is dropped and its requests retried (default: the store's). */
  readonly idleTimeoutMs?: number;
  /** How long a remote store keeps retrying one call before the run gives up (default: RetryingStore's). */
  readonly retryBudgetMs?: number;
  /** Told of each retry of a transient failure (remote stores). */
  readonly onRetry?: RetryHooks['onRetry'];
  /** Folder for local copies of a remote archive's indexes (one subfolder per archive id); none if absent. */
  readonly cacheRoot?: string;
  /** SFTP: the private key (read from --ssh-key), an ssh-agent socket, a pinned host key, a known_hosts file. */
  readonly sshPrivateKey?: Buffer;
  readonly sshAgent?: string;
  readonly sshHostKey?: string;
  readonly knownHostsFile?: string;
  /** Wraps a remote store beneath the retry policy (so that each attempt is seen): e.g. to count requests. */
  readonly wrapRemote?: (store: Store) => Store;
}

/** Parses sftp://USER@HOST[:PORT]/ABSOLUTE/PATH. */
export function parseSftpLocation(location: string): { username: string; host: string; port: number; root: string } {
  const match = /^sftp:\/\/([^@/:]+)@(\[[0-9a-fA-F:.]+\]|[^:/\[\]]+)(?::(\d{1,5}))?(\/.*)$/.exec(location);
  const port = Number(match?.[3] ?? 22);
  if (!match || port < 1 || port > 65535) {
    throw new BlanketError(ErrorCodes.USAGE, `archive location ${location}: an SFTP location is sftp://USER@HOST[:PORT]/ABSOLUTE/PATH`, { subject: location });
  }
  return { username: match[1]!, host: match[2]!.replace(/^\[|\]$/g, ''), port, root: match[4]! };
}

/**
 * The store for an archive location: a local path, s3://BUCKET[/PREFIX] (credentials and region the way AWS
 * tools take them: environment, shared config files), or sftp://USER@HOST[:PORT]/PATH (host key checked against
 * known_hosts or a pinned fingerprint). Remote stores come wrapped in the retry policy and the index cache.
 */
export async function openStore(location: string, options: StoreLocationOptions = {}): Promise<Store> {
  const policy = options.retryBudgetMs !== undefined ? { budgetMs: options.retryBudgetMs } : {};
  const hooks = options.onRetry ? { onRetry: options.onRetry } : {};
  const remote = (store: Store): Store => {
    const retrying = new RetryingStore(options.wrapRemote ? options.wrapRemote(store) : store, policy, hooks);
    return options.cacheRoot === undefined ? retrying : withIndexCache(retrying, options.cacheRoot);
  };
  if (location.startsWith('s3://')) {
    // Loaded only for S3 archives: the SDK takes a while to load, and a local run should not pay for it.
    const { parseS3Location, S3Store } = await import('../stores/s3.js');
    return remote(
      new S3Store({
        ...parseS3Location(location),
        retryPolicy: policy,
        retryHooks: hooks,
        ...(options.s3Endpoint ? { endpoint: options.s3Endpoint } : {}),
        ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
        // Beside the index cache: records of multipart uploads in progress, so that a killed one resumes.
        ...(options.cacheRoot !== undefined ? { uploadStateDir: path.join(options.cacheRoot, 'uploads') } : {}),
      }),
    );
  }
  if (location.startsWith('sftp://')) {
    const { SftpStore } = await import('../stores/sftp.js');
    return remote(
      new SftpStore({
        ...parseSftpLocation(location),
        ...(options.sshPrivateKey ? { privateKey: options.sshPrivateKey } : {}),
        ...(options.sshAgent ? { agent: options.sshAgent } : {}),
        ...(options.sshHostKey ? { hostKeySha256: options.sshHostKey } : {}),
        ...(options.knownHostsFile ? { knownHostsFile: options.knownHostsFile } : {}),
        ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
        retryPolicy: policy,
        retryHooks: hooks,
      }),
    );
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) {
    throw new BlanketError(ErrorCodes.USAGE, `archive location ${location}: a local path, s3://BUCKET[/PREFIX] or sftp://USER@HOST[:PORT]/PATH`, {
      subject: location,
    });
  }
  return new LocalStore(location);
}

/**
 * The store of `backup SRC -`: new objects go down `sink` as one object stream; the header and indexes are kept
 * in `stateDir` (with markers of the packs sent), which is what the next run resumes from.
 */
export function openStreamOut(stateDir: string, sink: ByteSink): StreamOutStore {
  return new StreamOutStore(new LocalStore(stateDir), sink, {
    streamed: (name) => name === HEADER_OBJECT || classifyObjectName(name) !== undefined,
    kept: (name) => name === HEADER_OBJECT || classifyObjectName(name)?.kind === 'index',
    preamble: [HEADER_OBJECT],
  });
}

/**
 * Indexes of a remote archive are kept under CACHE/archives/ID (ID: the archive's id from its header), so an
 * incremental run downloads only the indexes it has not seen. A folder that is not (yet) an archive has none.
 */
function withIndexCache(store: Store, cacheRoot: string): Store {
  return new CachingStore(store, {
    cacheable: (name) => classifyObjectName(name)?.kind === 'index',
    folder: async () => {
      try {
        const { id } = await readArchiveHeader(store);
        return /^[0-9a-f]{8,64}$/.test(id) ? path.join(cacheRoot, 'archives', id) : undefined;
      } catch (error) {
        if (isBlanketError(error, ErrorCodes.NOT_AN_ARCHIVE)) return undefined;
        throw error;
      }
    },
  });
}

/** Creates a new archive; the location must be absent or empty. */
export function initArchive(store: Store): Promise<ArchiveHeader> {
  return initArchiveWith(store, { format: FORMAT_NAME, version: FORMAT_VERSION, id: randomBytes(16).toString('hex'), created: new Date().toISOString() });
}

/** Creates an archive with a given header (one received in a stream); the location must be absent or empty. */
export async function initArchiveWith(store: Store, header: ArchiveHeader): Promise<ArchiveHeader> {
  for await (const info of store.list('')) {
    if (info.name === HEADER_OBJECT) {
      throw new BlanketError(ErrorCodes.USAGE, `${store.location} is already a Blanket archive`, { subject: store.location });
    }
    if (classifyObjectName(info.name) !== undefined) {
      throw new BlanketError(
        ErrorCodes.NOT_AN_ARCHIVE,
        `${store.location} holds Blanket layers but its header ${HEADER_OBJECT} is missing: nothing is written to it ` +
          `(restore and verify still read it)`,
        { subject: HEADER_OBJECT },
      );
    }
    throw new BlanketError(
      ErrorCodes.NOT_AN_ARCHIVE,
      `${store.location} is not empty and not a Blanket archive (it holds ${info.name}); choose an empty or new folder`,
      { subject: store.location },
    );
  }
  // list() shows only names an archive could hold: a folder of other files can look empty through it.
  if (!(await store.isEmpty())) {
    throw new BlanketError(
      ErrorCodes.NOT_AN_ARCHIVE,
      `${store.location} is not empty and not a Blanket archive (it holds files of its own); choose an empty or new folder`,
      { subject: store.location },
    );
  }
  if (!(await store.putIfAbsent(HEADER_OBJECT, encodeHeader(header)))) {
    throw new BlanketError(ErrorCodes.USAGE, `${store.location} was made an archive by another run just now`, { subject: store.location });
  }
  return header;
}

/** Reads the archive header, creating the archive first when allowed and the location is new or empty. */
export async function ensureArchive(store: Store, create: boolean): Promise<ArchiveHeader> {
  try {
    return await readArchiveHeader(store);
  } catch (error) {
    if (!create || !isBlanketError(error, ErrorCodes.NOT_AN_ARCHIVE)) throw error;
    return initArchive(store);
  }
}
