// Starts Blanket's worker-thread pools (piscina) with require(esm) turned off in their threads.

import type { Piscina } from 'piscina';

type PoolOptions = NonNullable<ConstructorParameters<typeof Piscina>[0]>;

/** Turns require(esm) off (Node 20.17+ has the flag; 20.19+ has it on by default). */
const NO_REQUIRE_ESM = '--no-experimental-require-module';

/**
 * V8 options that Node also accepts among its own (process.allowedNodeEnvironmentFlags): a Worker given them in
 * execArgv refuses to start, and they need not be passed, since V8's flags are the same in every thread.
 */
const V8_OPTIONS = new Set([
  '--abort-on-uncaught-exception',
  '--disallow-code-generation-from-strings',
  '--enable-etw-stack-walking',
  '--expose-gc',
  '--huge-max-old-generation-size',
  '--interpreted-frames-native-stack',
  '--jitless',
  '--max-old-space-size',
  '--max-semi-space-size',
  '--perf-basic-prof',
  '--perf-basic-prof-only-functions',
  '--perf-prof',
  '--perf-prof-unwinding-info',
  '--stack-trace-limit',
]);

/**
 * A pool whose threads load task modules with import(). Piscina loads a task module with require() before
 * trying import(), and on Node 20.19+ a require() of an ES module (our workers are ES modules) can abort the
 * whole process (V8: "Module::IsGraphAsync must be used on an instantiated module", met twice by this
 * project's CLI tests). With require(esm) off, require() fails at once and Piscina imports the module, as on
 * earlier Node versions. The threads keep this process's Node options (loaders, say); if a Worker still
 * refuses them, the pool starts as Piscina would by default.
 */
export function startPool(PiscinaClass: typeof Piscina, options: PoolOptions): Piscina {
  const execArgv = poolExecArgv();
  if (execArgv !== null) {
    try {
      return tolerateLateReplies(new PiscinaClass({ ...options, execArgv }));
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw error;
    }
  }
  return tolerateLateReplies(new PiscinaClass(options));
}

/**
 * Piscina emits 'error' on the pool for a worker's reply to a task it no longer tracks: one cancelled or dropped
 * while the pool was torn down (a run stopped by an error, tasks in flight). Unheard, that event would crash the
 * process over an answer nobody waits for; any other pool error is still thrown.
 */
export function tolerateLateReplies(pool: Piscina): Piscina {
  pool.on('error', (error: unknown) => {
    if (error instanceof Error && error.message.startsWith('Unexpected message from Worker')) return;
    throw error;
  });
  return pool;
}

/** This process's per-thread Node options plus NO_REQUIRE_ESM; null where Node has no such flag. */
export function poolExecArgv(): string[] | null {
  const allowed = process.allowedNodeEnvironmentFlags;
  if (!allowed.has(NO_REQUIRE_ESM)) return null;
  const kept: string[] = [];
  let keepValue = false; // the value of an option given as two arguments ("--import x") goes with its option
  for (const arg of process.execArgv) {
    if (!arg.startsWith('-')) {
      if (keepValue) kept.push(arg);
      keepValue = false;
      continue;
    }
    const name = arg.split('=', 1)[0]!.replace(/_/g, '-');
    const perThread = allowed.has(name) && !V8_OPTIONS.has(name);
    if (perThread) kept.push(arg);
    keepValue = perThread && !arg.includes('=');
  }
  return kept.includes(NO_REQUIRE_ESM) ? kept : [...kept, NO_REQUIRE_ESM];
}
