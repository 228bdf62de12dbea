// The real `openai` JS SDK against fluxserve's OpenAI Images routes: one scenario per run, one JSON line.
//
//   node tests/js/openai_client.mjs http://127.0.0.1:PORT <scenario>
//
// Scenarios: generate (b64_json and url), variation, errors, models (see tests/api/test_openai_js.py).
// On failure: the error on stderr and a non-zero exit code.

import OpenAI, { toFile } from "openai";

const [base, scenario] = process.argv.slice(2);
if (!base || !scenario) {
  console.error("usage: node openai_client.mjs BASE_URL SCENARIO");
  process.exit(2);
}
// maxRetries 0: the SDK retries 429s and 5xx itself, which would hide what the server answered.
const client = new OpenAI({
  baseURL: `${base.replace(/\/+$/, "")}/v1`,
  apiKey: process.env.OPENAI_API_KEY ?? "unused",
  maxRetries: 0,
});
// A 1x1 PNG.
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC",
  "base64",
);

function refusal(error) {
  if (!(error instanceof OpenAI.APIError)) throw error;
  return { name: error.constructor.name, status: error.status, param: error.param ?? null, code: error.code ?? null };
}

async function attempt(call) {
  try {
    await call();
    return null;
  } catch (error) {
    return refusal(error);
  }
}

const scenarios = {
  async generate() {
    const b64 = await client.images.generate({
      model: "fal-ai/flux/schnell", prompt: "a lighthouse", size: "200x120", response_format: "b64_json",
      output_format: "jpeg", n: 2,
    });
    const url = await client.images.generate({ prompt: "a lighthouse", size: "64x64" });
    const fetched = await fetch(url.data[0].url);
    return {
      size: b64.size, count: b64.data.length, b64_bytes: Buffer.from(b64.data[0].b64_json, "base64").subarray(0, 3).toString("hex"),
      url_status: fetched.status, url_type: fetched.headers.get("content-type"), output_format: b64.output_format,
    };
  },
  async variation() {
    const result = await client.images.createVariation({
      image: await toFile(PNG, "in.png", { type: "image/png" }), n: 1, size: "256x256", response_format: "b64_json",
    });
    return { count: result.data.length, png: Buffer.from(result.data[0].b64_json, "base64").subarray(1, 4).toString() };
  },
  async errors() {
    return {
      n: await attempt(() => client.images.generate({ prompt: "x", n: 9 })),
      model: await attempt(() => client.images.generate({ prompt: "x", model: "dall-e-3" })),
      edit: await attempt(async () => client.images.edit({ image: await toFile(PNG, "in.png", { type: "image/png" }), prompt: "hat" })),
      failed: await attempt(() => client.images.generate({ prompt: "explode", size: "64x64" })),
    };
  },
  async models() {
    const page = await client.models.list();
    return { ids: page.data.map((m) => m.id) };
  },
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
try {
  console.log(JSON.stringify(await run()));
} catch (error) {
  console.error(error);
  process.exit(1);
}
