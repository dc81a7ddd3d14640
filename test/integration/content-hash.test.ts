// A big file's content hash, through the real CLI: the hash of its chunk list, checkable by hand with split and
// sha256sum as docs/FORMAT.md says; restore skips a copy that matches and rewrites one with a changed chunk.

import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpDir } from '../helpers/cli.js';
import { blanket, expectExit, finishedEvent, ndjson } from '../helpers/integration.js';
import { Prng } from '../helpers/tree.js';

const KiB = 1024;
const PACK_SIZE = 256 * KiB; // chunks of half the pack size
const CHUNK = PACK_SIZE / 2;

t.test('content hash of a chunked file', async (t) => {
  const root = tmpDir(t, 'blanket-content-hash-');
  const source = join(root, 'src');
  const archive = join(root, 'archive');
  mkdirSync(source);
  const content = new Prng(99).bytes(2 * CHUNK + 5000);
  writeFileSync(join(source, 'big.bin'), content);
  writeFileSync(join(source, 'small.txt'), 'small\n');
  expectExit(t, await blanket(['backup', '--pack-size', `${PACK_SIZE / KiB}K`, source, archive]), 0, 'backup');

  const listed = ndjson((await blanket(['ls', '--json', archive])).stdout);
  const big = listed.find((e) => e.path === 'big.bin')!;
  const small = listed.find((e) => e.path === 'small.txt')!;
  t.equal(small.hash, createHash('sha256').update('small\n').digest('hex'), 'a one-chunk file: the SHA-256 of its content');
  // The recipe of docs/FORMAT.md, with the real split and sha256sum.
  const byHand = execFileSync('sh', ['-c', `cd "$1" && split -b ${CHUNK} big.bin chunk. && for c in chunk.*; do sha256sum < "$c" | cut -c1-64; done | sha256sum | cut -c1-64`, 'sh', source], {
    encoding: 'utf8',
  }).trim();
  t.equal(big.hash, byHand, 'a three-chunk file: the SHA-256 of its chunk hashes, one per line');
  t.not(big.hash, createHash('sha256').update(content).digest('hex'), 'which is not the whole-file SHA-256');

  const dest = join(root, 'dest');
  expectExit(t, await blanket(['restore', archive, dest]), 0, 'restore');
  t.ok(readFileSync(join(dest, 'big.bin')).equals(content), 'restored exactly');
  const again = finishedEvent((await blanket(['restore', '--json', archive, dest])).stdout);
  t.match(again, { restoredFiles: 0, skippedFiles: 2 }, 'a matching copy is skipped');

  // One byte changed in the middle chunk, same size: that copy no longer matches and is rewritten.
  const damaged = Buffer.from(content);
  damaged[CHUNK + 100] = damaged[CHUNK + 100]! ^ 0xff;
  writeFileSync(join(dest, 'big.bin'), damaged);
  const third = finishedEvent((await blanket(['restore', '--json', archive, dest])).stdout);
  t.match(third, { restoredFiles: 1, skippedFiles: 1, failedFiles: 0 }, 'the changed copy is rewritten');
  t.ok(readFileSync(join(dest, 'big.bin')).equals(content), 'and is exact again');
});
