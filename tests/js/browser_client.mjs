// The real @fal-ai/client in headless Chromium, on a page from another origin than fluxserve's: direct calls
// with CORS (run, subscribe, storage.upload of a Blob, with a key), the same page from an origin not allowed
// (refused), and fal's proxy protocol (proxyUrl -> /proxy). Prints one JSON line.
//   node browser_client.mjs SERVER_URL ALLOWED_PAGE_URL REFUSED_PAGE_URL KEY
import { chromium } from "playwright-core";

const [server, allowedPage, refusedPage, key] = process.argv.slice(2);
const APP = "fal-ai/flux/schnell";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

// Runs in the page: one scenario with fal configured as `how` says; every failure is reported, not thrown.
async function scenario({ server, key, how, app }) {
  const falRest = "https://rest.fal.ai/";
  if (how === "proxy") {
    window.fal.config({ credentials: key, proxyUrl: `${server}/proxy` });
  } else {
    window.fal.config({ credentials: key, requestMiddleware: async (r) => ({ ...r, url: r.url
      .replace("https://queue.fal.run/", `${server}/queue/`).replace("https://fal.run/", `${server}/`)
      .replace(falRest, `${server}/`) }) });
  }
  const out = {};
  try {
    const run = await window.fal.run(app, { input: { prompt: "a cat", image_size: "square", seed: 3 } });
    out.runSeed = run.data.seed;
    out.runRequestId = run.requestId;
    const sub = await window.fal.subscribe(app, { input: { prompt: "a dog", image_size: "square", seed: 4 },
                                                   logs: true, pollInterval: 50 });
    out.subscribeSeed = sub.data.seed;
    out.subscribeRequestId = sub.requestId;
    const png = Uint8Array.from(atob("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="), (c) => c.charCodeAt(0));
    const url = await window.fal.storage.upload(new Blob([png], { type: "image/png" }));
    out.uploadUrl = url;
    const back = await fetch(url);
    out.uploadedBytes = (await back.arrayBuffer()).byteLength;
    out.sentBytes = png.byteLength;
  } catch (e) {
    out.error = `${e.name}: ${e.message}`;
  }
  return out;
}

const observed = {};
try {
  for (const [name, page, how] of [["direct", allowedPage, "direct"], ["refused", refusedPage, "direct"],
                                   ["proxy", allowedPage, "proxy"]]) {
    const tab = await browser.newPage();
    await tab.goto(page);
    await tab.waitForFunction(() => typeof window.fal?.config === "function", null, { timeout: 20000 });
    observed[name] = await tab.evaluate(scenario, { server, key, how, app: APP });
    observed[name].origin = await tab.evaluate(() => location.origin);
    await tab.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(observed) + "\n");
