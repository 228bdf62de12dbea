// The playground in headless Chromium: type a prompt, generate, see the image; then a bad value shows its 422
// next to the field. Prints one JSON line; writes a screenshot.  node playground.mjs BASE_URL SCREENSHOT
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
  page.on("request", (r) => { if (!r.url().startsWith(base)) external.push(r.url()); });
  await page.goto(base + "/");
  await page.waitForSelector("#f-prompt");
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
  await page.screenshot({ path: screenshot, fullPage: true });
  await page.fill("#f-num_inference_steps", "20");
  await page.click("#submit");
  await page.waitForSelector('.field[data-field="num_inference_steps"].invalid', { timeout: 10000 });
  observed.fieldError = await page.textContent('.field[data-field="num_inference_steps"] .error');
  await page.click('#endpoints button[data-app="fal-ai/flux/schnell/redux"]');
  observed.reduxFields = await page.$$eval("#form .field", (rows) => rows.map((r) => r.dataset.field));
  observed.external = external;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(observed) + "\n");
