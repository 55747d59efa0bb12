//! Seeded randomness, run-level resampling and percentile intervals.

use std::collections::BTreeMap;

use crate::table::Point;

/// xoshiro256** seeded through splitmix64: small, fast and reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut st = seed;
        Rng { s: [splitmix64(&mut st), splitmix64(&mut st), splitmix64(&mut st), splitmix64(&mut st)] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (n > 0), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Resamples whole runs with replacement within each budget: all rows of a drawn run (all its
/// distributions) come along together. The order of groups and runs is deterministic, so a seed
/// reproduces the replicate exactly.
pub fn resample_runs(points: &[Point], rng: &mut Rng) -> Vec<Point> {
    // budget (bit pattern) -> run -> row indices
    let mut groups: BTreeMap<u64, BTreeMap<&str, Vec<usize>>> = BTreeMap::new();
    for (i, p) in points.iter().enumerate() {
        groups.entry(p.budget.to_bits()).or_default().entry(p.run.as_str()).or_default().push(i);
    }
    let mut out = Vec::with_capacity(points.len());
    for runs in groups.values() {
        let runs: Vec<&Vec<usize>> = runs.values().collect();
        for k in 0..runs.len() {
            let _ = k;
            let pick = runs[rng.below(runs.len())];
            for &i in pick {
                let mut p = points[i].clone();
                // Keep duplicated runs distinct so a later resample of this replicate still sees them apart.
                p.run = format!("{}#{}", p.run, out.len());
                out.push(p);
            }
        }
    }
    out
}

/// The per-question errors of a multiple-choice task on every run: what a replicate resamples
/// so that its intervals count the questions' sampling as well as the runs'.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Questions {
    /// The subset of each question (by item index).
    pub subset_of: Vec<String>,
    /// Per run id: its error on each question (by item index).
    pub errors: BTreeMap<String, Vec<f64>>,
    /// Groups of subsets (a group's points are the mean over its subsets' questions).
    pub groups: Vec<(String, Vec<String>)>,
    /// The name of the point over every question.
    pub all: String,
}

impl Questions {
    /// The points again with each (run, subset) loss recomputed on a draw of the questions with
    /// replacement within each subset: one draw for all runs (every run answered the same
    /// questions), so differences between runs stay paired. Points the questions do not cover
    /// are kept as they are.
    pub fn resample(&self, points: &[Point], rng: &mut Rng) -> Vec<Point> {
        let mut by_subset: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in self.subset_of.iter().enumerate() {
            by_subset.entry(s.as_str()).or_default().push(i);
        }
        let mut drawn: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (s, items) in &by_subset {
            drawn.insert(s, (0..items.len()).map(|_| items[rng.below(items.len())]).collect());
        }
        let members = |name: &str| -> Option<Vec<usize>> {
            if let Some(d) = drawn.get(name) {
                return Some(d.clone());
            }
            if name == self.all {
                return Some(drawn.values().flatten().copied().collect());
            }
            let (_, subs) = self.groups.iter().find(|(g, _)| g == name)?;
            Some(subs.iter().filter_map(|s| drawn.get(s.as_str())).flatten().copied().collect())
        };
        let mut cache: BTreeMap<String, Option<Vec<usize>>> = BTreeMap::new();
        points
            .iter()
            .map(|p| {
                let mut q = p.clone();
                let items = cache.entry(p.distribution.clone()).or_insert_with(|| members(&p.distribution));
                if let (Some(items), Some(errs)) = (items.as_ref(), self.errors.get(&p.run))
                    && !items.is_empty()
                {
                    q.loss = items.iter().map(|&i| errs[i]).sum::<f64>() / items.len() as f64;
                }
                q
            })
            .collect()
    }
}

/// Percentile of sorted finite values (linear interpolation, like NumPy's default).
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let w = pos - lo as f64;
    sorted[lo] * (1.0 - w) + sorted[hi] * w
}

/// Percentile interval `[lo, hi]` at `level` (e.g. 0.95) from replicate values; non-finite values are
/// dropped. `None` if fewer than two finite replicates.
pub fn percentile_ci(values: &[f64], level: f64) -> Option<[f64; 2]> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let a = (1.0 - level) / 2.0;
    Some([percentile_sorted(&v, a), percentile_sorted(&v, 1.0 - a)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(1);
        let n = 100_000;
        let mean: f64 = (0..n).map(|_| r.uniform()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01);
        let m2: f64 = (0..n).map(|_| r.normal().powi(2)).sum::<f64>() / n as f64;
        assert!((m2 - 1.0).abs() < 0.03);
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        let ci = percentile_ci(&v, 0.9).unwrap();
        assert!((ci[0] - 5.0).abs() < 1e-12 && (ci[1] - 95.0).abs() < 1e-12);
    }
}

#[cfg(test)]
mod question_tests {
    use super::*;

    fn pt(run: &str, d: &str, loss: f64) -> Point {
        Point { run: run.into(), params: 1e5, tokens: 1e7, loss, budget: 1e12, flops: 1e12, distribution: d.into() }
    }

    #[test]
    fn questions_are_drawn_within_subsets_once_for_every_run() {
        let q = Questions {
            subset_of: vec!["a".into(), "a".into(), "b".into()],
            errors: BTreeMap::from([("r1".to_string(), vec![0.2, 0.4, 1.0]), ("r2".to_string(), vec![1.2, 1.4, 2.0])]),
            groups: vec![("g".into(), vec!["a".into(), "b".into()])],
            all: "all".into(),
        };
        let points: Vec<Point> = ["r1", "r2"]
            .iter()
            .flat_map(|r| {
                let o = if *r == "r2" { 1.0 } else { 0.0 };
                [
                    pt(r, "a", 0.3 + o),
                    pt(r, "b", 1.0 + o),
                    pt(r, "g", 1.6 / 3.0 + o),
                    pt(r, "all", 1.6 / 3.0 + o),
                    pt(r, "zz", 9.0),
                ]
            })
            .collect();
        let mut rng = Rng::new(7);
        let mut seen_a = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let out = q.resample(&points, &mut rng);
            let get = |r: &str, d: &str| out.iter().find(|p| p.run == r && p.distribution == d).unwrap().loss;
            assert_eq!(get("r1", "b"), 1.0, "one question: always itself");
            assert_eq!(get("r1", "zz"), 9.0, "not a subset of the task: unchanged");
            assert!((get("r2", "a") - get("r1", "a") - 1.0).abs() < 1e-12, "the same draw for every run");
            assert!(
                (get("r1", "g") - (2.0 * get("r1", "a") + 1.0) / 3.0).abs() < 1e-12,
                "a group is the mean over its questions"
            );
            assert_eq!(get("r1", "g"), get("r1", "all"));
            seen_a.insert((get("r1", "a") * 10.0).round() as i64);
        }
        assert_eq!(seen_a.into_iter().collect::<Vec<_>>(), [2, 3, 4], "draws with replacement: 0.2, 0.3 and 0.4");
    }
}
