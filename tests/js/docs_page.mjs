// /docs in headless Chromium: wait until Swagger UI has either listed the operations or shown its error
// panel, then read back what a person sees. Prints one JSON line.
//   node docs_page.mjs BASE_URL
import { chromium } from "playwright-core";

const [base] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const observed = { external: [], cspViolations: [], pageErrors: [], requested: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("request", (r) => {
    if (r.url().startsWith(base)) observed.requested.push(new URL(r.url()).pathname);
    else if (!r.url().startsWith("data:")) observed.external.push(r.url());
  });
  page.on("console", (m) => {
    if (m.text().includes("Content Security Policy")) observed.cspViolations.push(m.text());
  });
  page.on("pageerror", (e) => observed.pageErrors.push(String(e)));
  // The console misses violations a report-only path or a worker raises; the DOM event sees each one.
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(
      `${e.violatedDirective} ${e.blockedURI}`));
  });
  await page.goto(base + "/docs");
  const settled = ".swagger-ui .opblock, .swagger-ui .errors-wrapper, .swagger-ui .version-pragma";
  await page.waitForSelector(settled, { timeout: 30000 });
  observed.title = await page.$eval(".swagger-ui .info .title", (e) => e.textContent.trim())
    .catch(() => null);  // no title: the error panel took its place
  observed.errors = await page.$$eval(".swagger-ui .errors-wrapper, .swagger-ui .version-pragma",
                                      (els) => els.map((e) => e.textContent.trim()));
  observed.operations = await page.$$eval(".swagger-ui .opblock .opblock-summary", (rows) => rows.map((r) => {
    const method = r.querySelector(".opblock-summary-method")?.textContent.trim();
    const path = r.querySelector(".opblock-summary-path")?.getAttribute("data-path");
    return `${method} ${path}`;
  }));
  observed.domViolations = await page.evaluate(() => window.__violations);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(observed) + "\n");
