// Renders pipeline events: NDJSON with --json, a live status line on a TTY, a plain line every few seconds otherwise.

import type { BlanketEvent } from '../stages/monitor.js';
import { formatBytes, formatDuration } from './units.js';

export type RenderMode = 'json' | 'tty' | 'plain';

export interface Renderer {
  readonly mode: RenderMode;
  event(event: BlanketEvent): void;
  /** A line for people (ignored in JSON mode, where the finished event carries the result). */
  say(line: string): void;
  /** Ends a live status line before other output. */
  done(): void;
}

const PLAIN_INTERVAL_MS = 5000;

/**
 * `stream` takes progress and warnings; `results` the NDJSON events and result lines (stdout, unless stdout
 * carries data: `backup SRC -`).
 */
export function createRenderer(json: boolean, stream: NodeJS.WriteStream = process.stderr, results: NodeJS.WriteStream = process.stdout): Renderer {
  const mode: RenderMode = json ? 'json' : stream.isTTY ? 'tty' : 'plain';
  let live = false;
  let lastPlain = 0;
  const clear = (): void => {
    if (live) {
      stream.write('\r\x1b[K');
      live = false;
    }
  };
  return {
    mode,
    event(event) {
      if (mode === 'json') {
        results.write(JSON.stringify(event, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
        return;
      }
      if (event.type === 'warning') {
        clear();
        stream.write(`warning: ${event.message}\n`);
      } else if (event.type === 'progress') {
        const line =
          `${event.files} files, ${formatBytes(event.bytes)} (${formatBytes(event.bytesPerSecond)}/s), stored ${formatBytes(event.storedBytes)}, ` +
          `${formatDuration(event.elapsedMs)}${event.current ? ` — ${event.current}` : ''}`;
        if (mode === 'tty') {
          const width = stream.columns ?? 100;
          stream.write('\r\x1b[K' + (line.length > width - 1 ? line.slice(0, width - 2) + '…' : line));
          live = true;
        } else if (Date.now() - lastPlain >= PLAIN_INTERVAL_MS) {
          lastPlain = Date.now();
          stream.write(line + '\n');
        }
      }
    },
    say(line) {
      if (mode === 'json') return;
      clear();
      results.write(line + '\n');
    },
    done: clear,
  };
}
