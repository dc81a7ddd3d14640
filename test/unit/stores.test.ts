// The store layer: the conformance suite on the local store and on each wrapper, and what each wrapper adds
// (retries of transient failures only, reads resumed where they broke, a concurrency cap, call records).

import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { BlanketError, ErrorCodes } from '../../src/formats/errors.js';
import { ConcurrencyLimitedStore } from '../../src/stores/limit.js';
import { FaultInjectingStore, type FaultRule } from '../../src/stores/faults.js';
import { LocalStore } from '../../src/stores/local.js';
import { RecordingStore } from '../../src/stores/recording.js';
import { RetryingStore } from '../../src/stores/retry.js';
import { ForwardingStore } from '../../src/stores/forwarding.js';
import { getBuffer, type ObjectInfo, type PutBody, type PutOptions } from '../../src/stores/store.js';
import { prng, randomBytes } from '../helpers/bytes.js';
import { storeConformance } from '../helpers/store-conformance.js';

function tempStore(): { store: LocalStore; dispose: () => Promise<void> } {
  const root = mkdtempSync(join(os.tmpdir(), 'blanket-store-'));
  return { store: new LocalStore(join(root, 'archive')), dispose: async () => rmSync(root, { recursive: true, force: true }) };
}

const noSleep = { sleep: async (): Promise<void> => undefined };

t.test('conformance', async (t) => {
  await storeConformance(t, 'local', async () => tempStore());
  await storeConformance(t, 'recording(local)', async () => {
    const { store, dispose } = tempStore();
    return { store: new RecordingStore(store), dispose };
  });
  await storeConformance(t, 'limit 2(local)', async () => {
    const { store, dispose } = tempStore();
    return { store: new ConcurrencyLimitedStore(store, 2), dispose };
  });
  // A third of the calls fail transiently (reads break part-way): through the retry wrapper, nothing shows.
  const injectors: FaultInjectingStore[] = [];
  await storeConformance(t, 'retry(faults(local))', async () => {
    const { store, dispose } = tempStore();
    const rules: FaultRule[] = [
      { operation: 'put', name: /^(c|x|r|d|k|one|empty)\b/, probability: 0.3, fault: { kind: 'error', transient: true } },
      { operation: 'put', name: /^(c|x)\//, probability: 0.2, fault: { kind: 'lost-answer' } },
      { operation: 'putIfAbsent', probability: 0.3, fault: { kind: 'lost-answer' } },
      { operation: 'putIfAbsent', probability: 0.3, fault: { kind: 'error', transient: true } },
      { operation: 'get', probability: 0.3, fault: { kind: 'cut', afterBytes: 70_001 } },
      { operation: 'get', probability: 0.2, fault: { kind: 'error', transient: true } },
      { operation: 'stat', probability: 0.3, fault: { kind: 'error', transient: true } },
      { operation: 'list', probability: 0.3, fault: { kind: 'error', transient: true } },
      { operation: 'delete', probability: 0.3, fault: { kind: 'error', transient: true } },
      { operation: 'isEmpty', probability: 0.3, fault: { kind: 'error', transient: true } },
    ];
    const faults = new FaultInjectingStore(store, rules, prng(77 + injectors.length));
    injectors.push(faults);
    return { store: new RetryingStore(faults, { attempts: 30 }, { ...noSleep, random: prng(5) }), dispose };
  });
  const injected = injectors.reduce((sum, f) => sum + f.injected, 0);
  t.ok(injected >= 50, `faults were injected throughout the suite (${injected})`);
});

t.test('retry: transient failures are retried with growing, jittered delays; permanent ones are not', async (t) => {
  const { store, dispose } = tempStore();
  t.teardown(dispose);
  const recording = new RecordingStore(store);
  const faults = new FaultInjectingStore(recording, [{ operation: 'stat', times: 3, fault: { kind: 'error', transient: true } }]);
  const delays: number[] = [];
  const retried: number[] = [];
  const retrying = new RetryingStore(
    faults,
    { attempts: 5, baseDelayMs: 100, maxDelayMs: 250 },
    { random: () => 0.999, sleep: async (ms) => void delays.push(ms), onRetry: (info) => retried.push(info.attempt) },
  );
  await store.put('obj', Buffer.from('x'));
  t.same(await retrying.stat('obj'), { name: 'obj', size: 1 }, 'succeeds on the fourth attempt');
  t.same(retried, [1, 2, 3], 'told of each retry');
  t.same(delays, [100, 200, 250], 'doubling from the base, capped (jitter at its top)');
  t.equal(recording.count('stat'), 1, 'the three failures never reached the store');

  const permanent = new FaultInjectingStore(store, [{ operation: 'delete', times: 1, fault: { kind: 'error', transient: false } }]);
  const noRetry = new RetryingStore(permanent, {}, { sleep: async () => void t.fail('no wait for a permanent error') });
  await t.rejects(noRetry.delete('obj'), { code: ErrorCodes.STORE_IO, message: /injected failure/ }, 'a permanent error is thrown as it is');
  await t.rejects(new RetryingStore(store, {}, noSleep).get('absent'), { code: ErrorCodes.MISSING_OBJECT }, 'a missing object is not retried');
});

t.test('retry: gives up after its attempts or its time budget, naming the object and the last error', async (t) => {
  const { store, dispose } = tempStore();
  t.teardown(dispose);
  const always = new FaultInjectingStore(store, [{ operation: 'put', fault: { kind: 'error', transient: true } }]);
  const byAttempts = new RetryingStore(always, { attempts: 4 }, noSleep);
  await t.rejects(byAttempts.put('layers/000001/00000003.index', Buffer.from('x')), {
    code: ErrorCodes.STORE_IO,
    message: /gave up on put layers\/000001\/00000003\.index .* after 4 attempts.*injected failure.*next run resumes/,
  });
  t.equal(always.injected, 4, 'four attempts');
  let clock = 0;
  const byTime = new RetryingStore(always, { attempts: 1000, baseDelayMs: 1000, maxDelayMs: 1000, budgetMs: 5000 }, {
    random: () => 1,
    now: () => clock,
    sleep: async (ms) => void (clock += ms),
  });
  await t.rejects(byTime.put('obj', Buffer.from('x')), { code: ErrorCodes.STORE_IO, message: /after 6 attempts in 5 s/ }, 'stops when the next wait would pass the budget');
  t.equal(await store.stat('obj'), undefined, 'nothing written');
});

t.test('retry: a streamed put is not replayed (the body was read); the failure is the store error', async (t) => {
  const { store, dispose } = tempStore();
  t.teardown(dispose);
  const faults = new FaultInjectingStore(store, [{ operation: 'put', times: 1, fault: { kind: 'error', transient: true } }]);
  const retrying = new RetryingStore(faults, {}, noSleep);
  async function* body(): AsyncGenerator<Uint8Array> {
    yield Buffer.from('abc');
  }
  await t.rejects(retrying.put('obj', body()), { code: ErrorCodes.STORE_IO, message: /injected failure/ });
  t.equal(faults.injected, 1, 'one attempt');
});

t.test('retry: a read cut off part-way carries on from the byte it reached, with ranged gets', async (t) => {
  const { store, dispose } = tempStore();
  t.teardown(dispose);
  const bytes = randomBytes(3_000_000, 21);
  await store.put('layers/000001/00000001.pack', bytes);
  const recording = new RecordingStore(store);
  const faults = new FaultInjectingStore(recording, [{ operation: 'get', times: 3, fault: { kind: 'cut', afterBytes: 900_000 } }]);
  const retrying = new RetryingStore(faults, {}, noSleep);
  const got = await getBuffer(retrying, 'layers/000001/00000001.pack');
  t.ok(got.equals(bytes), 'every byte, once, in order');
  const gets = recording.calls.filter((c) => c.operation === 'get');
  t.same(gets.map((c) => c.range?.start ?? 0), [0, 900_000, 1_800_000, 2_700_000], 'three cut reads, each next one from where the last broke');
  t.ok(recording.bytesRead >= bytes.length, 'bytes read at least the object');

  const ranged = await getBuffer(new RetryingStore(new FaultInjectingStore(store, [{ operation: 'get', times: 2, fault: { kind: 'cut', afterBytes: 100_000 } }]), {}, noSleep), 'layers/000001/00000001.pack', {
    range: { start: 500_000, end: 900_000 },
  });
  t.ok(ranged.equals(bytes.subarray(500_000, 900_000)), 'a ranged read resumed stays within its range');
});

t.test('retry: putIfAbsent whose answer was lost finds its own object, and still refuses a stranger\'s', async (t) => {
  const { store, dispose } = tempStore();
  t.teardown(dispose);
  const faults = new FaultInjectingStore(store, [{ operation: 'putIfAbsent', times: 1, fault: { kind: 'lost-answer' } }]);
  const retrying = new RetryingStore(faults, {}, noSleep);
  t.equal(await retrying.putIfAbsent('locks/backup', Buffer.from('mine')), true, 'created, though the first answer was lost');
  faults.rules.push({ operation: 'putIfAbsent', times: 1, fault: { kind: 'lost-answer' } });
  t.equal(await retrying.putIfAbsent('locks/backup', Buffer.from('other')), false, 'another run\'s lock is still refused');
  t.equal((await getBuffer(store, 'locks/backup')).toString(), 'mine');
});

t.test('limit: never more calls at once than the limit; a get holds its slot until its stream is done', async (t) => {
  const { store, dispose } = tempStore();
  t.teardown(dispose);
  let inFlight = 0;
  let peak = 0;
  class SlowStore extends ForwardingStore {
    override async put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo> {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 5));
      try {
        return await this.inner.put(name, body, options);
      } finally {
        inFlight--;
      }
    }
  }
  const limited = new ConcurrencyLimitedStore(new SlowStore(store), 3);
  t.equal(limited.capabilities.parallelism, 3, 'capabilities say the limit');
  await Promise.all(Array.from({ length: 20 }, (_, i) => limited.put(`p/${i}`, Buffer.from(String(i)))));
  t.equal(peak, 3, 'at most three puts at once, and three were used');
  t.equal(limited.active, 0, 'all slots free afterwards');

  const one = new ConcurrencyLimitedStore(store, 1);
  const stream = await one.get('p/1');
  let statDone = false;
  const stat = one.stat('p/2').then(() => (statDone = true));
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.equal(statDone, false, 'a call waits while a read is open');
  for await (const _ of stream) void _;
  await stat;
  t.equal(statDone, true, 'and runs once the read is done');
  t.throws(() => new ConcurrencyLimitedStore(store, 0), RangeError);
});

t.test('recording: calls, ranges and bytes read', async (t) => {
  const { store, dispose } = tempStore();
  t.teardown(dispose);
  const recording = new RecordingStore(store);
  await recording.put('a', Buffer.alloc(1000));
  await recording.stat('a');
  for await (const _ of recording.list('')) void _;
  t.equal(recording.bytesRead, 0, 'no object data read yet');
  await getBuffer(recording, 'a', { range: { start: 10, end: 20 } });
  t.equal(recording.bytesRead, 10, 'ten bytes read');
  t.same(
    recording.calls.map((c) => [c.operation, c.name, c.ok]),
    [
      ['put', 'a', true],
      ['stat', 'a', true],
      ['list', '', true],
      ['get', 'a', true],
    ],
  );
  await t.rejects(recording.get('b'), { code: ErrorCodes.MISSING_OBJECT });
  t.equal(recording.calls.at(-1)!.ok, false, 'a failed call is recorded as failed');
  t.equal(recording.count('get'), 2);
});

t.test('faults: errors carry BLANKET_E_STORE_IO and say whether they are transient', async (t) => {
  const { store, dispose } = tempStore();
  t.teardown(dispose);
  const faults = new FaultInjectingStore(store, [
    { operation: 'stat', name: 'x/', times: 1, fault: { kind: 'error', transient: true } },
    { operation: 'stat', name: /^y/, times: 1, fault: { kind: 'error', transient: false } },
  ]);
  const first = await faults.stat('x/1').catch((error: unknown) => error);
  t.ok(first instanceof BlanketError && first.code === ErrorCodes.STORE_IO && first.transient, 'transient');
  const second = await faults.stat('y').catch((error: unknown) => error);
  t.ok(second instanceof BlanketError && !second.transient, 'permanent');
  t.equal(await faults.stat('x/1'), undefined, 'a rule used up no longer applies');
});
