// The archive lock: one live run per archive; a lock left by a killed run (dead pid, or a reboot since) is cleared.
//
//   create "lock" exclusively ─ ok ─▶ held
//        └ exists: live ─▶ BLANKET_E_LOCKED
//                  stale (token T) ─▶ create "lock-break-T" exclusively ─ ok ─▶ delete "lock" (still T's), retry
//                                                                    └ exists ─▶ someone else breaks it: retry
//
// Only the run that wins "lock-break-T" deletes the stale lock, so a second run that also saw T stale cannot
// delete the lock the winner has just taken. A breaker killed half-way leaves its marker; a marker whose
// creator is gone is stale too and is removed.
//
// Stale means: on this machine, its process is gone (pid, start time, boot id); from another machine, whose
// processes cannot be seen, its lease ran out. The holder renews the lease (rewrites "lock" with a new
// `renewed` time) every lease/6; a lock not renewed for a whole lease (default 30 min, by the breaker's clock)
// is stale. The holder writes only while its lock was confirmed within half a lease, and stops for good once
// it was not, or when it finds its lock replaced: two runs never write at once, with no compare-and-swap.

import { readFileSync } from 'node:fs';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { LOCK_OBJECT, lockBreakObject } from '../formats/archive-layout.js';
import { ForwardingStore } from '../stores/forwarding.js';
import { getBuffer, type ObjectInfo, type PutBody, type PutOptions, type Store } from '../stores/store.js';
import type { Monitor } from './monitor.js';

interface LockRecord {
  readonly host: string;
  readonly pid: number;
  readonly bootId: string;
  /** Process start time in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart. */
  readonly startTicks: string;
  readonly command: string;
  readonly token: string;
  readonly created: string;
  /** When the holder last renewed the lock (absent in locks of older versions: `created` counts). */
  readonly renewed?: string;
  /** How long the lock stays valid without renewal (absent in older locks: LEGACY_LEASE_MS). */
  readonly leaseMs?: number;
}

/** Default lease of a lock (renewed every sixth of it). */
export const DEFAULT_LOCK_LEASE_MS = 30 * 60_000;
/** A lock of a version that did not renew it, from another machine, is judged stale only after this long. */
const LEGACY_LEASE_MS = 24 * 3600_000;

export interface LockOptions {
  readonly monitor?: Monitor;
  /** Lease of this run's lock (tests shorten it). */
  readonly leaseMs?: number;
  /** Called when a renewal finds the lock replaced by another run's (which judged this one dead): stop writing. */
  readonly onLost?: (error: BlanketError) => void;
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

function startTicks(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

function isStale(record: LockRecord): boolean {
  if (record.host !== os.hostname()) {
    // Its process cannot be seen from here: only a lease that ran out says it is gone.
    const lease = typeof record.leaseMs === 'number' && record.leaseMs > 0 ? record.leaseMs : LEGACY_LEASE_MS;
    const last = Date.parse(record.renewed ?? record.created);
    return !(Date.now() - last < lease);
  }
  if (record.bootId !== '' && record.bootId !== bootId()) return true;
  const ticks = startTicks(record.pid);
  return ticks === null || (record.startTicks !== '' && ticks !== record.startTicks);
}

function parseLock(bytes: Buffer): LockRecord | null {
  try {
    const value = JSON.parse(bytes.toString('utf8')) as Partial<LockRecord>;
    if (typeof value.host === 'string' && typeof value.pid === 'number' && typeof value.token === 'string') {
      return { bootId: '', startTicks: '', command: '', created: '', ...value } as LockRecord;
    }
  } catch {
    // fall through: an unreadable lock is treated like a stale one, below
  }
  return null;
}

/**
 * Deletes the stale lock `stale` (null: unreadable) if this run wins the right to; false when another run holds
 * that right (then the caller looks at the lock again).
 */
async function breakStaleLock(store: Store, stale: LockRecord | null, breaker: Buffer): Promise<boolean> {
  const marker = lockBreakObject(stale?.token ?? 'unreadable');
  if (!(await store.putIfAbsent(marker, breaker))) {
    const holder = parseLock(await getBuffer(store, marker).catch(() => Buffer.alloc(0)));
    if (holder !== null && !isStale(holder)) {
      await new Promise((resolve) => setTimeout(resolve, 100)); // its breaker is at work: give it a moment
      return false;
    }
    await store.delete(marker); // left by a breaker that died: break it again
    if (!(await store.putIfAbsent(marker, breaker))) return false;
  }
  try {
    // Still the lock judged stale? (A winner of an earlier round may have replaced it with its own.)
    const current = parseLock(await getBuffer(store, LOCK_OBJECT).catch(() => Buffer.alloc(0)));
    if ((current?.token ?? null) === (stale?.token ?? null)) await store.delete(LOCK_OBJECT);
  } finally {
    await store.delete(marker);
  }
  return true;
}

/** Takes the archive lock; returns the function that releases it (and stops renewing it). */
export async function acquireLock(store: Store, command: string, options: LockOptions = {}): Promise<HeldLock> {
  const { monitor } = options;
  const leaseMs = options.leaseMs ?? DEFAULT_LOCK_LEASE_MS;
  const created = new Date().toISOString();
  const record: LockRecord = {
    host: os.hostname(),
    pid: process.pid,
    bootId: bootId(),
    startTicks: startTicks(process.pid) ?? '',
    command,
    token: randomBytes(8).toString('hex'),
    created,
    renewed: created,
    leaseMs,
  };
  const body = Buffer.from(JSON.stringify(record) + '\n');
  for (let attempt = 0; attempt < 10; attempt++) {
    if (await store.putIfAbsent(LOCK_OBJECT, body)) return holdLock(store, record, options);
    const existing = parseLock(await getBuffer(store, LOCK_OBJECT).catch(() => Buffer.alloc(0)));
    if (existing !== null && !isStale(existing)) {
      throw new BlanketError(
        ErrorCodes.LOCKED,
        `archive ${store.location} is in use by ${existing.command || 'another run'} (pid ${existing.pid} on ${existing.host}, since ${existing.created}` +
          `${existing.renewed ? `, last renewed ${existing.renewed}` : ''}). If no Blanket runs there any more, delete ${LOCK_OBJECT} in the archive` +
          `${existing.host !== os.hostname() ? ', or wait until its lease runs out' : ''}.`,
        { subject: LOCK_OBJECT },
      );
    }
    if (!(await breakStaleLock(store, existing, body))) continue; // another run is clearing it: look again
    monitor?.warn(
      'stale-lock',
      existing === null
        ? 'cleared an unreadable lock object'
        : `cleared a stale lock left by pid ${existing.pid} on ${existing.host} (${existing.created}${existing.host !== os.hostname() ? `, last renewed ${existing.renewed ?? existing.created}` : ''})`,
      { object: LOCK_OBJECT },
    );
  }
  throw new BlanketError(ErrorCodes.LOCKED, `could not take the lock of ${store.location}: another run keeps taking it`, { subject: LOCK_OBJECT });
}

/** A lock held by this run. */
export interface HeldLock {
  /** Stops renewing and deletes the lock (if it is still this run's). */
  release(): Promise<void>;
  /**
   * Throws BLANKET_E_LOCKED unless the lock is surely still this run's: not taken over, and confirmed within
   * most of a lease (after a long suspend or outage another machine may have judged it dead).
   */
  assertHeld(): void;
  /** `store` whose writes first check assertHeld(): what a run writes the archive through. */
  guard(store: Store): Store;
}

/**
 * Renews the lock taken with `record` every sixth of its lease until released. The lock counts as held only
 * while confirmed within half a lease: another machine breaks it after a whole lease (by its clock), so the
 * other half covers a renewal still in flight and clock skew. A renewal that finds the lock lapsed, or another
 * token in it (or none), reports the loss and stops for good; one the store fails is tried at the next tick.
 */
function holdLock(store: Store, record: LockRecord, options: LockOptions): HeldLock {
  const leaseMs = record.leaseMs ?? DEFAULT_LOCK_LEASE_MS;
  let renewing: Promise<void> = Promise.resolve();
  let lostError: BlanketError | null = null;
  let confirmedAt = performance.now();
  const lapse = (): BlanketError | null =>
    performance.now() - confirmedAt > leaseMs / 2
      ? new BlanketError(
          ErrorCodes.LOCKED,
          `the lock of ${store.location} could not be renewed for ${formatMinutes(performance.now() - confirmedAt)} (store unreachable, or this machine ` +
            `suspended): stopping, since another run may take the archive after ${formatMinutes(leaseMs)}. The next run resumes`,
          { subject: LOCK_OBJECT },
        )
      : null;
  const lose = (error: BlanketError): void => {
    lostError = error;
    clearInterval(timer);
    options.onLost?.(error);
  };
  const renew = async (): Promise<void> => {
    const lapsed = lapse();
    if (lapsed) return lose(lapsed);
    let bytes: Buffer | null;
    try {
      bytes = await getBuffer(store, LOCK_OBJECT);
    } catch (error) {
      if (!isBlanketError(error, ErrorCodes.MISSING_OBJECT)) return; // unreachable for now: next tick
      bytes = null;
    }
    if (bytes === null || parseLock(bytes)?.token !== record.token) {
      return lose(
        new BlanketError(ErrorCodes.LOCKED, `the lock of ${store.location} is no longer this run's (another run judged it dead and took the archive): stopping`, {
          subject: LOCK_OBJECT,
        }),
      );
    }
    const attempted = performance.now();
    await store.put(LOCK_OBJECT, Buffer.from(JSON.stringify({ ...record, renewed: new Date().toISOString() }) + '\n'));
    confirmedAt = attempted;
  };
  const timer = setInterval(() => {
    renewing = renewing.then(() => (lostError ? undefined : renew().catch(() => undefined)));
  }, Math.max(10, Math.floor(leaseMs / 6)));
  timer.unref();
  const assertHeld = (): void => {
    const error = lostError ?? lapse();
    if (error) throw error;
  };
  return {
    assertHeld,
    guard: (inner) => new LockGuardedStore(inner, assertHeld),
    release: async () => {
      clearInterval(timer);
      await renewing;
      const current = parseLock(await getBuffer(store, LOCK_OBJECT).catch(() => Buffer.alloc(0)));
      if (current?.token === record.token) await store.delete(LOCK_OBJECT);
    },
  };
}

/** Writes only while the lock is held (the check is made when a write starts). */
class LockGuardedStore extends ForwardingStore {
  constructor(
    inner: Store,
    private readonly assertHeld: () => void,
  ) {
    super(inner);
  }

  override async put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo> {
    this.assertHeld();
    return this.inner.put(name, body, options);
  }

  override async delete(name: string): Promise<void> {
    this.assertHeld();
    return this.inner.delete(name);
  }
}

function formatMinutes(ms: number): string {
  return ms >= 60_000 ? `${Math.round(ms / 60_000)} min` : `${Math.round(ms / 1000)} s`;
}
