// The events channel: stages report progress and per-file problems here; problems are counted, never thrown.

import { displayPath, keyToPath } from '../formats/path-key.js';

export type FileAction = 'new' | 'changed' | 'deleted' | 'restored' | 'skipped' | 'failed';

export type BlanketEvent =
  | { readonly type: 'started'; readonly command: string; readonly archive: string; readonly layer?: number; readonly resumedAfter?: string | null }
  | { readonly type: 'file'; readonly path: string; readonly action: FileAction; readonly size: number }
  | {
      readonly type: 'pack-written';
      readonly pack: string;
      readonly bytes: number;
      readonly entries: number;
      readonly members: number;
      readonly through: string;
      readonly complete: boolean;
    }
  | { readonly type: 'warning'; readonly code: string; readonly message: string; readonly path?: string; readonly object?: string }
  | {
      readonly type: 'progress';
      readonly files: number;
      readonly bytes: number;
      readonly storedBytes: number;
      readonly elapsedMs: number;
      readonly bytesPerSecond: number;
      readonly current: string | null;
    }
  | { readonly type: 'finished'; readonly command: string; readonly [field: string]: unknown };

export type EventListener = (event: BlanketEvent) => void;

export class Monitor {
  private readonly listeners: EventListener[] = [];
  readonly startedAt = Date.now();
  files = 0;
  bytes = 0;
  storedBytes = 0;
  warnings = 0;
  /** Path being worked on (raw bytes); rendered only when a progress event goes out. */
  currentPath: Buffer | null = null;
  /** Or its key (backup sets this one, for every path: a string it already has); currentPath wins if both are set. */
  currentKey: string | null = null;
  private readonly warningCounts = new Map<string, number>();

  constructor(listener?: EventListener) {
    if (listener) this.listeners.push(listener);
  }

  on(listener: EventListener): void {
    this.listeners.push(listener);
  }

  emit(event: BlanketEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  warn(code: string, message: string, where: { path?: string; object?: string } = {}): void {
    this.warnings++;
    this.warningCounts.set(code, (this.warningCounts.get(code) ?? 0) + 1);
    this.emit({ type: 'warning', code, message, ...where });
  }

  warningsByCode(): Record<string, number> {
    return Object.fromEntries(this.warningCounts);
  }

  progress(): void {
    const elapsedMs = Date.now() - this.startedAt;
    this.emit({
      type: 'progress',
      files: this.files,
      bytes: this.bytes,
      storedBytes: this.storedBytes,
      elapsedMs,
      bytesPerSecond: elapsedMs > 0 ? Math.round((this.bytes * 1000) / elapsedMs) : 0,
      current: this.currentPath !== null ? displayPath(this.currentPath) : this.currentKey !== null ? displayPath(keyToPath(this.currentKey)) : null,
    });
  }

  /** Emits a progress event every `intervalMs` until the returned function is called. */
  startTicker(intervalMs = 1000): () => void {
    const timer = setInterval(() => this.progress(), intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }
}
