//! The sweep spec: a YAML file that says what to train, on what, how, where, and where to
//! keep the results. [`SweepSpec::load`] parses it strictly (unknown keys and wrong types are
//! errors with line:column) and validates every value (errors name the key path).
//!
//! Relative paths in a spec resolve against the directory of the spec file.

use crate::config::ModelShape;
use crate::device::Device;
use crate::flops::BudgetConvention;
use crate::kubernetes::KubernetesSpec;
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

/// How each budget's candidate shapes, batch sizes and learning rates are chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSpec {
    /// Candidate widths: a list, or a range.
    pub hidden: HiddenSpec,
    /// Depth rule.
    pub layers: LayersRule,
    /// Head rule.
    pub heads: HeadsRule,
    /// SwiGLU intermediate size as a multiple of the width.
    #[serde(default = "default_ffn_multiplier")]
    pub ffn_multiplier: f64,
    /// Steps the batch rule aims for; the batch is the power of two that reaches the budget
    /// in about this many steps. Exactly one of `target_steps` and `fixed_batch` is set.
    #[serde(default)]
    pub target_steps: Option<u64>,
    /// One batch size (sequences) for every run; the learning rate is then capped at
    /// `lr_max` instead of halving the batch.
    #[serde(default)]
    pub fixed_batch: Option<u64>,
    /// Candidates whose batch falls below this are skipped.
    #[serde(default = "one")]
    pub min_batch: u64,
    /// Learning rate = `lr_constant * sqrt(batch) / hidden` ...
    pub lr_constant: f64,
    /// ... halving the batch while it exceeds `lr_max`.
    pub lr_max: f64,
    /// Candidates whose achieved FLOPs miss the budget by more than this fraction are skipped.
    #[serde(default = "default_tolerance")]
    pub flop_tolerance: f64,
}

fn default_ffn_multiplier() -> f64 {
    4.0
}
fn one() -> u64 {
    1
}
fn default_tolerance() -> f64 {
    0.01
}

/// Candidate widths.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum HiddenSpec {
    /// Explicit widths.
    List(Vec<u64>),
    /// `from..=to` in steps of `step`; budgets above `coarse.above_budget` use `coarse.step`.
    Range {
        from: u64,
        to: u64,
        step: u64,
        #[serde(default)]
        coarse: Option<CoarseStep>,
    },
}

/// `grid.hidden` as a range: exactly these keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HiddenRange {
    from: u64,
    to: u64,
    step: u64,
    #[serde(default)]
    coarse: Option<CoarseStep>,
}

impl<'de> Deserialize<'de> for HiddenSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HiddenSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of widths or {from: A, to: B, step: S}")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<HiddenSpec, A::Error> {
                Vec::<u64>::deserialize(SeqAccessDeserializer::new(seq)).map(HiddenSpec::List)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<HiddenSpec, A::Error> {
                let HiddenRange { from, to, step, coarse } = HiddenRange::deserialize(MapAccessDeserializer::new(map))?;
                Ok(HiddenSpec::Range { from, to, step, coarse })
            }
        }
        d.deserialize_any(V)
    }
}

/// A coarser width step for large budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoarseStep {
    pub above_budget: f64,
    pub step: u64,
}

/// Depth as a function of width: `marin`, `{width_per_layer: R}` or `{fixed: L}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LayersRule {
    /// `marin`: `round(h / (64 + 4 log2 h - 9))`, the Marin suite's rule.
    Named(NamedLayers),
    /// `max(1, round(h / width_per_layer))`.
    WidthPerLayer { width_per_layer: f64 },
    /// The same depth for every width.
    Fixed { fixed: u64 },
}

/// Reads a rule written as a map with exactly one key of `keys`: `{key: value}`. A map with
/// two of them, or another key, is an error (not silently read as one of the rules).
fn one_key<'de, A, T>(
    mut map: A,
    keys: &'static [&'static str],
    read: impl Fn(&str, &mut A) -> Result<T, A::Error>,
) -> Result<T, A::Error>
where
    A: serde::de::MapAccess<'de>,
{
    use serde::de::Error;
    let mut out = None;
    while let Some(key) = map.next_key::<String>()? {
        if !keys.contains(&key.as_str()) {
            return Err(A::Error::unknown_field(&key, keys));
        }
        if out.is_some() {
            return Err(A::Error::custom(format!("expected one of `{}`, not several", keys.join("`, `"))));
        }
        out = Some(read(&key, &mut map)?);
    }
    out.ok_or_else(|| A::Error::custom(format!("expected one of `{}`", keys.join("`, `"))))
}

impl<'de> Deserialize<'de> for LayersRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LayersRule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`marin`, {width_per_layer: R} or {fixed: L}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LayersRule, E> {
                match v {
                    "marin" => Ok(LayersRule::Named(NamedLayers::Marin)),
                    other => Err(E::custom(format!(
                        "unknown rule `{other}`: expected `marin`, {{width_per_layer: R}} or {{fixed: L}}"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<LayersRule, A::Error> {
                one_key(map, &["width_per_layer", "fixed"], |key, map| match key {
                    "width_per_layer" => Ok(LayersRule::WidthPerLayer { width_per_layer: map.next_value()? }),
                    _ => Ok(LayersRule::Fixed { fixed: map.next_value()? }),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Depth rules known by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedLayers {
    Marin,
}

/// Attention heads as a function of width: `{head_size: S}` or `{fixed: H}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum HeadsRule {
    /// `max(1, floor(h / head_size))`.
    HeadSize { head_size: u64 },
    /// The same number of heads for every width (must divide every width).
    Fixed { fixed: u64 },
}

impl<'de> Deserialize<'de> for HeadsRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HeadsRule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{head_size: S} or {fixed: H}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<HeadsRule, A::Error> {
                one_key(map, &["head_size", "fixed"], |key, map| match key {
                    "head_size" => Ok(HeadsRule::HeadSize { head_size: map.next_value()? }),
                    _ => Ok(HeadsRule::Fixed { fixed: map.next_value()? }),
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// Optimiser and schedule shared by every run of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeSpec {
    pub warmup_frac: f64,
    pub decay_frac: f64,
    #[serde(default)]
    pub min_lr_frac: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: Beta2Spec,
    pub eps: f64,
    pub grad_clip: f64,
    /// Cautious AdamW: mask the update where its sign disagrees with the gradient's.
    #[serde(default)]
    pub cautious: bool,
    /// Scale the weight decay by `lr_t / lr_peak` (as the Marin recipe does).
    #[serde(default)]
    pub wd_schedule: bool,
    /// Apply the weight decay to the token embedding too (matrices are always decayed).
    #[serde(default)]
    pub decay_embeddings: bool,
    /// Apply the weight decay to the RMSNorm weights too.
    #[serde(default)]
    pub decay_norms: bool,
}

/// Adam's beta2: a constant, or `base^(batch/128)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Beta2Spec {
    Constant(f64),
    Scaled { batch_scaled: f64 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Beta2Scaled {
    batch_scaled: f64,
}

impl<'de> Deserialize<'de> for Beta2Spec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::MapAccessDeserializer;
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Beta2Spec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or {batch_scaled: B}")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Beta2Spec, E> {
                Ok(Beta2Spec::Constant(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Beta2Spec, E> {
                Ok(Beta2Spec::Constant(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Beta2Spec, E> {
                Ok(Beta2Spec::Constant(v as f64))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Beta2Spec, A::Error> {
                let Beta2Scaled { batch_scaled } = Beta2Scaled::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Beta2Spec::Scaled { batch_scaled })
            }
        }
        d.deserialize_any(V)
    }
}

impl Beta2Spec {
    /// beta2 for a batch of `batch` sequences.
    pub fn for_batch(&self, batch: u64) -> f64 {
        match self {
            Beta2Spec::Constant(b) => *b,
            Beta2Spec::Scaled { batch_scaled } => batch_scaled.powf(batch as f64 / 128.0),
        }
    }
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
    /// Eval distributions by name in the manifest; default: all of them.
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

/// Where runs execute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecutorSpec {
    /// Worker processes on this machine.
    Local {
        #[serde(default = "one")]
        max_parallel: u64,
        #[serde(default = "one")]
        threads_per_run: u64,
        #[serde(default = "default_retries")]
        max_retries: u64,
        #[serde(default = "default_lease")]
        lease_seconds: u64,
    },
    /// One Kubernetes Job per attempt (see `docs/kubernetes.md`).
    Kubernetes(Box<KubernetesSpec>),
}

impl ExecutorSpec {
    /// Checks the values of an executor section alone (errors name `executor.KEY` in `file`);
    /// used by the sweep spec and by `isoflop serve`'s config.
    pub fn validate(&self, file: &Path) -> Result<(), SpecError> {
        let err = |key: &str, msg: String| Err(SpecError::at(file, format!("executor.{key}"), msg));
        match self {
            ExecutorSpec::Local { max_parallel, threads_per_run, lease_seconds, .. } => {
                if *max_parallel == 0 {
                    return err("max_parallel", "expected at least 1".into());
                }
                if *threads_per_run == 0 {
                    return err("threads_per_run", "expected at least 1".into());
                }
                if *lease_seconds < 2 {
                    return err("lease_seconds", "expected at least 2 seconds".into());
                }
                Ok(())
            }
            ExecutorSpec::Kubernetes(k) => k.validate().or_else(|e| err(&e.key, e.message)),
        }
    }

    /// Whether `artifacts` is where both the coordinator and the workers see it: always for
    /// local workers; for Kubernetes an absolute path on one of the executor's volumes.
    pub fn artifacts_reachable(&self, artifacts: Option<&Path>) -> bool {
        match self {
            ExecutorSpec::Local { .. } => true,
            ExecutorSpec::Kubernetes(k) => {
                artifacts.is_some_and(|a| a.is_absolute() && k.volumes.iter().any(|v| a.starts_with(&v.mount_path)))
            }
        }
    }

    /// Counted retries per run.
    pub fn max_retries(&self) -> u64 {
        match self {
            ExecutorSpec::Local { max_retries, .. } => *max_retries,
            ExecutorSpec::Kubernetes(k) => k.max_retries,
        }
    }

    /// Seconds without a report after which a worker is presumed lost.
    pub fn lease_seconds(&self) -> u64 {
        match self {
            ExecutorSpec::Local { lease_seconds, .. } => *lease_seconds,
            ExecutorSpec::Kubernetes(k) => k.lease_seconds,
        }
    }

    /// CPU threads of each worker.
    pub fn threads_per_run(&self) -> u64 {
        match self {
            ExecutorSpec::Local { threads_per_run, .. } => *threads_per_run,
            ExecutorSpec::Kubernetes(k) => k.threads_per_run,
        }
    }

    /// Attempts in flight at once.
    pub fn max_parallel(&self) -> u64 {
        match self {
            ExecutorSpec::Local { max_parallel, .. } => *max_parallel,
            ExecutorSpec::Kubernetes(k) => k.max_parallel,
        }
    }
}

fn default_retries() -> u64 {
    3
}
fn default_lease() -> u64 {
    60
}

impl Default for ExecutorSpec {
    fn default() -> Self {
        ExecutorSpec::Local { max_parallel: 1, threads_per_run: 1, max_retries: 3, lease_seconds: 60 }
    }
}

/// Settings that do not change a run's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSpec {
    /// Steps between checkpoints (0: only at the end and on SIGTERM).
    pub checkpoint_every: u64,
    /// Steps between progress reports.
    pub progress_every: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: Device,
    /// Sequences per forward/backward pass (gradient accumulation); `None`: the whole batch.
    /// When it does not divide the batch, the last micro-batch of a step is smaller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_batch: Option<u64>,
    /// Numeric precision of training: `fp32`, or `bf16` mixed precision (bf16 compute, fp32
    /// master weights, moments and checkpoints).
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        RuntimeSpec {
            checkpoint_every: 200,
            progress_every: 10,
            device: Device::Cpu,
            micro_batch: None,
            precision: Precision::Fp32,
        }
    }
}

/// Numeric precision of training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// bf16 mixed precision: forward and backward in bf16, fp32 master weights, gradients
    /// (accumulated and clipped), moments and checkpoints.
    Bf16,
}

impl Precision {
    /// True for [`Precision::Fp32`].
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// The spec and wire spelling: `fp32` or `bf16`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision `{s}`: expected fp32 or bf16")),
        }
    }
}

/// Where the sweep's state lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSpec {
    /// SQLite database file.
    pub sqlite: PathBuf,
    /// Directory for checkpoints and logs (default: `runs/` beside the database).
    pub artifacts: Option<PathBuf>,
}

impl Default for StoreSpec {
    fn default() -> Self {
        StoreSpec { sqlite: PathBuf::from(".isoflop/isoflop.db"), artifacts: None }
    }
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
    /// The SQLite file.
    pub fn store_path(&self) -> PathBuf {
        self.resolve(&self.spec.store.sqlite)
    }
    /// The artifacts directory.
    pub fn artifacts_dir(&self) -> PathBuf {
        match &self.spec.store.artifacts {
            Some(a) => self.resolve(a),
            None => self.store_path().parent().map(|d| d.join("runs")).unwrap_or_else(|| PathBuf::from("runs")),
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
        self.executor.validate(file)?;
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

impl GridSpec {
    /// Candidate widths at a budget.
    pub fn widths(&self, budget: f64) -> Vec<u64> {
        match &self.hidden {
            HiddenSpec::List(l) => l.clone(),
            HiddenSpec::Range { from, to, step, coarse } => {
                let step = match coarse {
                    Some(c) if budget > c.above_budget => c.step,
                    _ => *step,
                };
                (*from..=*to).step_by(step as usize).collect()
            }
        }
    }

    /// Depth for a width.
    pub fn layers_for(&self, h: u64) -> u64 {
        match self.layers {
            LayersRule::Named(NamedLayers::Marin) => {
                let hf = h as f64;
                (hf / (64.0 + 4.0 * hf.log2() - 9.0)).round().max(1.0) as u64
            }
            LayersRule::WidthPerLayer { width_per_layer } => (h as f64 / width_per_layer).round().max(1.0) as u64,
            LayersRule::Fixed { fixed } => fixed,
        }
    }

    /// Heads for a width.
    pub fn heads_for(&self, h: u64) -> u64 {
        match self.heads {
            HeadsRule::HeadSize { head_size } => (h / head_size).max(1),
            HeadsRule::Fixed { fixed } => fixed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
name: t
budgets: [1e12, 3e12]
model: {family: llama, seq_len: 64}
grid:
  hidden: [32, 64]
  layers: {fixed: 2}
  heads: {head_size: 16}
  target_steps: 100
  lr_constant: 0.1
  lr_max: 0.01
recipe: {warmup_frac: 0.1, decay_frac: 0.2, weight_decay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, grad_clip: 1.0}
data:
  tokenizer: byte
  manifest: data/manifest.json
  corpora: [{name: mix}]
";

    fn parse(text: &str) -> Result<SweepSpec, SpecError> {
        SweepSpec::parse(Path::new("spec.yaml"), text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_spec_parses_with_defaults() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.budget_convention, BudgetConvention::Detailed);
        assert_eq!(s.executor, ExecutorSpec::default());
        assert_eq!(s.grid.widths(1e12), vec![32, 64]);
        assert_eq!(s.grid.heads_for(64), 4);
        assert_eq!(s.data.eval_tokens, 65_536);
    }

    #[test]
    fn runtime_micro_batch_defaults_to_whole_batch_and_must_be_positive() {
        assert_eq!(parse(MINIMAL).unwrap().runtime.micro_batch, None);
        let s = parse(&format!("{MINIMAL}runtime: {{micro_batch: 3}}\n")).unwrap();
        assert_eq!(s.runtime.micro_batch, Some(3));
        let e = err(&format!("{MINIMAL}runtime: {{micro_batch: 0}}\n"));
        assert!(e.contains("runtime.micro_batch"), "{e}");
    }

    fn kubernetes(extra: &str, store: &str) -> String {
        let section: String = crate::kubernetes::EXAMPLE_YAML.lines().map(|l| format!("  {l}\n")).collect();
        format!("{MINIMAL}executor:\n  kind: kubernetes\n{section}{extra}store: {store}\n")
    }

    #[test]
    fn kubernetes_executor_is_validated_with_the_spec() {
        let s = parse(&kubernetes("", "{sqlite: s/i.db, artifacts: /ckpt/runs}")).unwrap();
        let ExecutorSpec::Kubernetes(k) = &s.executor else { panic!("{:?}", s.executor) };
        assert_eq!((k.namespace.as_str(), k.gpus_per_run, k.max_parallel, k.listen.as_str()), ("isoflop", 1, 64, "0.0.0.0:7700"));
        assert_eq!((s.executor.max_retries(), s.executor.lease_seconds()), (3, 60));
        let e = err(&kubernetes("", "{sqlite: s/i.db}"));
        assert!(e.starts_with("spec.yaml: store.artifacts: with the kubernetes executor"), "{e}");
        let e = err(&kubernetes("", "{sqlite: s/i.db, artifacts: /elsewhere}"));
        assert!(e.contains("store.artifacts"), "{e}");
        let e = err(&kubernetes("  qps: 0\n", "{sqlite: s/i.db, artifacts: /ckpt/runs}"));
        assert_eq!(e, "spec.yaml: executor.qps: expected qps > 0 and burst >= 1");
        let e = err(&kubernetes("  gpus: 2\n", "{sqlite: s/i.db, artifacts: /ckpt/runs}"));
        assert!(e.contains("unknown field `gpus`"), "{e}");
        let e = err(&kubernetes("  listen: nowhere\n", "{sqlite: s/i.db, artifacts: /ckpt/runs}"));
        assert!(e.contains("executor.listen: `nowhere`: expected ADDRESS:PORT"), "{e}");
    }

    #[test]
    fn runtime_precision_defaults_to_fp32_and_is_strict() {
        assert_eq!(parse(MINIMAL).unwrap().runtime.precision, Precision::Fp32);
        let s = parse(&format!("{MINIMAL}runtime: {{precision: bf16}}\n")).unwrap();
        assert_eq!(s.runtime.precision, Precision::Bf16);
        assert_eq!(parse(&format!("{MINIMAL}runtime: {{precision: fp32}}\n")).unwrap().runtime.precision, Precision::Fp32);
        let e = err(&format!("{MINIMAL}runtime: {{precision: fp16}}\n"));
        assert!(e.contains("runtime.precision") && e.contains("unknown variant `fp16`"), "{e}");
        assert!(e.contains("`fp32`") && e.contains("`bf16`"), "{e}");
        // The default is not written out, so stored runtime settings of old specs are unchanged.
        let json = serde_json::to_string(&RuntimeSpec::default()).unwrap();
        assert!(!json.contains("precision"), "{json}");
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("BF16".parse::<Precision>().unwrap_err().contains("fp32 or bf16"));
    }

    #[test]
    fn recipe_decay_scope_defaults_off_and_is_strict() {
        let s = parse(MINIMAL).unwrap();
        assert!(!s.recipe.decay_embeddings && !s.recipe.decay_norms);
        let text = MINIMAL.replace("grad_clip: 1.0}", "grad_clip: 1.0, decay_embeddings: true, decay_norms: true}");
        let s = parse(&text).unwrap();
        assert!(s.recipe.decay_embeddings && s.recipe.decay_norms);
        let e = err(&MINIMAL.replace("grad_clip: 1.0}", "grad_clip: 1.0, decay_norms: yes please}"));
        assert!(e.contains("recipe.decay_norms") || e.contains("decay_norms"), "{e}");
        let e = err(&MINIMAL.replace("grad_clip: 1.0}", "grad_clip: 1.0, decay_embedding: true}"));
        assert!(e.contains("unknown field `decay_embedding`"), "{e}");
    }

    #[test]
    fn the_cluster_example_is_a_valid_kubernetes_spec() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster-sweep.yaml");
        let s = SweepSpec::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
        let ExecutorSpec::Kubernetes(k) = &s.executor else { panic!("{:?}", s.executor) };
        assert_eq!((k.gpus_per_run, k.volumes.len()), (1, 2));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let e = err(&MINIMAL.replace("  target_steps: 100", "  target_steps: 100\n  target_stepz: 5"));
        assert!(e.starts_with("spec.yaml: 9:3: grid: unknown field `target_stepz`"), "{e}");
        assert!(e.contains("expected one of"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_path() {
        let e = err(&MINIMAL.replace("seq_len: 64", "seq_len: long"));
        assert!(
            e.starts_with("spec.yaml: 3:") && e.contains("model.seq_len: invalid type: string \"long\", expected u64"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("layers: {fixed: 2}", "layers: deep"));
        assert!(e.contains("`marin`, {width_per_layer: R} or {fixed: L}"), "{e}");
    }

    #[test]
    fn impossible_values_name_the_key() {
        let e = err(&MINIMAL.replace("[1e12, 3e12]", "[1e12, -3]"));
        assert_eq!(e, "spec.yaml: budgets[1]: expected FLOPs > 0, got -3");
        let e = err(&MINIMAL.replace("[1e12, 3e12]", "[]"));
        assert!(e.contains("budgets: expected at least one budget"), "{e}");
        let e = err(&MINIMAL.replace("heads: {head_size: 16}", "heads: {fixed: 3}"));
        assert_eq!(e, "spec.yaml: grid.heads.fixed: width 32 is not divisible by its 3 heads");
        let e = err(&MINIMAL.replace("decay_frac: 0.2", "decay_frac: 0.95"));
        assert!(e.contains("recipe.decay_frac: warmup_frac + decay_frac must be <= 1"), "{e}");
        let e = err(&MINIMAL.replace("  manifest: data/manifest.json\n", ""));
        assert!(e.contains("data.manifest: corpus `mix` reads a local shard"), "{e}");
        let e = err(&MINIMAL.replace("beta2: 0.95", "beta2: 1.5"));
        assert!(e.contains("recipe.beta2: expected a number in [0, 1), got 1.5"), "{e}");
        let e = err(&format!("{MINIMAL}executor: {{kind: local, max_parallel: 0}}\n"));
        assert!(e.contains("executor.max_parallel: expected at least 1"), "{e}");
        let e = err(&format!("{MINIMAL}executor: {{kind: slurm}}\n"));
        assert!(e.contains("unknown variant `slurm`"), "{e}");
    }

    #[test]
    fn shapes_the_trainer_would_refuse_are_refused_naming_the_grid_key() {
        // Width 36 with 4 heads: head dimension 9, which RoPE cannot rotate.
        let e = err(&MINIMAL.replace("hidden: [32, 64]", "hidden: [36]").replace("heads: {head_size: 16}", "heads: {fixed: 4}"));
        assert_eq!(
            e,
            "spec.yaml: grid.heads.fixed: width 36 with 4 heads has head dimension 9; RoPE needs an even head \
             dimension (at least 2)"
        );
        let e = err(&MINIMAL.replace("heads: {head_size: 16}", "heads: {head_size: 1}"));
        assert!(e.starts_with("spec.yaml: grid.heads.head_size: width 32 with 32 heads has head dimension 1"), "{e}");
        let e = err(&MINIMAL
            .replace("hidden: [32, 64]", "hidden: [2]")
            .replace("  lr_max: 0.01", "  lr_max: 0.01\n  ffn_multiplier: 0.1"));
        assert!(e.starts_with("spec.yaml: grid.ffn_multiplier: expected a positive SwiGLU width, got 0"), "{e}");
    }

    #[test]
    fn rule_maps_with_mixed_keys_are_refused() {
        let e = err(&MINIMAL.replace("layers: {fixed: 2}", "layers: {fixed: 2, width_per_layer: 64}"));
        assert!(e.contains("grid.layers: expected one of `width_per_layer`, `fixed`, not several"), "{e}");
        let e = err(&MINIMAL.replace("layers: {fixed: 2}", "layers: {fixed: 2, depth: 3}"));
        assert!(e.contains("grid.layers: unknown field `depth`, expected `width_per_layer` or `fixed`"), "{e}");
        let e = err(&MINIMAL.replace("layers: {fixed: 2}", "layers: {}"));
        assert!(e.contains("grid.layers: expected one of `width_per_layer`, `fixed`"), "{e}");
        let e = err(&MINIMAL.replace("heads: {head_size: 16}", "heads: {head_size: 16, fixed: 2}"));
        assert!(e.contains("grid.heads: expected one of `head_size`, `fixed`, not several"), "{e}");
        let e = err(&MINIMAL.replace("heads: {head_size: 16}", "heads: {head_sise: 16}"));
        assert!(e.contains("grid.heads: unknown field `head_sise`"), "{e}");
        let e = err(&MINIMAL.replace("heads: {head_size: 16}", "heads: 4"));
        assert!(e.contains("grid.heads: invalid type: integer `4`, expected {head_size: S} or {fixed: H}"), "{e}");
        let e = err(&MINIMAL.replace("hidden: [32, 64]", "hidden: {from: 32, to: 64, step: 32, stride: 2}"));
        assert!(e.contains("grid.hidden: unknown field `stride`"), "{e}");
        let e = err(&MINIMAL.replace("beta2: 0.95", "beta2: {batch_scaled: 0.98, base: 0.9}"));
        assert!(e.contains("recipe.beta2: unknown field `base`"), "{e}");
        // The well-formed spellings still parse.
        let s = parse(&MINIMAL.replace("layers: {fixed: 2}", "layers: {width_per_layer: 32}")).unwrap();
        assert_eq!(s.grid.layers, LayersRule::WidthPerLayer { width_per_layer: 32.0 });
        let s = parse(&MINIMAL.replace("layers: {fixed: 2}", "layers: marin")).unwrap();
        assert_eq!(s.grid.layers, LayersRule::Named(NamedLayers::Marin));
        let s = parse(&MINIMAL.replace("hidden: [32, 64]", "hidden: {from: 32, to: 64, step: 32}")).unwrap();
        assert_eq!(s.grid.widths(1e12), vec![32, 64]);
        let s = parse(&MINIMAL.replace("beta2: 0.95", "beta2: {batch_scaled: 0.98}")).unwrap();
        assert_eq!(s.recipe.beta2, Beta2Spec::Scaled { batch_scaled: 0.98 });
    }

    #[test]
    fn device_and_tokenizer_are_typed() {
        let s = parse(&format!("{MINIMAL}runtime: {{device: cuda}}\n")).unwrap();
        assert_eq!(s.runtime.device, Device::Cuda(0));
        let e = err(&format!("{MINIMAL}runtime: {{device: gpu}}\n"));
        assert!(e.contains("runtime.device: expected cpu, cuda or cuda:N, got `gpu`"), "{e}");
        let e = err(&MINIMAL.replace("tokenizer: byte", "tokenizer: llama"));
        assert!(e.contains("data.tokenizer: unknown variant `llama`"), "{e}");
        assert_eq!(parse(MINIMAL).unwrap().data.tokenizer, Tokenizer::Byte);
    }

    #[test]
    fn paths_resolve_against_the_spec_directory() {
        let spec = parse(MINIMAL).unwrap();
        let loaded = LoadedSpec { spec, path: PathBuf::from("/x/examples/s.yaml"), text: String::new() };
        assert_eq!(loaded.store_path(), PathBuf::from("/x/examples/.isoflop/isoflop.db"));
        assert_eq!(loaded.artifacts_dir(), PathBuf::from("/x/examples/.isoflop/runs"));
        assert_eq!(loaded.resolve(Path::new("/abs")), PathBuf::from("/abs"));
        assert_eq!(loaded.resolve(Path::new("../data/m.json")), PathBuf::from("/x/data/m.json"));
        let rel = LoadedSpec { path: PathBuf::from("examples/q.yaml"), ..loaded.clone() };
        assert_eq!(rel.resolve(Path::new("../.isoflop/db")), PathBuf::from(".isoflop/db"));
        let up = LoadedSpec { path: PathBuf::from("q.yaml"), ..loaded };
        assert_eq!(up.resolve(Path::new("../db")), PathBuf::from("../db"));
    }
}
