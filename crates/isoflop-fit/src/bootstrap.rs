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
