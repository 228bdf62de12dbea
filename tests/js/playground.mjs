// The playground in headless Chromium: type a prompt, generate, see the image; then a bad value shows its 422
// next to the field; then uploaded HTML and SVG opened in the playground's own tab must not run (they would read
// its key); /docs renders under its CSP. Prints one JSON line (with the Python and JS snippets, which the test
// runs); writes a screenshot.
//   node playground.mjs BASE_URL SCREENSHOT
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const observed = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const external = [];
  const stolen = [];
  const cspViolations = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(base)) external.push(r.url());
    if (r.url().includes("/stolen")) stolen.push(r.url());
  });
  page.on("console", (m) => { if (m.text().includes("Content Security Policy")) cspViolations.push(m.text()); });
  await page.goto(base + "/");
  await page.waitForSelector("#f-prompt");
  await page.fill("#api-key", "fsk_victim:the-secret");
  observed.fields = await page.$$eval("#form .field", (rows) => rows.map((r) => r.dataset.field));
  observed.stepsDefault = await page.inputValue("#f-num_inference_steps");
  await page.fill("#f-prompt", "a lighthouse at dusk");
  await page.selectOption("#f-image_size", "square");
  await page.fill("#f-seed", "7");
  await page.click("#submit");
  await page.waitForSelector("#images img", { timeout: 30000 });
  observed.caption = await page.textContent("#images figcaption");
  observed.imageLoaded = await page.$eval("#images img", (img) => img.complete && img.naturalWidth > 0);
  observed.status = await page.textContent("#status");
  observed.history = await page.$$eval("#history li", (items) => items.length);
  observed.snippet = await page.textContent("#snippet");
  const snippets = async () => {
    const text = {};
    for (const kind of ["python", "javascript", "openai"]) {
      await page.click(`#snippet-tabs button:text-is("${kind}")`);
      text[kind] = await page.textContent("#snippet");
    }
    await page.click('#snippet-tabs button:text-is("curl")');
    return text;
  };
  observed.snippets = await snippets();
  await page.screenshot({ path: screenshot, fullPage: true });
  await page.fill("#f-num_inference_steps", "20");
  await page.click("#submit");
  await page.waitForSelector('.field[data-field="num_inference_steps"].invalid', { timeout: 10000 });
  observed.fieldError = await page.textContent('.field[data-field="num_inference_steps"] .error');
  await page.click('#endpoints button[data-app="fal-ai/flux/schnell/redux"]');
  observed.reduxFields = await page.$$eval("#form .field", (rows) => rows.map((r) => r.dataset.field));
  await page.fill("#f-image_url", base + "/files/picked.png"); // as the file picker leaves it after its upload
  observed.reduxSnippets = await snippets();
  observed.playgroundCspViolations = [...cspViolations];
  observed.keyInLocalStorage = await page.evaluate(() => localStorage.getItem("fluxserve-key"));
  observed.keyInSessionStorage = await page.evaluate(() => sessionStorage.getItem("fluxserve-key"));
  // An attacker's uploads, as /files/upload and the upload URL flow store them; each would send the key away.
  const steal = "fetch('/stolen?k=' + encodeURIComponent(sessionStorage.getItem('fluxserve-key') + '|' + "
    + "localStorage.getItem('fluxserve-key')))";
  const attacks = {
    html: ["text/html", "x.html", `<!doctype html><script>${steal}</script><p>hi</p>`],
    svg: ["image/svg+xml", "x.svg", `<svg xmlns="http://www.w3.org/2000/svg" onload="${steal}"><script>${steal}</script></svg>`],
  };
  observed.attackUrls = {};
  observed.downloads = 0;
  page.on("download", () => { observed.downloads += 1; });
  for (const [kind, [type, name, body]] of Object.entries(attacks)) {
    const url = await page.evaluate(async ([type, name, body]) => {
      const r = await fetch("/files/upload", { method: "POST", body, headers: { "Content-Type": type, "X-Fal-File-Name": name } });
      return (await r.json()).access_url;
    }, [type, name, body]);
    observed.attackUrls[kind] = url;
    try { await page.goto(url); } catch (e) { /* a download aborts the navigation: the page never renders */ }
    await page.waitForTimeout(300);
    await page.goto(base + "/"); // back to the playground's origin and tab for the next one
    await page.waitForSelector("#f-prompt");
  }
  observed.stolen = stolen;
  await page.goto(base + "/docs");
  // Swagger UI's bundle and its inline start-up script ran, and it fetched and read /openapi.json.
  const docsRequests = [];
  page.on("request", (r) => docsRequests.push(new URL(r.url()).pathname));
  await page.reload();
  await page.waitForSelector(".swagger-ui .info, .swagger-ui .errors-wrapper, .swagger-ui .version-pragma", { timeout: 20000 });
  observed.docsFetchedSpec = docsRequests.includes("/openapi.json");
  observed.cspViolations = cspViolations;
  observed.external = external;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(observed) + "\n");
