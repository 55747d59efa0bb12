// bench/web: the sweep page of a 500-run sweep under live load, in Debian's chromium
// (playwright-core from tests/browser). Usage: node measure.mjs BASE_URL SWEEP [SECONDS]
// Prints the figures, then the ratio last: a full reload of the page against one live update.
import { createRequire } from "node:module";

const require = createRequire(new URL("../../tests/browser/package.json", import.meta.url));
const { chromium } = require("playwright-core");
const [base, sweep, seconds = "10"] = process.argv.slice(2);
const url = `${base}/sweeps/${sweep}`;

const timed = async (path) => {
  const t = performance.now();
  const r = await fetch(`${base}${path}`);
  const body = await r.arrayBuffer();
  return { ms: performance.now() - t, bytes: body.byteLength };
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// The server's side: the page, its JSON and its curves.
const server = {};
for (const [name, path] of [["page", `/sweeps/${sweep}`], ["json", `/api/v1/sweeps/${sweep}`], ["curves", `/api/v1/sweeps/${sweep}/curves`]]) {
  const runs = [];
  for (let i = 0; i < 5; i++) runs.push(await timed(path));
  server[name] = { ms: median(runs.map((r) => r.ms)), bytes: runs[0].bytes };
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const errors = [];
page.on("pageerror", (e) => errors.push(e.message));
// Time to first render (the server's HTML painted) and to live (charts drawn, stream open).
const loads = [];
for (let i = 0; i < 5; i++) {
  const t = Date.now();
  if (i === 0) await page.goto(url); else await page.reload();
  const painted = await page.evaluate(() => performance.getEntriesByType("paint").find((p) => p.name === "first-contentful-paint")?.startTime ?? NaN);
  await page.waitForFunction(() => window.__isoflop?.ready && window.__isoflop.messages > 0, null, { timeout: 60000 });
  loads.push({ fcp: painted, live: Date.now() - t });
}
const rows = await page.$$eval("#jobs tbody tr", (r) => r.length);
// Live: what the stream's updates cost the page's main thread over the window.
const before = await page.evaluate(() => ({ ...window.__isoflop }));
await page.waitForTimeout(Number(seconds) * 1000);
const after = await page.evaluate(() => ({ ...window.__isoflop }));
const messages = after.messages - before.messages;
const batches = Math.max(1, (after.draws - before.draws));
const applyMs = (after.handlerMs - before.handlerMs) / Math.max(1, messages);
const drawMs = (after.drawMs - before.drawMs) / batches;
const perUpdate = (after.handlerMs - before.handlerMs + after.drawMs - before.drawMs) / batches;
await browser.close();
if (errors.length) { console.error(`page errors: ${errors.join("; ")}`); process.exit(1); }

const fcp = median(loads.map((l) => l.fcp)), live = median(loads.map((l) => l.live));
console.log(`rows in the table: ${rows}`);
console.log(`server: page ${server.page.ms.toFixed(1)} ms (${(server.page.bytes / 1024).toFixed(0)} KiB), sweep JSON ${server.json.ms.toFixed(1)} ms (${(server.json.bytes / 1024).toFixed(0)} KiB), curves ${server.curves.ms.toFixed(1)} ms (${(server.curves.bytes / 1024).toFixed(0)} KiB)`);
console.log(`browser: first contentful paint ${fcp.toFixed(0)} ms, live (charts drawn, stream open) ${live} ms (median of 5 loads)`);
console.log(`stream over ${seconds} s: ${messages} messages, ${after.jobsApplied - before.jobsApplied} job rows and ${after.pointsApplied - before.pointsApplied} curve points applied in ${batches} redraws`);
console.log(`per update: apply ${applyMs.toFixed(2)} ms per message, redraw ${drawMs.toFixed(1)} ms, ${perUpdate.toFixed(1)} ms of main thread per batch`);
console.log(`ratio: a full reload (${live} ms to live) costs ${(live / perUpdate).toFixed(1)}x one live update (${perUpdate.toFixed(1)} ms)`);
