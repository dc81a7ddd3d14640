// The stream-out store (backup SRC -): objects go down one stream whole and one at a time, and the local state
// records an object only once the stream holds it.

import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { ErrorCodes } from '../../src/formats/errors.js';
import { ObjectStreamDecoder, type StreamEvent } from '../../src/formats/object-stream.js';
import { LocalStore } from '../../src/stores/local.js';
import { StreamOutStore, type ByteSink } from '../../src/stores/stream-out.js';
import { getBuffer } from '../../src/stores/store.js';
import { randomBytes } from '../helpers/bytes.js';

const isPack = (name: string): boolean => name.endsWith('.tar.zst');
const options = {
  streamed: (name: string) => name === 'blanket.json' || name.startsWith('layers/'),
  kept: (name: string) => name === 'blanket.json' || name.endsWith('.idx.zst'),
  preamble: ['blanket.json'],
};

/** A sink that collects the bytes, slowly (so puts overlap), and can be made to fail. */
class MemorySink implements ByteSink {
  readonly parts: Buffer[] = [];
  failAfterBytes = Infinity;
  private written = 0;
  async write(bytes: Uint8Array): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    if (this.written + bytes.length > this.failAfterBytes) throw Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
    this.written += bytes.length;
    this.parts.push(Buffer.from(bytes));
  }
  /** The objects the stream holds whole, in order, with the SHA-256 of each. */
  objects(): Array<{ name: string; sha256: string }> {
    const decoder = new ObjectStreamDecoder();
    const events: StreamEvent[] = [...decoder.push(Buffer.concat(this.parts)), ...decoder.end()];
    return events.flatMap((event) => (event.type === 'end' ? [{ name: event.name, sha256: event.sha256 }] : []));
  }
}

const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

function tempState(t: Test): { dir: string; state: LocalStore } {
  const dir = mkdtempSync(join(os.tmpdir(), 'blanket-stream-state-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, state: new LocalStore(dir) };
}

async function* chunks(bytes: Buffer, size: number): AsyncGenerator<Uint8Array> {
  const scratch = Buffer.alloc(size);
  for (let at = 0; at < bytes.length; at += size) {
    const n = bytes.copy(scratch, 0, at, at + size);
    yield scratch.subarray(0, n);
    scratch.fill(0xee); // reused memory: the store must have written it before asking for more
  }
}

t.test('a pack streamed while an index is put: both go down whole, one after the other, and the state records each afterwards', async (t) => {
  const { dir, state } = tempState(t);
  const header = Buffer.from('{"format":"blanket"}\n');
  await state.put('blanket.json', header);
  const sink = new MemorySink();
  const store = new StreamOutStore(state, sink, options);
  const pack = randomBytes(3_000_001, 1);
  const index = randomBytes(5_000, 2);
  const packPut = store.put('layers/000001/00000002.tar.zst', chunks(pack, 65_537));
  const indexInfo = await store.put('layers/000001/00000001.idx.zst', index);
  t.same(indexInfo, { name: 'layers/000001/00000001.idx.zst', size: 5_000 }, 'a put of bytes in memory resolves while the pack streams');
  t.notOk(existsSync(join(dir, 'layers/000001/00000001.idx.zst')), 'but the state has no copy until the stream holds it');
  t.same(await packPut, { name: 'layers/000001/00000002.tar.zst', size: pack.length });
  await store.settle();
  t.ok((await getBuffer(state, 'layers/000001/00000001.idx.zst')).equals(index), 'then the index is kept in the state');
  t.notOk(existsSync(join(dir, 'layers/000001/00000002.tar.zst')), 'pack data is not kept');
  t.same(await store.stat('layers/000001/00000002.tar.zst'), { name: 'layers/000001/00000002.tar.zst', size: pack.length }, 'stat knows the pack by its marker');
  const listed: string[] = [];
  for await (const info of store.list('layers/')) listed.push(`${info.name}:${info.size}`);
  t.same(listed.sort(), [`layers/000001/00000001.idx.zst:5000`, `layers/000001/00000002.tar.zst:${pack.length}`], 'list shows both, with sizes');
  await t.rejects(store.get('layers/000001/00000002.tar.zst'), { code: ErrorCodes.MISSING_OBJECT, message: /went down the stream/ }, 'its data cannot be read back');
  await store.close();
  t.same(
    sink.objects(),
    [
      { name: 'blanket.json', sha256: sha(header) },
      { name: 'layers/000001/00000002.tar.zst', sha256: sha(pack) },
      { name: 'layers/000001/00000001.idx.zst', sha256: sha(index) },
    ],
    'the stream: the header (preamble), the pack, then the index that waited for it',
  );
  const decoder = new ObjectStreamDecoder();
  const events = [...decoder.push(Buffer.concat(sink.parts)), ...decoder.end()];
  t.match(events.at(-1), { type: 'finish', count: 3 }, 'and a finish record: the stream ended cleanly');
});

t.test('a sink that fails: the object being written and those after it are not recorded in the state; close() reports the failure', async (t) => {
  const { dir, state } = tempState(t);
  const sink = new MemorySink();
  const store = new StreamOutStore(state, sink, options);
  await store.put('layers/000001/00000001.tar.zst', randomBytes(100_000, 3));
  await store.put('layers/000001/00000001.idx.zst', randomBytes(1_000, 4));
  await store.settle();
  sink.failAfterBytes = 150_000; // the pipe's reader goes away during the next pack
  await t.rejects(store.put('layers/000001/00000002.tar.zst', chunks(randomBytes(200_000, 5), 10_000)), /EPIPE/, 'the pack put fails');
  await t.rejects(store.put('layers/000001/00000002.idx.zst', randomBytes(1_000, 6)), /EPIPE/, 'and later puts too');
  await t.rejects(store.close(), /EPIPE/, 'close() reports it');
  t.ok(existsSync(join(dir, 'layers/000001/00000001.idx.zst')), 'what went down whole is recorded');
  t.notOk(existsSync(join(dir, 'streamed/layers/000001/00000002.tar.zst.s200000')), 'the cut pack is not');
  t.notOk(existsSync(join(dir, 'layers/000001/00000002.idx.zst')), 'nor its index: the next run sends both');
  t.same(
    sink.objects().map((o) => o.name),
    ['layers/000001/00000001.tar.zst', 'layers/000001/00000001.idx.zst'],
    'the stream holds only the whole objects',
  );
});

t.test('objects the stream does not carry (the lock) stay in the state only', async (t) => {
  const { dir, state } = tempState(t);
  const sink = new MemorySink();
  const store = new StreamOutStore(state, sink, options);
  t.equal(await store.putIfAbsent('lock', Buffer.from('held')), true);
  t.equal(await store.putIfAbsent('lock', Buffer.from('again')), false, 'exclusive, as the state is');
  await store.delete('lock');
  await store.close();
  t.same(sink.parts, [], 'nothing went down the stream (not even a header: no stream was started)');
  t.notOk(existsSync(join(dir, 'lock')));
});
