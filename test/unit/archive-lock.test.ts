// The archive lock: two runs that find the same stale lock at once never both take the archive.

import t from 'tap';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { acquireLock } from '../../src/stages/archive-lock.js';
import { LocalStore } from '../../src/stores/local.js';
import type { Store } from '../../src/stores/store.js';
import { isBlanketError, ErrorCodes } from '../../src/formats/errors.js';

/** A lock left by a process that no longer exists. */
function staleLock(token: string): string {
  return JSON.stringify({ host: os.hostname(), pid: 2 ** 22 + 12345, bootId: '', startTicks: '', command: 'backup', token, created: '2026-01-01T00:00:00Z' }) + '\n';
}

/** The same store, but every delete waits first: the slow run of a race. */
function slowDeletes(store: Store, ms: number): Store {
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property === 'delete') return async (name: string) => (await new Promise((r) => setTimeout(r, ms)), target.delete(name));
      const value = Reflect.get(target, property, receiver) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

t.test('two runs clearing one stale lock: exactly one takes the archive', async (t) => {
  for (const delay of [0, 20, 80]) {
    const dir = mkdtempSync(join(os.tmpdir(), 'blanket-lock-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'lock'), staleLock('0123456789abcdef'));
    const store = new LocalStore(dir);
    const outcomes = await Promise.allSettled([acquireLock(store, 'backup'), acquireLock(slowDeletes(new LocalStore(dir), delay), 'backup')]);
    const held = outcomes.filter((o) => o.status === 'fulfilled');
    const refused = outcomes.filter((o) => o.status === 'rejected');
    t.equal(held.length, 1, `delay ${delay} ms: one run holds the lock`);
    t.equal(refused.length, 1, `delay ${delay} ms: the other is refused`);
    t.ok(refused.every((o) => isBlanketError((o as PromiseRejectedResult).reason, ErrorCodes.LOCKED)), 'with BLANKET_E_LOCKED');
    await (held[0] as PromiseFulfilledResult<() => Promise<void>>).value();
    t.same(readdirSync(dir), [], 'released: no lock and no break marker left');
  }
});

t.test('a break marker left by a killed breaker does not block the archive', async (t) => {
  const dir = mkdtempSync(join(os.tmpdir(), 'blanket-lock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'lock'), staleLock('00000000000000aa'));
  writeFileSync(join(dir, 'lock-break-00000000000000aa'), staleLock('00000000000000bb'));
  const release = await acquireLock(new LocalStore(dir), 'backup');
  await release();
  t.same(readdirSync(dir), []);
});
