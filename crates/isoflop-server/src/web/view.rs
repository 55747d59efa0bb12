//! What the page, the JSON API and the CLI's summary line show of a sweep and its jobs, from
//! store rows: pure functions, so that every surface shows the same numbers (one ETA).

use isoflop_core::{RunConfig, RunState};
use isoflop_store::{ProgressPoint, RunRow};
use serde::Serialize;
use std::collections::BTreeMap;

/// A sweep at a glance: its state counts, progress in jobs and FLOPs, and when it ends.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SweepSummary {
    pub name: String,
    pub created_ms: i64,
    /// Jobs (training runs and evaluation jobs) by state name.
    pub states: BTreeMap<&'static str, usize>,
    pub jobs: usize,
    pub runs: usize,
    pub eval_jobs: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub active: usize,
    pub waiting: usize,
    /// Training FLOPs of the sweep's runs as planned, and done so far (a running run counts its
    /// steps done).
    pub flops_planned: f64,
    pub flops_done: f64,
    /// Training tokens per second of the running runs together.
    pub tokens_per_second: f64,
    /// [`sweep_eta`]: `None` while nothing trains.
    pub eta_seconds: Option<f64>,
}

/// A job as a table row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    pub run_id: String,
    pub name: String,
    /// `train` or `eval`.
    pub kind: &'static str,
    pub corpus: String,
    pub budget: f64,
    pub params: Option<u64>,
    pub tokens: Option<u64>,
    pub state: &'static str,
    pub failure_class: Option<&'static str>,
    /// The state's reason: a failure, the scheduler's reason for a blocked run, a note.
    pub message: String,
    pub attempts: u64,
    pub retries: u64,
    pub step: u64,
    pub total_steps: u64,
    /// Done, 0 to 1.
    pub fraction: f64,
    pub loss: Option<f64>,
    pub best_loss: Option<f64>,
    pub tokens_seen: u64,
    pub tokens_per_second: Option<f64>,
    pub mfu: Option<f64>,
    pub elapsed_seconds: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub updated_ms: i64,
    /// When its worker last reported.
    pub reported_ms: Option<i64>,
    /// An evaluation job's run, checkpoint step and task.
    pub parent: Option<String>,
    pub eval_step: Option<u64>,
    pub task: Option<String>,
}

fn config(r: &RunRow) -> Option<RunConfig> {
    serde_json::from_str(&r.config_json).ok()
}

/// Seconds left for a running training run, from its newest progress point.
pub fn run_eta(r: &RunRow) -> Option<f64> {
    let p = r.progress.as_ref().filter(|_| r.state == RunState::Running && r.is_training())?;
    let c = config(r)?;
    (p.tokens_per_second > 0.0)
        .then(|| p.total_steps.saturating_sub(p.step) as f64 * c.tokens_per_step() as f64 / p.tokens_per_second)
}

/// Seconds until a sweep's training is done: the tokens its unfinished runs have left, at the
/// rate its running runs train together now. Evaluation jobs are short beside training and
/// are not counted. `None` while nothing trains (nothing to measure a rate by) or when
/// nothing is left.
pub fn sweep_eta(runs: &[RunRow]) -> Option<f64> {
    let (mut left, mut rate) = (0f64, 0f64);
    for r in runs.iter().filter(|r| r.is_training() && !r.state.is_terminal()) {
        let Some(c) = config(r) else { continue };
        let done = r.progress.as_ref().map_or(0, |p| p.step.min(c.recipe.steps));
        left += (c.recipe.steps - done) as f64 * c.tokens_per_step() as f64;
        if r.state == RunState::Running {
            rate += r.progress.as_ref().map_or(0.0, |p| p.tokens_per_second.max(0.0));
        }
    }
    (left > 0.0 && rate > 0.0).then(|| left / rate)
}

/// The summary of a sweep's jobs.
pub fn summarize(name: &str, created_ms: i64, runs: &[RunRow]) -> SweepSummary {
    let mut states: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut planned, mut done, mut rate) = (0f64, 0f64, 0f64);
    for r in runs {
        *states.entry(r.state.as_str()).or_default() += 1;
        if !r.is_training() {
            continue;
        }
        planned += r.budget;
        let fraction = match (r.state, config(r), &r.progress) {
            (RunState::Succeeded, _, _) => 1.0,
            (_, Some(c), Some(p)) if c.recipe.steps > 0 => (p.step as f64 / c.recipe.steps as f64).min(1.0),
            _ => 0.0,
        };
        done += r.budget * fraction;
        if r.state == RunState::Running {
            rate += r.progress.as_ref().map_or(0.0, |p| p.tokens_per_second.max(0.0));
        }
    }
    let n = |s: RunState| runs.iter().filter(|r| r.state == s).count();
    SweepSummary {
        name: name.to_string(),
        created_ms,
        states,
        jobs: runs.len(),
        runs: runs.iter().filter(|r| r.is_training()).count(),
        eval_jobs: runs.iter().filter(|r| !r.is_training()).count(),
        succeeded: n(RunState::Succeeded),
        failed: n(RunState::Failed),
        active: runs.iter().filter(|r| r.state.is_active()).count(),
        waiting: n(RunState::Queued) + n(RunState::Blocked) + n(RunState::Planned),
        flops_planned: planned,
        flops_done: done,
        tokens_per_second: rate,
        eta_seconds: sweep_eta(runs),
    }
}

/// A job's row; `best_loss` from its progress history when the caller has it.
pub fn job_view(r: &RunRow, history: Option<&[ProgressPoint]>) -> JobView {
    let c = config(r);
    let p = r.progress.as_ref();
    let total_steps = match (&r.eval, &c, p) {
        (None, Some(c), _) => c.recipe.steps,
        (_, _, Some(p)) => p.total_steps,
        _ => 0,
    };
    let step = p.map_or(0, |p| p.step);
    let fraction = if r.state == RunState::Succeeded {
        1.0
    } else if total_steps > 0 {
        (step as f64 / total_steps as f64).min(1.0)
    } else {
        0.0
    };
    let training = r.is_training();
    JobView {
        run_id: r.run_id.clone(),
        name: r.name.clone(),
        kind: if training { "train" } else { "eval" },
        corpus: r.corpus.clone(),
        budget: r.budget,
        params: c.as_ref().filter(|_| training).map(|c| isoflop_core::flops::params(&c.model)),
        tokens: c.as_ref().filter(|_| training).map(|c| c.tokens()),
        state: r.state.as_str(),
        failure_class: r.failure_class.filter(|_| r.state != RunState::Succeeded).map(|f| f.as_str()),
        message: r.message.clone(),
        attempts: r.attempts,
        retries: r.retries_used,
        step,
        total_steps,
        fraction,
        loss: p.filter(|_| training).map(|p| p.loss),
        best_loss: history
            .filter(|_| training)
            .and_then(|h| h.iter().map(|p| p.loss).filter(|l| l.is_finite()).min_by(|a, b| a.total_cmp(b))),
        tokens_seen: p.map_or(0, |p| p.tokens_seen),
        tokens_per_second: p.filter(|_| training && r.state == RunState::Running).map(|p| p.tokens_per_second),
        mfu: p.filter(|p| training && p.mfu > 0.0).map(|p| p.mfu),
        elapsed_seconds: p.map(|p| p.elapsed_seconds),
        eta_seconds: run_eta(r),
        updated_ms: r.updated_ms,
        reported_ms: p.map(|p| p.at_ms),
        parent: r.eval.as_ref().map(|e| e.parent.clone()),
        eval_step: r.eval.as_ref().map(|e| e.step),
        task: r.eval.as_ref().map(|e| e.task.clone()),
    }
}

/// A curve point: training tokens seen, loss, learning rate, step.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CurvePoint(pub u64, pub f64, pub f64, pub u64);

/// A run's training curve from its progress history: one point per step, from the newest
/// attempt that reported it (a resumed attempt repeats the steps after its checkpoint), at most
/// about `max_points`, evenly spaced in log step (dense early, where the loss moves fast;
/// the first and the last point always kept).
pub fn curve(history: &[ProgressPoint], max_points: usize) -> Vec<CurvePoint> {
    let mut by_step: BTreeMap<u64, &ProgressPoint> = BTreeMap::new();
    for p in history {
        match by_step.get(&p.step) {
            Some(q) if q.attempt > p.attempt => {}
            _ => {
                by_step.insert(p.step, p);
            }
        }
    }
    let points: Vec<CurvePoint> =
        by_step.values().map(|p| CurvePoint(p.tokens_seen, p.loss, p.lr, p.step)).filter(|c| c.1.is_finite()).collect();
    downsample(points, max_points)
}

/// At most about `max_points` of `points` (sorted by step), evenly in log step: the last point
/// of each bucket of `ln(1 + step)`, and the first point. Early buckets hold no step at all
/// (steps are integers), so the buckets are made finer until about `max_points` are kept.
pub fn downsample(points: Vec<CurvePoint>, max_points: usize) -> Vec<CurvePoint> {
    if points.len() <= max_points.max(2) {
        return points;
    }
    let mut buckets = max_points as f64;
    let mut out = by_buckets(&points, buckets);
    for _ in 0..6 {
        if out.len() * 10 >= max_points * 9 {
            break;
        }
        buckets *= max_points as f64 / out.len() as f64;
        let finer = by_buckets(&points, buckets);
        if finer.len() > max_points + 1 {
            break;
        }
        out = finer;
    }
    out
}

fn by_buckets(points: &[CurvePoint], buckets: f64) -> Vec<CurvePoint> {
    let last = points.last().map_or(1, |p| p.3).max(1);
    let span = (1.0 + last as f64).ln();
    let bucket = |step: u64| ((1.0 + step as f64).ln() / span * (buckets - 1.0)).floor() as i64;
    let mut out: Vec<CurvePoint> = Vec::with_capacity(buckets as usize + 1);
    out.push(points[0]);
    // The bucket of the newest kept point, when that point may be replaced by a later one.
    let mut open = None;
    for p in &points[1..] {
        let b = bucket(p.3);
        match out.last_mut() {
            Some(l) if open == Some(b) => *l = *p,
            _ => {
                out.push(*p);
                open = Some(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(attempt: u64, step: u64, loss: f64) -> ProgressPoint {
        ProgressPoint {
            attempt,
            step,
            total_steps: 100_000,
            loss,
            lr: 1e-3,
            grad_norm: 1.0,
            tokens_seen: step * 10,
            tokens_per_second: 100.0,
            mfu: 0.0,
            elapsed_seconds: 1.0,
            at_ms: 0,
            micro_batch: None,
        }
    }

    #[test]
    fn a_curve_takes_the_newest_attempt_per_step_and_keeps_about_the_asked_points_in_log_step() {
        // Attempt 1 to step 30, attempt 2 resumed at 20 with other losses.
        let mut h: Vec<ProgressPoint> = (0..=30).map(|s| point(1, s, 10.0)).collect();
        h.extend((21..=40).map(|s| point(2, s, 5.0)));
        let c = curve(&h, 1000);
        assert_eq!(c.len(), 41);
        assert_eq!((c[25].1, c[20].1), (5.0, 10.0), "steps 21-30 from attempt 2");
        let long: Vec<ProgressPoint> = (1..=100_000).map(|s| point(1, s, 1.0 / s as f64)).collect();
        let d = curve(&long, 1000);
        assert!((900..=1001).contains(&d.len()), "{}", d.len());
        assert_eq!((d[0].3, d.last().unwrap().3), (1, 100_000), "first and last kept");
        assert!(d.windows(2).all(|w| w[0].3 < w[1].3), "in step order");
        // Evenly in log step: as many points in the first decade of steps as in the last.
        let decade = |lo: u64, hi: u64| d.iter().filter(|p| p.3 >= lo && p.3 < hi).count();
        let (early, late) = (decade(1_000, 10_000), decade(10_000, 100_000));
        assert!(early.abs_diff(late) * 10 <= late && (200..=350).contains(&late), "{early} {late}");
    }
}
