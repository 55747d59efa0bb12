//! `grid`: the candidate widths of each budget, and the depth and heads rules that turn a width
//! into a shape. Rules written as maps take exactly one rule's key.

use super::one;
use serde::{Deserialize, Serialize};
use std::fmt;

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
