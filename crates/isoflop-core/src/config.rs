//! The complete, self-contained description of one training run, and its content hash.
//!
//! A [`RunConfig`] holds everything that changes a run's result and nothing that does not
//! (not its sweep, not its position in a grid, not where its checkpoints go). Its
//! [`RunId`] is the SHA-256 of its canonical JSON, so the same run planned by two sweeps is
//! one run, trained once.

use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Shape of a Llama/Qwen3-style decoder-only Transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    /// Vocabulary size (rows of the embedding and of the LM head).
    pub vocab_size: u64,
    /// Model width `h`.
    pub hidden: u64,
    /// Number of Transformer blocks `L`.
    pub layers: u64,
    /// Attention (query) heads `H`.
    pub heads: u64,
    /// Key/value heads (equal to `heads` unless grouped-query attention is used).
    pub kv_heads: u64,
    /// SwiGLU intermediate size `I`.
    pub ffn_hidden: u64,
    /// Training sequence length `S` in tokens.
    pub seq_len: u64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Optional Llama-3 RoPE frequency scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// RMSNorm on queries and keys per head (Qwen3).
    pub qk_norm: bool,
    /// Share the input embedding with the LM head.
    pub tie_embeddings: bool,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// Standard deviation of the normal initialisation of every matrix.
    pub init_std: f64,
}

impl ModelShape {
    /// Per-head dimension `h / H` (0 for a shape without heads, which [`ModelShape::validate`]
    /// refuses).
    pub fn head_dim(&self) -> u64 {
        self.hidden.checked_div(self.heads).unwrap_or(0)
    }

    /// Checks that the shape describes a model the trainer can build: positive sizes, heads
    /// that divide the width, key/value heads that divide the heads, an even head dimension
    /// (RoPE rotates pairs of dimensions), sane RoPE scaling, and positive norm epsilon and
    /// non-negative initialisation. The planner calls it for every candidate, so a spec the
    /// trainer would refuse is refused before anything is stored.
    pub fn validate(&self) -> Result<(), InvalidRun> {
        let positive = [
            ("model.vocab_size", self.vocab_size, "vocabulary"),
            ("model.hidden", self.hidden, "width"),
            ("model.layers", self.layers, "layer count"),
            ("model.heads", self.heads, "head count"),
            ("model.kv_heads", self.kv_heads, "key/value head count"),
            ("model.ffn_hidden", self.ffn_hidden, "SwiGLU width"),
            ("model.seq_len", self.seq_len, "sequence length"),
        ];
        for (field, v, what) in positive {
            if v == 0 {
                return Err(InvalidRun::new(field, format!("expected a positive {what}, got 0")));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(InvalidRun::new(
                "model.heads",
                format!("width {} is not divisible by its {} heads", self.hidden, self.heads),
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(InvalidRun::new(
                "model.kv_heads",
                format!("{} heads are not divisible by {} key/value heads", self.heads, self.kv_heads),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(InvalidRun::new(
                "model.heads",
                format!(
                    "width {} with {} heads has head dimension {}; RoPE needs an even head dimension (at least 2)",
                    self.hidden,
                    self.heads,
                    self.head_dim()
                ),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(InvalidRun::new("model.rope_theta", format!("expected a positive number, got {}", self.rope_theta)));
        }
        if let Some(r) = &self.rope_scaling
            && !(r.factor > 0.0 && r.low_freq_factor > 0.0 && r.high_freq_factor > r.low_freq_factor && r.original_context > 0)
        {
            return Err(InvalidRun::new(
                "model.rope_scaling",
                "expected factor > 0, 0 < low_freq_factor < high_freq_factor and original_context > 0",
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(InvalidRun::new("model.norm_eps", format!("expected a positive number, got {}", self.norm_eps)));
        }
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            return Err(InvalidRun::new("model.init_std", format!("expected a number >= 0, got {}", self.init_std)));
        }
        Ok(())
    }
}

/// A run configuration the trainer cannot use: which field, and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRun {
    /// The [`RunConfig`] field, as a path (`model.heads`, `recipe.beta2`).
    pub field: &'static str,
    /// What is wrong and what was expected.
    pub message: String,
}

impl InvalidRun {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidRun { field, message: message.into() }
    }
}

/// Llama-3 style RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_context: u64,
}

/// Optimiser and schedule of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Global batch in sequences.
    pub batch: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of steps of linear warmup from 0.
    pub warmup_frac: f64,
    /// Fraction of steps, at the end, of linear decay to `min_lr_frac * lr`.
    pub decay_frac: f64,
    /// Floor of the decay as a fraction of the peak.
    pub min_lr_frac: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clip (0 disables).
    pub grad_clip: f64,
    /// Cautious AdamW: mask the update where its sign disagrees with the gradient's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cautious: bool,
    /// Scale the weight decay by `lr_t / lr_peak`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wd_schedule: bool,
    /// Decay the token embedding too (matrices always are; tied embeddings are the
    /// embedding). Off by default, and then absent from the run's identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decay_embeddings: bool,
    /// Decay the RMSNorm weights too. Off by default, and then absent from the identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decay_norms: bool,
}

impl Recipe {
    /// Checks what the optimiser and schedule need: positive batch and steps, a finite
    /// non-negative learning rate, fractions in range, betas in [0, 1), positive eps, finite
    /// non-negative decay and clipping.
    pub fn validate(&self) -> Result<(), InvalidRun> {
        let checks: [(bool, &'static str, &str); 12] = [
            (self.batch > 0, "recipe.batch", "expected a positive batch"),
            (self.steps > 0, "recipe.steps", "expected a positive number of steps"),
            (self.lr.is_finite() && self.lr >= 0.0, "recipe.lr", "expected a finite learning rate >= 0"),
            ((0.0..=1.0).contains(&self.warmup_frac), "recipe.warmup_frac", "expected a fraction in [0, 1]"),
            ((0.0..=1.0).contains(&self.decay_frac), "recipe.decay_frac", "expected a fraction in [0, 1]"),
            (self.warmup_frac + self.decay_frac <= 1.0, "recipe.decay_frac", "expected warmup_frac + decay_frac <= 1"),
            ((0.0..=1.0).contains(&self.min_lr_frac), "recipe.min_lr_frac", "expected a fraction in [0, 1]"),
            (self.weight_decay.is_finite() && self.weight_decay >= 0.0, "recipe.weight_decay", "expected a number >= 0"),
            ((0.0..1.0).contains(&self.beta1), "recipe.beta1", "expected a number in [0, 1)"),
            ((0.0..1.0).contains(&self.beta2), "recipe.beta2", "expected a number in [0, 1)"),
            (self.eps.is_finite() && self.eps > 0.0, "recipe.eps", "expected a positive number"),
            (self.grad_clip.is_finite() && self.grad_clip >= 0.0, "recipe.grad_clip", "expected a number >= 0"),
        ];
        match checks.into_iter().find(|(ok, _, _)| !ok) {
            Some((_, field, msg)) => Err(InvalidRun::new(field, msg)),
            None => Ok(()),
        }
    }
}

/// Identity of one token shard: its name, content digest and size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRef {
    pub name: String,
    /// Path of the shard as seen by the coordinator (excluded from the run's identity).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub path: String,
    /// SHA-256 of the shard's token payload, as written by `isoflop data prepare`.
    pub digest: String,
}

/// The data a run trains on. What it is evaluated on is not part of the run: evaluation jobs
/// ([`crate::eval::EvalJobConfig`]) score its checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRef {
    /// The tokenizer the shards were written with.
    pub tokenizer: Tokenizer,
    /// Training shard.
    pub train: EvalRef,
}

/// Everything that determines the result of one training run (and nothing about how it is
/// evaluated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelShape,
    pub recipe: Recipe,
    pub data: DataRef,
    pub seed: u64,
}

impl RunConfig {
    /// Checks the model shape, the recipe and the data settings: everything the trainer
    /// would refuse before reading a shard.
    pub fn validate(&self) -> Result<(), InvalidRun> {
        self.model.validate()?;
        self.recipe.validate()
    }

    /// Training tokens one optimiser step consumes (`batch · seq_len`).
    pub fn tokens_per_step(&self) -> u64 {
        self.recipe.batch * self.model.seq_len
    }

    /// Training tokens consumed after `step` steps.
    pub fn tokens_at(&self, step: u64) -> u64 {
        step * self.tokens_per_step()
    }

    /// Training tokens of the whole run (`batch · steps · seq_len`).
    pub fn tokens(&self) -> u64 {
        self.tokens_at(self.recipe.steps)
    }

    /// JSON with paths blanked: the bytes the run identity is computed from.
    pub fn identity_json(&self) -> String {
        let mut c = self.clone();
        c.data.train.path.clear();
        serde_json::to_string(&c).expect("RunConfig serialises")
    }

    /// Content hash of everything that changes this run's result.
    pub fn run_id(&self) -> RunId {
        let digest = Sha256::digest(self.identity_json().as_bytes());
        RunId(hex::encode(&digest[..8]))
    }
}

/// A run's content hash: 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> RunConfig {
        RunConfig {
            model: ModelShape {
                vocab_size: 259,
                hidden: 64,
                layers: 2,
                heads: 4,
                kv_heads: 4,
                ffn_hidden: 256,
                seq_len: 128,
                rope_theta: 10000.0,
                rope_scaling: None,
                qk_norm: true,
                tie_embeddings: false,
                norm_eps: 1e-5,
                init_std: 0.02,
            },
            recipe: Recipe {
                batch: 8,
                steps: 100,
                lr: 3e-3,
                warmup_frac: 0.1,
                decay_frac: 0.2,
                min_lr_frac: 0.0,
                weight_decay: 0.1,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                grad_clip: 1.0,
                cautious: false,
                wd_schedule: false,
                decay_embeddings: false,
                decay_norms: false,
            },
            data: DataRef {
                tokenizer: Tokenizer::Byte,
                train: EvalRef { name: "train".into(), path: "/a/train.bin".into(), digest: "aa".into() },
            },
            seed: 0,
        }
    }

    #[test]
    fn run_id_ignores_paths_but_not_content() {
        let a = sample();
        let mut b = sample();
        b.data.train.path = "/elsewhere/train.bin".into();
        assert_eq!(a.run_id(), b.run_id());
        b.data.train.digest = "ab".into();
        assert_ne!(a.run_id(), b.run_id());
        let mut c = sample();
        c.seed = 1;
        assert_ne!(a.run_id(), c.run_id());
        let mut d = sample();
        d.recipe.lr = 3.1e-3;
        assert_ne!(a.run_id(), d.run_id());
        assert_eq!(a.run_id().0.len(), 16);
    }

    #[test]
    fn decay_scope_is_identity_only_when_set() {
        let a = sample();
        // Unset options are not serialised: the identity (and run id) of existing runs holds.
        let json = a.identity_json();
        assert!(!json.contains("decay_embeddings") && !json.contains("decay_norms"), "{json}");
        assert_eq!(serde_json::from_str::<RunConfig>(&json).unwrap().run_id(), a.run_id());
        let mut b = sample();
        b.recipe.decay_embeddings = true;
        let mut c = sample();
        c.recipe.decay_norms = true;
        for (x, key) in [(&b, "\"decay_embeddings\":true"), (&c, "\"decay_norms\":true")] {
            assert_ne!(a.run_id(), x.run_id());
            assert!(x.identity_json().contains(key), "{key}");
            assert_eq!(serde_json::from_str::<RunConfig>(&x.identity_json()).unwrap().recipe, x.recipe);
        }
        assert_ne!(b.run_id(), c.run_id());
    }
}
