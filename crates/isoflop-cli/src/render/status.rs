//! A sweep's runs as text: the one-line summary, `isoflop run`'s live display, `isoflop status`
//! (table or JSON), and the final table of losses.

use crate::render::table::{Table, count, duration};
use isoflop_core::{RunConfig, RunState};
use isoflop_store::{EvalRow, RunResults, RunRow};
use serde_json::json;
use std::collections::BTreeSet;

fn config(r: &RunRow) -> Option<RunConfig> {
    serde_json::from_str(&r.config_json).ok()
}

/// Seconds left for a running run, from its newest progress point (the web page's too).
fn eta(r: &RunRow) -> Option<f64> {
    isoflop_server::web::view::run_eta(r)
}

/// `  ETA 1h 05m` for a sweep that trains: the web page's sweep ETA.
fn sweep_eta(runs: &[RunRow]) -> String {
    isoflop_server::web::view::sweep_eta(runs).map(|s| format!("  ETA {}", duration(s))).unwrap_or_default()
}

/// When `isoflop status` looks, and whether a coordinator runs the store.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub now_ms: i64,
    /// A local store whose lock nobody holds: no `isoflop run` or `serve` is running it.
    pub coordinator_gone: bool,
}

impl Seen {
    /// Seconds since an active run's worker last reported (its newest progress point).
    fn heartbeat_age(&self, r: &RunRow) -> Option<f64> {
        let p = r.progress.as_ref().filter(|_| r.state.is_active())?;
        Some((self.now_ms - p.at_ms).max(0) as f64 / 1000.0)
    }

    /// An active run nobody coordinates any more.
    fn stale(&self, r: &RunRow) -> bool {
        self.coordinator_gone && r.state.is_active()
    }
}

/// One line of counts over runs and evaluation jobs alike:
/// `[sweep] 3/20 done, 2 running, 15 queued, 0 failed, 0 cancelled` (with `(of which N
/// evaluation jobs)` when the sweep has any).
pub fn summary_line(sweep: &str, runs: &[RunRow]) -> String {
    let evals = runs.iter().filter(|r| !r.is_training()).count();
    let line = counts_line(sweep, runs);
    if evals == 0 { line } else { format!("{line} ({evals} of the jobs evaluate checkpoints)") }
}

fn counts_line(sweep: &str, runs: &[RunRow]) -> String {
    let n = |s: RunState| runs.iter().filter(|r| r.state == s).count();
    let active = runs.iter().filter(|r| r.state.is_active()).count();
    format!(
        "[{sweep}] {}/{} done, {active} running, {} queued, {} failed, {} cancelled",
        n(RunState::Succeeded),
        runs.len(),
        n(RunState::Queued) + n(RunState::Blocked) + n(RunState::Planned),
        n(RunState::Failed),
        n(RunState::Cancelled)
    )
}

/// The live display: the summary line with the elapsed time, and one line per active run.
pub fn live_block(sweep: &str, runs: &[RunRow], elapsed: f64) -> String {
    let mut out = format!("{}  elapsed {}{}\n", summary_line(sweep, runs), duration(elapsed), sweep_eta(runs));
    let width = runs.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in runs.iter().filter(|r| r.state.is_active()) {
        match (&r.progress, r.state) {
            (Some(p), RunState::Running) if !r.is_training() => {
                out.push_str(&format!("  {:width$}  scored {:>6}/{:<6} windows\n", r.name, p.step, p.total_steps))
            }
            (Some(p), RunState::Running) => out.push_str(&format!(
                "  {:width$}  step {:>6}/{:<6} loss {:7.4}  {:>9} tok/s  ETA {}\n",
                r.name,
                p.step,
                p.total_steps,
                p.loss,
                count(p.tokens_per_second as u64),
                eta(r).map(duration).unwrap_or_else(|| "-".into()),
            )),
            _ => out.push_str(&format!("  {:width$}  {}\n", r.name, r.state)),
        }
    }
    out
}

/// The final table: per run, its shape, final training loss, and eval loss (nats/token) per
/// distribution; `*` marks the lowest mean eval loss of each budget (the IsoFLOP minimum).
/// Evaluation jobs in `runs` are left out (their results are the runs' columns).
pub fn final_table(runs: &[RunResults]) -> String {
    let runs: Vec<(&RunRow, &[EvalRow])> =
        runs.iter().filter(|x| x.run.is_training()).map(|x| (&x.run, x.evals.as_slice())).collect();
    let runs = runs.as_slice();
    let dists: BTreeSet<String> = runs.iter().flat_map(|(_, e)| e.iter()).map(|e| e.distribution.clone()).collect();
    let mean = |e: &[EvalRow]| (!e.is_empty()).then(|| e.iter().map(|x| x.loss).sum::<f64>() / e.len() as f64);
    let mut best: Vec<(f64, f64)> = Vec::new();
    for &(r, e) in runs {
        if let Some(m) = mean(e) {
            match best.iter_mut().find(|(b, _)| *b == r.budget) {
                Some(entry) if m < entry.1 => entry.1 = m,
                Some(_) => {}
                None => best.push((r.budget, m)),
            }
        }
    }
    let mut header = vec!["run".to_string(), "budget".into(), "params".into(), "tokens".into(), "state".into(), "train".into()];
    header.extend(dists.iter().cloned());
    header.push("mean".into());
    let mut t = Table::new(header);
    for &(r, e) in runs {
        let c = config(r);
        let mut row = vec![
            r.name.clone(),
            format!("{:.1e}", r.budget),
            c.as_ref().map(|c| count(isoflop_core::flops::params(&c.model))).unwrap_or_default(),
            c.as_ref().map(|c| count(c.tokens())).unwrap_or_default(),
            match r.failure_class {
                Some(fc) if r.state == RunState::Failed => format!("failed({fc})"),
                _ => r.state.to_string(),
            },
            r.progress.as_ref().map(|p| format!("{:.4}", p.loss)).unwrap_or_else(|| "-".into()),
        ];
        for d in &dists {
            row.push(e.iter().find(|x| &x.distribution == d).map(|x| format!("{:.4}", x.loss)).unwrap_or_else(|| "-".into()));
        }
        row.push(match mean(e) {
            Some(m) => {
                let star = best.iter().any(|(b, v)| *b == r.budget && *v == m);
                format!("{m:.4}{}", if star { "*" } else { " " })
            }
            None => "-".into(),
        });
        t.row(row);
    }
    let mut out = t.render();
    out.push_str("losses: mean cross-entropy in nats/token on each held-out distribution; * = lowest mean loss of its budget\n");
    out
}

/// The headline of an evaluation job's result: multiple choice, the accuracies and bits per
/// byte over all its items; text, the mean of its first metric over distributions.
fn headline(x: &RunResults) -> Option<String> {
    use isoflop_core::eval::metric;
    let all = |m: &str| x.metrics.iter().find(|v| v.subset == isoflop_core::choice::ALL && v.metric == m).map(|v| v.value);
    if let (Some(acc), Some(norm), Some(bpb), Some(n)) =
        (all(metric::ACC), all(metric::ACC_NORM), all(metric::BPB), all(metric::ITEMS))
    {
        return Some(format!("acc {acc:.4} acc_norm {norm:.4} bpb {bpb:.4} ({n} items)"));
    }
    let first = x.metrics.first()?;
    let v: Vec<f64> = x.metrics.iter().filter(|m| m.metric == first.metric).map(|m| m.value).collect();
    Some(format!("{} {:.4} (mean of {})", first.metric, v.iter().sum::<f64>() / v.len() as f64, v.len()))
}

/// An evaluation job's metrics as `{subset: {metric: value}}`.
fn metrics_json(x: &RunResults) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for m in &x.metrics {
        let entry = out.entry(m.subset.clone()).or_insert_with(|| json!({}));
        entry[m.metric.as_str()] = json!(m.value);
    }
    serde_json::Value::Object(out)
}

/// A job's JSON with what `status` knows of its time: the last report, staleness, start, end,
/// duration and attempts (the same for runs and evaluation jobs).
fn with_timing(x: &RunResults, seen: &Seen, mut v: serde_json::Value) -> serde_json::Value {
    let r = &x.run;
    let fields = json!({
        "heartbeat_age_seconds": seen.heartbeat_age(r),
        "stale": seen.stale(r),
        "started_ms": x.attempts.first().map(|a| a.started_ms),
        "ended_ms": if r.state.is_terminal() { x.attempts.last().and_then(|a| a.ended_ms) } else { None },
        "duration_seconds": run_seconds(x, seen.now_ms),
        "attempt_list": attempts_json(x, seen.now_ms),
    });
    if let (Some(o), serde_json::Value::Object(f)) = (v.as_object_mut(), fields) {
        o.extend(f);
    }
    v
}

/// Seconds a job has spent in attempts (the ended ones, and the live one so far).
fn run_seconds(x: &RunResults, now_ms: i64) -> Option<f64> {
    (!x.attempts.is_empty())
        .then(|| x.attempts.iter().map(|a| (a.ended_ms.unwrap_or(now_ms) - a.started_ms).max(0) as f64 / 1000.0).sum())
}

/// A job's attempts with their start, end and duration.
fn attempts_json(x: &RunResults, now_ms: i64) -> serde_json::Value {
    x.attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "outcome": a.outcome.as_str(),
                "failure_class": a.failure_class.map(|f| f.as_str()),
                "message": a.message,
                "resume_step": a.resume_step,
                "started_ms": a.started_ms,
                "ended_ms": a.ended_ms,
                "duration_seconds": (a.ended_ms.unwrap_or(now_ms) - a.started_ms).max(0) as f64 / 1000.0,
            })
        })
        .collect()
}

/// `isoflop status --format json`: every run with its shape, progress and held-out losses,
/// and every evaluation job with its checkpoint, task, state and results.
pub fn status_json(sweep: &str, runs: &[RunResults], seen: &Seen) -> String {
    let mut arr = Vec::new();
    let mut jobs = Vec::new();
    for x in runs {
        let (r, e) = (&x.run, &x.evals);
        if let Some(of) = &r.eval {
            jobs.push(with_timing(
                x,
                seen,
                json!({
                    "job_id": r.run_id,
                    "name": r.name,
                    "run_id": of.parent,
                    "step": of.step,
                    "task": of.task,
                    "family": of.family,
                    "state": r.state.as_str(),
                    "failure_class": r.failure_class.map(|f| f.as_str()),
                    "message": r.message,
                    "attempts": r.attempts,
                    "progress": r.progress.as_ref().map(|p| json!({"done": p.step, "total": p.total_steps})),
                    "results": metrics_json(x),
                }),
            ));
            continue;
        }
        let c = config(r);
        let evals: serde_json::Map<String, serde_json::Value> = e
            .iter()
            .map(|e| {
                (
                    e.distribution.clone(),
                    json!({"loss": e.loss, "bits_per_byte": e.bits_per_byte, "tokens": e.tokens, "bytes": e.bytes}),
                )
            })
            .collect();
        arr.push(with_timing(
            x,
            seen,
            json!({
                "run_id": r.run_id,
                "name": r.name,
                "corpus": r.corpus,
                "budget": r.budget,
                "state": r.state.as_str(),
                "failure_class": r.failure_class.map(|f| f.as_str()),
                "message": r.message,
                "attempts": r.attempts,
                "params": c.as_ref().map(|c| isoflop_core::flops::params(&c.model)),
                "tokens": c.as_ref().map(|c| c.tokens()),
                "step": r.progress.as_ref().map(|p| p.step),
                "total_steps": c.as_ref().map(|c| c.recipe.steps),
                "loss": r.progress.as_ref().map(|p| p.loss),
                "tokens_per_second": r.progress.as_ref().map(|p| p.tokens_per_second),
                "micro_batch": r.progress.as_ref().and_then(|p| p.micro_batch),
                "eta_seconds": if r.state == RunState::Running && !seen.stale(r) { eta(r) } else { None },
                "evals": evals,
            }),
        ));
    }
    let rows: Vec<RunRow> = runs.iter().map(|x| x.run.clone()).collect();
    let eta = if seen.coordinator_gone { None } else { isoflop_server::web::view::sweep_eta(&rows) };
    format!(
        "{:#}",
        json!({"sweep": sweep, "coordinator_running": !seen.coordinator_gone, "eta_seconds": eta, "runs": arr, "eval_jobs": jobs})
    )
}

/// `isoflop status`: the summary, a row per run, a row per evaluation job, and the final
/// table once a run succeeded.
pub fn status_table(sweep: &str, runs: &[RunResults], seen: &Seen) -> String {
    let mut t = Table::new(["run_id", "run", "state", "step", "loss", "tok/s", "micro", "ETA", "seen", "attempts", "note"]);
    let mut jobs = Table::new(["job_id", "evaluation", "state", "step", "scored", "attempts", "result", "note"]);
    for x in runs {
        let r = &x.run;
        let note = match r.failure_class {
            Some(c) => format!("{c}: {}", r.message),
            None => r.message.clone(),
        };
        if let Some(of) = &r.eval {
            let result = headline(x);
            jobs.row([
                r.run_id.clone(),
                r.name.clone(),
                r.state.to_string(),
                of.step.to_string(),
                r.progress.as_ref().map(|p| format!("{}/{}", p.step, p.total_steps)).unwrap_or_else(|| "-".into()),
                r.attempts.to_string(),
                result.unwrap_or_else(|| "-".into()),
                note,
            ]);
            continue;
        }
        let total = config(r).map(|c| c.recipe.steps).unwrap_or(0);
        t.row([
            r.run_id.clone(),
            r.name.clone(),
            if seen.stale(r) { format!("{} (stale)", r.state) } else { r.state.to_string() },
            format!("{}/{total}", r.progress.as_ref().map(|p| p.step).unwrap_or(0)),
            r.progress.as_ref().map(|p| format!("{:.4}", p.loss)).unwrap_or_else(|| "-".into()),
            r.progress.as_ref().map(|p| count(p.tokens_per_second as u64)).unwrap_or_else(|| "-".into()),
            r.progress.as_ref().and_then(|p| p.micro_batch).map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            if r.state == RunState::Running && !seen.stale(r) {
                eta(r).map(duration).unwrap_or_else(|| "-".into())
            } else {
                "-".into()
            },
            seen.heartbeat_age(r).map(|a| format!("{} ago", duration(a))).unwrap_or_else(|| "-".into()),
            r.attempts.to_string(),
            note,
        ]);
    }
    let rows: Vec<RunRow> = runs.iter().map(|x| x.run.clone()).collect();
    let eta = if rows.iter().any(|r| seen.stale(r)) { String::new() } else { sweep_eta(&rows) };
    let mut out = format!("{}{eta}\n{}", summary_line(sweep, &rows), t.render());
    let stale = rows.iter().filter(|r| seen.stale(r)).count();
    if stale > 0 {
        out.push_str(&format!(
            "warning: {stale} job(s) marked `stale` show as active but no coordinator holds this store (the `isoflop run` \
             or `serve` that ran them is gone; orphaned workers may still finish): `isoflop resume {sweep}` or `isoflop \
             run SPEC` recovers them\n"
        ));
    }
    if rows.iter().any(|r| !r.is_training()) {
        out.push('\n');
        out.push_str(&jobs.render());
    }
    if rows.iter().any(|r| r.is_training() && r.state == RunState::Succeeded) {
        out.push('\n');
        out.push_str(&final_table(runs));
    }
    out
}

/// `isoflop sweeps`: every sweep, newest first, with its counts, training compute done of
/// planned, start, end and how long it took (so far).
pub fn sweeps_table(sweeps: &[isoflop_proto::v1::SweepStatus], now_ms: i64) -> String {
    let mut t = Table::new([
        "sweep",
        "runs",
        "evals",
        "done",
        "running",
        "queued",
        "failed",
        "cancelled",
        "FLOPs done",
        "planned",
        "started",
        "ended",
        "took",
    ]);
    for s in sweeps {
        let pct = if s.flops_planned > 0.0 { 100.0 * s.flops_done / s.flops_planned } else { 0.0 };
        let end = if s.ended_unix_millis > 0 { s.ended_unix_millis } else { now_ms };
        t.row([
            s.sweep.clone(),
            s.runs.to_string(),
            s.evals.to_string(),
            format!("{}/{}", s.succeeded, s.total),
            s.active.to_string(),
            s.queued.to_string(),
            s.failed.to_string(),
            s.cancelled.to_string(),
            format!("{:.2e} ({pct:.0}%)", s.flops_done),
            format!("{:.2e}", s.flops_planned),
            crate::render::table::utc(s.created_unix_millis),
            crate::render::table::utc(s.ended_unix_millis),
            format!(
                "{}{}",
                duration((end - s.created_unix_millis).max(0) as f64 / 1000.0),
                if s.ended_unix_millis > 0 { "" } else { " so far" }
            ),
        ]);
    }
    let mut out = t.render();
    out.push_str(&format!(
        "{} sweep(s); FLOPs: training compute in each sweep's budget convention (finished runs whole, running ones by their steps)\n",
        sweeps.len()
    ));
    out
}

/// `isoflop sweeps --format json`.
pub fn sweeps_json(sweeps: &[isoflop_proto::v1::SweepStatus]) -> String {
    let rows: Vec<serde_json::Value> = sweeps
        .iter()
        .map(|s| {
            json!({
                "sweep": s.sweep,
                "jobs": s.total,
                "runs": s.runs,
                "evals": s.evals,
                "succeeded": s.succeeded,
                "active": s.active,
                "queued": s.queued,
                "failed": s.failed,
                "cancelled": s.cancelled,
                "flops_planned": s.flops_planned,
                "flops_done": s.flops_done,
                "started_ms": s.created_unix_millis,
                "ended_ms": (s.ended_unix_millis > 0).then_some(s.ended_unix_millis),
            })
        })
        .collect();
    format!("{:#}", json!({"sweeps": rows}))
}

/// The columns of `isoflop curves --format csv`, one row per progress point.
pub const CURVE_COLUMNS: [&str; 12] = [
    "attempt",
    "step",
    "total_steps",
    "tokens_seen",
    "loss",
    "lr",
    "grad_norm",
    "tokens_per_second",
    "mfu",
    "elapsed_seconds",
    "micro_batch",
    "at_ms",
];

/// `isoflop curves`: a run's progress points, oldest first (every attempt: a resumed attempt
/// repeats no step it had reported before its checkpoint, but may repeat the steps after it).
pub fn curves(r: &isoflop_proto::v1::GetRunProgressResponse, format: crate::args::CurveFormat) -> String {
    let rows: Vec<(u64, i64, isoflop_proto::v1::Progress)> =
        r.points.iter().map(|x| (x.attempt, x.at_unix_millis, x.progress.unwrap_or_default())).collect();
    match format {
        crate::args::CurveFormat::Json => {
            let points: Vec<serde_json::Value> = rows
                .iter()
                .map(|(attempt, at, p)| {
                    json!({
                        "attempt": attempt, "step": p.step, "total_steps": p.total_steps, "tokens_seen": p.tokens_seen,
                        "loss": p.loss, "lr": p.lr, "grad_norm": p.grad_norm, "tokens_per_second": p.tokens_per_second,
                        "mfu": p.mfu, "elapsed_seconds": p.elapsed_seconds, "micro_batch": p.micro_batch, "at_ms": at,
                    })
                })
                .collect();
            format!("{:#}\n", json!({"run_id": r.run_id, "name": r.name, "points": points}))
        }
        crate::args::CurveFormat::Csv => {
            let mut out = CURVE_COLUMNS.join(",");
            out.push('\n');
            for (attempt, at, p) in &rows {
                out.push_str(&format!(
                    "{attempt},{},{},{},{},{},{},{},{},{},{},{at}\n",
                    p.step,
                    p.total_steps,
                    p.tokens_seen,
                    p.loss,
                    p.lr,
                    p.grad_norm,
                    p.tokens_per_second,
                    p.mfu,
                    p.elapsed_seconds,
                    p.micro_batch.map(|m| m.to_string()).unwrap_or_default()
                ));
            }
            out
        }
    }
}

/// `isoflop events RUN`: a table (time, attempt, from, to, class, reason) or JSON.
pub fn events(r: &isoflop_proto::v1::GetRunEventsResponse, format: crate::args::Format) -> String {
    use isoflop_proto::convert::{failure_class, run_state};
    let state = |v: i32| run_state(v).map(|s| s.as_str()).unwrap_or("unknown");
    let class = |v: i32| failure_class(v).map(|c| c.as_str());
    match format {
        crate::args::Format::Json => {
            let events: Vec<serde_json::Value> = r
                .events
                .iter()
                .map(|e| {
                    json!({
                        "id": e.id, "attempt": (e.attempt > 0).then_some(e.attempt), "at_ms": e.at_unix_millis,
                        "from": state(e.from), "to": state(e.to), "failure_class": class(e.failure_class), "message": e.message,
                    })
                })
                .collect();
            format!("{:#}\n", json!({"run_id": r.run_id, "name": r.name, "events": events}))
        }
        crate::args::Format::Table => {
            let mut t = Table::new(["time", "attempt", "from", "to", "class", "reason"]);
            for e in &r.events {
                t.row([
                    crate::render::table::utc(e.at_unix_millis),
                    if e.attempt > 0 { e.attempt.to_string() } else { "-".into() },
                    state(e.from).to_string(),
                    state(e.to).to_string(),
                    class(e.failure_class).unwrap_or("-").to_string(),
                    e.message.clone(),
                ]);
            }
            format!("{} ({})\n{}", r.name, r.run_id, t.render())
        }
    }
}
