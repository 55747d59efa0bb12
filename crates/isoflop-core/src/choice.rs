//! Multiple-choice scoring, as lm-evaluation-harness defines it: what a compiled item is, the
//! metrics of one scored item, and the scores of subsets and groups of items.
//!
//! Each choice `i` is the continuation `delimiter + choices[i]` of the item's context; its
//! log-likelihood `ll_i` is the sum of the log-probabilities of the continuation's tokens given
//! the context. From the log-likelihoods and the choices' lengths:
//!
//! - `acc`: 1 when the gold choice has the highest `ll_i` (the first of ties, as `argmax`);
//! - `acc_norm`: the same of `ll_i / chars_i` (characters of the choice, without delimiter);
//! - `acc_bytes`: the same of `ll_i / bytes_i` (its UTF-8 bytes);
//! - with `b_i = max(1, bytes_i)`: `bpb = -ll_gold / b_gold / ln 2`, `logprob = ll_gold`,
//!   `choice_logprob = ll_gold - logsumexp(ll)`, and `choice_prob_norm` the softmax over the
//!   choices of `-bpb_i` at the gold index (the metrics of the Stanford CRFM fork the relative
//!   scaling paper used).
//!
//! A subset's score is the mean over its items; a group's is the mean over the items of its
//! subsets (the size-weighted mean of its subsets), and `all` the mean over every item.

use crate::eval::{EvalMetric, SubsetGroup, metric};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The subset name under which the mean over every item of a task is stored.
pub const ALL: &str = "all";

/// One line of a compiled multiple-choice file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceItem {
    /// Where it comes from (`subject/line`), to compare per item with other tools.
    pub id: String,
    /// Its subset (an MMLU subject, an eval set).
    pub subset: String,
    /// The whole prompt: description, shots and the question.
    pub context: String,
    /// Put between the context and each choice (lm-eval's `target_delimiter`).
    pub delimiter: String,
    pub choices: Vec<String>,
    /// Index of the gold choice.
    pub gold: usize,
}

impl ChoiceItem {
    /// The continuation scored for choice `i`.
    pub fn continuation(&self, i: usize) -> String {
        format!("{}{}", self.delimiter, self.choices[i])
    }

    /// What a scorer would refuse: fewer than two choices, a gold index out of range.
    pub fn check(&self) -> Result<(), String> {
        if self.choices.len() < 2 {
            return Err(format!("item {}: expected at least two choices, got {}", self.id, self.choices.len()));
        }
        if self.gold >= self.choices.len() {
            return Err(format!("item {}: gold index {} but {} choices", self.id, self.gold, self.choices.len()));
        }
        Ok(())
    }

    /// The scored item from the log-likelihoods of its choices.
    pub fn scored(&self, item: u64, ll: Vec<f64>) -> ItemScore {
        ItemScore {
            item,
            subset: self.subset.clone(),
            gold: self.gold as u32,
            chars: self.choices.iter().map(|c| c.chars().count() as u32).collect(),
            bytes: self.choices.iter().map(|c| c.len() as u32).collect(),
            ll,
        }
    }
}

/// One scored item, as stored: enough to compute every metric again (to resample questions)
/// without the task's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemScore {
    /// Its line in the compiled file (from 0).
    pub item: u64,
    pub subset: String,
    pub gold: u32,
    /// Log-likelihood of each choice (nats).
    pub ll: Vec<f64>,
    /// Characters of each choice.
    pub chars: Vec<u32>,
    /// UTF-8 bytes of each choice.
    pub bytes: Vec<u32>,
}

/// The metrics of one item, in the order [`ItemMetrics::NAMES`] lists them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemMetrics {
    pub acc: f64,
    pub acc_norm: f64,
    pub acc_bytes: f64,
    pub bpb: f64,
    pub logprob: f64,
    pub choice_logprob: f64,
    pub choice_prob_norm: f64,
}

impl ItemMetrics {
    /// The stored metric names, in [`ItemMetrics::values`]'s order.
    pub const NAMES: [&'static str; 7] = [
        metric::ACC,
        metric::ACC_NORM,
        metric::ACC_BYTES,
        metric::BPB,
        metric::LOGPROB,
        metric::CHOICE_LOGPROB,
        metric::CHOICE_PROB_NORM,
    ];

    pub fn values(&self) -> [f64; 7] {
        [self.acc, self.acc_norm, self.acc_bytes, self.bpb, self.logprob, self.choice_logprob, self.choice_prob_norm]
    }
}

/// Index of the largest value, the first of ties (NaN never wins).
fn argmax(v: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in v.enumerate() {
        if x > best.1 || (i == 0 && !x.is_nan()) {
            best = (i, x);
        }
    }
    best.0
}

fn logsumexp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

impl ItemScore {
    /// The item's metrics (see the module's definitions).
    pub fn metrics(&self) -> ItemMetrics {
        let g = self.gold as usize;
        let hit = |i: usize| if i == g { 1.0 } else { 0.0 };
        let per = |len: &[u32]| argmax(self.ll.iter().zip(len).map(|(l, &n)| l / n as f64));
        let bpb: Vec<f64> =
            self.ll.iter().zip(&self.bytes).map(|(l, &b)| -l / f64::from(b.max(1)) / std::f64::consts::LN_2).collect();
        let neg: Vec<f64> = bpb.iter().map(|b| -b).collect();
        ItemMetrics {
            acc: hit(argmax(self.ll.iter().copied())),
            acc_norm: hit(per(&self.chars)),
            acc_bytes: hit(per(&self.bytes)),
            bpb: bpb[g],
            logprob: self.ll[g],
            choice_logprob: self.ll[g] - logsumexp(&self.ll),
            choice_prob_norm: (neg[g] - logsumexp(&neg)).exp(),
        }
    }
}

/// The task's scores: per subset, per group and over [`ALL`] items, each the mean of every
/// metric and the count of items ([`metric::ITEMS`]). Subsets in name order, then groups in the
/// order given, then `all`. A group none of whose subsets was scored is left out.
pub fn aggregate(items: &[ItemScore], groups: &[SubsetGroup]) -> Vec<EvalMetric> {
    let mut sums: BTreeMap<&str, ([f64; 7], u64)> = BTreeMap::new();
    let mut all = ([0.0; 7], 0u64);
    for it in items {
        let v = it.metrics().values();
        let e = sums.entry(it.subset.as_str()).or_insert(([0.0; 7], 0));
        for (k, x) in v.iter().enumerate() {
            e.0[k] += x;
            all.0[k] += x;
        }
        e.1 += 1;
        all.1 += 1;
    }
    let mut out = Vec::new();
    let mut push = |name: &str, (s, n): ([f64; 7], u64)| {
        if n == 0 {
            return;
        }
        for (k, m) in ItemMetrics::NAMES.iter().enumerate() {
            out.push(EvalMetric { subset: name.to_string(), metric: (*m).into(), value: s[k] / n as f64 });
        }
        out.push(EvalMetric { subset: name.to_string(), metric: metric::ITEMS.into(), value: n as f64 });
    };
    for (name, s) in &sums {
        push(name, *s);
    }
    for g in groups {
        let mut s = ([0.0; 7], 0u64);
        for sub in &g.subsets {
            if let Some((v, n)) = sums.get(sub.as_str()) {
                for (k, x) in v.iter().enumerate() {
                    s.0[k] += x;
                }
                s.1 += n;
            }
        }
        push(&g.name, s);
    }
    push(ALL, all);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(ll: &[f64], choices: &[&str], gold: usize, subset: &str) -> ItemScore {
        ChoiceItem {
            id: "x/0".into(),
            subset: subset.into(),
            context: "Q:".into(),
            delimiter: " ".into(),
            choices: choices.iter().map(|c| c.to_string()).collect(),
            gold,
        }
        .scored(0, ll.to_vec())
    }

    #[test]
    fn item_metrics_by_hand() {
        // Choice 1 is the most likely, but per character (and per byte) choice 0 wins.
        let it = item(&[-2.0, -1.5, -9.0], &["aaaa", "b", "cé"], 0, "s");
        assert_eq!((it.chars.as_slice(), it.bytes.as_slice()), (&[4, 1, 2][..], &[4, 1, 3][..]));
        let m = it.metrics();
        assert_eq!((m.acc, m.acc_norm, m.acc_bytes), (0.0, 1.0, 1.0));
        let ln2 = std::f64::consts::LN_2;
        assert!((m.bpb - 2.0 / 4.0 / ln2).abs() < 1e-12);
        assert_eq!(m.logprob, -2.0);
        let lse = ((-2.0f64).exp() + (-1.5f64).exp() + (-9.0f64).exp()).ln();
        assert!((m.choice_logprob - (-2.0 - lse)).abs() < 1e-12);
        let neg = [-2.0 / 4.0 / ln2, -1.5 / ln2, -9.0 / 3.0 / ln2];
        let want = neg[0].exp() / neg.iter().map(|x| x.exp()).sum::<f64>();
        assert!((m.choice_prob_norm - want).abs() < 1e-12);
        // Per character and per byte differ when a choice is not ASCII.
        let m = item(&[-2.0, -2.9], &["é", "ab"], 1, "s").metrics();
        assert_eq!((m.acc_norm, m.acc_bytes), (1.0, 0.0));
        // Ties go to the first choice, as numpy's argmax; an empty choice counts one byte.
        let tie = item(&[-1.0, -1.0], &["x", ""], 1, "s").metrics();
        assert_eq!(tie.acc, 0.0);
        assert!((tie.bpb - 1.0 / ln2).abs() < 1e-12);
    }

    #[test]
    fn groups_weight_subsets_by_size() {
        // Subset a: 1 of 1 right; subset b: 1 of 3 right. The group is 2 of 4, not (1 + 1/3)/2.
        let items = vec![
            item(&[-1.0, -2.0], &["x", "y"], 0, "a"),
            item(&[-1.0, -2.0], &["x", "y"], 0, "b"),
            item(&[-1.0, -2.0], &["x", "y"], 1, "b"),
            item(&[-1.0, -2.0], &["x", "y"], 1, "b"),
        ];
        let groups = vec![
            SubsetGroup { name: "g".into(), subsets: vec!["a".into(), "b".into()] },
            SubsetGroup { name: "empty".into(), subsets: vec!["zz".into()] },
        ];
        let out = aggregate(&items, &groups);
        let get = |s: &str, m: &str| out.iter().find(|x| x.subset == s && x.metric == m).map(|x| x.value);
        assert_eq!(get("a", metric::ACC), Some(1.0));
        assert!((get("b", metric::ACC).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(get("g", metric::ACC), Some(0.5));
        assert_eq!(get(ALL, metric::ACC), Some(0.5));
        assert_eq!((get("g", metric::ITEMS), get("b", metric::ITEMS)), (Some(4.0), Some(3.0)));
        assert_eq!(get("empty", metric::ACC), None);
        assert_eq!(out.len(), 4 * 8);
    }

    #[test]
    fn items_refuse_what_cannot_be_scored() {
        let mut c = ChoiceItem {
            id: "s/1".into(),
            subset: "s".into(),
            context: String::new(),
            delimiter: " ".into(),
            choices: vec!["A".into(), "B".into()],
            gold: 1,
        };
        assert!(c.check().is_ok());
        assert_eq!(c.continuation(1), " B");
        c.gold = 2;
        assert!(c.check().unwrap_err().contains("gold index 2 but 2 choices"));
        c.choices.truncate(1);
        assert!(c.check().unwrap_err().contains("at least two"));
    }
}
