//! `recipe`: the optimiser and schedule every run of a sweep shares.

use serde::{Deserialize, Serialize};
use std::fmt;

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
