// The archive lock: two runs that find the same stale lock at once never both take the archive.

import t from 'tap';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import os from 'node:os';
import { join } from 'node:path';
import { acquireLock, type HeldLock } from '../../src/stages/archive-lock.js';
import { Monitor } from '../../src/stages/monitor.js';
import { LocalStore } from '../../src/stores/local.js';
import type { Store } from '../../src/stores/store.js';
import { BlanketError, isBlanketError, ErrorCodes } from '../../src/formats/errors.js';

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
    await (held[0] as PromiseFulfilledResult<HeldLock>).value.release();
    t.same(readdirSync(dir), [], 'released: no lock and no break marker left');
  }
});

t.test('a break marker left by a killed breaker does not block the archive', async (t) => {
  const dir = mkdtempSync(join(os.tmpdir(), 'blanket-lock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'lock'), staleLock('00000000000000aa'));
  writeFileSync(join(dir, 'lock-break-00000000000000aa'), staleLock('00000000000000bb'));
  const lock = await acquireLock(new LocalStore(dir), 'backup');
  await lock.release();
  t.same(readdirSync(dir), []);
});

/** A lock as another machine's run writes it. */
function foreignLock(fields: { created: string; renewed?: string; leaseMs?: number; token?: string }): string {
  return JSON.stringify({ host: 'elsewhere.example', pid: 4242, bootId: 'b', startTicks: '7', command: 'backup', token: fields.token ?? '00000000000000ff', ...fields }) + '\n';
}

const ago = (ms: number): string => new Date(Date.now() - ms).toISOString();
const MIN = 60_000;

t.test("another machine's lock: held while its lease runs, stale once it ran out (24 h for a lock without a lease)", async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['renewed a minute ago, 30 min lease', foreignLock({ created: ago(600 * MIN), renewed: ago(MIN), leaseMs: 30 * MIN }), false],
    ['renewed 31 min ago, 30 min lease', foreignLock({ created: ago(600 * MIN), renewed: ago(31 * MIN), leaseMs: 30 * MIN }), true],
    ['no lease (older version), created 2 h ago', foreignLock({ created: ago(120 * MIN) }), false],
    ['no lease (older version), created 25 h ago', foreignLock({ created: ago(25 * 60 * MIN) }), true],
    ['renewed at an unreadable time', foreignLock({ created: 'yesterday', renewed: 'soon', leaseMs: 30 * MIN }), true],
  ];
  for (const [what, lock, stale] of cases) {
    const dir = mkdtempSync(join(os.tmpdir(), 'blanket-lock-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'lock'), lock);
    const warnings: string[] = [];
    const monitor = new Monitor((event) => void (event.type === 'warning' && warnings.push(String(event.message))));
    const outcome = await acquireLock(new LocalStore(dir), 'backup', { monitor }).then(
      (held) => held,
      (error: unknown) => error,
    );
    if (stale) {
      t.ok(!(outcome instanceof Error), `${what}: taken`);
      t.match(warnings.join('\n'), /cleared a stale lock left by pid 4242 on elsewhere\.example/, `${what}: with a warning naming it`);
      if (!(outcome instanceof Error)) await (outcome as HeldLock).release();
    } else {
      t.ok(isBlanketError(outcome, ErrorCodes.LOCKED), `${what}: refused`);
      t.match((outcome as Error).message, /elsewhere\.example.*wait until its lease runs out/, `${what}: the message names the holder and the way out`);
      t.equal(readFileSync(join(dir, 'lock'), 'utf8'), lock, `${what}: left alone`);
    }
  }
});

/** `local`, with reads or writes failing (transiently) while the flags say so: a link going down. */
function flakyStore(local: Store, failing: { get: boolean; put: boolean }): Store {
  return new Proxy(local, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if ((property === 'get' && failing.get) || (property === 'put' && failing.put)) {
          return Promise.reject(new BlanketError(ErrorCodes.STORE_IO, 'link down', { transient: true }));
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

t.test('the holder renews its lease; a holder whose lock was taken over stops writing and leaves the new lock alone', async (t) => {
  const dir = mkdtempSync(join(os.tmpdir(), 'blanket-lock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const local = new LocalStore(dir);
  const failing = { get: false, put: false };
  const store = flakyStore(local, failing);
  const lost: Error[] = [];
  const lock = await acquireLock(store, 'backup', { leaseMs: 2000, onLost: (error) => void lost.push(error) });
  const first = JSON.parse(readFileSync(join(dir, 'lock'), 'utf8')) as { renewed: string; leaseMs: number; token: string };
  t.equal(first.leaseMs, 2000, 'the lease is recorded');
  await sleep(700);
  const later = JSON.parse(readFileSync(join(dir, 'lock'), 'utf8')) as { renewed: string; token: string };
  t.equal(later.token, first.token, 'still this run');
  t.ok(Date.parse(later.renewed) > Date.parse(first.renewed), `renewed (${first.renewed} → ${later.renewed})`);
  lock.assertHeld();
  const guarded = lock.guard(local);
  await guarded.put('x', Buffer.from('written while held'));

  // Its renewals cannot land (as for a holder whose link is down), and another run takes the archive.
  failing.put = true;
  await sleep(400);
  const theirs = foreignLock({ created: ago(0), renewed: ago(0), leaseMs: 30 * MIN, token: '0000000000000abc' });
  writeFileSync(join(dir, 'lock'), theirs);
  await sleep(900);
  t.equal(lost.length, 1, 'the loss is reported once');
  t.match(lost[0]?.message, /no longer this run's/);
  t.throws(() => lock.assertHeld(), { code: ErrorCodes.LOCKED });
  await t.rejects(guarded.put('y', Buffer.from('must not land')), { code: ErrorCodes.LOCKED }, 'writes through the guard are refused');
  t.notOk(existsSync(join(dir, 'y')), 'and nothing was written');
  failing.put = false;
  await lock.release();
  t.equal(readFileSync(join(dir, 'lock'), 'utf8'), theirs, "release leaves the other run's lock alone");
});

t.test('a holder that cannot renew for half its lease stops writing for good, before anyone may take the archive', async (t) => {
  const dir = mkdtempSync(join(os.tmpdir(), 'blanket-lock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const failing = { get: false, put: false };
  const lost: Error[] = [];
  const lock = await acquireLock(flakyStore(new LocalStore(dir), failing), 'backup', { leaseMs: 1200, onLost: (error) => void lost.push(error) });
  failing.get = true;
  failing.put = true;
  await sleep(150);
  t.doesNotThrow(() => lock.assertHeld(), 'a renewal may fail');
  await sleep(700);
  t.throws(() => lock.assertHeld(), { code: ErrorCodes.LOCKED, message: /could not be renewed/ }, 'not renewed for half a lease: writes stop');
  failing.get = false;
  failing.put = false;
  await sleep(300);
  t.throws(() => lock.assertHeld(), { code: ErrorCodes.LOCKED }, 'and do not start again: another run may have judged this one dead');
  t.equal(lost.length, 1, 'the loss is reported once');
  await lock.release();
  t.same(readdirSync(dir), [], 'released: the lock was still its own');
});
