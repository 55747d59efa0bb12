// The browser test of the coordinator's web page (run by tests/browser.rs): Debian's chromium,
// driven by playwright-core, never a downloaded browser.
//
//   node check.mjs BASE_URL TOKEN DONE_SWEEP LIVE_SWEEP OUT_DIR
//
// DONE_SWEEP has finished; LIVE_SWEEP has runs training now. Prints one JSON line of results
// and exits non-zero on the first broken promise.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, token, doneSweep, liveSweep, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
const page = await context.newPage();
const problems = [];
page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
const results = {};
const fail = async (what) => {
  await page.screenshot({ path: `${out}/failure.png`, fullPage: true }).catch(() => {});
  console.error(`browser test: ${what}${problems.length ? `\npage problems: ${problems.join("; ")}` : ""}`);
  await browser.close();
  process.exit(1);
};
const check = async (cond, what) => { if (!cond) await fail(what); };
const ready = () => page.waitForFunction(() => window.__isoflop && window.__isoflop.ready, null, { timeout: 20000 })
  .catch((e) => fail(`the page did not get ready: ${e.message.split("\n")[0]}`));
const api = (path) => page.evaluate(async (p) => (await fetch(p)).json(), path);

// 1. The login form: a wrong token is refused, the right one lands where the user was going.
let t0 = Date.now();
await page.goto(`${base}/sweeps/${doneSweep}`);
await check(page.url().includes("/login"), `no login form without the token: ${page.url()}`);
await page.fill('input[name="token"]', "not-the-token");
await page.click('button[type="submit"]');
await check(await page.locator("#login-error").count() === 1, "a wrong token was not refused");
await page.fill('input[name="token"]', token);
await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
await check(page.url().endsWith(`/sweeps/${doneSweep}`), `login did not go back: ${page.url()}`);
await ready();

// 2. The sweeps page: each sweep's state counts are the API's.
t0 = Date.now();
await page.goto(`${base}/`);
await ready();
results.sweeps_page_ms = Date.now() - t0;
for (const s of await api("/api/v1/sweeps")) {
  const shown = await page.$$eval(`#sweeps tr[data-sweep="${s.name}"] .badge`, (els) => els.map((e) => e.textContent.trim()));
  const want = Object.entries(s.states).map(([k, n]) => `${k} ${n}`);
  // The live sweep moves on: compare the finished one exactly, the live one by its total.
  if (s.name === doneSweep) await check(JSON.stringify(shown) === JSON.stringify(want), `counts of ${s.name}: ${shown} vs ${want}`);
  else await check(shown.reduce((n, b) => n + Number(b.split(" ").pop()), 0) === s.jobs, `jobs of ${s.name}: ${shown}`);
}
await page.screenshot({ path: `${out}/sweeps.png`, fullPage: true });

// 3. The finished sweep: its table, its charts; a filter survives a reload through the URL.
t0 = Date.now();
await page.goto(`${base}/sweeps/${doneSweep}`);
await ready();
results.done_sweep_page_ms = Date.now() - t0;
const doneApi = await api(`/api/v1/sweeps/${doneSweep}`);
await check(await page.locator("#jobs tbody tr").count() === doneApi.jobs.length, "a row per job");
await page.waitForFunction(() => window.__isoflop.charts.isoflop && window.__isoflop.charts.isoflop.budgets > 0, null, { timeout: 10000 });
await check(await page.locator("#chart-loss canvas").count() === 1 && await page.locator("#chart-isoflop canvas").count() === 1, "both charts drawn");
// The fitter's charts: parabolas and minima on the IsoFLOP chart, N* and D*, E(F), G(F).
await page.waitForFunction(() => window.__isoflop.charts.fit, null, { timeout: 20000 });
const charts = await page.evaluate(() => window.__isoflop.charts);
await check(charts.fit.fitted && charts.isoflop.parabolas > 0 && charts.isoflop.minima > 0 && charts.fit.optima > 0 && charts.fit.relative > 0,
  `the fit charts: ${JSON.stringify(charts)}`);
for (const id of ["chart-optima", "chart-laws", "chart-relative"]) {
  await check(await page.locator(`#${id} canvas`).count() === 1, `${id} drawn`);
}
results.done_sweep_chart = charts;
await page.selectOption("#filter-kind", "eval");
await page.click('#jobs th[data-key="loss"]');
await page.reload();
await ready();
await check(await page.inputValue("#filter-kind") === "eval", "the filter was lost on reload");
await check(new URL(page.url()).searchParams.get("sort") === "loss", "the sort was lost on reload");
const kinds = await page.$$eval("#jobs tbody tr:not([hidden])", (rows) => rows.map((r) => r.dataset.kind));
await check(kinds.length === doneApi.jobs.filter((j) => j.kind === "eval").length && kinds.every((k) => k === "eval"), `filtered rows: ${kinds}`);
await page.selectOption("#filter-kind", "");
await page.screenshot({ path: `${out}/sweep-done.png`, fullPage: true });

// 4. The live sweep: a progress report reaches the table and the chart without a reload.
t0 = Date.now();
await page.goto(`${base}/sweeps/${liveSweep}`);
await ready();
results.live_sweep_page_ms = Date.now() - t0;
await page.evaluate(() => { window.__sameDocument = true; });
const running = await page.waitForFunction(() => {
  const row = document.querySelector('#jobs tbody tr[data-state="running"][data-kind="train"]');
  return row && row.dataset.id;
}, null, { timeout: 60000 }).then((h) => h.jsonValue());
const stepOf = () => page.$eval(`#jobs tr[data-id="${running}"] td[data-key="fraction"]`, (td) => Number(td.dataset.v));
const before = { step: await stepOf(), points: await page.evaluate(() => window.__isoflop.pointsApplied) };
await page.waitForFunction(([id, v]) => {
  const td = document.querySelector(`#jobs tr[data-id="${id}"] td[data-key="fraction"]`);
  return (td && Number(td.dataset.v) > v) || !document.querySelector(`#jobs tr[data-id="${id}"][data-state="running"]`);
}, [running, before.step], { timeout: 60000 });
await page.waitForFunction((n) => window.__isoflop.pointsApplied > n, before.points, { timeout: 30000 });
await check(await page.evaluate(() => window.__sameDocument === true), "the page reloaded");
results.live_updates = await page.evaluate(() => ({ messages: window.__isoflop.messages, jobs: window.__isoflop.jobsApplied, points: window.__isoflop.pointsApplied }));
await page.screenshot({ path: `${out}/sweep-live.png`, fullPage: true });

// 5. A running run: its log follows as it grows.
await page.goto(`${base}/runs/${running}`);
await ready();
await page.waitForFunction(() => (window.__isoflop.logBytes ?? 0) > 0, null, { timeout: 20000 });
const logBefore = await page.evaluate(() => window.__isoflop.logBytes);
await page.waitForFunction((n) => window.__isoflop.logBytes > n, logBefore, { timeout: 45000 });
results.log_bytes = [logBefore, await page.evaluate(() => window.__isoflop.logBytes)];
await page.fill("#log-search", "step");
await check((await page.textContent("#log-text")).split("\n").every((l) => l.toLowerCase().includes("step")), "search shows only matching lines");
await page.fill("#log-search", "");
await page.screenshot({ path: `${out}/run.png`, fullPage: true });

await check(problems.length === 0, `console errors: ${problems.join("; ")}`);
console.log(JSON.stringify(results));
await browser.close();
