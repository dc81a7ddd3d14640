// zstd for the stages: the native binding of @mongodb-js/zstd, loaded without the package's libc probe.

import { createRequire } from 'node:module';

interface ZstdBinding {
  compress(data: Uint8Array, level?: number): Promise<Buffer>;
  decompress(data: Uint8Array): Promise<Buffer>;
}

const require = createRequire(import.meta.url);

function loadBinding(): ZstdBinding {
  // The package's loader tells glibc from musl with process.report.getReport(), ~20 ms in every thread that
  // loads it (the main one and each worker). The glibc build is tried directly; the loader remains the fallback
  // (musl, other platforms), and a glibc build that cannot load there fails over to it.
  if (process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64')) {
    try {
      return require(`@mongodb-js/zstd-linux-${process.arch}-gnu`) as ZstdBinding;
    } catch {
      // not installed, or not loadable on this libc
    }
  }
  return require('@mongodb-js/zstd/bindings.js') as ZstdBinding;
}

const binding = loadBinding();

/** One zstd frame of `data` at `level`, in the libuv pool. (The package's own wrapper ignores the level.) */
export async function zstdCompress(data: Uint8Array, level: number): Promise<Buffer> {
  try {
    return await binding.compress(data, level);
  } catch (error) {
    // Native errors carry no JS stack.
    throw new Error(`zstd compression failed: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** The content of one or more zstd frames, in the libuv pool. */
export async function zstdDecompress(data: Uint8Array): Promise<Buffer> {
  try {
    return await binding.decompress(data);
  } catch (error) {
    throw new Error(`zstd: ${error instanceof Error ? error.message : String(error)}`);
  }
}
