// The real @fal-ai/client against a fluxserve base URL: one scenario per run, one JSON line on stdout.
//
//   node tests/js/queue_client.mjs http://127.0.0.1:PORT <scenario>
//
// Scenarios: run, subscribe, subscribe-stream, queue, cancel, upload, blob-input, validation, priority, priority-unknown,
// stream, stream-failed (see tests/api/test_js_client.py, test_stream_endpoint.py), lifecycle
// (tests/api/test_object_lifetimes.py).
// On failure: the error on stderr and a non-zero exit code.

import { ApiError, ValidationError, fal } from "@fal-ai/client";

const APP = "fal-ai/flux/schnell";
const INPUT = { prompt: "a lighthouse at dusk", image_size: "square", seed: 5 };
const DEADLINE_MS = 30_000;
// A 1x1 PNG.
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC",
  "base64",
);

const [base, scenario] = process.argv.slice(2);
if (!base || !scenario) {
  console.error("usage: node queue_client.mjs BASE_URL SCENARIO");
  process.exit(2);
}
const root = base.replace(/\/+$/, "");

// Every request the client dispatches, after rewriting: [method, url].
const requests = [];

// The recipe from fal-protocol.md §1.3 (JavaScript): point fal's three hosts at fluxserve.
fal.config({
  // FAL_KEY when the server has auth on (a key it issued), else any credential.
  credentials: process.env.FAL_KEY ?? "anything",
  suppressLocalCredentialsWarning: true,
  requestMiddleware: async (request) => {
    const url = request.url
      .replace(/^https:\/\/queue\.fal\.run\//, `${root}/queue/`)
      .replace(/^https:\/\/fal\.run\//, `${root}/`)
      .replace(/^https:\/\/rest\.fal\.ai\//, `${root}/`);
    requests.push([request.method.toUpperCase(), url]);
    return { ...request, url };
  },
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// What a thrown error looked like: the ApiError fields the tests assert on.
function describeError(error) {
  if (error instanceof ApiError) {
    return {
      class: error instanceof ValidationError ? "ValidationError" : "ApiError",
      status: error.status,
      message: error.message,
      body: error.body ?? null,
      requestId: error.requestId ?? null,
    };
  }
  throw error; // anything else is a failure of the scenario itself
}

async function expectApiError(promise) {
  try {
    const value = await promise;
    return { class: null, resolved: value ?? null };
  } catch (error) {
    return describeError(error);
  }
}

// Status updates as the tests want them: the status, its position, and the log messages it carried.
function summarise(update) {
  return {
    status: update.status,
    queue_position: update.queue_position ?? null,
    logs: Array.isArray(update.logs) ? update.logs.map((log) => log.message) : update.logs ?? null,
  };
}

async function pollUntilCompleted(requestId) {
  const seen = [];
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const status = await fal.queue.status(APP, { requestId, logs: true });
    seen.push(status);
    if (status.status === "COMPLETED") return seen;
    if (Date.now() > deadline) throw new Error(`request ${requestId} not COMPLETED after ${DEADLINE_MS} ms`);
    await sleep(50);
  }
}

async function subscribe(mode) {
  const updates = [];
  let enqueued = null;
  const options = {
    input: INPUT,
    logs: true,
    onEnqueue: (requestId) => {
      enqueued = requestId;
    },
    onQueueUpdate: (update) => updates.push(summarise(update)),
  };
  if (mode === "streaming") options.mode = "streaming";
  else options.pollInterval = 100;
  const result = await fal.subscribe(APP, options);
  return {
    enqueued,
    statuses: updates.map((u) => u.status),
    logs: [...new Set(updates.flatMap((u) => u.logs ?? []))],
    updates,
    data: result.data,
    requestId: result.requestId,
  };
}

// fal.stream as fal documents it: every event through the async iterator, then done()'s value.
async function streamed(input) {
  const stream = await fal.stream(APP, { input });
  const events = [];
  for await (const event of stream) events.push(event);
  return { events, done: await stream.done(), requestId: stream.requestId };
}

const scenarios = {
  async run() {
    const result = await fal.run(APP, { input: INPUT });
    return { data: result.data, requestId: result.requestId };
  },

  subscribe: () => subscribe("polling"),

  "subscribe-stream": () => subscribe("streaming"),

  async queue() {
    const submitted = await fal.queue.submit(APP, { input: INPUT });
    const seen = await pollUntilCompleted(submitted.request_id);
    const result = await fal.queue.result(APP, { requestId: submitted.request_id });
    return {
      submitted,
      statuses: seen.map((s) => s.status),
      logs: [...new Set(seen.flatMap((s) => (s.logs ?? []).map((log) => log.message)))],
      final: seen[seen.length - 1],
      data: result.data,
      requestId: result.requestId,
    };
  },

  async cancel() {
    const submitted = await fal.queue.submit(APP, { input: { ...INPUT, num_inference_steps: 12 } });
    const requestId = submitted.request_id;
    const before = await fal.queue.status(APP, { requestId, logs: false });
    const cancelled = await fal.queue.cancel(APP, { requestId });
    const seen = await pollUntilCompleted(requestId);
    return {
      requestId,
      before_cancel: before.status,
      cancel_returned: cancelled ?? null,
      statuses: seen.map((s) => s.status),
      final: seen[seen.length - 1],
      result: await expectApiError(fal.queue.result(APP, { requestId })),
      second_cancel: await expectApiError(fal.queue.cancel(APP, { requestId })),
    };
  },

  async "blob-input"() {
    // A Blob anywhere in the input is uploaded by the client first (initiate, then a PUT with no
    // Authorization), and replaced by its URL.
    const image = new Blob([PNG], { type: "image/png" });
    const result = await fal.run(`${APP}/redux`, { input: { image_url: image, seed: 3 } });
    return { data: result.data, requests };
  },

  async upload() {
    // Uploaded as fal.storage.upload does it (initiate, then PUT to the upload URL).
    const url = await fal.storage.upload(new Blob([PNG], { type: "image/png" }));
    return { url, sent: PNG.toString("base64") };
  },

  async lifecycle() {
    // storageSettings becomes X-Fal-Object-Lifecycle-Preference on run and submit; an upload's lifecycle
    // becomes X-Fal-Object-Lifecycle on the initiate call.
    const run = await fal.run(APP, { input: INPUT, storageSettings: { expiresIn: "1h" } });
    const submitted = await fal.queue.submit(APP, { input: INPUT, storageSettings: { expiresIn: 120 } });
    await pollUntilCompleted(submitted.request_id);
    const queued = await fal.queue.result(APP, { requestId: submitted.request_id });
    const kept = await fal.run(APP, { input: INPUT });
    const blob = new Blob([PNG], { type: "image/png" });
    const uploaded = await fal.storage.upload(blob, { lifecycle: { expiresIn: "1h" } });
    return {
      run: run.data.images[0].url,
      queued: queued.data.images[0].url,
      kept: kept.data.images[0].url,
      uploaded,
    };
  },

  async priority() {
    // Behind a held worker: a low request first, then a normal one (the client sends its default, normal).
    const low = await fal.queue.submit(APP, { input: { ...INPUT, prompt: "low priority" }, priority: "low" });
    const normal = await fal.queue.submit(APP, { input: { ...INPUT, prompt: "normal priority" } });
    const lowStatus = await fal.queue.status(APP, { requestId: low.request_id, logs: false });
    const normalStatus = await fal.queue.status(APP, { requestId: normal.request_id, logs: false });
    return {
      low: { requestId: low.request_id, submitted: low.queue_position, status: summarise(lowStatus) },
      normal: {
        requestId: normal.request_id,
        submitted: normal.queue_position,
        status: summarise(normalStatus),
      },
    };
  },

  async "priority-unknown"() {
    const { request_id: requestId } = await fal.queue.submit(APP, { input: INPUT, priority: "urgent" });
    return { requestId };
  },

  async stream() {
    return streamed({ ...INPUT, num_inference_steps: 3 });
  },

  async "stream-failed"() {
    return streamed({ ...INPUT, prompt: "explode" });
  },

  async validation() {
    return { error: await expectApiError(fal.run(APP, { input: { ...INPUT, num_images: 9 } })) };
  },
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${JSON.stringify(scenario)}; one of: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
try {
  const observed = await run();
  process.stdout.write(`${JSON.stringify({ scenario, ...observed, requests })}\n`);
} catch (error) {
  console.error(`scenario ${scenario} failed:`, error);
  if (error instanceof ApiError) console.error("body:", JSON.stringify(error.body));
  console.error("requests:", JSON.stringify(requests));
  process.exit(1);
}
