//! Small dense linear algebra and regressions: (weighted) least squares lines and robust (Huber) parabolas.

use serde::{Deserialize, Serialize};

/// Solves `a x = b` for a small dense `n x n` system (row-major `a`) by Gaussian elimination with partial
/// pivoting. Returns `None` when the matrix is singular to working precision.
pub fn solve_dense(n: usize, a: &mut [f64], b: &mut [f64]) -> Option<Vec<f64>> {
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))?;
        if a[piv * n + col].abs() <= 1e-13 * scale {
            return None;
        }
        if piv != col {
            for k in 0..n {
                a.swap(piv * n + k, col * n + k);
            }
            b.swap(piv, col);
        }
        for r in col + 1..n {
            let f = a[r * n + col] / a[col * n + col];
            if f != 0.0 {
                for k in col..n {
                    a[r * n + k] -= f * a[col * n + k];
                }
                b[r] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let mut s = b[r];
        for k in r + 1..n {
            s -= a[r * n + k] * x[k];
        }
        x[r] = s / a[r * n + r];
    }
    Some(x)
}

/// A fitted line `y = intercept + slope * x`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub slope: f64,
    pub intercept: f64,
    pub r2: f64,
    /// Standard error of the slope (classical OLS formula; NaN with fewer than 3 points).
    pub slope_se: f64,
}

/// Weighted least-squares line. `w = None` gives ordinary least squares. Needs two distinct x values.
pub fn fit_line(x: &[f64], y: &[f64], w: Option<&[f64]>) -> Option<Line> {
    let n = x.len();
    if n < 2 || y.len() != n || w.is_some_and(|w| w.len() != n) {
        return None;
    }
    let wt = |i: usize| w.map_or(1.0, |w| w[i]);
    let sw: f64 = (0..n).map(wt).sum();
    if sw <= 0.0 || !sw.is_finite() {
        return None;
    }
    let mx = (0..n).map(|i| wt(i) * x[i]).sum::<f64>() / sw;
    let my = (0..n).map(|i| wt(i) * y[i]).sum::<f64>() / sw;
    let sxx: f64 = (0..n).map(|i| wt(i) * (x[i] - mx).powi(2)).sum();
    let sxy: f64 = (0..n).map(|i| wt(i) * (x[i] - mx) * (y[i] - my)).sum();
    let syy: f64 = (0..n).map(|i| wt(i) * (y[i] - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse: f64 = (0..n).map(|i| wt(i) * (y[i] - intercept - slope * x[i]).powi(2)).sum();
    let r2 = if syy > 0.0 { 1.0 - sse / syy } else { 1.0 };
    let slope_se = if n > 2 { (sse / (n as f64 - 2.0) / sxx).sqrt() } else { f64::NAN };
    Some(Line { slope, intercept, r2, slope_se })
}

/// A parabola `y = c0 + c1 (x - x0) + c2 (x - x0)^2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Parabola {
    pub x0: f64,
    pub c: [f64; 3],
}

impl Parabola {
    pub fn eval(&self, x: f64) -> f64 {
        let t = x - self.x0;
        self.c[0] + t * (self.c[1] + t * self.c[2])
    }

    /// The vertex `(x, y)`; `None` unless the parabola opens upward.
    pub fn vertex(&self) -> Option<(f64, f64)> {
        if self.c[2] > 0.0 && self.c[2].is_finite() {
            let x = self.x0 - self.c[1] / (2.0 * self.c[2]);
            Some((x, self.eval(x)))
        } else {
            None
        }
    }
}

fn weighted_parabola(x: &[f64], y: &[f64], w: &[f64], x0: f64) -> Option<Parabola> {
    let mut a = [0.0; 9];
    let mut b = [0.0; 3];
    for i in 0..x.len() {
        let t = x[i] - x0;
        let basis = [1.0, t, t * t];
        for r in 0..3 {
            b[r] += w[i] * basis[r] * y[i];
            for c in 0..3 {
                a[r * 3 + c] += w[i] * basis[r] * basis[c];
            }
        }
    }
    let c = solve_dense(3, &mut a, &mut b)?;
    Some(Parabola { x0, c: [c[0], c[1], c[2]] })
}

/// Robust parabola by iteratively reweighted least squares with Huber weights: residuals beyond
/// `k * s` (s = MAD / 0.6745 of the residuals, floored) are down-weighted by `k s / |r|`.
/// Needs at least 3 distinct x values.
pub fn huber_parabola(x: &[f64], y: &[f64], k: f64) -> Option<Parabola> {
    let n = x.len();
    if n < 3 || y.len() != n {
        return None;
    }
    let x0 = x.iter().sum::<f64>() / n as f64;
    let mut w = vec![1.0; n];
    let mut fit = weighted_parabola(x, y, &w, x0)?;
    if n == 3 {
        return Some(fit);
    }
    let yscale = y.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    for _ in 0..100 {
        let r: Vec<f64> = (0..n).map(|i| y[i] - fit.eval(x[i])).collect();
        let mut abs: Vec<f64> = r.iter().map(|v| v.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let mad = if n % 2 == 1 { abs[n / 2] } else { 0.5 * (abs[n / 2 - 1] + abs[n / 2]) };
        let s = (mad / 0.6745).max(1e-9 * yscale);
        let cut = k * s;
        for i in 0..n {
            w[i] = if r[i].abs() <= cut { 1.0 } else { cut / r[i].abs() };
        }
        let next = weighted_parabola(x, y, &w, x0)?;
        let change = (0..3).map(|j| (next.c[j] - fit.c[j]).abs()).fold(0.0, f64::max);
        fit = next;
        if change <= 1e-12 * (1.0 + fit.c.iter().map(|v| v.abs()).fold(0.0, f64::max)) {
            break;
        }
    }
    Some(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_parabola() {
        let x: Vec<f64> = (0..10).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 + 0.5 * v).collect();
        let l = fit_line(&x, &y, None).unwrap();
        assert!((l.slope - 0.5).abs() < 1e-12 && (l.intercept - 2.0).abs() < 1e-12);
        let mut y2: Vec<f64> = x.iter().map(|v| 1.0 + 0.1 * (v - 4.0).powi(2)).collect();
        y2[9] += 5.0; // outlier
        let p = huber_parabola(&x, &y2, 1.345).unwrap();
        let (vx, vy) = p.vertex().unwrap();
        assert!((vx - 4.0).abs() < 1e-3, "{vx}");
        assert!((vy - 1.0).abs() < 1e-3, "{vy}");
    }
}
