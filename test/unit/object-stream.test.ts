// Object stream codec: round trips, truncation at every offset, concatenated cut streams, damage, garbage and memory bounds.
import t from 'tap';
import { createHash } from 'node:crypto';
import {
  dataRecordHeader,
  dataRecords,
  encodeObject,
  MAX_RECORD_BYTES,
  newStreamId,
  nextRecordLength,
  objectBegin,
  objectEnd,
  ObjectStreamDecoder,
  streamFinish,
  streamStart,
  type StreamEvent,
} from '../../src/formats/object-stream.js';
import { chunkBy, prng, randomBytes } from '../helpers/bytes.js';

const MiB = 1024 * 1024;
const sha = (bytes: Uint8Array | string): string => createHash('sha256').update(bytes).digest('hex');

interface Obj {
  readonly name: string;
  readonly body: Buffer;
}

/** An encoded stream and where its records lie, to compute what a cut at any offset must yield. */
interface Layout {
  readonly id: string;
  readonly bytes: Buffer;
  readonly headerEnd: number;
  readonly finishStart: number;
  readonly finishEnd: number;
  readonly objects: ReadonlyArray<{
    readonly obj: Obj;
    readonly beginStart: number;
    readonly beginEnd: number;
    readonly endStart: number;
    readonly endEnd: number;
    /** [line start, payload start, payload end] of each data record. */
    readonly data: ReadonlyArray<readonly [number, number, number]>;
  }>;
}

function layout(objects: readonly Obj[], id = newStreamId()): Layout {
  const parts: Buffer[] = [streamStart(id)];
  let at = parts[0]!.length;
  const add = (b: Buffer): number => {
    parts.push(b);
    return (at += b.length);
  };
  const headerEnd = at;
  const placed = objects.map((obj) => {
    const beginStart = at;
    const beginEnd = add(objectBegin(id, obj.name));
    const records = dataRecords(id, obj.body);
    const data: Array<[number, number, number]> = [];
    for (let i = 0; i < records.length; i += 2) {
      const lineStart = at;
      const payloadStart = add(records[i]!);
      data.push([lineStart, payloadStart, add(records[i + 1]!)]);
    }
    const endStart = at;
    const endEnd = add(objectEnd(id, obj.body.length, sha(obj.body)));
    return { obj, beginStart, beginEnd, endStart, endEnd, data };
  });
  const finishStart = at;
  const finishEnd = add(streamFinish(id, objects.length));
  return { id, bytes: Buffer.concat(parts), headerEnd, finishStart, finishEnd, objects: placed };
}

const summary = (name: string, body: Uint8Array): string => `${name} ${body.length} ${sha(body)}`;
const summaries = (objects: readonly Obj[]): string[] => objects.map((o) => summary(o.name, o.body));

interface Outcome {
  /** Delivered objects as "name size sha256", their data joined only after the last push. */
  readonly objects: string[];
  readonly lost: string[];
  readonly lostReasons: string[];
  readonly streams: string[];
  readonly finished: Array<{ streamId: string; count: number; objects: number }>;
  readonly truncated: Array<{ streamId: string; objects: number }>;
  skipped: number;
  readonly skipReasons: string[];
  /** Event order violations (data outside an object, an end whose data does not match it, ...). */
  readonly problems: string[];
  maxBuffered: number;
}

/** Feeds `chunks` to a decoder and checks the order of its events. */
function decode(chunks: Iterable<Uint8Array>): Outcome {
  const decoder = new ObjectStreamDecoder();
  const delivered: Array<{ name: string; parts: Buffer[]; size: number; sha256: string }> = [];
  const out: Outcome = { objects: [], lost: [], lostReasons: [], streams: [], finished: [], truncated: [], skipped: 0, skipReasons: [], problems: [], maxBuffered: 0 };
  let open: { name: string; parts: Buffer[] } | null = null;
  const problem = (what: string): void => void out.problems.push(what);
  const take = (events: StreamEvent[]): void => {
    for (const e of events) {
      switch (e.type) {
        case 'stream':
          if (open) problem(`stream ${e.streamId} inside object ${open.name}`);
          out.streams.push(e.streamId);
          break;
        case 'begin':
          if (open) problem(`begin ${e.name} inside object ${open.name}`);
          open = { name: e.name, parts: [] };
          break;
        case 'data':
          if (open?.name !== e.name) problem(`data of ${e.name} outside it`);
          else if (e.bytes.length === 0) problem(`empty data event for ${e.name}`);
          else open.parts.push(e.bytes);
          break;
        case 'end':
          if (open?.name !== e.name) problem(`end of ${e.name} outside it`);
          else delivered.push({ ...open, size: e.size, sha256: e.sha256 });
          open = null;
          break;
        case 'lost':
          if (open?.name !== e.name) problem(`lost ${e.name} outside it`);
          out.lost.push(e.name);
          out.lostReasons.push(e.reason);
          open = null;
          break;
        case 'finish':
          if (open) problem(`finish inside object ${open.name}`);
          out.finished.push({ streamId: e.streamId, count: e.count, objects: e.objects });
          break;
        case 'truncated':
          if (open) problem(`truncated inside object ${open.name}`);
          out.truncated.push({ streamId: e.streamId, objects: e.objects });
          break;
        case 'skipped':
          if (e.bytes <= 0) problem(`skipped ${e.bytes} bytes`);
          out.skipped += e.bytes;
          out.skipReasons.push(e.reason);
          break;
      }
    }
  };
  for (const chunk of chunks) {
    take(decoder.push(chunk));
    out.maxBuffered = Math.max(out.maxBuffered, decoder.bufferedBytes);
  }
  take(decoder.end());
  if (open) problem(`object ${(open as { name: string }).name} neither ended nor lost`);
  for (const d of delivered) {
    const body = Buffer.concat(d.parts);
    if (body.length !== d.size || sha(body) !== d.sha256) problem(`end of ${d.name} does not match its data`);
    out.objects.push(summary(d.name, body));
  }
  return out;
}

const chunkings: Array<[string, (buf: Buffer) => Buffer[]]> = [
  ['whole', (buf) => [buf]],
  ['7-byte', (buf) => chunkBy(buf, () => 7)],
  ['4093-byte', (buf) => chunkBy(buf, () => 4093)],
  [
    'random',
    (buf) => {
      const next = prng(buf.length);
      return chunkBy(buf, () => Math.floor(next() * 200_000));
    },
  ],
];

function randomChunks(buf: Buffer, seed: number): Buffer[] {
  const next = prng(seed);
  return chunkBy(buf, () => (next() < 0.3 ? Math.floor(next() * 64) : Math.floor(next() * 300_000)));
}

/** What a cut of `l` at `cut` must yield: the objects whose end record arrived whole, the one it cut into. */
function expectedCut(l: Layout, cut: number): { whole: Obj[]; lost: string[]; header: boolean; finished: boolean } {
  return {
    whole: l.objects.filter((o) => o.endEnd <= cut).map((o) => o.obj),
    lost: l.objects.filter((o) => o.beginEnd <= cut && cut < o.endEnd).map((o) => o.obj.name),
    header: cut >= l.headerEnd,
    finished: cut >= l.finishEnd,
  };
}

/** Offsets in and around every record of `l`: line starts, middles and ends, payload edges and middles. */
function interestingOffsets(l: Layout): number[] {
  const at = new Set<number>([1, l.headerEnd >> 1, l.headerEnd, l.finishStart + 1, l.finishEnd - 1]);
  for (const o of l.objects) {
    at.add(o.beginStart + 1).add((o.beginStart + o.beginEnd) >> 1).add(o.beginEnd);
    for (const [line, payload, end] of o.data) {
      at.add(line + 1).add((line + payload) >> 1).add(payload).add(payload + 1).add((payload + end) >> 1).add(end - 1).add(end);
    }
    at.add(o.endStart + 1).add(o.endEnd - 1).add(o.endEnd);
  }
  return [...at].filter((x) => x > 0 && x < l.bytes.length).sort((a, b) => a - b);
}

const smallObjects: Obj[] = [
  { name: 'a', body: Buffer.alloc(0) },
  { name: 'b/c', body: randomBytes(10, 11) },
  { name: 'd.e-f', body: randomBytes(300, 12) },
  { name: 'g', body: Buffer.alloc(0) },
  { name: 'h/i/j', body: randomBytes(5, 13) },
];

t.test('the format, byte for byte', async (t) => {
  const id = '0123456789abcdef0123456789abcdef';
  const bytes = Buffer.concat([streamStart(id), ...encodeObject(id, 'a/b', Buffer.from('hi')), ...encodeObject(id, 'e', Buffer.alloc(0)), streamFinish(id, 2)]);
  t.equal(
    bytes.toString('latin1'),
    `blanket-stream\t1\t${id}\n` +
      `begin\t${id}\ta/b\t${sha('a/b').slice(0, 8)}\ndata\t${id}\t2\nhiend\t${id}\t2\t${sha('hi')}\n` +
      `begin\t${id}\te\t${sha('e').slice(0, 8)}\nend\t${id}\t0\t${sha('')}\n` +
      `finish\t${id}\t2\n`,
  );
  t.match(newStreamId(), /^[0-9a-f]{32}$/);
  t.not(newStreamId(), newStreamId(), 'stream ids are random');
  const big = encodeObject(id, 'big', Buffer.alloc(3 * MiB + 7));
  const lengths = big.filter((b) => b.toString('latin1', 0, 5) === 'data\t').map((b) => Number(b.toString('latin1').split('\t')[2]));
  t.same(lengths, [MAX_RECORD_BYTES, MAX_RECORD_BYTES, MAX_RECORD_BYTES, 7], 'bodies are cut into records of at most 1 MiB');
});

t.test('round trip of several objects, whole and in odd-sized chunks', async (t) => {
  const objects: Obj[] = [
    { name: 'blanket.json', body: Buffer.alloc(0) },
    { name: 'layers/000001/00000001.idx.zst', body: randomBytes(1, 1) },
    { name: 'packs/000001/00000001.pack', body: randomBytes(MiB, 2) },
    { name: 'packs/000001/00000002.pack', body: randomBytes(3 * MiB + 7, 3) },
    { name: 'a/b-c/d.e', body: randomBytes(70_000, 4) },
  ];
  const l = layout(objects);
  for (const [label, chunk] of chunkings) {
    const r = decode(chunk(l.bytes));
    t.same(r.objects, summaries(objects), `${label}: every object`);
    t.same(r.problems, [], `${label}: events in order, each end matching its data`);
    t.same(r.finished, [{ streamId: l.id, count: 5, objects: 5 }], `${label}: finish`);
    t.same([r.lost, r.truncated, r.skipped], [[], [], 0], `${label}: nothing lost, truncated or skipped`);
  }
  // Byte by byte on a smaller stream (4 MiB that way would be slow).
  const small = layout([...smallObjects, { name: 'k', body: randomBytes(5000, 5) }]);
  const r = decode(chunkBy(small.bytes, () => 1));
  t.same(r.objects, summaries([...smallObjects, { name: 'k', body: randomBytes(5000, 5) }]), '1-byte chunks');
  t.same([r.problems, r.lost, r.skipped], [[], [], 0]);
});

t.test('truncation at every byte offset of a small stream, and at many offsets of a larger one', async (t) => {
  const check = (l: Layout, cut: number, chunks: Buffer[]): string | null => {
    const r = decode(chunks);
    const want = expectedCut(l, cut);
    const got = { objects: r.objects, lost: r.lost, problems: r.problems, finished: r.finished.length, truncated: r.truncated };
    const expected = {
      objects: summaries(want.whole),
      lost: want.lost,
      problems: [],
      finished: want.finished ? 1 : 0,
      truncated: want.header && !want.finished ? [{ streamId: l.id, objects: want.whole.length }] : [],
    };
    return JSON.stringify(got) === JSON.stringify(expected) ? null : `cut at ${cut}: ${JSON.stringify(got)} instead of ${JSON.stringify(expected)}`;
  };
  const small = layout(smallObjects);
  const failures: string[] = [];
  for (let cut = 0; cut <= small.bytes.length; cut++) {
    const prefix = small.bytes.subarray(0, cut);
    for (const chunks of [[prefix], chunkBy(prefix, () => 1)]) {
      const failure = check(small, cut, chunks);
      if (failure) failures.push(failure);
    }
  }
  t.same(failures.slice(0, 5), [], `${small.bytes.length + 1} cuts, fed whole and byte by byte`);

  const r = decode([small.bytes.subarray(0, small.objects[2]!.data[0]![1] + 100)]);
  t.match(r.lostReasons, [/^the stream ends inside object d\.e-f \(100 bytes of it arrived\)$/], 'the reason names the object and what arrived');

  const large = layout([
    { name: 'p/1', body: randomBytes(200_000, 21) },
    { name: 'p/2', body: randomBytes(1.5 * MiB, 22) },
    { name: 'p/3', body: Buffer.alloc(0) },
    { name: 'p/4', body: randomBytes(3000, 23) },
    { name: 'p/5', body: randomBytes(MiB, 24) },
  ]);
  const next = prng(7);
  const cuts = [...interestingOffsets(large), ...Array.from({ length: 40 }, () => Math.floor(next() * large.bytes.length))];
  const largeFailures: string[] = [];
  for (const cut of cuts) {
    const failure = check(large, cut, randomChunks(large.bytes.subarray(0, cut), cut));
    if (failure) largeFailures.push(failure);
  }
  t.same(largeFailures.slice(0, 5), [], `${cuts.length} cuts of a ${large.bytes.length}-byte stream`);
});

t.test('concatenated streams: a cut stream, then whole ones', async (t) => {
  /** Decodes cut streams `cuts` (layout, offset) followed by `last` whole; returns a mismatch or null. */
  const check = (cut: ReadonlyArray<readonly [Layout, number]>, last: Layout, seed: number): string | null => {
    const input = Buffer.concat([...cut.map(([l, at]) => l.bytes.subarray(0, at)), last.bytes]);
    const r = decode(randomChunks(input, seed));
    const wants = cut.map(([l, at]) => ({ l, ...expectedCut(l, at) }));
    const got = { objects: r.objects, lost: r.lost, problems: r.problems, finished: r.finished, truncated: r.truncated };
    const expected = {
      objects: [...wants.flatMap((w) => summaries(w.whole)), ...summaries(last.objects.map((o) => o.obj))],
      lost: wants.flatMap((w) => w.lost),
      problems: [],
      finished: [{ streamId: last.id, count: last.objects.length, objects: last.objects.length }],
      truncated: wants.filter((w) => w.header).map((w) => ({ streamId: w.l.id, objects: w.whole.length })),
    };
    const where = cut.map(([, at]) => at).join('+');
    return JSON.stringify(got) === JSON.stringify(expected) ? null : `cut at ${where}: ${JSON.stringify(got)} instead of ${JSON.stringify(expected)}`;
  };

  const failures: string[] = [];
  const smallA = layout(smallObjects);
  const smallB = layout([{ name: 'x', body: randomBytes(40, 31) }, { name: 'y', body: Buffer.alloc(0) }]);
  for (let at = 0; at < smallA.bytes.length; at++) {
    const failure = check([[smallA, at]], smallB, at);
    if (failure) failures.push(failure);
  }
  t.same(failures.slice(0, 5), [], `a small stream cut at each of ${smallA.bytes.length} offsets, then another`);

  const a = layout([
    { name: 'packs/a1', body: randomBytes(100_000, 41) },
    { name: 'packs/a2', body: randomBytes(1.2 * MiB, 42) },
    { name: 'a3', body: Buffer.alloc(0) },
    { name: 'a4', body: randomBytes(7, 43) },
    { name: 'packs/a5', body: randomBytes(600_000, 44) },
  ]);
  const b = layout([
    { name: 'packs/b1', body: randomBytes(3000, 51) },
    { name: 'b2', body: Buffer.alloc(0) },
    { name: 'packs/b3', body: randomBytes(1.1 * MiB, 52) },
    { name: 'b4', body: randomBytes(10, 53) },
  ]);
  const c = layout([{ name: 'c1', body: randomBytes(500_000, 61) }]);
  const next = prng(9);
  const cuts = [...interestingOffsets(a), ...Array.from({ length: 30 }, () => Math.floor(next() * a.bytes.length))];
  const bigFailures: string[] = [];
  for (const at of cuts) {
    const failure = check([[a, at]], b, at);
    if (failure) bigFailures.push(failure);
  }
  t.same(bigFailures.slice(0, 5), [], `a cut at ${cuts.length} offsets (inside payloads, record lines, after begin...), then a whole stream`);

  const chainFailures: string[] = [];
  const bCuts = interestingOffsets(b);
  for (let i = 0; i < 25; i++) {
    const failure = check(
      [
        [a, cuts[Math.floor(next() * cuts.length)]!],
        [b, bCuts[Math.floor(next() * bCuts.length)]!],
      ],
      c,
      i,
    );
    if (failure) chainFailures.push(failure);
  }
  t.same(chainFailures.slice(0, 5), [], 'two cut streams in a row, then a whole one');

  const r = decode(randomChunks(Buffer.concat([a.bytes, b.bytes]), 3));
  t.same(r.objects, [...a.objects, ...b.objects].map((o) => summary(o.obj.name, o.obj.body)), 'whole + whole: every object');
  t.same(r.streams, [a.id, b.id]);
  t.same(r.finished.map((f) => f.streamId), [a.id, b.id]);
  t.same([r.lost, r.truncated, r.skipped, r.problems], [[], [], 0, []], 'nothing lost, truncated or skipped');
});

t.test('damage', async (t) => {
  const objects: Obj[] = [
    { name: 'o/1', body: randomBytes(1000, 71) },
    { name: 'o/2', body: randomBytes(5000, 72) },
    { name: 'o/3', body: randomBytes(10, 73) },
    { name: 'o/4', body: Buffer.alloc(0) },
  ];
  const a = layout(objects);
  const b = layout([{ name: 'later', body: randomBytes(2000, 74) }]);
  const bSummaries = summaries([{ name: 'later', body: randomBytes(2000, 74) }]);

  t.test('a flipped byte in a payload: that object is lost, the others delivered', async (t) => {
    const bytes = Buffer.from(a.bytes);
    bytes[a.objects[1]!.data[0]![1] + 1234]! ^= 0x10;
    const r = decode([bytes, b.bytes]);
    t.same(r.objects, [...summaries([objects[0]!, objects[2]!, objects[3]!]), ...bSummaries]);
    t.same(r.lost, ['o/2']);
    t.match(r.lostReasons[0], /object o\/2 is damaged: its data has SHA-256 [0-9a-f]{64}, its end record says/);
    t.same(r.finished.map((f) => f.objects), [3, 1], 'finish says how many objects were delivered whole');
    t.same([r.skipped, r.problems], [0, []]);
  });

  t.test('a flipped bit anywhere in a record line: only that object is lost, the rest resynchronises', async (t) => {
    const lines: Array<[number, number, number | 'header' | 'finish']> = [[0, a.headerEnd, 'header']];
    a.objects.forEach((o, i) => {
      lines.push([o.beginStart, o.beginEnd, i], [o.endStart, o.endEnd, i]);
      for (const [line, payload] of o.data) lines.push([line, payload, i]);
    });
    lines.push([a.finishStart, a.finishEnd, 'finish']);
    const failures: string[] = [];
    let cases = 0;
    for (const [start, end, owner] of lines) {
      for (let at = start; at < end; at++) {
        for (const mask of [0x01, 0x20, 0x80]) {
          cases++;
          const bytes = Buffer.from(a.bytes);
          bytes[at]! ^= mask;
          const r = decode(randomChunks(Buffer.concat([bytes, b.bytes]), at));
          const fromA = owner === 'header' ? [] : objects.filter((_, i) => i !== owner);
          const expected = [...summaries(fromA), ...bSummaries];
          const ok = JSON.stringify(r.objects) === JSON.stringify(expected) && r.problems.length === 0 && r.finished.some((f) => f.streamId === b.id);
          if (!ok) failures.push(`byte ${at} ^ ${mask}: ${JSON.stringify({ objects: r.objects, problems: r.problems })}`);
        }
      }
    }
    t.same(failures.slice(0, 5), [], `${cases} flips`);
  });

  t.test('records out of place, LEN out of range, another stream id, an unknown version, an endless line', async (t) => {
    const id = a.id;
    const other = newStreamId();
    const obj = (name: string, body: string): Buffer[] => encodeObject(id, name, Buffer.from(body));
    // The middle of a stream: 'before', these records, 'after' (unless the records end the stream), finish.
    const cases: Array<[string, Buffer[], RegExp, boolean?]> = [
      ['LEN 0', [objectBegin(id, 'x'), Buffer.from(`data\t${id}\t0\n`)], /bad data record length/],
      ['LEN over 1 MiB', [objectBegin(id, 'x'), Buffer.from(`data\t${id}\t${MAX_RECORD_BYTES + 1}\n`), Buffer.alloc(MAX_RECORD_BYTES + 1)], /bad data record length/],
      ['LEN with a leading zero', [objectBegin(id, 'x'), Buffer.from(`data\t${id}\t01\nz`)], /bad data record length/],
      ['a record of another stream', [objectBegin(id, 'x'), dataRecordHeader(other, 1), Buffer.from('z')], /record of stream [0-9a-f]{32} at byte \d+, inside stream/],
      ['begin inside an object', [objectBegin(id, 'x'), dataRecordHeader(id, 1), Buffer.from('z')], /a begin record at byte \d+ inside object x/],
      ['finish inside an object', [objectBegin(id, 'x'), streamFinish(id, 0)], /a finish record at byte \d+ inside object x/, false],
      ['a line with no LF', [objectBegin(id, 'x'), Buffer.alloc(600, 'd')], /no line end within 512 bytes/],
      ['a begin whose name does not match its check', [objectBegin(id, 'x'), Buffer.from(`begin\t${id}\ty\t${sha('z').slice(0, 8)}\n`)], /bad begin record/],
    ];
    for (const [label, middle, reason, goesOn = true] of cases) {
      const input = Buffer.concat([streamStart(id), ...obj('before', 'one'), ...middle, ...obj('after', 'two'), streamFinish(id, 3), b.bytes]);
      for (const chunks of [[input], chunkBy(input, () => 5)]) {
        const r = decode(chunks);
        const expected = [summary('before', Buffer.from('one')), ...(goesOn ? [summary('after', Buffer.from('two'))] : []), ...bSummaries];
        t.same(r.objects, expected, `${label}: the objects around it`);
        t.same(r.lost, ['x'], `${label}: the object it is in is lost`);
        t.match(r.lostReasons, [reason], `${label}: the reason`);
        t.same([r.problems, r.finished.map((f) => f.objects)], [[], [goesOn ? 2 : 1, 1]], `${label}: the stream goes on to a finish`);
      }
    }

    const v2 = Buffer.from(`blanket-stream\t2\t${other}\nbegin\t${other}\tv\t${sha('v').slice(0, 8)}\nend\t${other}\t0\t${sha('')}\n`);
    const r = decode([v2, b.bytes]);
    t.same(r.objects, bSummaries, 'a stream of an unknown version is skipped');
    t.equal(r.skipped, v2.length);
    t.match(r.skipReasons, [/stream format version "2" is not supported/]);

    const garbageAfter = Buffer.concat([a.bytes, Buffer.from('garbage\n'), b.bytes]);
    const g = decode([garbageAfter]);
    t.same(g.objects, [...summaries(objects), ...bSummaries], 'bytes after a finish are skipped');
    t.equal(g.skipped, 8);
    t.match(g.skipReasons, [new RegExp(`^bytes after the end of stream ${a.id} \\(bad record line at byte ${a.bytes.length}: not a record line: "garbage"\\)$`)]);
  });
});

t.test('garbage: skipped before the first stream, and any amount of it in bounded memory', async (t) => {
  const l = layout(smallObjects);
  const garbage = randomBytes(10_000, 81);
  const r = decode(chunkBy(Buffer.concat([garbage, l.bytes]), () => 333));
  t.same(r.objects, summaries(smallObjects), 'the stream after the garbage');
  t.equal(r.skipped, garbage.length, 'a skipped event counts the garbage');
  t.match(r.skipReasons, [/^bytes before the first stream header/]);

  const noise = randomBytes(5 * MiB, 82);
  for (const [label, chunks] of [
    ['64 KiB chunks', chunkBy(noise, () => 64 * 1024)],
    ['one chunk', [noise]],
  ] as const) {
    const n = decode(chunks);
    t.same([n.objects, n.streams, n.skipped, n.problems], [[], [], noise.length, []], `${label}: all of it skipped`);
    t.ok(n.maxBuffered <= 4 * MiB, `${label}: at most 4 MiB buffered (${n.maxBuffered})`);
  }

  // Hostile: records whose payloads are full of false stream headers, each then failing to read.
  const id = newStreamId();
  const fake = Buffer.alloc(MAX_RECORD_BYTES, 'blanket-stream\t1\t');
  const hostileRecord = Buffer.concat([objectBegin(id, 'h'), dataRecordHeader(id, fake.length), fake, Buffer.from('bad line\n')]);
  const hostile = Buffer.concat([streamStart(id), ...Array.from({ length: 6 }, () => hostileRecord), Buffer.alloc(2 * MiB, 'blanket-stream\t'), l.bytes]);
  const started = Date.now();
  const h = decode(chunkBy(hostile, () => 50_000));
  t.same(h.objects, summaries(smallObjects), 'a stream after hostile input is read');
  t.equal(h.lost.length, 6);
  t.same(h.problems, []);
  t.ok(h.maxBuffered <= 4 * MiB, `hostile input: at most 4 MiB buffered (${h.maxBuffered})`);
  t.ok(Date.now() - started < 5000, `hostile input read in ${Date.now() - started} ms`);

  // An object that never ends: its data flows through, nothing piles up.
  const endless = Buffer.concat([streamStart(id), objectBegin(id, 'endless'), ...dataRecords(id, randomBytes(12 * MiB, 83))]);
  const e = decode(chunkBy(endless, () => 100_000));
  t.same([e.lost, e.truncated.length], [['endless'], 1]);
  t.ok(e.maxBuffered <= 4 * MiB, `an endless object: at most 4 MiB buffered (${e.maxBuffered})`);
});

t.test('an embedded stream (an archived stream file) is data, intact or cut', async (t) => {
  const inner = layout([
    { name: 'blanket.json', body: Buffer.from('{"format":"blanket"}') },
    { name: 'inner/x', body: randomBytes(500, 91) },
  ]);
  const body = Buffer.concat([randomBytes(1000, 92), inner.bytes, randomBytes(300_000, 93)]);
  const innerSummaries = summaries(inner.objects.map((o) => o.obj));

  // Written by hand, the payload holding the inner stream verbatim: intact, it is only data.
  const id = newStreamId();
  const verbatim = Buffer.concat([
    streamStart(id),
    objectBegin(id, 'stream-file'),
    dataRecordHeader(id, body.length),
    body,
    objectEnd(id, body.length, sha(body)),
    streamFinish(id, 1),
  ]);
  for (const [label, chunk] of chunkings) {
    const r = decode(chunk(verbatim));
    t.same([r.objects, r.streams, r.problems], [[summary('stream-file', body)], [id], []], `${label}: delivered as data, not parsed`);
  }

  // Writers cut records inside the magic, so a stream holds it only where a stream starts.
  const outer = layout([{ name: 'stream-file', body }, { name: 'next', body: randomBytes(100, 94) }]);
  t.equal(outer.bytes.toString('latin1').split('blanket-stream\t').length - 1, 1, 'the written stream holds the magic once');
  t.same(decode([outer.bytes]).objects, summaries(outer.objects.map((o) => o.obj)));

  // Cut after the inner stream, inside the record holding it, then another stream: the inner objects never surface.
  const after = layout([{ name: 'b', body: randomBytes(50, 95) }]);
  const innerEnd = outer.objects[0]!.data[0]![1] + 1000 + inner.bytes.length + 1; // the split adds a record line
  const failures: string[] = [];
  for (const extra of [0, 1, 17, 5000, 250_000]) {
    const r = decode(randomChunks(Buffer.concat([outer.bytes.subarray(0, innerEnd + extra), after.bytes]), extra));
    if (r.objects.some((o) => innerSummaries.includes(o)) || JSON.stringify(r.objects) !== JSON.stringify(summaries([after.objects[0]!.obj]))) {
      failures.push(`cut ${extra} bytes after the inner stream: ${JSON.stringify(r.objects)}`);
    }
  }
  t.same(failures, [], 'only the next stream is delivered');

  // A false header in a cut record (a hand-made payload) fails to read, and the search goes on to the real one.
  const falseHeader = Buffer.concat([
    streamStart(id),
    objectBegin(id, 'cut'),
    dataRecordHeader(id, 100_000),
    Buffer.from(`xx blanket-stream\t1\t${newStreamId()}\nbegin\tnonsense`),
    after.bytes,
  ]);
  const f = decode([falseHeader]);
  t.same([f.objects, f.lost, f.problems], [summaries([after.objects[0]!.obj]), ['cut'], []]);
});

t.test('encoder validation', async (t) => {
  const id = newStreamId();
  for (const name of ['', 'A', 'a//b', '/a', 'a/', '.', 'a/..', './a', 'a b', 'a\tb', 'é', 'x'.repeat(201), 'a\nb']) {
    t.throws(() => objectBegin(id, name), RangeError, `name ${JSON.stringify(name)}`);
  }
  for (const name of ['a', 'x'.repeat(200), 'layers/000001/00000001.idx.zst', '...', 'a.-b/-/c..d']) {
    t.doesNotThrow(() => objectBegin(id, name), `name ${JSON.stringify(name)}`);
  }
  for (const length of [0, -1, 1.5, MAX_RECORD_BYTES + 1, Number.NaN]) {
    t.throws(() => dataRecordHeader(id, length), RangeError, `record length ${length}`);
  }
  t.equal(dataRecordHeader(id, MAX_RECORD_BYTES).toString(), `data\t${id}\t1048576\n`);
  for (const bad of ['', 'ABCDEF0123456789abcdef0123456789', '0123', 'g'.repeat(32)]) {
    t.throws(() => streamStart(bad), RangeError, `stream id ${JSON.stringify(bad)}`);
  }
  t.throws(() => objectEnd(id, -1, sha('')), RangeError);
  t.throws(() => objectEnd(id, 0, 'E3B0'), RangeError);
  t.throws(() => streamFinish(id, 1.5), RangeError);

  const magic = Buffer.from('blanket-stream\t');
  t.equal(nextRecordLength(Buffer.alloc(0)), 0);
  t.equal(nextRecordLength(Buffer.alloc(3 * MiB)), MAX_RECORD_BYTES);
  t.equal(nextRecordLength(Buffer.concat([Buffer.alloc(10), magic])), 11, 'cut one byte into the magic');
  t.equal(nextRecordLength(Buffer.concat([Buffer.alloc(MAX_RECORD_BYTES - 3), magic])), MAX_RECORD_BYTES - 2, 'a magic across the 1 MiB limit');
  t.equal(nextRecordLength(Buffer.concat([Buffer.alloc(MAX_RECORD_BYTES), magic])), MAX_RECORD_BYTES, 'a magic after the limit');
  t.equal(nextRecordLength(Buffer.from('blanket-stream')), 14, 'no tab: not the magic');
  const records = dataRecords(id, Buffer.concat([magic, magic]));
  t.same(records.filter((_, i) => i % 2 === 1).map((p) => p.toString('latin1')), ['b', 'lanket-stream\tb', 'lanket-stream\t']);
});

t.test('push after end, and end twice, are refused', async (t) => {
  const decoder = new ObjectStreamDecoder();
  t.same(decoder.end(), [], 'an empty input has no events');
  t.throws(() => decoder.push(Buffer.from('x')), /after end/);
  t.throws(() => decoder.end(), /twice/);
});
