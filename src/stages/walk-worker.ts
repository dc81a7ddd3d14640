// The walk thread's body (see walk-thread.ts): walks the source and posts its batches, at most SHARED_AHEAD unread.

import { parentPort, workerData } from 'node:worker_threads';
import { isBlanketError } from '../formats/errors.js';
import { createExcludeMatcher } from './exclude.js';
import { encodeBatch, SHARED_AHEAD, wireProblems, type WalkJob, type WalkThreadData, type WalkThreadMessage } from './walk-thread.js';
import { walkSyncBatches, type WalkProblem } from './walker.js';

/** How long one wait for the consumer lasts before the count is looked at again (a lost wake-up costs no more). */
const WAIT_MS = 1000;

function run(port: NonNullable<typeof parentPort>, consumed: Int32Array, job: WalkJob): void {
  const problems: WalkProblem[] = [];
  const post = (message: WalkThreadMessage, transfer: ArrayBuffer[] = []): void => port.postMessage(message, transfer);
  try {
    let posted = 0;
    const walk = walkSyncBatches({
      root: job.root,
      after: job.after,
      isExcluded: job.excludes.length > 0 ? createExcludeMatcher([...job.excludes]) : undefined,
      oneFileSystem: job.oneFileSystem,
      onProblem: (problem) => problems.push(problem),
    });
    for (const items of walk) {
      const { batch, transfer } = encodeBatch(items, problems.splice(0));
      post({ batch }, transfer);
      posted++;
      for (;;) {
        const seen = Atomics.load(consumed, 0);
        if (posted - seen < SHARED_AHEAD) break;
        Atomics.wait(consumed, 0, seen, WAIT_MS);
      }
    }
    post({ done: true, problems: wireProblems(problems) });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    post({ error: isBlanketError(error) ? { message, code: error.code, ...(error.subject === undefined ? {} : { subject: error.subject }) } : { message } });
  }
}

const port = parentPort;
if (port !== null) {
  const consumed = new Int32Array((workerData as WalkThreadData).consumed);
  port.once('message', (job: WalkJob) => run(port, consumed, job));
}
