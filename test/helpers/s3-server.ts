// A real S3-protocol server (s3rver) on 127.0.0.1 for tests: started per test file, one bucket, stopped in teardown.

import { mkdtempSync, rmSync } from 'node:fs';
import { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

interface S3rverInstance {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
type S3rverClass = new (options: {
  address: string;
  port: number;
  silent: boolean;
  directory: string;
  configureBuckets: { name: string }[];
}) => S3rverInstance;

export interface S3TestServer {
  readonly endpoint: string;
  readonly bucket: string;
  /** s3rver accepts these (and signs with them). */
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  /** Environment for a CLI run against this server. */
  readonly env: Record<string, string>;
  stop(): Promise<void>;
}

interface S3rverObject {
  content: NodeJS.ReadableStream | Buffer;
  metadata: Record<string, string>;
}
interface S3rverStoreClass {
  prototype: { putObject(object: S3rverObject): Promise<unknown>; atomicPuts?: true };
}

/**
 * Real S3 stores a PUT whole or not at all. s3rver writes a request's body into the object as it arrives, so a
 * client killed mid-request (the kill-loop tests) would leave a truncated object that no real server keeps:
 * bodies are read whole first, and one that ends short of its Content-Length (or aborts) is not stored.
 */
function makePutsAtomic(require: NodeJS.Require): void {
  const Store = require('s3rver/lib/stores/filesystem') as S3rverStoreClass;
  const proto = Store.prototype;
  if (proto.atomicPuts) return;
  const original = proto.putObject;
  proto.putObject = async function putObject(object: S3rverObject): Promise<unknown> {
    const content = object.content;
    // A request's body (a PUT); not the parts of a multipart upload being joined, which were stored whole each.
    if (content instanceof IncomingMessage) {
      const chunks: Buffer[] = [];
      await new Promise<void>((resolve, reject) => {
        content.on('data', (chunk: Buffer) => chunks.push(chunk));
        content.on('end', () => resolve());
        content.on('error', reject);
        content.on('aborted', () => reject(new Error('request aborted')));
        content.on('close', () => reject(new Error('request closed before its end')));
      });
      const body = Buffer.concat(chunks);
      const expected = Number(object.metadata['content-length']);
      if (Number.isFinite(expected) && body.length !== expected) throw new Error(`body of ${body.length} bytes, ${expected} declared`);
      object.content = body;
    }
    return original.call(this, object);
  };
  proto.atomicPuts = true;
}

export async function startS3Server(bucket = 'blanket-test'): Promise<S3TestServer> {
  const require = createRequire(import.meta.url);
  makePutsAtomic(require);
  const S3rver = require('s3rver') as S3rverClass;
  const directory = mkdtempSync(path.join(os.tmpdir(), 'blanket-s3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket }] });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
  return {
    endpoint,
    bucket,
    credentials,
    env: {
      AWS_ACCESS_KEY_ID: credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
      AWS_REGION: 'us-east-1',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    },
    stop: async () => {
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
