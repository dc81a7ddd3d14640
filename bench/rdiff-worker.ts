// Worker of the bench's rdiff scenario (a piscina pool of one thread): our rdiff signature, delta and patch of files
// on disk, as `rdiff signature|delta|patch` does them, timed in the thread. Inputs are read in 1 MiB reads, never
// whole; outputs are written as they are produced.

import { closeSync, fstatSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { loadRdiffHashes } from '../src/formats/rdiff-checksums.js';
import { RdiffDeltaGenerator } from '../src/formats/rdiff-delta.js';
import { RdiffPatcher, type RdiffBasis } from '../src/formats/rdiff-patch.js';
import { RdiffSignatureReader, RdiffSignatureWriter, rdiffSignatureParams } from '../src/formats/rdiff-signature.js';

export type RdiffTask =
  | { readonly op: 'warmup' }
  | { readonly op: 'signature'; readonly basis: string; readonly out: string }
  | { readonly op: 'delta'; readonly signature: string; readonly newFile: string; readonly out: string }
  | { readonly op: 'patch'; readonly basis: string; readonly delta: string; readonly out: string };

export interface RdiffTaskResult {
  /** Wall-clock seconds in the worker, from opening the inputs to closing the output. */
  readonly seconds: number;
  /** CPU seconds of this thread meanwhile (/proc/thread-self/stat, 10 ms resolution), if readable. */
  readonly cpuSeconds: number | undefined;
  readonly outBytes: number;
}

const READ_SIZE = 1 << 20;
const CLOCK_TICKS_PER_SECOND = 100;

const hashesLoading = loadRdiffHashes();
/** The one read buffer: every consumer below copies what it keeps before the next read. */
const readBuf = Buffer.allocUnsafe(READ_SIZE);
const basisBuf = Buffer.allocUnsafe(READ_SIZE);

function threadCpuSeconds(): number | undefined {
  try {
    const stat = readFileSync('/proc/thread-self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

function writeAll(fd: number, parts: readonly Uint8Array[]): number {
  let total = 0;
  for (const part of parts) {
    for (let at = 0; at < part.length; ) at += writeSync(fd, part, at, part.length - at);
    total += part.length;
  }
  return total;
}

/** Calls `each` with successive reads of up to 1 MiB (views of one reused buffer). */
function readChunks(fd: number, each: (chunk: Uint8Array) => void): void {
  for (;;) {
    const n = readSync(fd, readBuf, 0, READ_SIZE, null);
    if (n === 0) return;
    each(n === READ_SIZE ? readBuf : readBuf.subarray(0, n));
  }
}

/**
 * The untimed warm-up: hashes loaded, and a signature and a delta of 8 MiB in memory, so that the timed runs meet
 * optimised code (V8 compiles hot JavaScript and WebAssembly in tiers), as a long-lived pool's threads do.
 */
async function warmUp(): Promise<void> {
  const hashes = await hashesLoading;
  const data = new Uint8Array(8 << 20);
  for (let i = 0, x = 1; i < data.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    data[i] = x >>> 24;
  }
  const writer = new RdiffSignatureWriter(hashes, rdiffSignatureParams(256 << 20));
  const reader = new RdiffSignatureReader();
  for (let at = 0; at < data.length; at += READ_SIZE) for (const part of writer.push(data.subarray(at, at + READ_SIZE))) reader.push(part);
  for (const part of writer.end()) reader.push(part);
  const gen = new RdiffDeltaGenerator(hashes, reader.end());
  for (let at = 0; at < data.length; at += READ_SIZE) gen.push(data.subarray(at, at + READ_SIZE));
  gen.end();
}

export default async function run(task: RdiffTask): Promise<RdiffTaskResult> {
  const hashes = await hashesLoading;
  if (task.op === 'warmup') await warmUp();
  const cpu0 = threadCpuSeconds();
  const t0 = performance.now();
  let outBytes = 0;
  if (task.op !== 'warmup') {
    const out = openSync(task.out, 'w');
    try {
      if (task.op === 'signature') {
        const fd = openSync(task.basis, 'r');
        try {
          const writer = new RdiffSignatureWriter(hashes, rdiffSignatureParams(fstatSync(fd).size));
          readChunks(fd, (chunk) => (outBytes += writeAll(out, writer.push(chunk))));
          outBytes += writeAll(out, writer.end());
        } finally {
          closeSync(fd);
        }
      } else if (task.op === 'delta') {
        const reader = new RdiffSignatureReader(task.signature);
        const sfd = openSync(task.signature, 'r');
        try {
          readChunks(sfd, (chunk) => reader.push(chunk));
        } finally {
          closeSync(sfd);
        }
        const gen = new RdiffDeltaGenerator(hashes, reader.end());
        const fd = openSync(task.newFile, 'r');
        try {
          readChunks(fd, (chunk) => (outBytes += writeAll(out, gen.push(chunk))));
          outBytes += writeAll(out, gen.end());
        } finally {
          closeSync(fd);
        }
      } else {
        const bfd = openSync(task.basis, 'r');
        try {
          const basis: RdiffBasis = {
            size: fstatSync(bfd).size,
            read(position, length) {
              let got = 0;
              while (got < length) {
                const n = readSync(bfd, basisBuf, got, length - got, position + got);
                if (n === 0) break;
                got += n;
              }
              return basisBuf.subarray(0, got);
            },
          };
          // Copies are read (and written out) at most 1 MiB at a time, into basisBuf.
          const patcher = new RdiffPatcher(basis, { subject: task.delta, maxReadLength: READ_SIZE });
          const dfd = openSync(task.delta, 'r');
          try {
            readChunks(dfd, (chunk) => patcher.push(chunk, (bytes) => (outBytes += writeAll(out, [bytes]))));
          } finally {
            closeSync(dfd);
          }
          patcher.end();
        } finally {
          closeSync(bfd);
        }
      }
    } finally {
      closeSync(out);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = threadCpuSeconds();
  return { seconds, cpuSeconds: cpu0 !== undefined && cpu1 !== undefined ? cpu1 - cpu0 : undefined, outBytes };
}
