// The JS half of the soak (tests/e2e/test_soak.py): the real @fal-ai/client submits its share of the jobs
// through two API nodes while the test SIGKILLs them, cancels a few, and follows a few to their result.
//
//   node tests/js/soak_client.mjs PLAN_JSON
//
// PLAN_JSON: {"bases": [url, url], "key": "id:secret", "app": ..., "input": {...},
//             "jobs": [{"seed", "cancel", "follow"}], "concurrency": n}
// Job i goes through node i % 2. Prints one JSON line: what each job's submit, cancel and follow saw.
// On failure: the error on stderr and a non-zero exit code.

import { ApiError, createFalClient } from "@fal-ai/client";

const plan = JSON.parse(process.argv[2] ?? "null");
if (!plan) {
  console.error("usage: node soak_client.mjs PLAN_JSON");
  process.exit(2);
}
const FOLLOW_DEADLINE_MS = 240_000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One client per node, as fal-protocol.md §1.3 (JavaScript) points fal's queue host at fluxserve.
const clients = plan.bases.map((base) => {
  const root = base.replace(/\/+$/, "");
  return createFalClient({
    credentials: plan.key,
    suppressLocalCredentialsWarning: true,
    requestMiddleware: async (request) => ({
      ...request,
      url: request.url.replace(/^https:\/\/queue\.fal\.run\//, `${root}/queue/`),
    }),
  });
});

// The client retries a refused connection for a few seconds only; a SIGKILLed node takes longer to come back,
// so a network failure (never an HTTP answer) is retried here on the other node. `failovers` counts them.
let failovers = 0;
async function onAnyNode(first, operation) {
  for (let attempt = 0; ; attempt++) {
    const node = (first + attempt) % clients.length;
    try {
      return await operation(clients[node], node);
    } catch (error) {
      if (error instanceof ApiError || attempt >= 40) throw error;
      failovers++;
      await sleep(250);
    }
  }
}

// A followed job: polled with queue.status until COMPLETED, then its result (or the ApiError a failed or
// cancelled job answers with) read through the other node.
async function follow(job, index) {
  const deadline = Date.now() + FOLLOW_DEADLINE_MS;
  const statuses = [];
  for (;;) {
    const status = await onAnyNode(index, (fal) => fal.queue.status(plan.app, { requestId: job.request_id }));
    if (statuses[statuses.length - 1] !== status.status) statuses.push(status.status);
    if (status.status === "COMPLETED") break;
    if (Date.now() > deadline) {
      throw new Error(`${job.request_id} not COMPLETED after ${FOLLOW_DEADLINE_MS} ms`);
    }
    await sleep(200);
  }
  try {
    const requestId = job.request_id;
    const result = await onAnyNode(index + 1, (fal) => fal.queue.result(plan.app, { requestId }));
    return { statuses, seed: result.data.seed, images: result.data.images.length };
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return { statuses, error_status: error.status, error_type: error.body?.error_type ?? null };
  }
}

async function submitOne(spec, index) {
  const submitted = await onAnyNode(index, async (fal, node) => {
    const answer = await fal.queue.submit(plan.app, { input: { ...plan.input, seed: spec.seed } });
    return { request_id: answer.request_id, node };
  });
  const job = { seed: spec.seed, ...submitted };
  if (spec.cancel) {
    // A 2xx resolves to undefined; a job that already finished answers 400 ALREADY_COMPLETED.
    try {
      await onAnyNode(index, (fal) => fal.queue.cancel(plan.app, { requestId: job.request_id }));
      job.cancel = "accepted";
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      job.cancel = `http ${error.status}`;
    }
  }
  return job;
}

async function main() {
  const jobs = new Array(plan.jobs.length);
  let next = 0;
  const submitter = async () => {
    while (next < plan.jobs.length) {
      const index = next++;
      jobs[index] = await submitOne(plan.jobs[index], index);
    }
  };
  await Promise.all(Array.from({ length: plan.concurrency ?? 4 }, submitter));
  const submittedAt = Date.now();
  const followed = await Promise.all(
    plan.jobs.map((spec, index) => (spec.follow ? follow(jobs[index], index) : null)),
  );
  followed.forEach((seen, index) => {
    if (seen) jobs[index].followed = seen;
  });
  return { jobs, failovers, followed_ms: Date.now() - submittedAt };
}

try {
  process.stdout.write(`${JSON.stringify(await main())}\n`);
} catch (error) {
  console.error("soak client failed:", error);
  if (error instanceof ApiError) console.error("body:", JSON.stringify(error.body));
  process.exit(1);
}
