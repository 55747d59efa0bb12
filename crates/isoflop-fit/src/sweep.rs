//! The long table of a sweep in an isoflop store (feature `store`): every succeeded run on
//! every eval distribution, plus `all`, the token-weighted loss over the distributions.

use crate::table::DEFAULT_DISTRIBUTION;
use crate::{FitError, Point, Table};
use isoflop_core::choice::ItemMetrics;
use isoflop_core::{FailureClass, RunConfig, RunState, flops};
use isoflop_store::{Store, StoreError};

/// Why a sweep's table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SweepTableError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run {run}: stored configuration is not readable: {source}")]
    Config { run: String, source: serde_json::Error },
    #[error("sweep `{0}` has no succeeded run with eval results yet")]
    Empty(String),
    #[error("sweep `{sweep}` has no succeeded evaluation of task `{task}` (its tasks: {have})")]
    NoTask { sweep: String, task: String, have: String },
    #[error("metric `{metric}` of task `{task}`: expected one of {valid}")]
    Metric { task: String, metric: String, valid: String },
    #[error(transparent)]
    Table(#[from] FitError),
}

/// The points of a sweep, and a note for every run left out (diverged, failed, unfinished).
/// Diverged runs are never included.
pub fn table_from_store(store: &dyn Store, sweep: &str) -> Result<(Table, Vec<String>), SweepTableError> {
    let mut points = Vec::new();
    let mut notes = Vec::new();
    for r in store.sweep_runs(sweep)?.into_iter().filter(|r| r.is_training()) {
        if r.state != RunState::Succeeded {
            let why = match r.failure_class {
                Some(FailureClass::Diverged) => "diverged".to_string(),
                _ => r.state.to_string(),
            };
            notes.push(format!("run {} ({}) left out: {why}", r.name, r.run_id));
            continue;
        }
        let c: RunConfig =
            serde_json::from_str(&r.config_json).map_err(|source| SweepTableError::Config { run: r.run_id.clone(), source })?;
        let params = flops::params(&c.model) as f64;
        let tokens = c.tokens() as f64;
        let evals = store.evals(&r.run_id)?;
        let point = |distribution: &str, loss: f64| Point {
            run: r.run_id.clone(),
            params,
            tokens,
            loss,
            budget: r.budget,
            flops: r.budget,
            distribution: distribution.to_string(),
        };
        for e in &evals {
            points.push(point(&e.distribution, e.loss));
        }
        let weight: f64 = evals.iter().map(|e| e.tokens as f64).sum();
        if weight > 0.0 {
            points.push(point(DEFAULT_DISTRIBUTION, evals.iter().map(|e| e.loss * e.tokens as f64).sum::<f64>() / weight));
        }
    }
    if points.is_empty() {
        return Err(SweepTableError::Empty(sweep.into()));
    }
    Ok((Table::from_points(points)?, notes))
}

/// An error metric of a task: the stored metric it is read from and how the error follows from
/// it (the same map on a subset's mean and on each question, since every map is affine).
#[derive(Clone, Copy)]
struct ErrorMetric {
    stored: &'static str,
    error: fn(f64) -> f64,
}

fn task_metric(family: &str, metric: &str) -> Option<ErrorMetric> {
    use isoflop_core::eval::metric as m;
    let same = |stored| Some(ErrorMetric { stored, error: |v| v });
    let one_minus = |stored| Some(ErrorMetric { stored, error: |v| 1.0 - v });
    match (family, metric) {
        ("text", "loss") => same(m::LOSS),
        ("text", "bpb") | ("multiple_choice", "bpb") => same(m::BPB),
        ("multiple_choice", "nll") => Some(ErrorMetric { stored: m::LOGPROB, error: |v| -v }),
        ("multiple_choice", "error") => one_minus(m::ACC),
        ("multiple_choice", "error_norm") => one_minus(m::ACC_NORM),
        ("multiple_choice", "prob_error") => one_minus(m::CHOICE_PROB_NORM),
        _ => None,
    }
}

/// The metrics [`table_from_task`] takes for a task family, the default first.
pub fn task_metrics(family: &str) -> &'static [&'static str] {
    match family {
        "text" => &["loss", "bpb"],
        _ => &["bpb", "error", "error_norm", "prob_error", "nll"],
    }
}

/// The points of a sweep on one evaluation task: every subset (distribution, subject, group,
/// `all`) of the task's job on each succeeded run's latest evaluated checkpoint, as the error
/// `metric` (default: `loss` for text, the gold answer's `bpb` for multiple choice; `error` is
/// 1 - acc, `error_norm` 1 - acc_norm, `prob_error` 1 - choice_prob_norm, `nll` -logprob).
pub fn table_from_task(
    store: &dyn Store,
    sweep: &str,
    task: &str,
    metric: Option<&str>,
) -> Result<(Table, Vec<String>), SweepTableError> {
    let jobs = store.sweep_runs(sweep)?;
    let mut tasks: Vec<&str> = jobs.iter().filter_map(|j| j.eval.as_ref().map(|e| e.task.as_str())).collect();
    tasks.sort_unstable();
    tasks.dedup();
    let no_task = || SweepTableError::NoTask { sweep: sweep.into(), task: task.into(), have: tasks.join(", ") };
    let family =
        jobs.iter().find_map(|j| j.eval.as_ref().filter(|e| e.task == task).map(|e| e.family.clone())).ok_or_else(no_task)?;
    let metric = metric.unwrap_or(task_metrics(&family)[0]);
    let em = task_metric(&family, metric).ok_or_else(|| SweepTableError::Metric {
        task: task.into(),
        metric: metric.into(),
        valid: task_metrics(&family).join(", "),
    })?;
    let mut points = Vec::new();
    let mut notes = Vec::new();
    let mut questions = crate::bootstrap::Questions { all: isoflop_core::choice::ALL.into(), ..Default::default() };
    let mut per_item = family == "multiple_choice";
    for r in jobs.iter().filter(|r| r.is_training()) {
        if r.state != RunState::Succeeded {
            notes.push(format!("run {} ({}) left out: {}", r.name, r.run_id, r.state));
            continue;
        }
        let job = jobs
            .iter()
            .filter(|j| j.state == RunState::Succeeded)
            .filter(|j| j.eval.as_ref().is_some_and(|e| e.parent == r.run_id && e.task == task))
            .max_by_key(|j| j.eval.as_ref().map(|e| e.step));
        let Some(job) = job else {
            notes.push(format!("run {} ({}) left out: task `{task}` not evaluated yet", r.name, r.run_id));
            continue;
        };
        let c: RunConfig =
            serde_json::from_str(&r.config_json).map_err(|source| SweepTableError::Config { run: r.run_id.clone(), source })?;
        if per_item {
            // Every run's job scored the same compiled items (its task's digest is the same);
            // a run whose rows differ in number or subsets turns question resampling off.
            let items = store.eval_items(&job.run_id)?;
            let subsets: Vec<String> = items.iter().map(|i| i.subset.clone()).collect();
            if items.is_empty() || (!questions.subset_of.is_empty() && questions.subset_of != subsets) {
                per_item = false;
            } else {
                questions.subset_of = subsets;
                let k = ItemMetrics::NAMES.iter().position(|n| *n == em.stored).expect("a per-item metric");
                let errors = items.iter().map(|i| (em.error)(i.metrics().values()[k])).collect();
                questions.errors.insert(r.run_id.clone(), errors);
            }
            if questions.groups.is_empty()
                && let Ok(cfg) = serde_json::from_str::<isoflop_core::EvalJobConfig>(&job.config_json)
                && let isoflop_core::TaskKind::MultipleChoice(t) = cfg.task.kind
            {
                questions.groups = t.groups.into_iter().map(|g| (g.name, g.subsets)).collect();
            }
        }
        for m in store.eval_results(&job.run_id)?.into_iter().filter(|m| m.metric == em.stored) {
            let value = (em.error)(m.value);
            points.push(Point {
                run: r.run_id.clone(),
                params: flops::params(&c.model) as f64,
                tokens: c.tokens() as f64,
                loss: value,
                budget: r.budget,
                flops: r.budget,
                distribution: m.subset,
            });
        }
    }
    if points.is_empty() {
        return Err(no_task());
    }
    let mut table = Table::from_points(points)?;
    if per_item && !questions.errors.is_empty() {
        table.questions = Some(questions);
    }
    Ok((table, notes))
}
