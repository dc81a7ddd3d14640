#!/usr/bin/env -S MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=4194304 MALLOC_TRIM_THRESHOLD_=8388608 node --max-semi-space-size=4 --expose-gc --no-turbo-inlining
// The blanket command: parses argv, runs a pipeline, renders its events and maps the result to an exit code.
// (The shebang pins glibc malloc: two arenas, and a fixed mmap threshold of 4 MiB, so that the zstd binding's
// per-frame contexts and buffers (~1 MiB each) are reused from the heap rather than mapped and faulted in anew
// each time, which cost ~1.2 M page faults and ~3 s of system time per bench backup; the dynamic threshold
// instead kept freed multi-MiB buffers in per-thread arenas. A fixed threshold also fixes the trim threshold at
// its 128 KiB default, so the heap top those buffers come from was given back and faulted in again at each
// frame: 8 MiB keeps most of it (bench initial backup: ~300,000 page faults -> ~90,000, ~0.5 s less CPU; 32 MiB
// saved 50,000 faults more for ~5 MiB more RSS, too close to the 200 MiB budget of the 250,000-file runs).
// It keeps V8's young generation small (and collectOften() below its old generation), and --expose-gc lets
// stages/gc-hints.ts free content buffers that live outside the heap: ~110 MiB less peak RSS of the bench's
// initial backup. --no-turbo-inlining: a backup lives for seconds, and optimizing compiles with inlining took
// ~0.6 s of CPU on the background threads of a 1.6 s run; without it a changed-day backup takes ~10% less CPU
// and wall time, an initial backup ~5% less CPU, at the same main-thread time. See bench/RESULTS.md.)

import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { Command, CommanderError, Option } from 'commander';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { normaliseRelativePath, parseDisplayPath } from '../formats/path-key.js';
import { DEFAULT_PACK_SIZE } from '../pipeline/defaults.js';
import { initArchive, openStore, openStreamOut } from '../pipeline/archive.js';
import { StreamOutStore, writableSink } from '../stores/stream-out.js';
import { LocalStore } from '../stores/local.js';
import type { ReceiveResult } from '../pipeline/receive.js';
import type { CopyProblem } from '../stores/mesh.js';
import type { MeshRestoreResult } from '../pipeline/mesh-restore.js';
// The other commands' pipelines load only when used: a backup from cron starts without restore's modules.
import { Monitor } from '../stages/monitor.js';
import type { Store } from '../stores/store.js';
import { RecordingStore, type StoreOperation } from '../stores/recording.js';
import { readExcludeFile } from '../stages/exclude.js';
import { createRenderer } from './render.js';
import { formatBytes, formatDuration, parseDuration, parseSize } from './units.js';
import type { LayerReport, RetentionPolicy } from '../pipeline/gc.js';

export const EXIT = { OK: 0, ERROR: 1, USAGE: 2, INCOMPLETE: 3, INTERRUPTED: 130 } as const;

/**
 * From now on V8's old generation grows by 25% between collections rather than by its default factor, which let
 * a 250,000-file backup or restore hold 240 MiB, mostly garbage. Short runs (a no-change or a day's incremental
 * backup) are left the default: collecting that often cost them ~10% of their time. Idempotent.
 */
let collectingOften = false;
function collectOften(): void {
  if (collectingOften) return;
  collectingOften = true;
  setFlagsFromString('--heap-growing-percent=25');
}
/**
 * A backup collects often (collectOften) once it has read this many new or changed files, stored this much, or
 * gone through this many files in all: an initial backup at once, a day's incremental run of a tree like the
 * bench's (25,000 files, a few hundred read) never.
 */
const LARGE_RUN_FILES_READ = 2_000;
const LARGE_RUN_STORED_BYTES = 64 << 20;
const LARGE_RUN_FILES = 100_000;

const program = new Command();
program
  .name('blanket')
  .description('Layered, resumable backups to dumb storage.')
  .version('0.1.0')
  .showHelpAfterError()
  // Parse errors (unknown option or command, missing argument) are thrown to main(), which exits 2 for them.
  .exitOverride()
  .addHelpText(
    'after',
    `
Exit codes: 0 success (also a backup stopped by --max-time/--max-bytes), 1 error, 2 usage error,
3 finished but incomplete (unreadable source files, damaged or missing archive objects), 130 interrupted.`,
  );

function positiveInt(option: string) {
  return (text: string): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new BlanketError(ErrorCodes.USAGE, `${option}: expected a positive whole number, got ${JSON.stringify(text)}`);
    return n;
  };
}

/** Stores opened by this command, closed when it ends (a remote store's connection would keep the process alive). */
const openedStores: Store[] = [];

async function trackStore(opened: Promise<Store>): Promise<Store> {
  const store = await opened;
  openedStores.push(store);
  return store;
}

/** Remote stores opened by this command, counting the requests made to them (every retry attempt too). */
const remoteRequests: RecordingStore[] = [];

/** Requests made to remote archives, for a command's finished event: empty for a local archive. */
function requestsField(): { requests?: Partial<Record<StoreOperation, number>> & { total: number } } {
  if (remoteRequests.length === 0) return {};
  const byKind: Partial<Record<StoreOperation, number>> = {};
  for (const store of remoteRequests) {
    for (const [kind, count] of Object.entries(store.counts) as [StoreOperation, number][]) if (count > 0) byKind[kind] = (byKind[kind] ?? 0) + count;
  }
  return { requests: { total: remoteRequests.reduce((sum, store) => sum + store.count(), 0), ...byKind } };
}

/** "N requests to the archive (get 3, list 1, ...)" for a remote archive, else null. */
function requestsLine(): string | null {
  const { requests } = requestsField();
  if (requests === undefined) return null;
  const { total, ...byKind } = requests;
  return `${total} requests to the archive (${Object.entries(byKind).map(([kind, count]) => `${kind} ${count}`).join(', ')})`;
}

/** Whether stdout carries an object stream (its EPIPE is then the stream's failure, not the end of a listing). */
let stdoutCarriesData = false;

/** The store of `backup SRC -`: objects down stdout, resume state in --state or the cache folder (one per source). */
function streamToStdout(source: string, stateDir: string | undefined): StreamOutStore {
  if (process.stdout.isTTY) throw new BlanketError(ErrorCodes.USAGE, 'refusing to write an object stream to a terminal: redirect stdout (e.g. | ssh host "cat >> stream" or > file)');
  stdoutCarriesData = true;
  const state = stateDir ?? path.join(cacheRoot(), 'streams', createHash('sha256').update(path.resolve(source)).digest('hex').slice(0, 16));
  return openStreamOut(state, writableSink(process.stdout));
}

function cacheRoot(): string {
  return path.join(process.env['XDG_CACHE_HOME'] || path.join(os.homedir(), '.cache'), 'blanket');
}

/** The archive's store; an S3 endpoint from --s3-endpoint, else the AWS tools' variables. */
/** Values of the options withStoreOptions adds. */
interface StoreOptionValues {
  readonly s3Endpoint?: string;
  readonly retryBudget?: string;
  readonly ioTimeout?: string;
  readonly sshKey?: string;
  readonly sshHostKey?: string;
  readonly knownHosts?: string;
}

/** Adds the options that reach remote archives (every command that opens an archive takes them). */
function withStoreOptions(command: Command): Command {
  return command
    .option('--s3-endpoint <url>', S3_ENDPOINT_HELP)
    .option('--retry-budget <duration>', RETRY_BUDGET_HELP)
    .option('--io-timeout <duration>', 'remote archives: drop a connection silent this long and retry its requests (default 60s on S3, 30s on SFTP)')
    .option('--ssh-key <file>', 'sftp:// archives: private key file (default: ssh-agent via $SSH_AUTH_SOCK)')
    .option('--ssh-host-key <fingerprint>', 'sftp:// archives: accept only this host key (SHA256:... as ssh-keygen -lf prints it) instead of known_hosts')
    .option('--known-hosts <file>', 'sftp:// archives: known_hosts file (default ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts)');
}

function storeFor(archive: string, opts: StoreOptionValues): Promise<Store> {
  const endpoint = opts.s3Endpoint ?? process.env['AWS_ENDPOINT_URL_S3'] ?? process.env['AWS_ENDPOINT_URL'];
  const budget = opts.retryBudget;
  const sshKey = opts.sshKey;
  let privateKey: Buffer | undefined;
  if (sshKey !== undefined && archive.startsWith('sftp://')) {
    try {
      privateKey = readFileSync(sshKey);
    } catch (error) {
      throw new BlanketError(ErrorCodes.USAGE, `--ssh-key ${sshKey}: cannot read it (${(error as Error).message})`, { subject: sshKey });
    }
  }
  const agent = process.env['SSH_AUTH_SOCK'];
  return trackStore(openStore(archive, {
    wrapRemote: (store) => {
      const counted = new RecordingStore(store, { keepCalls: false });
      remoteRequests.push(counted);
      return counted;
    },
    ...(privateKey ? { sshPrivateKey: privateKey } : {}),
    ...(agent ? { sshAgent: agent } : {}),
    ...(opts.sshHostKey !== undefined ? { sshHostKey: opts.sshHostKey } : {}),
    ...(opts.knownHosts !== undefined ? { knownHostsFile: opts.knownHosts } : {}),
    cacheRoot: cacheRoot(),
    ...(endpoint ? { s3Endpoint: endpoint } : {}),
    ...(budget !== undefined ? { retryBudgetMs: parseDuration(budget, '--retry-budget') } : {}),
    ...(opts.ioTimeout !== undefined ? { idleTimeoutMs: parseDuration(opts.ioTimeout, '--io-timeout') } : {}),
  }));
}

const RETRY_BUDGET_HELP = 'remote archives: how long to keep retrying a failing request before giving up (default 2m; the next run resumes)';
const S3_ENDPOINT_HELP = 'endpoint of an S3-compatible service for s3:// archives (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS)';

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

withStoreOptions(
  program
    .command('init')
    .description('Create an empty archive (backup does this itself for a new local folder).')
    .argument('<archive>', 'archive location: a local folder that is absent or empty, or an empty s3:// or sftp:// location')
)
  .action(async (archive: string, opts: StoreOptionValues) => {
    const header = await initArchive(await storeFor(archive, opts));
    process.stdout.write(`created archive ${archive} (id ${header.id})\n`);
  });

withStoreOptions(
  program
    .command('backup')
    .description('Back up SOURCE into ARCHIVE: continues the open layer where the last run stopped, or starts a new layer.')
    .argument('<source>', 'directory to back up')
    .argument('<archive>', 'archive location: a local folder (created if new or empty), s3://BUCKET[/PREFIX], sftp://USER@HOST[:PORT]/PATH, or - for an object stream on stdout (see blanket receive)')
    .option('--max-time <duration>', 'stop cleanly after this long, committing the pack in flight (e.g. 10m, 1h30m)')
    .option('--max-bytes <size>', 'stop cleanly once this much has been stored in this run (e.g. 2G)')
    .option('--pack-size <size>', `pack size before compression (default ${formatBytes(DEFAULT_PACK_SIZE)})`)
    .option('--exclude <glob>', 'gitignore-style pattern to leave out (repeatable)', collect, [])
    .option('--exclude-from <file>', 'read gitignore-style patterns from FILE (repeatable)', collect, [])
    .option('--paranoid', 're-read and re-hash every file, even when its size, times and inode say unchanged')
    .option('--max-archive-size <size>', 'after the run, collect the oldest layers until the archive is at most this size (as gc --max-size)')
    .addOption(new Option('--compression-level <n>', 'zstd level').default(3).argParser(positiveInt('--compression-level')))
    .addOption(new Option('--workers <n>', 'threads that read, hash and compress (default: CPUs, up to 4)').argParser(positiveInt('--workers')))
    .option('--state <dir>', 'with ARCHIVE "-": folder of the stream\'s resume state (default: in the cache folder, per source)')
    .option('--json', 'print NDJSON events on stdout (on stderr when ARCHIVE is "-")')
)
  .action(async (source: string, archive: string, opts: Record<string, unknown>) => {
    // `-`: the archive objects go to stdout as an object stream, so everything else goes to stderr.
    const toStdout = archive === '-';
    const maxArchiveBytes = opts.maxArchiveSize !== undefined ? parseSize(opts.maxArchiveSize as string, '--max-archive-size') : undefined;
    if (maxArchiveBytes !== undefined && toStdout) throw new BlanketError(ErrorCodes.USAGE, '--max-archive-size needs an archive to collect in, not a stream on stdout');
    const renderer = createRenderer(opts.json === true, process.stderr, toStdout ? process.stderr : process.stdout);
    const store = toStdout ? streamToStdout(source, opts.state as string | undefined) : await storeFor(archive, opts);
    const excludes = [...(opts.exclude as string[]), ...(opts.excludeFrom as string[]).flatMap((file) => readExcludeFile(file))];
    const monitor = new Monitor((event) => renderer.event(event));
    let filesRead = 0;
    monitor.on((event) => {
      if (event.type === 'file' && event.action !== 'deleted') filesRead++;
      if (filesRead >= LARGE_RUN_FILES_READ || monitor.storedBytes >= LARGE_RUN_STORED_BYTES || monitor.files >= LARGE_RUN_FILES) collectOften();
    });
    // Loaded by the command that needs it: other commands start ~20 ms sooner.
    const { BackupRun } = await import('../pipeline/backup.js');
    const run = new BackupRun({
      source,
      store,
      monitor,
      create: true,
      excludes,
      paranoid: opts.paranoid === true,
      packSize: opts.packSize ? parseSize(opts.packSize as string, '--pack-size') : undefined,
      maxTimeMs: opts.maxTime ? parseDuration(opts.maxTime as string, '--max-time') : undefined,
      maxBytes: opts.maxBytes ? parseSize(opts.maxBytes as string, '--max-bytes') : undefined,
      compressionLevel: opts.compressionLevel as number,
      workers: opts.workers as number | undefined,
      cacheRoot: cacheRoot(),
    });
    let interrupts = 0;
    const onSignal = (): void => {
      interrupts++;
      if (interrupts === 1) {
        renderer.say('stopping after the pack in flight is committed (interrupt again to abort now)');
        run.requestStop('stop-requested');
      } else {
        run.abort(new BlanketError(ErrorCodes.ABORTED, 'backup interrupted; the pack in flight was not committed'));
      }
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const result = await run.run();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // The stream's last objects and its finish record; a failed stdout fails the run (what was not sent is sent next time).
    if (store instanceof StreamOutStore) await store.close();
    renderer.done();
    renderer.event({ type: 'finished', command: 'backup', ...result, ...requestsField() });
    const requests = requestsLine();
    if (requests !== null) renderer.say(requests);
    const how = result.complete
      ? `layer ${result.layer} complete`
      : `layer ${result.layer} partial: covered up to ${result.through} (stopped by ${result.stoppedBy}); the next run continues from there`;
    renderer.say(
      `${how}. ${result.newFiles} new, ${result.changedFiles} changed, ${result.deleted} deleted, ${result.unchanged} unchanged; ` +
        `stored ${formatBytes(result.storedBytes)} in ${result.packs} packs, ${result.indexes} indexes, ${formatDuration(result.elapsedMs)}` +
        (result.warnings > 0 ? `; ${result.warnings} warnings` : ''),
    );
    const unreadable = monitor.warningsByCode()['unreadable'] ?? 0;
    process.exitCode = unreadable > 0 ? EXIT.INCOMPLETE : EXIT.OK;
    if (maxArchiveBytes !== undefined) {
      const { gc } = await import('../pipeline/gc.js');
      try {
        const collected = await gc({ store, monitor, policy: { maxBytes: maxArchiveBytes }, cacheRoot: cacheRoot() });
        renderer.event({ type: 'finished', command: 'gc', ...collected, plan: { ...collected.plan, deletions: collected.plan.deletions.length, rewrites: collected.plan.rewrites.length } });
        const { plan } = collected;
        renderer.say(
          plan.collected.length === 0 && collected.deletedObjects === 0
            ? `archive ${formatBytes(plan.bytesBefore)}: within --max-archive-size ${formatBytes(maxArchiveBytes)}, nothing collected`
            : `--max-archive-size: ${plan.collected.length > 0 ? `collected layers ${plan.collected[0]}-${plan.collected[plan.collected.length - 1]}, ` : ''}` +
                `deleted ${collected.deletedObjects} objects; archive ${formatBytes(plan.bytesBefore)} → ${formatBytes(plan.bytesBefore - collected.deletedBytes - collected.rewriteFreedBytes + collected.baseBytes)}`,
        );
      } catch (error) {
        // The backup itself is complete and kept; only the cap could not be met.
        if (!isBlanketError(error)) throw error;
        renderer.say(`the backup is stored, but --max-archive-size was not applied: ${error.message} [${error.code}]`);
        process.exitCode = EXIT.ERROR;
      }
    }
  });

withStoreOptions(
  program
    .command('layers')
    .description('List the layers: number, start and end, complete or how far, packs and bytes.')
    .argument('<archive>', 'archive location: a local folder, s3://BUCKET[/PREFIX] or sftp://USER@HOST[:PORT]/PATH')
    .option('--json', 'print one JSON object per layer')
)
  .action(async (archive: string, opts: { json?: boolean } & StoreOptionValues) => {
    const { listLayers } = await import('../pipeline/inspect.js');
    const { describeLayers } = await import('../pipeline/gc.js');
    const store = await storeFor(archive, opts);
    const layers = await listLayers(store);
    // What collecting each layer frees is only known of an archive gc could work on.
    let costs = new Map<number, LayerReport>();
    let damage: string | null = null;
    try {
      costs = new Map((await describeLayers({ store })).layers.map((report) => [report.layer, report]));
    } catch (error) {
      if (!isBlanketError(error, ErrorCodes.DAMAGED_ARCHIVE)) throw error;
      damage = error.message;
    }
    for (const layer of layers) {
      const cost = costs.get(layer.layer);
      const freed = { freedWithOlder: cost?.freedWithOlder ?? null, freedAlone: cost?.freedAlone ?? 0, paths: cost?.paths ?? 0 };
      if (opts.json) {
        process.stdout.write(JSON.stringify({ ...layer, ...freed }) + '\n');
        continue;
      }
      const withOlder =
        damage !== null
          ? 'what collecting it frees: unknown (damaged archive)'
          : freed.freedWithOlder === null
          ? 'kept: the newest state needs it'
          : freed.freedWithOlder >= 0
            ? `collecting it and all older frees ${formatBytes(freed.freedWithOlder)}`
            : `collecting it and all older frees nothing (the base costs ${formatBytes(-freed.freedWithOlder)})`;
      process.stdout.write(
        `layer ${layer.layer}  ${layer.started} → ${layer.ended}  ${layer.complete ? 'complete' : `partial, up to ${layer.through}`}  ` +
          `${damage === null ? `${freed.paths} paths, ` : ''}${layer.packs} packs, ${layer.indexes} indexes, ${formatBytes(layer.bytes)}; ${withOlder}; alone ${formatBytes(freed.freedAlone)}\n`,
      );
    }
    if (layers.length === 0 && !opts.json) process.stdout.write('no layers yet\n');
    if (damage !== null) process.stderr.write(`blanket: ${damage}\n`);
    requestsReport();
  });

withStoreOptions(
  program
    .command('gc')
    .description('Collect the oldest layers under a retention policy: delete what no kept layer needs, never rewriting packs the kept layers need.')
    .argument('<archive>', 'archive location: a local folder, s3://BUCKET[/PREFIX] or sftp://USER@HOST[:PORT]/PATH')
    .option('--keep-layers <n>', 'keep the newest N layers')
    .option('--keep-within <duration>', 'keep the layers worked on within this long (e.g. 90d, 12h)')
    .option('--before <date>', 'collect the layers last worked on before this date (ISO 8601, e.g. 2026-01-01)')
    .option('--max-size <size>', 'collect the oldest layers until the archive is at most this size (e.g. 500G)')
    .option('--max-waste <percent>', 'rewrite a still-needed pack of a collected layer when more than this share of it is not needed (default 10%)')
    .option('--dry-run', 'say what would be deleted and written, and change nothing')
    .option('--json', 'print NDJSON events on stdout')
)
  .action(async (archive: string, opts: { keepLayers?: string; keepWithin?: string; before?: string; maxSize?: string; maxWaste?: string; dryRun?: boolean; json?: boolean } & StoreOptionValues) => {
    const policy = retentionPolicy(opts);
    const maxWaste = opts.maxWaste === undefined ? undefined : percentage(opts.maxWaste, '--max-waste');
    const renderer = createRenderer(opts.json === true);
    const monitor = new Monitor((event) => renderer.event(event));
    const { gc } = await import('../pipeline/gc.js');
    const result = await gc({ store: await storeFor(archive, opts), monitor, policy, dryRun: opts.dryRun === true, cacheRoot: cacheRoot(), ...(maxWaste !== undefined && { maxWaste }) });
    renderer.done();
    renderer.event({ type: 'finished', command: 'gc', ...result, plan: { ...result.plan, deletions: result.plan.deletions.length, rewrites: result.plan.rewrites.length }, ...requestsField() });
    const { plan } = result;
    const would = result.dryRun ? 'would ' : '';
    const freed = plan.deletions.reduce((sum, d) => sum + d.bytes, 0);
    if (plan.collected.length === 0 && plan.deletions.length === 0 && plan.rewrites.length === 0) {
      renderer.say(`nothing to collect: keeping layers ${plan.keepFrom} on (the policy keeps them${plan.keepFrom > 0 ? '' : ', or there are none'})`);
    } else {
      if (plan.collected.length > 0) {
        renderer.say(
          `${would}collect layers ${plan.collected[0]}-${plan.collected[plan.collected.length - 1]}, keeping ${plan.keepFrom} on; ${would}write the base of layer ${plan.keepFrom} ` +
            `(${plan.basePaths} paths${result.dryRun ? '' : `, ${result.baseIndexes} indexes, ${formatBytes(result.baseBytes)}`})`,
        );
      }
      renderer.say(`${would}delete ${plan.deletions.length} objects, ${formatBytes(result.dryRun ? freed : result.deletedBytes)}`);
      if (result.dryRun) for (const d of plan.deletions.slice(0, 50)) renderer.say(`    ${d.name}  ${formatBytes(d.bytes)}`);
      if (result.dryRun && plan.deletions.length > 50) renderer.say(`    ... and ${plan.deletions.length - 50} more`);
      if (plan.retainedPacks > 0) {
        renderer.say(`${plan.retainedPacks} packs of collected layers are kept (newer layers need them); ${formatBytes(plan.retainedWasteBytes)} of them nothing needs`);
      }
      if (plan.rewrites.length > 0) {
        renderer.say(
          result.dryRun
            ? `would rewrite ${plan.rewrites.length} of them, over the waste allowed, freeing about ${formatBytes(plan.rewrites.reduce((sum, r) => sum + r.expectedFreed, 0))}`
            : `rewrote ${result.rewrittenPacks} of them, over the waste allowed, freeing ${formatBytes(result.rewriteFreedBytes)}`,
        );
      }
      const calls = Object.values(result.calls).reduce((a, b) => a + b, 0);
      renderer.say(
        `archive ${formatBytes(plan.bytesBefore)} → ${result.dryRun ? 'about ' : ''}${formatBytes(result.dryRun ? plan.bytesAfter : plan.bytesBefore - result.deletedBytes - result.rewriteFreedBytes + result.baseBytes)}; ` +
          `read ${formatBytes(result.readBytes)}${result.rewrittenPacks > 0 ? '' : ' (indexes only)'}, wrote ${formatBytes(result.writtenBytes)}, ${calls} store calls, ${formatDuration(result.elapsedMs)}`,
      );
    }
    requestsReport();
  });

/** The retention policy of gc's options: at least one rule. */
function retentionPolicy(opts: { keepLayers?: string; keepWithin?: string; before?: string; maxSize?: string }): RetentionPolicy {
  const policy: { -readonly [K in keyof RetentionPolicy]: RetentionPolicy[K] } = {};
  if (opts.keepLayers !== undefined) {
    if (!/^[1-9]\d*$/.test(opts.keepLayers)) throw new BlanketError(ErrorCodes.USAGE, `--keep-layers: expected a positive whole number, got ${JSON.stringify(opts.keepLayers)}`);
    policy.keepLayers = Number(opts.keepLayers);
  }
  if (opts.keepWithin !== undefined) policy.keepWithinMs = parseDuration(opts.keepWithin, '--keep-within');
  if (opts.before !== undefined) {
    const time = /^\d{4}-\d{2}-\d{2}/.test(opts.before) ? Date.parse(opts.before) : NaN;
    if (Number.isNaN(time)) throw new BlanketError(ErrorCodes.USAGE, `--before: cannot read date ${JSON.stringify(opts.before)} (use e.g. 2026-01-01 or 2026-01-01T12:00:00Z)`);
    policy.before = time;
  }
  if (opts.maxSize !== undefined) policy.maxBytes = parseSize(opts.maxSize, '--max-size');
  if (Object.keys(policy).length === 0) {
    throw new BlanketError(ErrorCodes.USAGE, 'gc needs a policy: --keep-layers N, --keep-within DURATION, --before DATE or --max-size SIZE');
  }
  return policy;
}

/** "10%" or "0.1" as a share in 0..1. */
function percentage(text: string, option: string): number {
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(text.trim());
  const value = m ? Number(m[1]) / (m[2] === '%' ? 100 : 1) : NaN;
  if (!(value >= 0 && value <= 1)) throw new BlanketError(ErrorCodes.USAGE, `${option}: expected a share such as 10% or 0.1, got ${JSON.stringify(text)}`);
  return value;
}

/** Prints the request count of a remote archive, if any. */
function requestsReport(): void {
  const requests = requestsLine();
  if (requests !== null) process.stderr.write(`${requests}\n`);
}

withStoreOptions(
  program
    .command('ls')
    .description('List the paths of the archive state (as of the newest layer, or --layer N).')
    .argument('<archive>', 'archive location: a local folder, s3://BUCKET[/PREFIX] or sftp://USER@HOST[:PORT]/PATH')
    .argument('[path]', 'only this path and what is below it')
    .addOption(new Option('--layer <n>', 'state as of layer N').argParser(positiveInt('--layer')))
    .option('--json', 'print one JSON object per path')
)
  .action(async (archive: string, subtree: string | undefined, opts: { layer?: number; json?: boolean } & StoreOptionValues) => {
    const { listPaths } = await import('../pipeline/inspect.js');
    let damage = 0;
    const entries = listPaths(await storeFor(archive, opts), {
      layer: opts.layer,
      subtree: subtree === undefined ? undefined : pathArgument(subtree),
      onDamage: (message) => {
        damage++;
        process.stderr.write(`warning: ${message}\n`);
      },
    });
    for await (const entry of entries) {
      process.stdout.write(opts.json ? JSON.stringify(entry) + '\n' : `${entry.kind.padEnd(7)} ${modeText(entry.mode)} ${String(entry.size).padStart(12)} ${entry.mtime}  ${entry.path}${entry.target !== undefined ? ` -> ${entry.target}` : ''}\n`);
    }
    // What damaged indexes recorded is missing from the listing: say so in the exit status.
    if (damage > 0) process.exitCode = EXIT.INCOMPLETE;
  });

withStoreOptions(
  program
    .command('restore')
    .description('Restore the archive state (newest, or as of --layer N) into DEST, or only the given paths.')
    .argument('<archive>', 'archive location: a local folder, s3://BUCKET[/PREFIX], sftp://USER@HOST[:PORT]/PATH, or - for object streams on stdin')
    .argument('<dest>', 'destination folder (created if absent)')
    .argument('[paths...]', 'only these paths (relative to the backup root) and what is below them')
    .addOption(new Option('--layer <n>', 'state as of layer N').argParser(positiveInt('--layer')))
    .option('--devices', 'create device nodes (only as root)')
    .option('--spool <dir>', 'with ARCHIVE "-": where the streams are received before the restore (default: the temporary folder)')
    .option(
      '--from <copy>',
      'another copy of the same archive (repeatable): each object is read from a copy that has it intact; ' +
        'another archive of the same source: the archives are merged by time (for each path range, the most recently written pack wins)',
      collect,
      [],
    )
    .option('--json', 'print NDJSON events on stdout')
)
  .action(async (archive: string, dest: string, paths: string[], opts: { layer?: number; devices?: boolean; json?: boolean; spool?: string; from: string[] } & StoreOptionValues) => {
    const renderer = createRenderer(opts.json === true);
    const monitor = new Monitor((event) => renderer.event(event));
    collectOften();
    const { restore } = await import('../pipeline/restore.js');
    // `-`: the streams (all runs since the first, concatenated) are received into a spool archive first, since a
    // restore replays every layer and reads packs in another order than they arrive.
    let spool: string | undefined;
    let received: ReceiveResult | undefined;
    if (archive === '-') {
      spool = mkdtempSync(path.join(opts.spool ?? os.tmpdir(), 'blanket-spool-'));
      received = await receiveStdin(new LocalStore(path.join(spool, 'archive')), monitor);
    }
    let result;
    let copyProblems: CopyProblem[] = [];
    let merged: MeshRestoreResult['merged'];
    try {
      const store = spool !== undefined ? new LocalStore(path.join(spool, 'archive')) : await storeFor(archive, opts);
      const common = { destination: dest, paths: paths.map(pathArgument), layer: opts.layer, devices: opts.devices === true, monitor };
      if (opts.from.length > 0) {
        const { restoreFromCopies } = await import('../pipeline/mesh-restore.js');
        const copies = [store, ...(await Promise.all(opts.from.map((copy) => storeFor(copy, opts))))];
        const meshResult = await restoreFromCopies({ ...common, copies });
        copyProblems = meshResult.copyProblems;
        merged = meshResult.merged;
        result = meshResult;
      } else {
        result = await restore({ ...common, store });
      }
    } finally {
      if (spool !== undefined) rmSync(spool, { recursive: true, force: true });
    }
    renderer.done();
    if (received !== undefined) renderer.say(receivedLine(received));
    for (const archive of merged ?? []) {
      const layers = archive.layers === 0 ? 'no layers' : `layers 1-${archive.layers} (named ${archive.firstVirtual}-${archive.firstVirtual + archive.layers - 1} in messages above)`;
      renderer.say(`merged by time: ${archive.location}: ${layers}`);
    }
    for (const line of copyProblemLines(copyProblems)) renderer.say(line);
    renderer.event({ type: 'finished', command: 'restore', ...result, ...requestsField() });
    const requests = requestsLine();
    if (requests !== null) renderer.say(requests);
    renderer.say(
      `restored ${result.restoredFiles} files (${formatBytes(result.restoredBytes)}), ${result.skippedFiles} already matched, ` +
        `${result.dirs} directories, ${result.symlinks} symlinks; fetched ${result.packsFetched} of ${result.packsTotal} packs in ${formatDuration(result.elapsedMs)}` +
        (result.failedFiles > 0 ? `; ${result.failedFiles} FAILED (see warnings)` : ''),
    );
    // Damage that cost no file of this restore still needs attention (run verify): exit 3 all the same.
    // Damage one copy made up for is still damage to repair: exit 3 all the same.
    const incomplete = result.failedFiles > 0 || result.damagedObjects.length > 0 || copyProblems.length > 0 || (received !== undefined && !receivedWhole(received));
    process.exitCode = incomplete ? EXIT.INCOMPLETE : EXIT.OK;
  });

withStoreOptions(
  program
    .command('receive')
    .description('Store into ARCHIVE the objects of the object streams read on stdin (made by backup SOURCE -); an empty ARCHIVE becomes the archive.')
    .argument('<archive>', 'archive location: a local folder, s3://BUCKET[/PREFIX] or sftp://USER@HOST[:PORT]/PATH')
    .option('--json', 'print NDJSON events on stdout')
)
  .action(async (archive: string, opts: { json?: boolean } & StoreOptionValues) => {
    const renderer = createRenderer(opts.json === true);
    const monitor = new Monitor((event) => renderer.event(event));
    const result = await receiveStdin(await storeFor(archive, opts), monitor);
    renderer.done();
    renderer.event({ type: 'finished', command: 'receive', ...result, ...requestsField() });
    const requests = requestsLine();
    if (requests !== null) renderer.say(requests);
    renderer.say(receivedLine(result));
    // Objects lost or a stream cut off: what arrived whole is stored, the rest must be sent again.
    process.exitCode = receivedWhole(result) ? EXIT.OK : EXIT.INCOMPLETE;
  });

/** Per copy: the objects it lacks (a count and the first few), then each damaged one. */
function copyProblemLines(problems: readonly CopyProblem[]): string[] {
  const lines: string[] = [];
  for (const copy of [...new Set(problems.map((p) => p.copy))]) {
    const mine = problems.filter((p) => p.copy === copy);
    const missing = mine.filter((p) => p.problem === 'missing').map((p) => p.object);
    if (missing.length > 0) lines.push(`copy ${copy}: ${missing.length} objects missing (${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''})`);
    for (const p of mine.filter((p) => p.problem !== 'missing')) lines.push(`copy ${copy}: ${p.object}: ${p.problem}`);
  }
  return lines;
}

async function receiveStdin(store: Store, monitor: Monitor): Promise<ReceiveResult> {
  if (process.stdin.isTTY) throw new BlanketError(ErrorCodes.USAGE, 'stdin is a terminal: pipe an object stream in (made by blanket backup SOURCE -)');
  const { receive } = await import('../pipeline/receive.js');
  return receive({ store, input: process.stdin, monitor });
}

/** Whether everything the streams' writers sent arrived (a stream cut off and followed by the next run's is fine). */
function receivedWhole(result: ReceiveResult): boolean {
  return result.lost.length === 0 && !result.endedCut && result.streams > 0;
}

function receivedLine(result: ReceiveResult): string {
  const cut =
    result.truncatedStreams > 0
      ? `; ${result.truncatedStreams} cut off before their end${result.resent > 0 ? ` (${result.resent} objects lost there came whole later)` : ''}` +
        (result.endedCut ? ', the LAST one too: what its writer sent after the cut did not arrive' : '')
      : '';
  const lost = result.lost.length > 0 ? `; ${result.lost.length} objects LOST (${result.lost.map((l) => l.name).slice(0, 5).join(', ')}${result.lost.length > 5 ? ', ...' : ''}: send them again)` : '';
  const none = result.streams === 0 ? ' (no stream found in the input)' : '';
  return `received ${result.objects} objects (${formatBytes(result.bytes)}) from ${result.streams} streams${cut}${lost}${none} in ${formatDuration(result.elapsedMs)}`;
}

withStoreOptions(
  program
    .command('verify')
    .description('Re-read every archive object, re-hash all content, and name damaged objects and the files they hold.')
    .argument('<archive>', 'archive location: a local folder, s3://BUCKET[/PREFIX] or sftp://USER@HOST[:PORT]/PATH')
    .option('--quick', 'read indexes only: check each pack against the store listing (present, recorded size and checksum), reading no pack data')
    .option('--json', 'print NDJSON events on stdout')
)
  .action(async (archive: string, opts: { json?: boolean; quick?: boolean } & StoreOptionValues) => {
    const renderer = createRenderer(opts.json === true);
    const monitor = new Monitor((event) => renderer.event(event));
    collectOften();
    const { verify } = await import('../pipeline/verify.js');
    const result = await verify({ store: await storeFor(archive, opts), monitor, quick: opts.quick === true });
    renderer.done();
    renderer.event({ type: 'finished', command: 'verify', ...result, ...requestsField() });
    const requests = requestsLine();
    if (requests !== null) renderer.say(requests);
    if (result.damaged.length === 0 && result.quick) {
      const unsized = result.unsized > 0 ? `; ${result.unsized} of them by name only (written before sizes were recorded)` : '';
      renderer.say(`archive OK (quick: listing only, no content read): ${result.indexes} indexes, ${result.packs} packs present with their recorded sizes${unsized}`);
    } else if (result.damaged.length === 0) {
      renderer.say(`archive OK: ${result.indexes} indexes, ${result.packs} packs, ${result.members} members (${formatBytes(result.bytes)}) checked`);
    } else {
      for (const damage of result.damaged) {
        renderer.say(`DAMAGED ${damage.object}: ${damage.problem}`);
        for (const file of damage.files.slice(0, 20)) renderer.say(`    affects ${file}`);
        if (damage.files.length > 20) renderer.say(`    ... and ${damage.files.length - 20} more files`);
      }
      renderer.say(`${result.damaged.length} damaged objects`);
    }
    if (result.orphans.length > 0) {
      renderer.say(`${result.orphans.length} orphan packs (data an interrupted backup never committed; harmless, not damage):`);
      for (const orphan of result.orphans) renderer.say(`    ${orphan}`);
    }
    process.exitCode = result.damaged.length > 0 ? EXIT.INCOMPLETE : EXIT.OK;
  });

/** A PATH argument: display form (\xNN escapes) relative to the backup root; "dir/", "./dir" and "/dir" mean "dir". */
function pathArgument(text: string): Buffer {
  return normaliseRelativePath(parseDisplayPath(text));
}

function modeText(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

async function main(): Promise<void> {
  // `blanket ls ARCHIVE | head`: a closed pipe ends the listing quietly.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (stdoutCarriesData) return; // the stream's sink fails the run
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
  try {
    await program.parseAsync(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // commander has printed the help, the version or its message already.
      process.exitCode = error.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    } else if (isBlanketError(error)) {
      process.stderr.write(`blanket: ${error.message} [${error.code}]\n`);
      process.exitCode = error.code === ErrorCodes.USAGE ? EXIT.USAGE : error.code === ErrorCodes.ABORTED ? EXIT.INTERRUPTED : EXIT.ERROR;
    } else {
      process.stderr.write(`blanket: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exitCode = EXIT.ERROR;
    }
  } finally {
    await Promise.all(openedStores.map((store) => store.close?.().catch(() => undefined)));
  }
}

await main();
