// Deterministic test data, odd-sized chunking, and a pipe through the real `zstd` CLI (shared by format tests).
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';

/** Deterministic pseudo-random numbers (xorshift32). */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

export function randomBytes(size: number, seed: number): Buffer {
  const next = prng(seed);
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = Math.floor(next() * 256);
  return buf;
}

/** Text-like bytes that zstd compresses well. */
export function compressibleBytes(size: number, seed: number): Buffer {
  const next = prng(seed);
  const words = ['alpha ', 'beta ', 'gamma\n', 'delta ', 'tar ', 'blanket ', '0000000000 '];
  const parts: string[] = [];
  let length = 0;
  while (length < size) {
    const word = words[Math.floor(next() * words.length)]!;
    parts.push(word);
    length += word.length;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}

/** Cuts `buf` into pieces whose sizes `sizes()` gives (at least 1 byte each). */
export function chunkBy(buf: Buffer, sizes: () => number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let pos = 0; pos < buf.length; ) {
    const size = Math.max(1, sizes());
    chunks.push(buf.subarray(pos, pos + size));
    pos += size;
  }
  return chunks;
}

/** Pipes `input` through a `zstd` process and returns its output. */
export function zstdCli(args: string[], input: Readable | Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/zstd', args);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.stdin.on('error', () => {});
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`zstd ${args.join(' ')}: exit ${code}: ${Buffer.concat(err)}`)),
    );
    if (input instanceof Uint8Array) child.stdin.end(input);
    else input.pipe(child.stdin);
  });
}
