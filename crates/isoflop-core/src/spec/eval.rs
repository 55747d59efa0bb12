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
            match &t.text {
                None => return Err(SpecError::at(file, &key, "expected what the task scores (`text`)")),
                Some(x) if x.shards.is_empty() => {
                    return Err(SpecError::at(file, format!("{key}.text.shards"), "expected at least one shard"));
                }
                Some(x) if x.tokens == Some(0) => {
                    return Err(SpecError::at(file, format!("{key}.text.tokens"), "expected a positive number of tokens"));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
