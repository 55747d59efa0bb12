// isoflop's web page: sorting and filtering (kept in the URL), the charts (uPlot), the live
// stream (/api/v1/stream, Server-Sent Events) applied in place, and the log viewer.
// The server renders every page whole; this module only makes it live.

const $ = (sel, el = document) => el.querySelector(sel);
const $$ = (sel, el = document) => Array.from(el.querySelectorAll(sel));
const body = document.body;
const page = body.dataset.page;
// What the browser test reads: messages applied, charts drawn.
// handlerMs and drawMs: main-thread time spent applying stream messages and redrawing charts
// (bench/web divides them by the messages).
const state = (window.__isoflop = {
  messages: 0, jobsApplied: 0, pointsApplied: 0, charts: {}, ready: false, handlerMs: 0, drawMs: 0, draws: 0,
});

// Formatting, as the server does (pages.rs).
const si = (x) => {
  if (x == null || !isFinite(x)) return "-";
  const a = Math.abs(x);
  if (a >= 1e12) return (x / 1e12).toFixed(1) + "T";
  if (a >= 1e9) return (x / 1e9).toFixed(1) + "B";
  if (a >= 1e6) return (x / 1e6).toFixed(1) + "M";
  if (a >= 1e3) return (x / 1e3).toFixed(1) + "k";
  return x.toFixed(0);
};
const dur = (s) => {
  if (s == null || !isFinite(s) || s < 0) return "-";
  s = Math.round(s);
  const p = (n) => String(n).padStart(2, "0");
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + p(s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + p(Math.floor((s % 3600) / 60)) + "m";
  return Math.floor(s / 86400) + "d " + p(Math.floor((s % 86400) / 3600)) + "h";
};
const f4 = (x) => (x == null ? "-" : x.toFixed(4));
const exp = (x, d = 1) => (x == null ? "-" : x.toExponential(d).replace(/e\+?/, "e+").replace("e+-", "e-"));
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const api = async (path) => {
  const r = await fetch(path, { credentials: "same-origin" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
};

// --- the live stream -------------------------------------------------------------------
function connect(params, handlers) {
  const live = $("#live");
  let cursor = 0;
  let source = null;
  const open = () => {
    const q = new URLSearchParams(params);
    q.set("cursor", String(cursor));
    source = new EventSource("/api/v1/stream?" + q.toString());
    source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
    source.onerror = () => {
      live.textContent = "reconnecting"; live.className = "live off";
      // EventSource retries by itself with Last-Event-ID; a closed one is opened again here.
      if (source.readyState === EventSource.CLOSED) setTimeout(open, 2000);
    };
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (ev) => {
        if (ev.lastEventId) cursor = Number(ev.lastEventId);
        state.messages++;
        const t = performance.now();
        fn(JSON.parse(ev.data));
        state.handlerMs += performance.now() - t;
      });
    }
  };
  open();
}

function stateCounts(s) {
  return '<span class="counts">' + Object.entries(s.states)
    .map(([k, n]) => `<span class="badge ${esc(k)}" data-state="${esc(k)}">${esc(k)} ${n}</span>`).join("") + "</span>";
}

function applySummaries(list) {
  for (const s of list) {
    const row = $(`#sweeps tr[data-sweep="${CSS.escape(s.name)}"]`);
    if (row) {
      row.querySelector('[data-key="states"]').innerHTML = stateCounts(s);
      row.querySelector('[data-key="done"]').textContent = `${s.succeeded} / ${s.jobs}`;
      row.querySelector('[data-key="flops"]').textContent = `${exp(s.flops_done, 2)} / ${exp(s.flops_planned, 2)}`;
      row.querySelector('[data-key="rate"]').textContent = s.tokens_per_second > 0 ? si(s.tokens_per_second) : "-";
      row.querySelector('[data-key="eta"]').textContent = dur(s.eta_seconds);
    } else if (page === "sweeps" && $("#sweeps tbody")) {
      const tr = document.createElement("tr");
      tr.dataset.sweep = s.name;
      tr.innerHTML = `<td><a href="/sweeps/${encodeURIComponent(s.name)}">${esc(s.name)}</a></td><td data-key="states"></td>
        <td data-key="done"></td><td data-key="flops"></td><td data-key="rate"></td><td data-key="eta"></td><td></td>`;
      $("#sweeps tbody").prepend(tr);
      applySummaries([s]);
    }
    const sum = $(`#summary[data-sweep="${CSS.escape(s.name)}"]`);
    if (sum) {
      sum.innerHTML = stateCounts(s) +
        `<span data-key="done">${s.succeeded} of ${s.jobs} jobs done</span>` +
        `<span data-key="flops">${exp(s.flops_done, 2)} of ${exp(s.flops_planned, 2)} FLOPs</span>` +
        `<span data-key="rate">${s.tokens_per_second > 0 ? si(s.tokens_per_second) : "-"} tokens/s</span>` +
        `<span data-key="eta">ETA ${dur(s.eta_seconds)}</span>`;
    }
  }
}

// --- a sweep's table -------------------------------------------------------------------
const COLS = ["name", "kind", "budget", "params", "tokens", "state", "fraction", "loss", "best_loss",
  "tokens_per_second", "mfu", "elapsed_seconds", "eta_seconds", "attempts"];

function rowHtml(j) {
  const v = (x) => (x == null ? "" : String(x));
  const title = j.failure_class ? `${j.failure_class}: ${j.message}` : j.message;
  const cell = (key, sortv, html, extra = "") => `<td data-key="${key}" data-v="${esc(v(sortv))}"${extra}>${html}</td>`;
  return `<td class="sel"><input type="checkbox" data-select="${esc(j.run_id)}" title="overlay on the chart"></td>` +
    cell("name", j.name, `<a href="/runs/${esc(j.run_id)}">${esc(j.name)}</a>`) +
    cell("kind", j.kind, esc(j.kind)) +
    cell("budget", j.budget, exp(j.budget)) +
    cell("params", j.params, si(j.params)) +
    cell("tokens", j.tokens, si(j.tokens)) +
    cell("state", j.state, `<span class="badge ${esc(j.state)}">${esc(j.state)}</span>` +
      (j.failure_class ? ` <span class="class">${esc(j.failure_class)}</span>` : "") +
      (j.message && j.state !== "succeeded" ? `<div class="reason">${esc(j.message)}</div>` : ""), ` title="${esc(title)}"`) +
    cell("fraction", j.fraction, `<div class="bar"><div class="fill" style="width:${(j.fraction * 100).toFixed(1)}%"></div></div>` +
      `<span class="steps">${j.step}/${j.total_steps}</span>`) +
    cell("loss", j.loss, f4(j.loss)) +
    cell("best_loss", j.best_loss, f4(j.best_loss)) +
    cell("tokens_per_second", j.tokens_per_second, si(j.tokens_per_second)) +
    cell("mfu", j.mfu, j.mfu == null ? "-" : (j.mfu * 100).toFixed(1) + "%") +
    cell("elapsed_seconds", j.elapsed_seconds, dur(j.elapsed_seconds)) +
    cell("eta_seconds", j.eta_seconds, dur(j.eta_seconds)) +
    cell("attempts", j.attempts, String(j.attempts)) +
    `<td><a href="/runs/${esc(j.run_id)}#log">log</a></td>`;
}

function sweepPage() {
  const sweep = body.dataset.sweep;
  const table = $("#jobs");
  const tbody = table.tBodies[0];
  const url = new URL(location.href);
  const q = $("#filter-q"), st = $("#filter-state"), kind = $("#filter-kind"), ema = $("#ema");
  q.value = url.searchParams.get("q") ?? "";
  st.value = url.searchParams.get("state") ?? "";
  kind.value = url.searchParams.get("kind") ?? "";
  if (url.searchParams.has("ema")) ema.value = url.searchParams.get("ema");
  let sort = url.searchParams.get("sort") ?? "", dir = url.searchParams.get("dir") ?? "asc";
  const selected = new Set((url.searchParams.get("sel") ?? "").split(",").filter(Boolean));
  const jobs = new Map();

  const saveUrl = () => {
    const u = new URL(location.href);
    for (const [k, val] of [["q", q.value], ["state", st.value], ["kind", kind.value], ["sort", sort],
      ["dir", sort ? dir : ""], ["sel", [...selected].join(",")], ["ema", ema.value === "0.6" ? "" : ema.value]]) {
      if (val) u.searchParams.set(k, val); else u.searchParams.delete(k);
    }
    history.replaceState(null, "", u);
  };
  const numeric = new Set($$("#jobs th[data-key]").filter((th) => th.dataset.num === "true").map((th) => th.dataset.key));
  const apply = () => {
    const rows = Array.from(tbody.rows);
    const needle = q.value.trim().toLowerCase();
    let shown = 0;
    for (const tr of rows) {
      const ok = (!st.value || tr.dataset.state === st.value) && (!kind.value || tr.dataset.kind === kind.value) &&
        (!needle || tr.textContent.toLowerCase().includes(needle));
      tr.hidden = !ok;
      shown += ok;
    }
    if (sort) {
      const key = (tr) => tr.querySelector(`[data-key="${sort}"]`)?.dataset.v ?? "";
      const isNum = numeric.has(sort);
      rows.sort((a, b) => {
        const [x, y] = [key(a), key(b)];
        let c;
        if (isNum) {
          // Blanks last, whichever the direction.
          if (x === "" || y === "") return (x === "") - (y === "");
          c = Number(x) - Number(y);
        } else c = x.localeCompare(y);
        return dir === "asc" ? c : -c;
      });
      for (const tr of rows) tbody.appendChild(tr);
    }
    for (const th of $$("#jobs th[data-key]")) th.dataset.sorted = th.dataset.key === sort ? dir : "";
    $("#shown").textContent = `${shown} of ${rows.length} shown`;
    for (const box of $$("input[data-select]")) box.checked = selected.has(box.dataset.select);
  };
  for (const th of $$("#jobs th[data-key]")) {
    th.addEventListener("click", () => {
      if (sort === th.dataset.key) dir = dir === "asc" ? "desc" : "asc"; else { sort = th.dataset.key; dir = "asc"; }
      saveUrl(); apply();
    });
  }
  for (const el of [q, st, kind]) el.addEventListener("input", () => { saveUrl(); apply(); });
  tbody.addEventListener("change", (ev) => {
    const id = ev.target?.dataset?.select;
    if (!id) return;
    if (ev.target.checked) selected.add(id); else selected.delete(id);
    saveUrl(); charts.restyle();
  });
  ema.addEventListener("input", () => { saveUrl(); charts.redraw(); });

  const charts = sweepCharts(sweep, selected, () => Number(ema.value), jobs);
  const terminal = new Set(["succeeded", "failed", "cancelled"]);
  const applyJobs = (list) => {
    for (const j of list) {
      if (terminal.has(j.state) && !terminal.has(jobs.get(j.run_id)?.state)) charts.ended();
      jobs.set(j.run_id, j);
      let tr = tbody.querySelector(`tr[data-id="${CSS.escape(j.run_id)}"]`);
      if (!tr) { tr = document.createElement("tr"); tr.dataset.id = j.run_id; tbody.appendChild(tr); }
      tr.dataset.state = j.state; tr.dataset.kind = j.kind;
      tr.innerHTML = rowHtml(j);
      state.jobsApplied++;
    }
    apply();
    charts.jobsChanged();
  };
  api(`/api/v1/sweeps/${encodeURIComponent(sweep)}`).then((d) => {
    for (const j of d.jobs) jobs.set(j.run_id, j);
    charts.load().then(() => {
      connect({ sweep }, {
        summaries: applySummaries,
        jobs: applyJobs,
        points: (p) => charts.points(p),
      });
      state.ready = true;
    });
  });
  apply();
}

// Log-scaled colour by budget: blue (small) to red (large).
function budgetColour(b, lo, hi, alpha = 1) {
  const t = hi > lo ? (Math.log(b) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) : 0.5;
  return `hsla(${Math.round(230 - 230 * t)}, 75%, 45%, ${alpha})`;
}

function smooth(ys, a) {
  if (!a) return ys;
  const out = new Array(ys.length);
  let m = null;
  for (let i = 0; i < ys.length; i++) {
    const y = ys[i];
    m = m == null ? y : a * m + (1 - a) * y;
    // Debiased like TensorBoard's, so that the start does not lag.
    out[i] = m;
  }
  return out;
}

function chartSize(el) {
  return { width: Math.max(320, el.clientWidth || 600), height: 300 };
}

// A chart of series with their own x values (uPlot's mode 2): lines, points or both.
function facetChart(el, opts, list) {
  el.innerHTML = "";
  const data = [null], series = [{}];
  const facets = [{ scale: "x", auto: true }, { scale: "y", auto: true }];
  for (const s of list) {
    // Markers are a series of their own, drawn by uPlot's points path (mode 2 draws no
    // per-point markers on a line series); a line unless `line: false`.
    if (s.points) {
      data.push([s.xs, s.ys]);
      series.push({ label: s.label, stroke: s.stroke, fill: s.stroke, width: 1, paths: uPlot.paths.points(),
        points: { show: false, size: s.size ?? 7, width: 1 }, facets });
    }
    if (s.line ?? !s.points) {
      data.push([s.xs, s.ys]);
      series.push({ label: s.points ? "" : s.label, stroke: s.stroke, width: s.width ?? 1.5, dash: s.dash,
        paths: uPlot.paths.linear(), points: { show: false }, facets });
    }
  }
  const fmt = (v) => v.map((x) => (x == null ? "" : Math.abs(x) >= 1000 ? si(x) : x.toPrecision(3)));
  return new uPlot({
    ...chartSize(el), mode: 2, legend: { show: opts.legend ?? true }, cursor: { drag: { x: true, y: true } },
    scales: { x: { time: false, distr: opts.xlog ? 3 : 1 }, y: { distr: opts.ylog ? 3 : 1 } },
    axes: [{ label: opts.xlabel, values: (u, v) => fmt(v) }, { label: opts.ylabel, values: (u, v) => fmt(v) }],
    series,
  }, data, el);
}

const PALETTE = ["#1f5fbf", "#b0421a", "#1c8a4a", "#8a3fb0", "#c9820f", "#2a8c9a", "#a33b6b", "#5c6b1f", "#444"];

function sweepCharts(sweep, selected, emaOf, jobs) {
  let curves = {};
  let lossPlot = null, isoPlot = null;
  const lossEl = $("#chart-loss"), isoEl = $("#chart-isoflop");
  let pending = false;
  const budgets = () => {
    const bs = [...jobs.values()].filter((j) => j.kind === "train").map((j) => j.budget);
    return [Math.min(...bs), Math.max(...bs)];
  };
  const draw = () => {
    const t = performance.now();
    drawLoss();
    state.drawMs += performance.now() - t;
    state.draws++;
  };
  const drawLoss = () => {
    pending = false;
    // A log axis has no place for the step-0 point (no tokens seen yet).
    const seen = (id) => curves[id].filter((p) => p[0] > 0);
    const ids = Object.keys(curves).filter((id) => jobs.has(id) && seen(id).length);
    const [lo, hi] = budgets();
    const a = emaOf();
    const data = [null, ...ids.map((id) => { const c = seen(id); return [c.map((p) => p[0]), smooth(c.map((p) => p[1]), a)]; })];
    const series = [{}, ...ids.map((id) => {
      const j = jobs.get(id);
      const on = !selected.size || selected.has(id);
      return {
        label: j.name, stroke: budgetColour(j.budget, lo, hi, on ? 1 : 0.12), width: selected.has(id) ? 2.5 : 1.2,
        facets: [{ scale: "x", auto: true }, { scale: "y", auto: true }], paths: uPlot.paths.linear(), points: { show: false },
      };
    })];
    if (lossPlot) lossPlot.destroy();
    lossEl.innerHTML = "";
    if (!ids.length) { lossEl.textContent = "No progress reported yet."; return; }
    lossPlot = new uPlot({
      ...chartSize(lossEl), mode: 2, legend: { show: false }, cursor: { drag: { x: true, y: true } },
      scales: { x: { time: false, distr: 3 }, y: { distr: 3 } },
      axes: [{ label: "tokens", values: (u, v) => v.map((x) => (x == null ? "" : si(x))) }, { label: "loss", values: (u, v) => v.map((x) => (x == null ? "" : x.toPrecision(3))) }],
      series,
    }, data, lossEl);
    state.charts.loss = { series: ids.length, points: ids.reduce((n, id) => n + curves[id].length, 0) };
    drawIso();
  };
  let fit = null;
  let fitPlots = [];
  const drawIso = () => {
    // The fitter's points (held-out loss of its frontier distribution) when it has fitted;
    // until then the final training loss of each succeeded run.
    const byBudget = new Map();
    const add = (b, n, l) => { if (!byBudget.has(b)) byBudget.set(b, []); byBudget.get(b).push([n, l]); };
    const report = fit?.report;
    if (report && fit.points?.length) {
      for (const [b, n, l] of fit.points) add(b, n, l);
      $("#isoflop-caption").textContent = `${fit.task}: ${report.isoflop.distribution} ${fit.metric} against parameters, per budget, with the fitted parabolas and their minima (IsoFLOP)`;
    } else {
      for (const j of jobs.values()) if (j.kind === "train" && j.state === "succeeded" && j.loss != null && j.params) add(j.budget, j.params, j.loss);
    }
    if (isoPlot) isoPlot.destroy();
    isoEl.innerHTML = "";
    if (!byBudget.size) { isoEl.textContent = "No finished run yet."; state.charts.isoflop = { budgets: 0 }; return; }
    const [lo, hi] = budgets();
    const list = [];
    for (const [b, pts] of [...byBudget.entries()].sort((x, y) => x[0] - y[0])) {
      pts.sort((x, y) => x[0] - y[0]);
      const c = budgetColour(b, lo, hi);
      list.push({ label: exp(b), xs: pts.map((p) => p[0]), ys: pts.map((p) => p[1]), stroke: c, points: true, line: !report });
        // A budget's report carries its optimum's fields (bracketed, n_opt, l_opt, the parabola).
      const opt = report?.isoflop.budgets.find((r) => Math.abs(r.budget - b) <= 1e-9 * b);
      if (opt?.parabola_ln_n) {
        const p = opt.parabola_ln_n, a = Math.log(pts[0][0]), z = Math.log(pts[pts.length - 1][0]);
        const ts = Array.from({ length: 41 }, (_, i) => a + ((z - a) * i) / 40);
        list.push({ label: `fit ${exp(b)}`, xs: ts.map(Math.exp), ys: ts.map((t) => p.c[0] + (t - p.x0) * (p.c[1] + (t - p.x0) * p.c[2])), stroke: c, dash: [6, 4], width: 1 });
      }
    }
    const minima = report?.isoflop.budgets.filter((o) => o.bracketed) ?? [];
    if (minima.length) list.push({ label: "minima", xs: minima.map((o) => o.n_opt), ys: minima.map((o) => o.l_opt), stroke: "#111", points: true, line: false, size: 10 });
    isoPlot = facetChart(isoEl, { xlabel: "parameters", ylabel: report ? fit.metric : "final loss", xlog: true }, list);
    state.charts.isoflop = { budgets: byBudget.size, parabolas: list.filter((s) => s.dash).length, minima: minima.length };
  };
  const drawFit = () => {
    for (const p of fitPlots) p.destroy();
    fitPlots = [];
    const report = fit?.report;
    const optEl = $("#chart-optima"), lawsEl = $("#chart-laws"), relEl = $("#chart-relative");
    if (!report) {
      for (const el of [optEl, lawsEl, relEl]) el.textContent = fit?.why ? `No fit yet: ${fit.why}` : "No fit yet.";
      state.charts.fit = { fitted: false };
      return;
    }
    const iso = report.isoflop;
    const opts = iso.budgets.filter((o) => o.bracketed);
    const cs = opts.map((o) => o.budget);
    const span = cs.length ? [Math.min(...cs), Math.max(...cs)] : [1, 1];
    const law = (coef, e) => (coef != null && e != null ? { xs: span, ys: span.map((c) => coef * c ** e) } : null);
    const optList = [
      { label: "N*", xs: cs, ys: opts.map((o) => o.n_opt), stroke: PALETTE[0], points: true, line: false },
      { label: "D*", xs: cs, ys: opts.map((o) => o.d_opt), stroke: PALETTE[1], points: true, line: false },
    ];
    const nl = law(iso.n_opt_coef, iso.n_opt_exponent), dl = law(iso.d_opt_coef, iso.d_opt_exponent);
    if (nl) optList.push({ label: `N* ∝ C^${iso.n_opt_exponent.toFixed(3)}`, ...nl, stroke: PALETTE[0], dash: [6, 4] });
    if (dl) optList.push({ label: `D* ∝ C^${iso.d_opt_exponent.toFixed(3)}`, ...dl, stroke: PALETTE[1], dash: [6, 4] });
    fitPlots.push(facetChart(optEl, { xlabel: "compute (FLOPs)", ylabel: "parameters / tokens", xlog: true, ylog: true }, optList));
    $("#optima-caption").textContent = `Compute-optimal N* and D* against compute (${iso.distribution}), with the fitted power laws`;
    // E(F) per distribution: the minima of its own IsoFLOP curves and its fitted law.
    const lawList = [];
    report.distributions.forEach((d, i) => {
      const pts = d.isoflop.budgets.filter((o) => o.bracketed);
      const c = PALETTE[i % PALETTE.length];
      lawList.push({ label: d.name, xs: pts.map((o) => o.budget), ys: pts.map((o) => o.l_opt), stroke: c, points: true, line: false });
      if (d.alpha != null && d.beta != null && pts.length) {
        const xs = [Math.min(...pts.map((o) => o.budget)), Math.max(...pts.map((o) => o.budget))];
        lawList.push({ label: `${d.name} fit`, xs, ys: xs.map((f) => d.alpha * f ** -d.beta), stroke: c, dash: [6, 4], width: 1 });
      }
    });
    if (lawList.length) fitPlots.push(facetChart(lawsEl, { xlabel: "compute (FLOPs)", ylabel: fit.metric, xlog: true, ylog: true }, lawList));
    else lawsEl.textContent = "No distribution has a fitted law yet.";
    // G(F) per target against the baseline, with its pointwise band.
    const relList = [];
    report.relative.forEach((r, i) => {
      const c = PALETTE[i % PALETTE.length];
      const xs = r.band.map((b) => b[0]);
      relList.push({ label: `${r.target} (${r.verdict})`, xs, ys: xs.map((f) => r.gamma * f ** r.delta_beta), stroke: c });
      relList.push({ label: `${r.target} band`, xs, ys: r.band.map((b) => b[1]), stroke: c, dash: [2, 3], width: 1 });
      relList.push({ label: `${r.target} band`, xs, ys: r.band.map((b) => b[2]), stroke: c, dash: [2, 3], width: 1 });
    });
    if (relList.length) {
      fitPlots.push(facetChart(relEl, { xlabel: "compute (FLOPs)", ylabel: `G = E / E_${report.relative[0].baseline}`, xlog: true, ylog: true }, relList));
      $("#relative-caption").textContent = `Relative to ${report.relative[0].baseline}: G(F) = E/E_baseline with ${Math.round(report.ci_level * 100)}% bands (bootstrap over runs)`;
    } else relEl.textContent = "No relative law: one distribution, or too few budgets.";
    state.charts.fit = { fitted: true, distributions: report.distributions.length, relative: report.relative.length, optima: opts.length };
  };
  let fitTimer = null;
  const loadFit = async () => {
    fit = await api(`/api/v1/sweeps/${encodeURIComponent(sweep)}/fit`);
    drawIso();
    drawFit();
  };
  return {
    load: async () => { curves = await api(`/api/v1/sweeps/${encodeURIComponent(sweep)}/curves`); draw(); await loadFit(); },
    // A job ended: the fit may change (the server recomputes it then).
    ended: () => { clearTimeout(fitTimer); fitTimer = setTimeout(loadFit, 1500); },
    redraw: draw,
    restyle: draw,
    jobsChanged: () => { if (!pending) { pending = true; requestAnimationFrame(draw); } },
    points: (p) => {
      for (const [id, pts] of Object.entries(p)) {
        const c = (curves[id] ??= []);
        for (const pt of pts) {
          if (c.length && c[c.length - 1][3] >= pt[3]) {
            // A resumed attempt repeats steps: drop what it replaces.
            while (c.length && c[c.length - 1][3] >= pt[3]) c.pop();
          }
          c.push(pt);
        }
        state.pointsApplied += pts.length;
      }
      if (!pending) { pending = true; requestAnimationFrame(draw); }
    },
  };
}

// --- a run -------------------------------------------------------------------------------
function runPage() {
  const run = body.dataset.run;
  let curve = [];
  let lossPlot = null, lrPlot = null;
  const draw = () => {
    const lossEl = $("#chart-run-loss"), lrEl = $("#chart-run-lr");
    if (!lossEl || !curve.length) return;
    if (lossPlot) lossPlot.destroy();
    if (lrPlot) lrPlot.destroy();
    lossPlot = new uPlot({
      ...chartSize(lossEl), scales: { x: { time: false, distr: 3 }, y: { distr: 3 } }, legend: { show: false },
      axes: [{ label: "tokens", values: (u, v) => v.map((x) => (x == null ? "" : si(x))) }, { label: "loss" }],
      series: [{}, { label: "loss", stroke: "#1f5fbf", width: 1.5 }],
    }, [curve.filter((p) => p[0] > 0).map((p) => p[0]), curve.filter((p) => p[0] > 0).map((p) => p[1])], lossEl);
    lrPlot = new uPlot({
      ...chartSize(lrEl), scales: { x: { time: false } }, legend: { show: false },
      axes: [{ label: "step" }, { label: "learning rate", values: (u, v) => v.map((x) => (x == null ? "" : x.toExponential(1))) }],
      series: [{}, { label: "lr", stroke: "#b0421a", width: 1.5 }],
    }, [curve.map((p) => p[3]), curve.map((p) => p[2])], lrEl);
    state.charts.run = { points: curve.length };
  };
  const runState = $("#run-state");
  const applyJobs = (list) => {
    for (const j of list) {
      if (j.run_id !== run) continue;
      const set = (k, text) => { const el = runState.querySelector(`[data-key="${k}"]`); if (el) el.textContent = text; };
      const badge = runState.querySelector('[data-key="state"]');
      badge.textContent = j.state; badge.className = "badge " + j.state;
      set("message", j.message); set("steps", `${j.step}/${j.total_steps} steps`); set("loss", f4(j.loss));
      set("best_loss", f4(j.best_loss)); set("tokens_per_second", si(j.tokens_per_second)); set("eta_seconds", dur(j.eta_seconds));
      set("attempts", String(j.attempts));
      const sel = $("#log-attempt");
      for (let a = sel.options.length + 1; a <= j.attempts; a++) {
        const o = document.createElement("option"); o.value = o.textContent = String(a); sel.prepend(o); sel.value = String(a);
      }
      state.jobsApplied++;
    }
  };
  const applyEvents = (events) => {
    const tb = $("#events tbody");
    tb.innerHTML = events.map((e) => `<tr><td>${new Date(e.at_ms).toISOString().replace("T", " ").slice(0, 19)} UTC</td>` +
      `<td>${e.attempt ?? "-"}</td><td>${esc(e.from)}</td><td><span class="badge ${esc(e.to)}">${esc(e.to)}</span></td>` +
      `<td>${e.failure_class ? `<span class="class">${esc(e.failure_class)}</span> ` : ""}${esc(e.message)}</td></tr>`).join("");
  };
  logViewer(run);
  api(`/api/v1/runs/${encodeURIComponent(run)}/progress`).then((c) => {
    curve = c;
    draw();
    connect({ run }, {
      summaries: () => {},
      jobs: applyJobs,
      events: applyEvents,
      points: (p) => {
        for (const pt of p[run] ?? []) {
          while (curve.length && curve[curve.length - 1][3] >= pt[3]) curve.pop();
          curve.push(pt);
          state.pointsApplied++;
        }
        draw();
      },
    });
    state.ready = true;
  });
}

// Follows a log as it grows (from the byte it has read to), and shows the lines that match
// the search.
function logViewer(run) {
  const pre = $("#log-text"), sel = $("#log-attempt"), search = $("#log-search"), follow = $("#log-follow"), status = $("#log-status");
  let attempt = sel.value, offset = 0, text = "", timer = null;
  const render = () => {
    const needle = search.value.trim().toLowerCase();
    const lines = needle ? text.split("\n").filter((l) => l.toLowerCase().includes(needle)) : null;
    pre.textContent = lines ? lines.join("\n") : text;
    if (follow.checked && !needle) pre.scrollTop = pre.scrollHeight;
  };
  const poll = async () => {
    if (!attempt) { status.textContent = "no attempt yet"; return; }
    try {
      const r = await api(`/api/v1/runs/${encodeURIComponent(run)}/log?attempt=${attempt}&offset=${offset}`);
      if (r.whole) { text = r.text; } else if (r.text) { text += r.text; }
      offset = r.offset;
      status.textContent = r.note ?? `${si(r.size)} bytes${r.live ? ", following" : ""}`;
      render();
      state.logBytes = text.length;
      // More to read now: at once; a live attempt: again in a second; an ended one: done.
      if (r.offset < r.size) timer = setTimeout(poll, 0);
      else if (r.live && follow.checked) timer = setTimeout(poll, 1000);
    } catch (e) {
      status.textContent = String(e);
    }
  };
  sel.addEventListener("change", () => { clearTimeout(timer); attempt = sel.value; offset = 0; text = ""; poll(); });
  follow.addEventListener("change", () => { clearTimeout(timer); poll(); });
  search.addEventListener("input", render);
  poll();
}

function sweepsPage() {
  connect({}, { summaries: applySummaries });
  state.ready = true;
}

if (page === "sweeps") sweepsPage();
else if (page === "sweep") sweepPage();
else if (page === "run") runPage();
else state.ready = true;
