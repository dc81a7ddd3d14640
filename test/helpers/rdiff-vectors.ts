// Test helper for the rdiff format tests: deterministic inputs made the way the reference vectors are made (SHAKE-256), random edits, and runs of the real `rdiff`.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { prng } from './bytes.js';

/** SHAKE-256 of the ASCII seed, n bytes (Python hashlib.shake_256(seed.encode()).digest(n)). */
export function shake(seed: string, n: number): Buffer {
  if (n === 0) return Buffer.alloc(0);
  return createHash('shake256', { outputLength: n }).update(seed, 'ascii').digest();
}

/** `line NNN: the quick brown fox jumps over the lazy dog\n` for NNN = 000..099, concatenated (5,300 bytes). */
export function foxText(): Buffer {
  const lines: string[] = [];
  for (let i = 0; i < 100; i++) lines.push(`line ${String(i).padStart(3, '0')}: the quick brown fox jumps over the lazy dog\n`);
  return Buffer.from(lines.join(''), 'ascii');
}

export interface RdiffRun {
  status: number | null;
  stdout: Buffer;
  stderr: string;
}

export function rdiff(args: string[], cwd?: string): RdiffRun {
  const r = spawnSync('rdiff', args, { cwd, maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

export type SigKind = 'default' | 'md4' | 'rollsum' | 'legacy';

/** rdiff options for each signature kind, and the same as our options. */
export const SIG_KINDS: Record<SigKind, { args: string[]; weak: 'rabinkarp' | 'rollsum'; strong: 'blake2' | 'md4' }> = {
  default: { args: [], weak: 'rabinkarp', strong: 'blake2' },
  md4: { args: ['--hash=md4'], weak: 'rabinkarp', strong: 'md4' },
  rollsum: { args: ['--rollsum=rollsum'], weak: 'rollsum', strong: 'blake2' },
  legacy: { args: ['--hash=md4', '--rollsum=rollsum'], weak: 'rollsum', strong: 'md4' },
};

/** A scratch directory where files are written and rdiff is run. */
export class RdiffWorkspace {
  private n = 0;
  constructor(readonly dir: string) {}

  /** Writes bytes to a fresh file and returns its path. */
  file(bytes: Uint8Array, name = 'f'): string {
    const path = join(this.dir, `${name}-${this.n++}`);
    writeFileSync(path, bytes);
    return path;
  }

  /** A fresh output path. */
  out(name = 'out'): string {
    return join(this.dir, `${name}-${this.n++}`);
  }

  signature(basis: Uint8Array, kind: SigKind, extra: string[] = []): Buffer {
    const out = this.out('sig');
    const r = rdiff([...SIG_KINDS[kind].args, ...extra, 'signature', this.file(basis, 'basis'), out]);
    if (r.status !== 0) throw new Error(`rdiff signature failed (${r.status}): ${r.stderr}`);
    return readFileSync(out);
  }

  delta(signature: Uint8Array, newFile: Uint8Array): Buffer {
    const out = this.out('delta');
    const r = rdiff(['delta', this.file(signature, 'sig'), this.file(newFile, 'new'), out]);
    if (r.status !== 0) throw new Error(`rdiff delta failed (${r.status}): ${r.stderr}`);
    return readFileSync(out);
  }

  /** rdiff patch; returns its exit status and, on success, the output. */
  patch(basis: Uint8Array, delta: Uint8Array): { status: number | null; output?: Buffer; stderr: string } {
    const out = this.out('patched');
    const r = rdiff(['patch', this.file(basis, 'basis'), this.file(delta, 'delta'), out]);
    return { status: r.status, output: r.status === 0 ? readFileSync(out) : undefined, stderr: r.stderr };
  }

  /** Exit status of `rdiff delta` loading this signature (it fails while loading a malformed one). */
  loadSignatureStatus(signature: Uint8Array): { status: number | null; stderr: string } {
    const r = rdiff(['delta', this.file(signature, 'sig'), this.file(Buffer.from('some new file\n'), 'new'), this.out('delta')]);
    return { status: r.status, stderr: r.stderr };
  }
}

export type EditKind = 'insert' | 'delete' | 'overwrite' | 'append' | 'truncate' | 'prepend' | 'move';

/** Applies `count` random edits to `base`; returns the new bytes and a description. */
export function randomEdits(base: Buffer, seed: number, count: number): { bytes: Buffer; edits: string[] } {
  const next = prng(seed * 7919 + 13);
  const int = (n: number): number => Math.floor(next() * n);
  let cur = Buffer.from(base);
  const edits: string[] = [];
  const kinds: EditKind[] = ['insert', 'delete', 'overwrite', 'append', 'truncate', 'prepend', 'move'];
  for (let e = 0; e < count; e++) {
    const kind = kinds[int(kinds.length)]!;
    const len = 1 + int(next() < 0.7 ? 200 : 20000);
    const fresh = shake(`edit-${seed}-${e}`, len);
    const at = int(cur.length + 1);
    switch (kind) {
      case 'insert':
        cur = Buffer.concat([cur.subarray(0, at), fresh, cur.subarray(at)]);
        break;
      case 'prepend':
        cur = Buffer.concat([fresh, cur]);
        break;
      case 'append':
        cur = Buffer.concat([cur, fresh]);
        break;
      case 'delete':
        cur = Buffer.concat([cur.subarray(0, at), cur.subarray(Math.min(cur.length, at + len))]);
        break;
      case 'truncate':
        cur = cur.subarray(0, Math.max(0, cur.length - len));
        break;
      case 'overwrite': {
        const copy = Buffer.from(cur);
        fresh.copy(copy, at, 0, Math.max(0, Math.min(len, copy.length - at)));
        cur = copy;
        break;
      }
      case 'move': {
        // cut a piece and put it elsewhere (reordered blocks)
        const piece = Buffer.from(cur.subarray(at, at + len));
        const rest = Buffer.concat([cur.subarray(0, at), cur.subarray(at + piece.length)]);
        const to = int(rest.length + 1);
        cur = Buffer.concat([rest.subarray(0, to), piece, rest.subarray(to)]);
        break;
      }
    }
    edits.push(`${kind}@${at}+${len}`);
  }
  return { bytes: Buffer.from(cur), edits };
}

/** Pieces of `buf` of a fixed size (the last may be shorter). */
export function piecesOf(buf: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
  return out;
}

export function concat(parts: Uint8Array[]): Buffer {
  return Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.length)));
}
