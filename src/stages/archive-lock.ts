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

import { readFileSync } from 'node:fs';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { BlanketError, ErrorCodes } from '../formats/errors.js';
import { LOCK_OBJECT, lockBreakObject } from '../formats/archive-layout.js';
import { getBuffer, type Store } from '../stores/store.js';
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
  if (record.host !== os.hostname()) return false; // cannot tell for another machine
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

/** Takes the archive lock; returns the function that releases it. */
export async function acquireLock(store: Store, command: string, monitor?: Monitor): Promise<() => Promise<void>> {
  const record: LockRecord = {
    host: os.hostname(),
    pid: process.pid,
    bootId: bootId(),
    startTicks: startTicks(process.pid) ?? '',
    command,
    token: randomBytes(8).toString('hex'),
    created: new Date().toISOString(),
  };
  const body = Buffer.from(JSON.stringify(record) + '\n');
  for (let attempt = 0; attempt < 10; attempt++) {
    if (await store.putIfAbsent(LOCK_OBJECT, body)) {
      return async () => {
        const current = parseLock(await getBuffer(store, LOCK_OBJECT).catch(() => Buffer.alloc(0)));
        if (current?.token === record.token) await store.delete(LOCK_OBJECT);
      };
    }
    const existing = parseLock(await getBuffer(store, LOCK_OBJECT).catch(() => Buffer.alloc(0)));
    if (existing !== null && !isStale(existing)) {
      throw new BlanketError(
        ErrorCodes.LOCKED,
        `archive ${store.location} is in use by ${existing.command || 'another run'} (pid ${existing.pid} on ${existing.host}, since ${existing.created}). ` +
          `If no Blanket runs there any more, delete ${LOCK_OBJECT} in the archive.`,
        { subject: LOCK_OBJECT },
      );
    }
    if (!(await breakStaleLock(store, existing, body))) continue; // another run is clearing it: look again
    monitor?.warn(
      'stale-lock',
      existing === null ? 'cleared an unreadable lock object' : `cleared a stale lock left by pid ${existing.pid} on ${existing.host} (${existing.created})`,
      { object: LOCK_OBJECT },
    );
  }
  throw new BlanketError(ErrorCodes.LOCKED, `could not take the lock of ${store.location}: another run keeps taking it`, { subject: LOCK_OBJECT });
}
