//! The sweep spec: a YAML file that says what to train, on what, how, where, and where to
//! keep the results. [`SweepSpec::load`] parses it strictly (unknown keys and wrong types are
//! errors with line:column) and validates every value (errors name the key path).
//!
//! Relative paths in a spec resolve against the directory of the spec file. The sections live
//! in their own modules: [`grid`] (widths, depth and heads rules, batch and learning-rate
//! rules), [`recipe`], [`executor`] and [`runtime`].

mod eval;
pub(crate) mod executor;
mod grid;
mod recipe;
mod runtime;
mod store;
#[cfg(test)]
mod tests;

pub use eval::{AnthropicSpec, ChoiceSampling, ChoiceTaskSpec, EnglishSpec, EvalSpec, MmluSpec, TaskSpec, TextTaskSpec};
pub use executor::ExecutorSpec;
pub use grid::{CoarseStep, GridSpec, HeadsRule, HiddenSpec, LayersRule, NamedLayers};
pub use recipe::{Beta2Spec, RecipeSpec};
pub use runtime::{Precision, RuntimeSpec};
pub use store::{PostgresSpec, StoreLocation, StoreSpec, redact};

use crate::config::ModelShape;
use crate::flops::BudgetConvention;
use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A spec that could not be used: which file, where in it, and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {location}{message}")]
pub struct SpecError {
    /// The spec file.
    pub file: PathBuf,
    /// `line:column: ` or `key.path: ` (with the trailing separator), or empty.
    pub location: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl SpecError {
    /// An error about the value at a key path.
    pub fn at(file: &Path, key: impl fmt::Display, message: impl Into<String>) -> Self {
        SpecError { file: file.to_path_buf(), location: format!("{key}: "), message: message.into() }
    }
}

/// A whole sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Sweep name: letters, digits, `.`, `_`, `-`.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Nominal compute budgets, FLOPs, each > 0.
    pub budgets: Vec<f64>,
    /// How a budget counts FLOPs (`forward`, `detailed`, `6N`).
    #[serde(default = "default_convention")]
    pub budget_convention: BudgetConvention,
    /// Seed of every run (initialisation and data order).
    #[serde(default)]
    pub seed: u64,
    pub model: ModelSpec,
    pub grid: GridSpec,
    pub recipe: RecipeSpec,
    pub data: DataSpec,
    /// Evaluation tasks and the checkpoints they score (not part of any run's identity).
    #[serde(default)]
    pub eval: EvalSpec,
    #[serde(default)]
    pub executor: ExecutorSpec,
    #[serde(default)]
    pub runtime: RuntimeSpec,
    #[serde(default)]
    pub store: StoreSpec,
}

fn default_convention() -> BudgetConvention {
    BudgetConvention::Detailed
}

/// Model family and fixed architectural choices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `llama` (no QK-norm by default) or `qwen3` (QK-norm by default).
    pub family: Family,
    /// Vocabulary size; defaults to the tokenizer's.
    #[serde(default)]
    pub vocab_size: Option<u64>,
    pub seq_len: u64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<crate::config::RopeScaling>,
    #[serde(default)]
    pub qk_norm: Option<bool>,
    #[serde(default)]
    pub tie_embeddings: bool,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_init_std")]
    pub init_std: f64,
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_init_std() -> f64 {
    0.02
}

/// Decoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Qwen3,
}

/// Training corpora and evaluation distributions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// `byte`, `gpt2` or `llama3` (the last only for external corpora).
    pub tokenizer: Tokenizer,
    /// `manifest.json` written by `isoflop data prepare`.
    #[serde(default)]
    pub manifest: Option<PathBuf>,
    /// One grid per corpus.
    pub corpora: Vec<CorpusSpec>,
    /// Held-out distributions by name in the manifest, scored by the `heldout` task; default:
    /// all of them.
    #[serde(default)]
    pub evals: Option<Vec<String>>,
    /// Tokens scored per eval distribution.
    #[serde(default = "default_eval_tokens")]
    pub eval_tokens: u64,
}

fn default_eval_tokens() -> u64 {
    65_536
}

/// One training corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    /// Short name, used in run names.
    pub name: String,
    /// Name of the training shard in the manifest (default `train`).
    #[serde(default)]
    pub shard: Option<String>,
    /// An external dataset identity, for planning suites whose data isoflop does not hold.
    #[serde(default)]
    pub external: Option<String>,
}

/// Parses YAML strictly into `T`; errors lead with `line:column` (or the key path) in `file`.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, SpecError> {
    serde_yaml::from_str(text).map_err(|e| {
        let location = e.location().map(|l| format!("{}:{}: ", l.line(), l.column())).unwrap_or_default();
        let message = e.to_string();
        // serde_yaml appends " at line L column C"; we already lead with it.
        let message = match message.rfind(" at line ") {
            Some(i) if !location.is_empty() => message[..i].to_string(),
            _ => message,
        };
        SpecError { file: file.to_path_buf(), location, message }
    })
}

/// A parsed, validated spec with the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedSpec {
    pub spec: SweepSpec,
    /// The spec file.
    pub path: PathBuf,
    /// Its text, as stored with the sweep.
    pub text: String,
}

impl LoadedSpec {
    /// Directory relative paths resolve against.
    pub fn base_dir(&self) -> PathBuf {
        self.path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
    /// A spec path resolved against the spec's directory (`..` folded lexically).
    pub fn resolve(&self, p: &Path) -> PathBuf {
        let joined = if p.is_absolute() { p.to_path_buf() } else { self.base_dir().join(p) };
        let mut out = PathBuf::new();
        for c in joined.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir
                    if matches!(out.components().next_back(), Some(std::path::Component::Normal(_))) =>
                {
                    out.pop();
                }
                c => out.push(c),
            }
        }
        if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
    }
    /// The store (a `store.postgres.url_env` read now).
    pub fn store_location(&self) -> Result<StoreLocation, SpecError> {
        self.spec.store.location(&self.path, "store", |p| self.resolve(p))
    }
    /// The SQLite file of a spec that names no PostgreSQL database.
    fn sqlite_path(&self) -> PathBuf {
        self.resolve(self.spec.store.sqlite.as_deref().unwrap_or(Path::new(store::DEFAULT_SQLITE)))
    }
    /// The artifacts directory (`store.artifacts`, else `runs/` beside the SQLite file).
    pub fn artifacts_dir(&self) -> PathBuf {
        match &self.spec.store.artifacts {
            Some(a) => self.resolve(a),
            None => self.sqlite_path().parent().map(|d| d.join("runs")).unwrap_or_else(|| PathBuf::from("runs")),
        }
    }
}

impl SweepSpec {
    /// Reads, parses and validates a spec file.
    pub fn load(path: impl AsRef<Path>) -> Result<LoadedSpec, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.to_path_buf(),
            location: String::new(),
            message: format!("cannot read spec: {e}"),
        })?;
        let spec = Self::parse(path, &text)?;
        Ok(LoadedSpec { spec, path: path.to_path_buf(), text })
    }

    /// Parses and validates spec text; `file` is used in errors.
    pub fn parse(file: &Path, text: &str) -> Result<SweepSpec, SpecError> {
        let spec: SweepSpec = parse_yaml(file, text)?;
        spec.validate(file)?;
        Ok(spec)
    }

    /// Checks every value a type cannot check.
    pub fn validate(&self, file: &Path) -> Result<(), SpecError> {
        let err = |key: &str, msg: String| Err(SpecError::at(file, key, msg));
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return err("name", format!("`{}` must be non-empty letters, digits, `.`, `_` or `-`", self.name));
        }
        if self.budgets.is_empty() {
            return err("budgets", "expected at least one budget (FLOPs > 0)".into());
        }
        for (i, b) in self.budgets.iter().enumerate() {
            if !(b.is_finite() && *b > 0.0) {
                return err(&format!("budgets[{i}]"), format!("expected FLOPs > 0, got {b}"));
            }
            if let Some(j) = self.budgets[..i].iter().position(|o| o == b) {
                return err(&format!("budgets[{i}]"), format!("{b:e} repeats budgets[{j}]: every budget once"));
            }
        }
        let m = &self.model;
        if m.seq_len == 0 {
            return err("model.seq_len", "expected a positive sequence length".into());
        }
        if m.vocab_size == Some(0) {
            return err("model.vocab_size", "expected a positive vocabulary size".into());
        }
        for (key, v) in [("model.rope_theta", m.rope_theta), ("model.norm_eps", m.norm_eps), ("model.init_std", m.init_std)] {
            if !(v.is_finite() && v > 0.0) {
                return err(key, format!("expected a positive number, got {v}"));
            }
        }
        let g = &self.grid;
        match &g.hidden {
            HiddenSpec::List(l) if l.is_empty() => return err("grid.hidden", "expected at least one width".into()),
            HiddenSpec::List(l) => {
                if let Some(i) = l.iter().position(|&h| h == 0) {
                    return err(&format!("grid.hidden[{i}]"), "expected a positive width".into());
                }
                for (i, h) in l.iter().enumerate() {
                    if let Some(j) = l[..i].iter().position(|o| o == h) {
                        return err(&format!("grid.hidden[{i}]"), format!("{h} repeats grid.hidden[{j}]: every width once"));
                    }
                }
            }
            HiddenSpec::Range { from, to, step, coarse } => {
                if *from == 0 || from > to || *step == 0 {
                    return err(
                        "grid.hidden",
                        format!("expected 0 < from <= to and step > 0, got from {from}, to {to}, step {step}"),
                    );
                }
                if let Some(c) = coarse
                    && (c.step == 0 || c.above_budget.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
                {
                    return err("grid.hidden.coarse", "expected step > 0 and above_budget > 0".into());
                }
            }
        }
        match g.layers {
            LayersRule::WidthPerLayer { width_per_layer: r } if !(r.is_finite() && r > 0.0) => {
                return err("grid.layers.width_per_layer", format!("expected a positive number, got {r}"));
            }
            LayersRule::Fixed { fixed: 0 } => return err("grid.layers.fixed", "expected at least one layer".into()),
            _ => {}
        }
        match g.heads {
            HeadsRule::HeadSize { head_size: 0 } => return err("grid.heads.head_size", "expected a positive head size".into()),
            HeadsRule::Fixed { fixed: 0 } => return err("grid.heads.fixed", "expected at least one head".into()),
            _ => {}
        }
        if !(g.ffn_multiplier.is_finite() && g.ffn_multiplier > 0.0) {
            return err("grid.ffn_multiplier", format!("expected a positive number, got {}", g.ffn_multiplier));
        }
        match (g.target_steps, g.fixed_batch) {
            (Some(0), _) => return err("grid.target_steps", "expected a positive number of steps".into()),
            (_, Some(0)) => return err("grid.fixed_batch", "expected a positive batch size".into()),
            (Some(_), Some(_)) => return err("grid", "expected either `target_steps` or `fixed_batch`, not both".into()),
            (None, None) => return err("grid", "expected `target_steps` (batch rule) or `fixed_batch`".into()),
            _ => {}
        }
        if g.min_batch == 0 {
            return err("grid.min_batch", "expected at least 1".into());
        }
        for (key, v) in [("grid.lr_constant", g.lr_constant), ("grid.lr_max", g.lr_max)] {
            if !(v.is_finite() && v > 0.0) {
                return err(key, format!("expected a positive number, got {v}"));
            }
        }
        if !(g.flop_tolerance > 0.0 && g.flop_tolerance < 1.0) {
            return err("grid.flop_tolerance", format!("expected a fraction in (0, 1), got {}", g.flop_tolerance));
        }
        let r = &self.recipe;
        for (key, v) in
            [("recipe.warmup_frac", r.warmup_frac), ("recipe.decay_frac", r.decay_frac), ("recipe.min_lr_frac", r.min_lr_frac)]
        {
            if !(0.0..=1.0).contains(&v) {
                return err(key, format!("expected a fraction in [0, 1], got {v}"));
            }
        }
        if r.warmup_frac + r.decay_frac > 1.0 {
            return err(
                "recipe.decay_frac",
                format!("warmup_frac + decay_frac must be <= 1, got {}", r.warmup_frac + r.decay_frac),
            );
        }
        let beta2 = match r.beta2 {
            Beta2Spec::Constant(b) => b,
            Beta2Spec::Scaled { batch_scaled } => batch_scaled,
        };
        for (key, v) in [("recipe.beta1", r.beta1), ("recipe.beta2", beta2)] {
            if !(0.0..1.0).contains(&v) {
                return err(key, format!("expected a number in [0, 1), got {v}"));
            }
        }
        if r.eps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return err("recipe.eps", format!("expected a positive number, got {}", r.eps));
        }
        for (key, v) in [("recipe.weight_decay", r.weight_decay), ("recipe.grad_clip", r.grad_clip)] {
            if !(v.is_finite() && v >= 0.0) {
                return err(key, format!("expected a number >= 0, got {v}"));
            }
        }
        let d = &self.data;
        if d.corpora.is_empty() {
            return err("data.corpora", "expected at least one corpus".into());
        }
        for (i, c) in d.corpora.iter().enumerate() {
            if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)) {
                return err(
                    &format!("data.corpora[{i}].name"),
                    format!("`{}` must be non-empty letters, digits, `.`, `_` or `-`", c.name),
                );
            }
            if d.corpora[..i].iter().any(|o| o.name == c.name) {
                return err(&format!("data.corpora[{i}].name"), format!("corpus `{}` appears twice", c.name));
            }
            if c.external.is_some() && c.shard.is_some() {
                return err(&format!("data.corpora[{i}]"), "expected either `shard` or `external`, not both".into());
            }
            if c.external.is_none() && d.manifest.is_none() {
                return err(
                    "data.manifest",
                    format!("corpus `{}` reads a local shard, so a manifest (from `isoflop data prepare`) is required", c.name),
                );
            }
        }
        if d.eval_tokens == 0 {
            return err("data.eval_tokens", "expected a positive number of tokens".into());
        }
        self.eval.validate(file)?;
        self.executor.validate(file)?;
        self.store.validate(file, "store")?;
        // Workers write checkpoints where the coordinator looks for them: with Kubernetes the
        // artifacts directory must be on a volume both see at the same path.
        let base = file.parent().unwrap_or(Path::new("."));
        let artifacts = self.store.artifacts.as_ref().map(|a| base.join(a));
        if !self.executor.artifacts_reachable(artifacts.as_deref()) {
            return err(
                "store.artifacts",
                "with the kubernetes executor, expected an absolute path on one of executor.volumes' \
                 mount paths (workers write checkpoints there and the coordinator reads them)"
                    .into(),
            );
        }
        if self.runtime.progress_every == 0 {
            return err("runtime.progress_every", "expected at least 1 step".into());
        }
        if self.runtime.micro_batch == Some(0) {
            return err("runtime.micro_batch", "expected at least 1 sequence".into());
        }
        // Every candidate shape must be one the trainer can build (the planner checks each
        // planned run again, with the data's vocabulary and the run's recipe).
        let vocab = self.model.vocab_size.unwrap_or(self.data.tokenizer.vocab_size());
        for b in &self.budgets {
            for h in self.grid.widths(*b) {
                if let Err(e) = self.shape_for(h, vocab).validate() {
                    return Err(SpecError::at(file, self.key_of(e.field), e.message));
                }
            }
        }
        Ok(())
    }

    /// The model shape of a candidate of width `h`, by the grid's rules.
    pub fn shape_for(&self, h: u64, vocab_size: u64) -> ModelShape {
        let (g, m) = (&self.grid, &self.model);
        let heads = g.heads_for(h);
        ModelShape {
            vocab_size,
            hidden: h,
            layers: g.layers_for(h),
            heads,
            kv_heads: heads,
            ffn_hidden: (g.ffn_multiplier * h as f64).round() as u64,
            seq_len: m.seq_len,
            rope_theta: m.rope_theta,
            rope_scaling: m.rope_scaling.clone(),
            qk_norm: m.qk_norm.unwrap_or(m.family == Family::Qwen3),
            tie_embeddings: m.tie_embeddings,
            norm_eps: m.norm_eps,
            init_std: m.init_std,
        }
    }

    /// The spec key that decides a [`RunConfig`](crate::RunConfig) field (`model.heads` comes
    /// from `grid.heads.fixed` or `grid.heads.head_size`, `recipe.batch` from the batch rule);
    /// errors about a planned run name it.
    pub fn key_of(&self, field: &str) -> String {
        let g = &self.grid;
        match field {
            "model.hidden" | "model.heads" | "model.kv_heads" => match g.heads {
                HeadsRule::HeadSize { .. } => "grid.heads.head_size",
                HeadsRule::Fixed { .. } => "grid.heads.fixed",
            }
            .into(),
            "model.layers" => "grid.layers".into(),
            "model.ffn_hidden" => "grid.ffn_multiplier".into(),
            "recipe.batch" if g.fixed_batch.is_some() => "grid.fixed_batch".into(),
            "recipe.batch" => "grid.min_batch".into(),
            "recipe.steps" => "grid.target_steps".into(),
            "recipe.lr" => "grid.lr_constant".into(),
            other => other.into(),
        }
    }
}

/// The default of counts that start at one (`min_batch`, `max_parallel`, `threads_per_run`).
fn one() -> u64 {
    1
}
