//! The planner: a validated [`SweepSpec`] plus resolved data becomes concrete runs.
//!
//! For each budget and corpus, each candidate width gets a depth and heads from the grid
//! rules; the batch is the power of two that reaches the budget in about `target_steps`
//! steps; the learning rate is `lr_constant * sqrt(B) / h`, halving `B` while it exceeds
//! `lr_max`; candidates with a batch under `min_batch` or whose achieved FLOPs miss the
//! budget by more than `flop_tolerance` are skipped. All arithmetic is f64.

use crate::config::{DataRef, EvalRef, Recipe, RunConfig, RunId};
use crate::eval::{EvalJobConfig, EvalTask, eval_steps};
use crate::flops;
use crate::spec::{SpecError, SweepSpec};
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use std::path::Path;

/// The data a sweep's runs read, resolved from the spec (digests known).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedData {
    pub tokenizer: Tokenizer,
    pub vocab_size: u64,
    /// Per corpus in the spec: its name and training shard.
    pub corpora: Vec<(String, EvalRef)>,
    /// The evaluation tasks of the sweep, their shards resolved.
    pub tasks: Vec<EvalTask>,
}

impl ResolvedData {
    /// Data identity for a spec whose corpora are all external (nothing local is read).
    /// `None` when some corpus needs a local manifest.
    pub fn external(spec: &SweepSpec) -> Option<ResolvedData> {
        let corpora = spec
            .data
            .corpora
            .iter()
            .map(|c| {
                let ext = c.external.as_ref()?;
                Some((c.name.clone(), EvalRef { name: c.name.clone(), path: String::new(), digest: format!("external:{ext}") }))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ResolvedData {
            tokenizer: spec.data.tokenizer,
            vocab_size: spec.model.vocab_size.unwrap_or(spec.data.tokenizer.vocab_size()),
            corpora,
            tasks: Vec::new(),
        })
    }
}

impl ResolvedData {
    /// Stand-in identities for a spec whose local data is not on this machine (a cluster
    /// spec whose shards live on the cluster): the grid and its accounting can be shown, but
    /// the run ids, which hash the data's digests, are not real and must not be shown.
    pub fn preview(spec: &SweepSpec) -> ResolvedData {
        let corpora = spec
            .data
            .corpora
            .iter()
            .map(|c| {
                let digest = match &c.external {
                    Some(ext) => format!("external:{ext}"),
                    None => format!("preview:{}", c.name),
                };
                (c.name.clone(), EvalRef { name: c.name.clone(), path: String::new(), digest })
            })
            .collect();
        ResolvedData {
            tokenizer: spec.data.tokenizer,
            vocab_size: spec.model.vocab_size.unwrap_or(spec.data.tokenizer.vocab_size()),
            corpora,
            tasks: Vec::new(),
        }
    }
}

/// One concrete run of a sweep, with its accounting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedRun {
    pub run_id: RunId,
    pub name: String,
    pub corpus: String,
    /// Nominal budget, in the sweep's convention.
    pub budget: f64,
    pub budget_convention: &'static str,
    pub hidden: u64,
    pub layers: u64,
    pub heads: u64,
    pub ffn_hidden: u64,
    pub batch: u64,
    pub seq_len: u64,
    pub steps: u64,
    pub tokens: u64,
    pub params: u64,
    pub non_embedding_params: u64,
    /// Forward FLOPs per token (`detailed` accounting).
    pub flops_per_token: f64,
    /// Achieved compute in the budget's convention.
    pub achieved_flops: f64,
    /// Training compute, `6 * params * tokens`.
    pub flops_6n: f64,
    /// Training compute, `3 * flops_per_token * tokens`.
    pub flops_detailed: f64,
    pub lr: f64,
    pub beta2: f64,
    #[serde(skip)]
    pub config: RunConfig,
}

/// Formats a budget as `1e+18` / `3e+18` / `2.5e+12` (the run-name convention).
pub fn budget_label(b: f64) -> String {
    let exp = b.abs().log10().floor() as i32;
    let mant = b / 10f64.powi(exp);
    let mant = (mant * 1e6).round() / 1e6;
    let (mant, exp) = if mant >= 10.0 { (mant / 10.0, exp + 1) } else { (mant, exp) };
    let m = if mant.fract() == 0.0 { format!("{}", mant as i64) } else { format!("{mant}") };
    format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// Why a spec plans no usable run: the spec key responsible and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PlanError {
    /// The spec key (`grid.heads.fixed`, `grid`, ...).
    pub key: String,
    pub message: String,
}

impl PlanError {
    /// The error as a [`SpecError`] of the spec file `file`.
    pub fn in_file(self, file: &Path) -> SpecError {
        SpecError::at(file, self.key, self.message)
    }
}

/// Plans every run of a sweep, in budget, corpus, width order. Every planned run's
/// configuration is checked as the trainer would check it ([`RunConfig::validate`]), so a run
/// no worker could train is refused here, naming the spec key that produced it; a spec that
/// plans no run at all is refused too.
pub fn plan(spec: &SweepSpec, data: &ResolvedData) -> Result<Vec<PlannedRun>, PlanError> {
    let g = &spec.grid;
    let m = &spec.model;
    let seq = m.seq_len;
    let mut runs = Vec::new();
    // Why candidates were left out, for a spec that plans nothing.
    let mut small_batch: Option<(f64, u64, u64)> = None;
    let mut off_budget: Option<(f64, u64, f64)> = None;
    let mut candidates = 0usize;
    for &budget in &spec.budgets {
        for (corpus, train) in &data.corpora {
            for h in g.widths(budget) {
                let shape = spec.shape_for(h, m.vocab_size.unwrap_or(data.vocab_size));
                let (layers, heads) = (shape.layers, shape.heads);
                let cost = spec.budget_convention.flops_per_token(&shape);
                let lr_of = |b: u64| g.lr_constant * (b as f64).sqrt() / h as f64;
                let (batch, lr) = match (g.fixed_batch, g.target_steps) {
                    (Some(b), _) => (b, lr_of(b).min(g.lr_max)),
                    (None, target) => {
                        let x = budget / (cost * seq as f64 * target.unwrap_or(1) as f64);
                        let mut batch: u64 = if x <= 1.0 { 1 } else { 2f64.powf(x.log2().ceil()) as u64 };
                        let mut lr = lr_of(batch);
                        while lr > g.lr_max && batch > 0 {
                            batch /= 2;
                            lr = lr_of(batch);
                        }
                        (batch, lr)
                    }
                };
                candidates += 1;
                if batch < g.min_batch {
                    small_batch.get_or_insert((budget, h, batch));
                    continue;
                }
                let steps = (budget / (cost * seq as f64 * batch as f64)).round() as u64;
                let achieved = cost * seq as f64 * batch as f64 * steps as f64;
                let off = (achieved - budget) / budget;
                if steps == 0 || off.abs() > g.flop_tolerance {
                    // The candidate nearest its budget says how far off the grid is.
                    let off = if steps == 0 { -1.0 } else { off };
                    if off_budget.is_none_or(|(_, _, o)| off.abs() < o.abs()) {
                        off_budget = Some((budget, h, off));
                    }
                    continue;
                }
                let tokens = batch * steps * seq;
                let r = &spec.recipe;
                let beta2 = r.beta2.for_batch(batch);
                let config = RunConfig {
                    model: shape.clone(),
                    recipe: Recipe {
                        batch,
                        steps,
                        lr,
                        warmup_frac: r.warmup_frac,
                        decay_frac: r.decay_frac,
                        min_lr_frac: r.min_lr_frac,
                        weight_decay: r.weight_decay,
                        beta1: r.beta1,
                        beta2,
                        eps: r.eps,
                        grad_clip: r.grad_clip,
                        cautious: r.cautious,
                        wd_schedule: r.wd_schedule,
                        decay_embeddings: r.decay_embeddings,
                        decay_norms: r.decay_norms,
                    },
                    data: DataRef { tokenizer: data.tokenizer, train: train.clone() },
                    seed: spec.seed,
                };
                config.validate().map_err(|e| PlanError {
                    key: spec.key_of(e.field),
                    message: format!("budget {} width {h}: {}", budget_label(budget), e.message),
                })?;
                let fpt = flops::forward_flops_per_token(&shape);
                let params = flops::params(&shape);
                runs.push(PlannedRun {
                    run_id: config.run_id(),
                    name: format!("isoflop-{}-d{h}-L{layers}-B{batch}-{corpus}", budget_label(budget)),
                    corpus: corpus.clone(),
                    budget,
                    budget_convention: spec.budget_convention.as_str(),
                    hidden: h,
                    layers,
                    heads,
                    ffn_hidden: shape.ffn_hidden,
                    batch,
                    seq_len: seq,
                    steps,
                    tokens,
                    params,
                    non_embedding_params: flops::non_embedding_params(&shape),
                    flops_per_token: fpt,
                    achieved_flops: achieved,
                    flops_6n: 6.0 * params as f64 * tokens as f64,
                    flops_detailed: 3.0 * fpt * tokens as f64,
                    lr,
                    beta2,
                    config,
                });
            }
        }
    }
    if runs.is_empty() {
        let mut why = Vec::new();
        if let Some((b, h, batch)) = small_batch {
            why.push(format!(
                "the batch is below grid.min_batch = {} (budget {} width {h}: batch {batch}, halved to keep lr under \
                 grid.lr_max = {})",
                g.min_batch,
                budget_label(b),
                g.lr_max
            ));
        }
        if let Some((b, h, off)) = off_budget {
            why.push(if off <= -1.0 {
                format!(
                    "a budget is too small for one step (budget {} width {h}: not one step of batch x seq_len tokens)",
                    budget_label(b)
                )
            } else {
                format!(
                    "a whole number of steps misses the budget by more than grid.flop_tolerance = {} (nearest: budget {} \
                     width {h}, {:+.1}%)",
                    g.flop_tolerance,
                    budget_label(b),
                    100.0 * off
                )
            });
        }
        return Err(PlanError {
            key: "grid".into(),
            message: format!(
                "no candidate fits any budget: of {candidates} candidates (budgets x corpora x widths), {}; widen the \
                 budgets or the widths, or relax those keys",
                if why.is_empty() { "none were tried".to_string() } else { why.join("; ") }
            ),
        });
    }
    Ok(runs)
}

/// One evaluation job of a sweep: a task on one checkpoint of one planned run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedEval {
    pub job_id: RunId,
    /// `RUN/TASK` for the final checkpoint, `RUN/TASK@STEP` for an earlier one.
    pub name: String,
    pub run_id: RunId,
    pub corpus: String,
    pub budget: f64,
    pub step: u64,
    pub config: EvalJobConfig,
}

/// The evaluation jobs of planned runs: every task on every run's final checkpoint, and on
/// the checkpoints at `eval.at_fractions` of its training, in run, step, task order.
pub fn plan_evals(spec: &SweepSpec, runs: &[PlannedRun], tasks: &[EvalTask]) -> Vec<PlannedEval> {
    let mut out = Vec::new();
    for r in runs {
        for step in eval_steps(r.steps, &spec.eval.at_fractions) {
            for task in tasks {
                let config = EvalJobConfig { run: r.run_id.clone(), step, task: task.clone() };
                let name = if step == r.steps {
                    format!("{}/{}", r.name, task.name)
                } else {
                    format!("{}/{}@{step}", r.name, task.name)
                };
                out.push(PlannedEval {
                    job_id: config.job_id(),
                    name,
                    run_id: r.run_id.clone(),
                    corpus: r.corpus.clone(),
                    budget: r.budget,
                    step,
                    config,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn budget_labels() {
        assert_eq!(budget_label(1e18), "1e+18");
        assert_eq!(budget_label(3e18), "3e+18");
        assert_eq!(budget_label(6e19), "6e+19");
        assert_eq!(budget_label(1e20), "1e+20");
        assert_eq!(budget_label(2.5e12), "2.5e+12");
        assert_eq!(budget_label(5e-3), "5e-03");
    }

    const MARIN: &str = include_str!("../../../examples/marin-2025.yaml");

    /// Issue 12, defect 8: a grid that plans nothing says which key left each candidate out.
    #[test]
    fn a_grid_that_plans_nothing_says_why() {
        let plan_err = |edit: &dyn Fn(&str) -> String| {
            let spec = SweepSpec::parse(Path::new("marin-2025.yaml"), &edit(MARIN)).unwrap();
            plan(&spec, &ResolvedData::external(&spec).unwrap()).unwrap_err()
        };
        let e = plan_err(&|s| s.replace("min_batch: 8", "min_batch: 1048576"));
        assert_eq!(e.key, "grid");
        assert!(e.message.contains("grid.min_batch = 1048576") && e.message.contains("grid.lr_max"), "{e}");
        let e = plan_err(&|s| s.replace("flop_tolerance: 0.01", "flop_tolerance: 0.0000000001"));
        assert!(e.message.contains("grid.flop_tolerance") && e.message.contains("nearest: budget"), "{e}");
    }

    #[test]
    fn marin_grid_matches_the_published_suite() {
        let spec = SweepSpec::parse(Path::new("marin-2025.yaml"), MARIN).unwrap();
        let data = ResolvedData::external(&spec).unwrap();
        let runs = plan(&spec, &data).unwrap();
        assert_eq!(runs.len(), 3 * 85);
        let per_budget: Vec<usize> = spec
            .budgets
            .iter()
            .map(|b| runs.iter().filter(|r| r.budget == *b && r.corpus == data.corpora[0].0).count())
            .collect();
        assert_eq!(per_budget, vec![5, 10, 15, 10, 15, 15, 15]);
        let layers = |h| runs.iter().find(|r| r.hidden == h).map(|r| r.layers);
        assert_eq!(layers(512), Some(6));
        assert_eq!(layers(768), Some(8));
        assert_eq!(layers(1024), Some(11));
        assert_eq!(layers(2048), Some(21));
        assert_eq!(layers(4096), Some(40));
        let d512 = runs.iter().find(|r| r.hidden == 512).unwrap();
        assert_eq!(d512.params, 156_508_160);
        for r in &runs {
            assert!(((r.achieved_flops - r.budget) / r.budget).abs() <= 0.01, "{}", r.name);
            assert!(r.batch >= 8 && r.batch.is_power_of_two(), "{}", r.name);
            assert!(r.lr <= 0.01, "{}", r.name);
            assert_eq!(r.beta2, 0.98f64.powf(r.batch as f64 / 128.0));
            assert_eq!(r.tokens, r.batch * r.steps * 4096);
        }
        // Same run twice in the grid would share an id; every id is distinct.
        let mut ids: Vec<_> = runs.iter().map(|r| r.run_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), runs.len());
    }
}
