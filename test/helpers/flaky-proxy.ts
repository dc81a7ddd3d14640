// A TCP proxy on 127.0.0.1 that breaks connections on purpose: some are cut after a random number of bytes,
// some stall (forward nothing more) until the client gives up. Deterministic from a seed.

import net from 'node:net';
import { prng } from './bytes.js';

export interface FlakyProxyOptions {
  readonly targetPort: number;
  readonly seed: number;
  /** Chance that a connection is cut after a random count of up to `cutWithinBytes` bytes (both ways). */
  readonly cutProbability: number;
  readonly cutWithinBytes: number;
  /** Any other connection that does not stall is cut within this many bytes (default 8 × cutWithinBytes). */
  readonly laterCutWithinBytes?: number;
  /** Chance that a connection stalls, after a random count of bytes as above. */
  readonly stallProbability: number;
}

export interface FlakyProxy {
  readonly port: number;
  /** bytesUp: bytes forwarded from clients to the server (what a client managed to send). */
  readonly stats: { connections: number; cut: number; stalled: number; bytesUp: number };
  /** Stop breaking connections (a clean link from now on). */
  heal(): void;
  /** The link goes down: open connections are cut, new ones closed at once, until up(). */
  down(): void;
  up(): void;
  close(): Promise<void>;
}

export async function startFlakyProxy(options: FlakyProxyOptions): Promise<FlakyProxy> {
  const random = prng(options.seed);
  const stats = { connections: 0, cut: 0, stalled: 0, bytesUp: 0 };
  let healed = false;
  let isDown = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (isDown) {
      client.destroy();
      return;
    }
    stats.connections++;
    const upstream = net.connect(options.targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    const roll = random();
    // A connection that escapes both faults is still cut later: kept-alive connections would otherwise carry
    // every request once a good one is open.
    const fault = healed ? 'none' : roll < options.stallProbability ? 'stall' : 'cut';
    const within = roll < options.stallProbability + options.cutProbability ? options.cutWithinBytes : (options.laterCutWithinBytes ?? 8 * options.cutWithinBytes);
    let budget = Math.floor(random() * within);
    let stalled = false;
    const forward = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (data: Buffer) => {
        if (stalled) return;
        if (fault !== 'none' && data.length > budget) {
          if (budget > 0) to.write(data.subarray(0, budget));
          if (from === client) stats.bytesUp += budget;
          budget = 0;
          if (fault === 'cut') {
            stats.cut++;
            client.destroy();
            upstream.destroy();
          } else {
            stats.stalled++;
            stalled = true; // the client's timeout ends it
          }
          return;
        }
        budget -= data.length;
        if (from === client) stats.bytesUp += data.length;
        if (!to.write(data)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      });
      from.on('end', () => to.end());
      from.on('error', () => to.destroy());
      from.on('close', () => {
        sockets.delete(from);
        if (!stalled) to.destroy();
      });
    };
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    stats,
    heal: () => void (healed = true),
    down: () => {
      isDown = true;
      for (const socket of sockets) socket.destroy();
    },
    up: () => void (isDown = false),
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
