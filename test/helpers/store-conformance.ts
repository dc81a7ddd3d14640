// The store conformance suite: what every Store (local, S3, SFTP, and each wrapper) must do, run against a fresh store.

import type { Test } from 'tap';
import { createHash } from 'node:crypto';
import { ErrorCodes } from '../../src/formats/errors.js';
import { getBuffer, openReader, type Store } from '../../src/stores/store.js';
import { prng, randomBytes } from './bytes.js';

export interface StoreUnderTest {
  readonly store: Store;
  /** Removes what the store holds, after the test. */
  readonly dispose?: () => Promise<void>;
}

const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** Yields `bytes` in chunks of random sizes, copying each into one reused buffer (the store must copy what it keeps). */
async function* oddChunks(bytes: Buffer, seed: number, fail?: { afterBytes: number }): AsyncGenerator<Uint8Array> {
  const random = prng(seed);
  const scratch = Buffer.alloc(256 * 1024);
  for (let at = 0; at < bytes.length; ) {
    const size = Math.min(bytes.length - at, 1 + Math.floor(random() * scratch.length));
    if (fail && at + size > fail.afterBytes) throw new Error('source failed part-way');
    bytes.copy(scratch, 0, at, at + size);
    yield scratch.subarray(0, size);
    await new Promise((resolve) => setImmediate(resolve));
    scratch.fill(0xee); // the chunk is reused: a store that kept it without copying stores garbage
    at += size;
  }
}

/** Name and size of an object's info (the checksum, where a store reports one, is checked on its own). */
const sizeOf = (info: { name: string; size: number } | undefined) => info && { name: info.name, size: info.size };

async function listNames(store: Store, prefix: string): Promise<string[]> {
  const names: string[] = [];
  for await (const info of store.list(prefix)) names.push(info.name);
  return names.sort();
}

/** Runs the whole suite as subtests of `t`, each on a fresh store from `make`. */
export async function storeConformance(t: Test, label: string, make: () => Promise<StoreUnderTest>): Promise<void> {
  const withStore = (name: string, body: (t: Test, store: Store) => Promise<void>): Promise<void> =>
    t.test(`${label}: ${name}`, async (t) => {
      const { store, dispose } = await make();
      if (dispose) t.teardown(dispose);
      await body(t, store);
    }) as unknown as Promise<void>;

  await withStore('a new store is empty and lists nothing', async (t, store) => {
    t.equal(await store.isEmpty(), true, 'isEmpty');
    t.same(await listNames(store, ''), [], 'no objects');
    t.equal(await store.stat('blanket.json'), undefined, 'stat of an absent object');
  });

  await withStore('put and get whole objects, of 0, 1 and 3,000,001 bytes', async (t, store) => {
    const big = randomBytes(3_000_001, 11);
    for (const [name, bytes] of [
      ['empty', Buffer.alloc(0)],
      ['one', Buffer.from([7])],
      ['layers/000001/big.pack', big],
    ] as const) {
      const info = await store.put(name, bytes);
      t.same(sizeOf(info), { name, size: bytes.length }, `${name}: put reports its size`);
      t.same(sizeOf(await store.stat(name)), { name, size: bytes.length }, `${name}: stat`);
      t.equal(sha(await getBuffer(store, name)), sha(bytes), `${name}: the same bytes back`);
    }
    t.equal(await store.isEmpty(), false, 'not empty any more');
  });

  await withStore('a streamed body in odd chunks, from memory the producer reuses', async (t, store) => {
    const bytes = randomBytes(6 * 1024 * 1024 + 13, 12);
    const info = await store.put('layers/000001/00000001.pack', oddChunks(bytes, 3));
    t.equal(info.size, bytes.length, 'size');
    t.equal(sha(await getBuffer(store, 'layers/000001/00000001.pack')), sha(bytes), 'the bytes, exact');
    const reader = await openReader(store, 'layers/000001/00000001.pack');
    const parts: Buffer[] = [];
    const target = new Uint8Array(100_003);
    for (let n; (n = await reader.read(target)) > 0; ) parts.push(Buffer.from(target.subarray(0, n)));
    await reader.close();
    t.equal(sha(Buffer.concat(parts)), sha(bytes), 'openReader reads the same bytes');
  });

  await withStore('checksums: put, stat and list report the same one, of a kind the store declares; a rewrite changes it', async (t, store) => {
    const bytes = randomBytes(200_000, 21);
    const streamed = randomBytes(3 * 1024 * 1024 + 5, 22);
    const put = [await store.put('sums/whole', bytes), await store.put('sums/streamed', oddChunks(streamed, 23))];
    const listed = new Map<string, string | undefined>();
    for await (const info of store.list('sums/')) listed.set(info.name, info.checksum);
    for (const info of put) {
      t.equal((await store.stat(info.name))?.checksum, info.checksum, `${info.name}: stat reports what put did`);
      t.equal(listed.get(info.name), info.checksum, `${info.name}: list reports what put did`);
      if (store.capabilities.checksums.length === 0) {
        t.equal(info.checksum, undefined, `${info.name}: a store that declares no checksum kind reports none`);
        continue;
      }
      const kind = info.checksum?.split(':')[0];
      t.ok(kind !== undefined && store.capabilities.checksums.includes(kind), `${info.name}: checksum ${info.checksum} is of a declared kind`);
    }
    if (put[0]!.checksum?.startsWith('md5-etag:')) {
      t.equal(put[0]!.checksum, `md5-etag:${createHash('md5').update(bytes).digest('hex')}`, 'one PUT: the MD5 of the bytes');
    }
    if (store.capabilities.checksums.length > 0) {
      const rewritten = Buffer.from(bytes);
      rewritten[1000] ^= 1;
      const again = await store.put('sums/whole', rewritten);
      t.not(again.checksum, put[0]!.checksum, 'one flipped bit: another checksum');
    }
  });

  await withStore('put replaces an object whole', async (t, store) => {
    await store.put('x/obj', randomBytes(100_000, 1));
    const second = randomBytes(5, 2);
    await store.put('x/obj', second);
    t.ok((await getBuffer(store, 'x/obj')).equals(second), 'the second version, and nothing of the first');
    t.same(sizeOf(await store.stat('x/obj')), { name: 'x/obj', size: 5 }, 'its size');
  });

  await withStore('a put whose body fails part-way leaves no object, and the earlier version intact', async (t, store) => {
    const bytes = randomBytes(2_000_000, 4);
    await t.rejects(store.put('y/new', oddChunks(bytes, 5, { afterBytes: 1_000_000 })), 'the put fails');
    t.equal(await store.stat('y/new'), undefined, 'no object');
    t.same(await listNames(store, 'y/'), [], 'nothing listed');
    const old = randomBytes(1000, 6);
    await store.put('y/old', old);
    await t.rejects(store.put('y/old', oddChunks(bytes, 7, { afterBytes: 1_500_000 })));
    t.ok((await getBuffer(store, 'y/old')).equals(old), 'the earlier version is still whole');
  });

  await withStore('a put aborted by its signal leaves no object', async (t, store) => {
    const controller = new AbortController();
    const bytes = randomBytes(4_000_000, 8);
    async function* slow(): AsyncGenerator<Uint8Array> {
      for (let at = 0; at < bytes.length; at += 500_000) {
        if (at >= 1_000_000) controller.abort(new Error('stop'));
        yield bytes.subarray(at, at + 500_000);
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    await t.rejects(store.put('z/aborted', slow(), { signal: controller.signal }), 'rejects');
    t.equal(await store.stat('z/aborted'), undefined, 'no object');
  });

  await withStore('ranged gets', async (t, store) => {
    const bytes = randomBytes(1_000_000, 9);
    await store.put('r/obj', bytes);
    const random = prng(10);
    for (let i = 0; i < 8; i++) {
      const start = Math.floor(random() * bytes.length);
      const end = start + Math.floor(random() * (bytes.length - start)) + 1;
      t.ok((await getBuffer(store, 'r/obj', { range: { start, end } })).equals(bytes.subarray(start, end)), `[${start}, ${end})`);
    }
    t.ok((await getBuffer(store, 'r/obj', { range: { start: 0, end: 1 } })).equals(bytes.subarray(0, 1)), 'the first byte');
    t.ok((await getBuffer(store, 'r/obj', { range: { start: bytes.length - 1, end: bytes.length } })).equals(bytes.subarray(-1)), 'the last byte');
  });

  await withStore('a missing object is named with BLANKET_E_MISSING_OBJECT', async (t, store) => {
    await t.rejects(store.get('layers/000009/00000001.pack'), { code: ErrorCodes.MISSING_OBJECT, message: /layers\/000009\/00000001\.pack/ });
    await t.rejects(openReader(store, 'nope'), { code: ErrorCodes.MISSING_OBJECT });
  });

  await withStore('list by prefix: exactly the objects under it, at any depth', async (t, store) => {
    const names = ['blanket.json', 'layers/000001/00000001.pack', 'layers/000001/00000001.index', 'layers/000002/00000001.index', 'layers/0000022/x', 'locks/backup', 'a-b/c', 'a/b'];
    for (const name of names) await store.put(name, Buffer.from(name));
    t.same(await listNames(store, ''), [...names].sort(), 'everything');
    t.same(await listNames(store, 'layers/'), names.filter((n) => n.startsWith('layers/')).sort(), 'a folder');
    t.same(await listNames(store, 'layers/000002'), ['layers/000002/00000001.index', 'layers/0000022/x'], 'a partial name matches across folders');
    t.same(await listNames(store, 'layers/000001/00000001.p'), ['layers/000001/00000001.pack'], 'a partial object name');
    t.same(await listNames(store, 'a/'), ['a/b'], 'a/ is not a-b/');
    t.same(await listNames(store, 'missing/'), [], 'nothing under an absent prefix');
    for await (const info of store.list('locks/')) t.same(sizeOf(info), { name: 'locks/backup', size: 'locks/backup'.length }, 'list gives sizes');
  });

  await withStore('delete: the object goes; deleting an absent one is fine', async (t, store) => {
    await store.put('d/obj', Buffer.from('x'));
    await store.delete('d/obj');
    t.equal(await store.stat('d/obj'), undefined, 'gone');
    t.same(await listNames(store, 'd/'), [], 'not listed');
    await store.delete('d/obj');
    await store.delete('never/was');
    t.pass('deleting absent objects does not throw');
  });

  await withStore('putIfAbsent creates once; a second create fails and leaves the first', async (t, store) => {
    t.equal(await store.putIfAbsent('locks/backup', Buffer.from('first')), true, 'created');
    t.equal(await store.putIfAbsent('locks/backup', Buffer.from('second')), false, 'refused');
    t.equal((await getBuffer(store, 'locks/backup')).toString(), 'first', 'the first one stays');
    await store.delete('locks/backup');
    t.equal(await store.putIfAbsent('locks/backup', Buffer.from('third')), true, 'created again after delete');
  });

  await withStore('concurrent puts of many objects all land whole', async (t, store) => {
    const objects = Array.from({ length: 24 }, (_, i) => ({ name: `c/${String(i).padStart(4, '0')}`, bytes: randomBytes(10_000 + i * 997, 100 + i) }));
    await Promise.all(objects.map((o) => store.put(o.name, o.bytes)));
    for (const o of objects) t.equal(sha(await getBuffer(store, o.name)), sha(o.bytes), o.name);
    t.equal((await listNames(store, 'c/')).length, objects.length, 'all listed');
  });

  await withStore('cleanup keeps every object', async (t, store) => {
    await store.put('k/obj', Buffer.from('keep'));
    await store.cleanup();
    t.equal((await getBuffer(store, 'k/obj')).toString(), 'keep');
  });

  await withStore('invalid object names are refused', async (t, store) => {
    for (const name of ['', '/abs', 'a//b', 'a/../b', '../x', 'UPPER', 'with space', 'é']) {
      await t.rejects(store.put(name, Buffer.from('x')), `put ${JSON.stringify(name)}`);
    }
  });
}
