// Store wrapper that injects failures by rule: transient or permanent errors, reads cut off part-way, delays.
//
//   rule = { operation, name (string prefix or RegExp), times | probability, fault }
//   each call: the first rule that matches and still has uses left decides its fault; no rule: passed through.
// Faults carry BLANKET_E_STORE_IO, transient or not, so the code under test sees what a real store throws.

import { Readable } from 'node:stream';
import { BlanketError, ErrorCodes } from '../formats/errors.js';
import { ForwardingStore } from './forwarding.js';
import type { GetOptions, ObjectInfo, PutBody, PutOptions, Store } from './store.js';
import type { StoreOperation } from './recording.js';

export type Fault =
  /** The call fails before reaching the store. */
  | { readonly kind: 'error'; readonly transient: boolean }
  /** A get whose stream breaks (transiently) after `afterBytes` bytes. */
  | { readonly kind: 'cut'; readonly afterBytes: number }
  /** A put that reaches the store, whose answer is then lost (transient): the object may well exist. */
  | { readonly kind: 'lost-answer' }
  /** The call waits this long first. */
  | { readonly kind: 'delay'; readonly ms: number };

export interface FaultRule {
  readonly operation: StoreOperation;
  /** Object names it applies to: a prefix, or a pattern; all when absent. */
  readonly name?: string | RegExp;
  /** Uses before the rule stops applying (default: unlimited). */
  times?: number;
  /** Chance of applying to a matching call (default 1), drawn from the store's random source. */
  readonly probability?: number;
  readonly fault: Fault;
}

export class FaultInjectingStore extends ForwardingStore {
  /** Faults injected so far. */
  injected = 0;

  constructor(
    inner: Store,
    readonly rules: FaultRule[] = [],
    private readonly random: () => number = Math.random,
  ) {
    super(inner);
  }

  override async put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo> {
    const fault = await this.faultFor('put', name);
    if (fault?.kind === 'lost-answer') {
      await this.inner.put(name, body, options);
      throw this.error('put', name, true, 'answer lost after the object was written');
    }
    return this.inner.put(name, body, options);
  }

  override async putIfAbsent(name: string, body: Buffer): Promise<boolean> {
    const fault = await this.faultFor('putIfAbsent', name);
    if (fault?.kind === 'lost-answer') {
      await this.inner.putIfAbsent(name, body);
      throw this.error('create', name, true, 'answer lost after the object was created');
    }
    return this.inner.putIfAbsent(name, body);
  }

  override async stat(name: string): Promise<ObjectInfo | undefined> {
    await this.faultFor('stat', name);
    return this.inner.stat(name);
  }

  override async delete(name: string): Promise<void> {
    await this.faultFor('delete', name);
    return this.inner.delete(name);
  }

  override async isEmpty(): Promise<boolean> {
    await this.faultFor('isEmpty', undefined);
    return this.inner.isEmpty();
  }

  override async cleanup(): Promise<void> {
    await this.faultFor('cleanup', undefined);
    return this.inner.cleanup();
  }

  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    await this.faultFor('list', prefix);
    yield* this.inner.list(prefix);
  }

  override async get(name: string, options?: GetOptions): Promise<Readable> {
    const fault = await this.faultFor('get', name);
    const stream = await this.inner.get(name, options);
    if (fault?.kind !== 'cut') return stream;
    return Readable.from(this.cut(stream, name, fault.afterBytes), { objectMode: false });
  }

  private async *cut(stream: Readable, name: string, afterBytes: number): AsyncGenerator<Buffer> {
    let given = 0;
    try {
      for await (const chunk of stream) {
        const bytes = chunk as Buffer;
        if (given + bytes.length > afterBytes) {
          if (afterBytes > given) yield bytes.subarray(0, afterBytes - given);
          throw this.error('read', name, true, `connection dropped after ${afterBytes} bytes`);
        }
        given += bytes.length;
        yield bytes;
      }
    } finally {
      stream.destroy();
    }
  }

  /** Applies the fault of the first matching rule: throws an error fault, waits a delay, returns the others. */
  private async faultFor(operation: StoreOperation, name: string | undefined): Promise<Fault | undefined> {
    const rule = this.rules.find(
      (r) =>
        r.operation === operation &&
        (r.times === undefined || r.times > 0) &&
        (r.name === undefined || (name !== undefined && (typeof r.name === 'string' ? name.startsWith(r.name) : r.name.test(name)))),
    );
    if (!rule || (rule.probability !== undefined && this.random() >= rule.probability)) return undefined;
    if (rule.times !== undefined) rule.times--;
    this.injected++;
    const fault = rule.fault;
    if (fault.kind === 'error') throw this.error(operation, name ?? '.', fault.transient, 'injected failure');
    if (fault.kind === 'delay') await new Promise((resolve) => setTimeout(resolve, fault.ms));
    return fault;
  }

  private error(action: string, name: string, transient: boolean, detail: string): BlanketError {
    return new BlanketError(ErrorCodes.STORE_IO, `cannot ${action} ${name} in ${this.location}: ${detail}`, { subject: name, transient });
  }
}
