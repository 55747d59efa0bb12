//! Evaluation jobs: what is scored, on which checkpoint of which run, and their identity.
//!
//! A training run's identity ([`crate::RunId`]) covers only what changes its training. An
//! evaluation job is a separate job of its own: the run, the checkpoint step, and the task
//! with its scoring settings, hashed the same way (SHA-256 of canonical JSON with file paths
//! blanked). Adding a task to a finished sweep therefore adds jobs and retrains nothing.

use crate::config::{EvalRef, RunId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The name of the task that scores the held-out distributions of a prepared corpus
/// (`data.evals` of the spec).
pub const HELDOUT_TASK: &str = "heldout";

/// One task: a name and what to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalTask {
    /// Short name (letters, digits, `.`, `_`, `-`), part of the job's identity and its name.
    pub name: String,
    #[serde(flatten)]
    pub kind: TaskKind,
}

/// What a task scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskKind {
    /// Bits per byte and nats per token of held-out text, per distribution.
    Text(TextTask),
    /// Multiple-choice questions, scored by the log-likelihood of each choice.
    MultipleChoice(ChoiceTask),
}

impl TaskKind {
    /// The task family: `text` or `multiple_choice`.
    pub fn family(&self) -> &'static str {
        match self {
            TaskKind::Text(_) => "text",
            TaskKind::MultipleChoice(_) => "multiple_choice",
        }
    }
}

/// Held-out text, one token shard per distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextTask {
    /// The shards scored, one per distribution (their paths are not part of the identity).
    pub distributions: Vec<EvalRef>,
    /// At most this many tokens of each shard are scored (whole windows from the start).
    pub tokens: u64,
    /// Tokens at the start of each document left out of the score (their predictions are
    /// made but not counted; the paper scores dialect text after the first 30 tokens). Absent
    /// from the identity when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip_tokens: u64,
}

/// Multiple-choice questions, compiled at plan time to one file of [`crate::choice::ChoiceItem`]
/// lines (prompts with their shots already written out), so that a worker scores exactly what
/// the planner checked and the file's digest is the task's content in the job's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceTask {
    /// The compiled items (its path is not part of the identity; its digest is the SHA-256 of
    /// the file's bytes).
    pub items: EvalRef,
    /// Items in the file.
    pub count: u64,
    /// Groups of subsets, each scored as the mean over the items of its subsets (the
    /// size-weighted mean of its subsets' scores).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<SubsetGroup>,
}

/// A named group of subsets (MMLU's four categories, a cluster of AI-risk behaviours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetGroup {
    pub name: String,
    pub subsets: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Everything that determines an evaluation job's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalJobConfig {
    /// The training run whose checkpoint is scored.
    pub run: RunId,
    /// The checkpoint's step (the run's last step for its final checkpoint).
    pub step: u64,
    pub task: EvalTask,
}

impl EvalJobConfig {
    /// JSON with paths blanked: the bytes the job's identity is computed from.
    pub fn identity_json(&self) -> String {
        let mut c = self.clone();
        match &mut c.task.kind {
            TaskKind::Text(t) => t.distributions.iter_mut().for_each(|d| d.path.clear()),
            TaskKind::MultipleChoice(t) => t.items.path.clear(),
        }
        serde_json::to_string(&c).expect("EvalJobConfig serialises")
    }

    /// Content hash of the job: 16 hex digits, in the same id space as runs.
    pub fn job_id(&self) -> RunId {
        let digest = Sha256::digest(self.identity_json().as_bytes());
        RunId(hex::encode(&digest[..8]))
    }

    /// Checks what the worker would refuse before reading any data.
    pub fn validate(&self) -> Result<(), crate::InvalidRun> {
        match &self.task.kind {
            TaskKind::Text(t) => {
                if t.distributions.is_empty() {
                    return Err(crate::InvalidRun {
                        field: "task.text.distributions",
                        message: "expected a distribution".into(),
                    });
                }
                if t.tokens == 0 {
                    return Err(crate::InvalidRun {
                        field: "task.text.tokens",
                        message: "expected a positive number of tokens".into(),
                    });
                }
            }
            TaskKind::MultipleChoice(t) => {
                if t.count == 0 {
                    return Err(crate::InvalidRun {
                        field: "task.multiple_choice.count",
                        message: "expected at least one item".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The checkpoint steps a run of `steps` steps is evaluated at: the given fractions of
/// training (rounded to the nearest step, at least 1) and always the last step; sorted, without
/// repeats.
pub fn eval_steps(steps: u64, fractions: &[f64]) -> Vec<u64> {
    let mut out: Vec<u64> = fractions.iter().map(|f| ((f * steps as f64).round() as u64).clamp(1, steps)).collect();
    out.push(steps);
    out.sort_unstable();
    out.dedup();
    out
}

/// One metric of one subset (a distribution, a subject, a group) of a job's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetric {
    pub subset: String,
    pub metric: String,
    pub value: f64,
}

/// Text metrics of one distribution, in the names results are stored under.
pub mod metric {
    /// Mean cross-entropy, nats per scored token.
    pub const LOSS: &str = "loss";
    /// Bits per UTF-8 byte of the scored text.
    pub const BPB: &str = "bpb";
    /// Tokens scored.
    pub const TOKENS: &str = "tokens";
    /// UTF-8 bytes the scored tokens stand for.
    pub const BYTES: &str = "bytes";
    /// Multiple choice: the gold choice has the highest log-likelihood.
    pub const ACC: &str = "acc";
    /// ... the highest log-likelihood per character of the choice.
    pub const ACC_NORM: &str = "acc_norm";
    /// ... the highest log-likelihood per UTF-8 byte of the choice.
    pub const ACC_BYTES: &str = "acc_bytes";
    /// The gold choice's log-likelihood (nats).
    pub const LOGPROB: &str = "logprob";
    /// The gold choice's log-probability among the choices: `ll_gold - logsumexp(ll)`.
    pub const CHOICE_LOGPROB: &str = "choice_logprob";
    /// Softmax over the choices of minus their bits per byte, at the gold choice.
    pub const CHOICE_PROB_NORM: &str = "choice_prob_norm";
    /// Items scored (multiple choice).
    pub const ITEMS: &str = "items";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> EvalJobConfig {
        EvalJobConfig {
            run: RunId("0123456789abcdef".into()),
            step: 100,
            task: EvalTask {
                name: HELDOUT_TASK.into(),
                kind: TaskKind::Text(TextTask {
                    distributions: vec![EvalRef { name: "code".into(), path: "/a/code.bin".into(), digest: "bb".into() }],
                    tokens: 4096,
                    skip_tokens: 0,
                }),
            },
        }
    }

    #[test]
    fn job_identity_ignores_paths_and_covers_the_rest() {
        let a = job();
        let mut b = job();
        let TaskKind::Text(t) = &mut b.task.kind else { unreachable!() };
        t.distributions[0].path = "/elsewhere/code.bin".into();
        assert_eq!(a.job_id(), b.job_id());
        assert_eq!(a.job_id().0.len(), 16);
        let json = a.identity_json();
        assert!(!json.contains("skip_tokens") && !json.contains("/a/"), "{json}");
        assert_eq!(serde_json::from_str::<EvalJobConfig>(&json).unwrap().job_id(), a.job_id());
        type Change = Box<dyn Fn(&mut EvalJobConfig)>;
        let changes: Vec<Change> = vec![
            Box::new(|j| j.step = 50),
            Box::new(|j| j.run = RunId("fedcba9876543210".into())),
            Box::new(|j| j.task.name = "other".into()),
            Box::new(|j| {
                let TaskKind::Text(t) = &mut j.task.kind else { unreachable!() };
                t.skip_tokens = 30
            }),
            Box::new(|j| {
                let TaskKind::Text(t) = &mut j.task.kind else { unreachable!() };
                t.tokens = 1
            }),
            Box::new(|j| {
                let TaskKind::Text(t) = &mut j.task.kind else { unreachable!() };
                t.distributions[0].digest = "cc".into()
            }),
        ];
        for change in changes {
            let mut c = job();
            change(&mut c);
            assert_ne!(c.job_id(), a.job_id(), "{}", c.identity_json());
        }
    }

    #[test]
    fn steps_of_fractions() {
        assert_eq!(eval_steps(100, &[]), [100]);
        assert_eq!(eval_steps(100, &[0.5, 0.25, 1.0, 0.5]), [25, 50, 100]);
        assert_eq!(eval_steps(3, &[0.01]), [1, 3]);
    }
}
