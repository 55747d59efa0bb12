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

/// The error `metric` of a task family in words, for tables and axes.
pub fn metric_label(family: &str, metric: &str) -> &'static str {
    match (family, metric) {
        ("text", "loss") => "loss (nats/token)",
        ("text", "bpb") => "bits per byte",
        ("multiple_choice", "bpb") => "bits per byte of the gold answer",
        ("multiple_choice", "nll") => "-log p(gold answer) (nats)",
        ("multiple_choice", "error") => "error, 1 - acc",
        ("multiple_choice", "error_norm") => "error, 1 - acc_norm",
        ("multiple_choice", "prob_error") => "1 - p(gold | choices)",
        _ => "error",
    }
}

/// The metrics [`table_from_task`] takes for a task family, the default first.
pub fn task_metrics(family: &str) -> &'static [&'static str] {
    match family {
        "text" => &["bpb", "loss"],
        _ => &["bpb", "error", "error_norm", "prob_error", "nll"],
    }
}

/// The points of a sweep on one evaluation task: every subset (distribution, subject, group,
/// `all`) of the task's job on each succeeded run's latest evaluated checkpoint, as the error
/// `metric` (default: `bpb` for text and the gold answer's `bpb` for multiple choice; `error` is
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
            // The latest step; of equal steps, the newest submitted (the last in sweep order).
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

/// The distribution added to a task's table as the frontier: the sweep's held-out text loss
/// (`all` of the `heldout` task), whose IsoFLOP minima pick each budget's compute-optimal models.
pub const FRONTIER: &str = isoflop_core::eval::HELDOUT_TASK;

/// Where a distribution's compute-optimal error is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frontier {
    /// At the distribution's own IsoFLOP minimum (text losses have one).
    Own,
    /// At the minimum of the held-out text loss: the models the sweep would pick (the default
    /// for multiple choice, whose errors on small models seldom have a minimum of their own).
    Heldout,
}

/// One evaluation task of a sweep, as a report describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskInfo {
    pub name: String,
    /// `text` or `multiple_choice`.
    pub family: String,
    /// Its subsets in the task's order (text: the distributions).
    pub subsets: Vec<String>,
    /// Groups of subsets (multiple choice).
    pub groups: Vec<(String, Vec<String>)>,
    /// Its settings in words: items or tokens scored, tokens skipped.
    pub settings: String,
}

impl TaskInfo {
    /// The default error metric: bits per byte (of the gold answer for multiple choice), and
    /// the loss in nats per token for the held-out text, as the training loss is.
    pub fn default_metric(&self) -> &'static str {
        if self.name == FRONTIER { "loss" } else { task_metrics(&self.family)[0] }
    }

    /// The default frontier: the held-out loss for multiple choice, each distribution's own
    /// minimum for text.
    pub fn default_frontier(&self) -> Frontier {
        if self.family == "multiple_choice" && self.name != FRONTIER { Frontier::Heldout } else { Frontier::Own }
    }

    /// The default baseline: `all` when the task has one (multiple choice; the held-out text),
    /// else its first distribution (American English for the varieties of English).
    pub fn default_baseline(&self) -> String {
        if self.family == "multiple_choice" || self.name == FRONTIER {
            isoflop_core::choice::ALL.to_string()
        } else {
            self.subsets.first().cloned().unwrap_or_else(|| isoflop_core::choice::ALL.to_string())
        }
    }

    /// The distributions a report section shows: the groups and `all` when the task has
    /// groups (MMLU's four categories rather than its 57 subjects), else every subset (and
    /// `all` where there is one). `isoflop fit --task` shows every subset.
    pub fn shown(&self) -> Vec<String> {
        let all = isoflop_core::choice::ALL.to_string();
        let mut v: Vec<String> =
            if self.groups.is_empty() { self.subsets.clone() } else { self.groups.iter().map(|g| g.0.clone()).collect() };
        if self.family == "multiple_choice" || self.name == FRONTIER {
            v.push(all);
        }
        v
    }
}

/// The sweep's evaluation tasks with a succeeded job, the held-out text first, then by name;
/// each described by its newest submitted job.
pub fn sweep_tasks(store: &dyn Store, sweep: &str) -> Result<Vec<TaskInfo>, SweepTableError> {
    let jobs = store.sweep_runs(sweep)?;
    let mut out: Vec<TaskInfo> = Vec::new();
    // The newest submitted job of each task describes it, as the table reads the newest
    // (a task whose settings changed keeps its older jobs in the sweep).
    for j in jobs.iter().rev().filter(|j| j.state == RunState::Succeeded) {
        let Some(e) = &j.eval else { continue };
        if out.iter().any(|t| t.name == e.task) {
            continue;
        }
        let Ok(cfg) = serde_json::from_str::<isoflop_core::EvalJobConfig>(&j.config_json) else { continue };
        let info = match cfg.task.kind {
            isoflop_core::TaskKind::Text(t) => TaskInfo {
                name: e.task.clone(),
                family: e.family.clone(),
                subsets: t.distributions.iter().map(|d| d.name.clone()).collect(),
                groups: Vec::new(),
                settings: if t.skip_tokens > 0 {
                    format!("{} tokens per distribution, the first {} of each document not scored", t.tokens, t.skip_tokens)
                } else {
                    format!("{} tokens per distribution", t.tokens)
                },
            },
            isoflop_core::TaskKind::MultipleChoice(t) => {
                let groups: Vec<(String, Vec<String>)> = t.groups.into_iter().map(|g| (g.name, g.subsets)).collect();
                let mut subsets: Vec<String> = Vec::new();
                for s in store.eval_items(&j.run_id)?.into_iter().map(|i| i.subset) {
                    if subsets.last() != Some(&s) && !subsets.contains(&s) {
                        subsets.push(s);
                    }
                }
                TaskInfo {
                    name: e.task.clone(),
                    family: e.family.clone(),
                    settings: format!(
                        "{} questions in {} subsets{}",
                        t.count,
                        subsets.len(),
                        if groups.is_empty() { String::new() } else { format!(", {} groups", groups.len()) }
                    ),
                    subsets,
                    groups,
                }
            }
        };
        out.push(info);
    }
    out.sort_by(|a, b| (a.name != FRONTIER, &a.name).cmp(&(b.name != FRONTIER, &b.name)));
    Ok(out)
}

/// How a report section (or `isoflop fit --task`) reads a task.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SectionOptions {
    /// The error metric (default: [`TaskInfo::default_metric`]).
    pub metric: Option<String>,
    /// The baseline of the relative laws (default: [`TaskInfo::default_baseline`]).
    pub baseline: Option<String>,
    /// Where compute-optimal errors are read (default: [`TaskInfo::default_frontier`]).
    pub frontier: Option<Frontier>,
    /// Keep every subset, not only [`TaskInfo::shown`].
    pub every_subset: bool,
}

/// One task of a sweep ready to fit: its table (with the frontier's points when the errors are
/// read at the held-out minimum), and the fit options that go with it. It travels as JSON from
/// a coordinator to `isoflop fit --coordinator`, which fits it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Section {
    pub task: TaskInfo,
    pub metric: String,
    pub baseline: String,
    pub frontier: Frontier,
    pub table: Table,
    pub options: crate::FitOptions,
    /// Runs left out, and why.
    pub notes: Vec<String>,
}

impl Section {
    /// Fits the section's table with its options.
    pub fn fit(&self) -> Result<crate::FitReport, FitError> {
        let mut r = crate::fit_all(&self.table, &self.options)?;
        r.notes.extend(self.notes.iter().cloned());
        Ok(r)
    }

    /// The error in words.
    pub fn metric_label(&self) -> &'static str {
        metric_label(&self.task.family, &self.metric)
    }

    /// One line saying what the section fits.
    pub fn describe(&self) -> String {
        let at = match self.frontier {
            Frontier::Own => "each distribution's own IsoFLOP minimum".to_string(),
            Frontier::Heldout => "the compute-optimal sizes of the held-out text loss".to_string(),
        };
        format!(
            "task `{}` ({}, {}): E(F) is the {} at {at}; G(F) against `{}`",
            self.task.name,
            self.task.family.replace('_', " "),
            self.task.settings,
            self.metric_label(),
            self.baseline
        )
    }
}

/// Builds the section of `task` (the held-out text when it is [`FRONTIER`]): its table and
/// options, from `base` (bootstrap, seed, IsoFLOP settings) and `so`. The parametric fit is
/// only run for the held-out text.
pub fn section(
    store: &dyn Store,
    sweep: &str,
    task: &TaskInfo,
    base: &crate::FitOptions,
    so: &SectionOptions,
) -> Result<Section, SweepTableError> {
    let metric = so.metric.clone().unwrap_or_else(|| task.default_metric().to_string());
    let frontier = so.frontier.unwrap_or(task.default_frontier());
    let mut options = base.clone();
    let (mut table, mut notes) = if task.name == FRONTIER && metric == "loss" {
        table_from_store(store, sweep)?
    } else {
        options.run_parametric = false;
        table_from_task(store, sweep, &task.name, Some(&metric))?
    };
    if !so.every_subset {
        let shown = task.shown();
        table.points.retain(|p| shown.contains(&p.distribution));
    }
    if frontier == Frontier::Heldout && task.name != FRONTIER {
        if table.points.iter().any(|p| p.distribution == FRONTIER) {
            return Err(SweepTableError::Table(FitError::InvalidOption(format!(
                "task `{}` has a subset named `{FRONTIER}`, the name of the frontier: use `--frontier own`",
                task.name
            ))));
        }
        let held = match table_from_store(store, sweep) {
            Ok((t, _)) => t,
            Err(SweepTableError::Empty(_)) => Table::default(),
            Err(e) => return Err(e),
        };
        let runs: std::collections::BTreeSet<String> = table.points.iter().map(|p| p.run.clone()).collect();
        let before = table.points.len();
        table.points.extend(
            held.points.into_iter().filter(|p| p.distribution == DEFAULT_DISTRIBUTION && runs.contains(&p.run)).map(|mut p| {
                p.distribution = FRONTIER.to_string();
                p
            }),
        );
        if table.points.len() == before {
            notes.push(format!(
                "no held-out text loss for the runs of task `{}`: each distribution at its own minimum",
                task.name
            ));
        } else {
            options.isoflop.frontier = Some(FRONTIER.to_string());
        }
    }
    let frontier = if options.isoflop.frontier.is_some() { Frontier::Heldout } else { Frontier::Own };
    let baseline = so.baseline.clone().unwrap_or_else(|| task.default_baseline());
    options.baseline = Some(baseline.clone());
    options.primary = Some(if table.points.iter().any(|p| p.distribution == DEFAULT_DISTRIBUTION) {
        DEFAULT_DISTRIBUTION.to_string()
    } else {
        baseline.clone()
    });
    Ok(Section { task: task.clone(), metric, baseline, frontier, table, options, notes })
}

/// The held-out text of a sweep as a task, whether or not its jobs are listed.
pub fn heldout_info(tasks: &[TaskInfo]) -> TaskInfo {
    tasks.iter().find(|t| t.name == FRONTIER).cloned().unwrap_or(TaskInfo {
        name: FRONTIER.into(),
        family: "text".into(),
        subsets: Vec::new(),
        groups: Vec::new(),
        settings: String::new(),
    })
}

/// The task `name` of a sweep (`None`: the held-out text).
pub fn find_task(store: &dyn Store, sweep: &str, name: Option<&str>) -> Result<TaskInfo, SweepTableError> {
    let tasks = sweep_tasks(store, sweep)?;
    match name {
        None => Ok(heldout_info(&tasks)),
        Some(n) => tasks.iter().find(|t| t.name == n).cloned().ok_or_else(|| {
            let mut have: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
            have.sort_unstable();
            SweepTableError::NoTask { sweep: sweep.into(), task: n.into(), have: have.join(", ") }
        }),
    }
}

/// What `isoflop fit` (one task: `task`, or the held-out text) or `isoflop report` (`report`:
/// the held-out text and every task, unless `task` names one) fits of a sweep: each task with
/// its section, or why it has none. In a report without `task`, `so.baseline` concerns the
/// held-out text only. The same on a local store and on a coordinator's.
pub type Sections = Vec<(TaskInfo, Result<Section, String>)>;

/// See [`Sections`].
pub fn sections(
    store: &dyn Store,
    sweep: &str,
    task: Option<&str>,
    base: &crate::FitOptions,
    so: &SectionOptions,
    report: bool,
) -> Result<Sections, SweepTableError> {
    let tasks = match (task, report) {
        (Some(t), _) => vec![find_task(store, sweep, Some(t))?],
        (None, false) => vec![find_task(store, sweep, None)?],
        (None, true) => {
            let all = sweep_tasks(store, sweep)?;
            let mut v = vec![heldout_info(&all)];
            v.extend(all.into_iter().filter(|t| t.name != FRONTIER));
            v
        }
    };
    let mut out = Vec::new();
    for t in tasks {
        let mut o = so.clone();
        if report && task.is_none() && t.name != FRONTIER {
            o.baseline = None;
        }
        let s = section(store, sweep, &t, base, &o).map_err(|e| e.to_string());
        out.push((t, s));
    }
    Ok(out)
}
