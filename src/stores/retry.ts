// Store wrapper that retries transient failures with exponential backoff and full jitter, within a time budget.
//
//   call ─▶ ok
//        └▶ transient error ─▶ wait random(0, min(maxDelay, base·2^attempt)) ─▶ call again
//                              … until attempts or the budget run out ─▶ BLANKET_E_STORE_IO "gave up after N attempts"
//        └▶ permanent error (missing object, permission, bad request) ─▶ thrown at once
//
// What can be replayed is retried: a put of bytes in memory (a streamed body is read once, so only the store
// itself can resend it, e.g. S3 multipart parts), stat, delete, list (re-listed, names already given skipped),
// putIfAbsent (a retry that finds the object checks whether it is the one its lost attempt wrote), and get:
// a read cut off mid-object carries on from the byte it reached, with a range request.

import { Readable } from 'node:stream';
import { BlanketError, ErrorCodes, isBlanketError } from '../formats/errors.js';
import { ForwardingStore } from './forwarding.js';
import type { GetOptions, ObjectInfo, PutBody, PutOptions, Store } from './store.js';

export interface RetryPolicy {
  /** Calls made at most, the first included. */
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** No retry starts later than this after the first failure of a call (the link is down: give up, resume next run). */
  readonly budgetMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { attempts: 10, baseDelayMs: 200, maxDelayMs: 20_000, budgetMs: 120_000 };

export interface RetryHooks {
  /** Told of each retry (for the events channel: a flaky link is worth a warning, not silence). */
  readonly onRetry?: (info: { readonly operation: string; readonly name: string; readonly attempt: number; readonly delayMs: number; readonly error: unknown }) => void;
  /** For tests: the source of jitter and the clock's sleep. */
  readonly random?: () => number;
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly now?: () => number;
}

/** Whether an error is worth retrying: a store marks it so (connection reset, timeout, 5xx, throttling). */
export function isTransient(error: unknown): boolean {
  return isBlanketError(error) && error.transient;
}

export class RetryingStore extends ForwardingStore {
  private readonly policy: RetryPolicy;

  constructor(
    inner: Store,
    policy: Partial<RetryPolicy> = {},
    private readonly hooks: RetryHooks = {},
  ) {
    super(inner);
    this.policy = { ...DEFAULT_RETRY_POLICY, ...policy };
  }

  override put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo> {
    if (!(body instanceof Uint8Array)) return this.inner.put(name, body, options);
    return this.retry('put', name, () => this.inner.put(name, body, options), options?.signal);
  }

  override async putIfAbsent(name: string, body: Buffer): Promise<boolean> {
    let failedBefore = false;
    return this.retry('create', name, async () => {
      try {
        const created = await this.inner.putIfAbsent(name, body);
        if (created || !failedBefore) return created;
        // An earlier attempt may have created it before its answer was lost: then it is ours.
        const existing = await this.inner.get(name);
        const chunks: Buffer[] = [];
        for await (const chunk of existing) chunks.push(chunk as Buffer);
        return Buffer.concat(chunks).equals(body);
      } catch (error) {
        failedBefore = true;
        throw error;
      }
    });
  }

  override stat(name: string): Promise<ObjectInfo | undefined> {
    return this.retry('stat', name, () => this.inner.stat(name));
  }

  override delete(name: string): Promise<void> {
    return this.retry('delete', name, () => this.inner.delete(name));
  }

  override isEmpty(): Promise<boolean> {
    return this.retry('list', '.', () => this.inner.isEmpty());
  }

  override cleanup(): Promise<void> {
    return this.retry('cleanup', '.', () => this.inner.cleanup());
  }

  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const given = new Set<string>();
    let attempt = 1;
    let firstFailure: number | undefined;
    for (;;) {
      try {
        for await (const info of this.inner.list(prefix)) {
          if (given.has(info.name)) continue;
          given.add(info.name);
          yield info;
        }
        return;
      } catch (error) {
        firstFailure ??= this.now();
        await this.backOff('list', prefix || '.', error, attempt++, firstFailure);
      }
    }
  }

  override async get(name: string, options: GetOptions = {}): Promise<Readable> {
    const start = options.range?.start ?? 0;
    const end = options.range?.end;
    const first = await this.retry('get', name, () => this.inner.get(name, options), options.signal);
    return Readable.from(this.resumingRead(name, first, start, end, options.signal), { objectMode: false });
  }

  /** The bytes of `name` from `start`: when the stream breaks with a transient error, a new one from where it broke. */
  private async *resumingRead(name: string, first: Readable, start: number, end: number | undefined, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
    let stream = first;
    let position = start;
    let attempt = 1;
    let firstFailure: number | undefined;
    for (;;) {
      try {
        for await (const chunk of stream) {
          const bytes = chunk as Buffer;
          position += bytes.length;
          attempt = 1;
          firstFailure = undefined;
          yield bytes;
        }
        return;
      } catch (error) {
        stream.destroy();
        firstFailure ??= this.now();
        await this.backOff('get', name, error, attempt++, firstFailure, signal);
        if (end !== undefined && position >= end) return;
        try {
          const size = end ?? (await this.inner.stat(name))?.size;
          if (size !== undefined && position >= size) return;
          stream = await this.inner.get(name, { ...(signal ? { signal } : {}), range: { start: position, end: size ?? Number.MAX_SAFE_INTEGER } });
        } catch (reopenError) {
          if (!isTransient(reopenError)) throw reopenError;
          stream = Readable.from((async function* () { throw reopenError; })()); // counted as the next failure
        }
      }
    }
  }

  private retry<T>(operation: string, name: string, call: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return retryTransient(call, { operation, name, location: this.location, policy: this.policy, hooks: this.hooks, ...(signal ? { signal } : {}) });
  }

  private backOff(operation: string, name: string, error: unknown, attempt: number, firstFailure: number, signal?: AbortSignal): Promise<void> {
    return backOff({ operation, name, location: this.location, policy: this.policy, hooks: this.hooks, ...(signal ? { signal } : {}) }, error, attempt, firstFailure);
  }

  private now(): number {
    return (this.hooks.now ?? Date.now)();
  }
}

export interface RetryContext {
  readonly operation: string;
  readonly name: string;
  /** The store's location, for the give-up message. */
  readonly location: string;
  readonly policy: RetryPolicy;
  readonly hooks?: RetryHooks;
  readonly signal?: AbortSignal;
}

/** Calls `call` until it succeeds, retrying transient errors by the policy (for stores that retry inside a call). */
export async function retryTransient<T>(call: () => Promise<T>, context: RetryContext): Promise<T> {
  let firstFailure: number | undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      firstFailure ??= (context.hooks?.now ?? Date.now)();
      await backOff(context, error, attempt, firstFailure);
    }
  }
}

/** Waits before attempt `attempt + 1`, or throws: the error itself if permanent, a give-up error when out of tries or time. */
async function backOff(context: RetryContext, error: unknown, attempt: number, firstFailure: number): Promise<void> {
  if (!isTransient(error)) throw error;
  const { policy, hooks = {} } = context;
  const random = hooks.random ?? Math.random;
  const delayMs = Math.round(random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1)));
  const elapsed = (hooks.now ?? Date.now)() - firstFailure;
  if (attempt >= policy.attempts || elapsed + delayMs > policy.budgetMs) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new BlanketError(
      ErrorCodes.STORE_IO,
      `gave up on ${context.operation} ${context.name} at ${context.location} after ${attempt} attempts in ${Math.round(elapsed / 1000)} s: ${detail}` +
        ' (what is already stored stays; the next run resumes)',
      { subject: context.name, cause: error },
    );
  }
  hooks.onRetry?.({ operation: context.operation, name: context.name, attempt, delayMs, error });
  await (hooks.sleep ?? sleep)(delayMs, context.signal);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
