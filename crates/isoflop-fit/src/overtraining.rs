//! The over-training law of Gadre et al. (2024): with token multiplier `M = D / N` and compute `C = 6 N D`,
//! `L(C, M) = E + (a M^eta + b M^-eta) C^-eta` (Chinchilla's law with alpha = beta). Fitted by least
//! squares on the loss, L-BFGS from a small grid of starts in `(E, ln a, ln b, eta)`.

use serde::{Deserialize, Serialize};

use crate::lbfgs::{LbfgsOptions, minimize};

/// The fitted law.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OvertrainingFit {
    #[serde(rename = "E")]
    pub e_irreducible: f64,
    pub a: f64,
    pub b: f64,
    pub eta: f64,
    /// Sum of squared residuals.
    pub sse: f64,
}

impl OvertrainingFit {
    /// Predicted loss of `params` parameters trained on `tokens` tokens.
    pub fn predict(&self, params: f64, tokens: f64) -> f64 {
        let m = tokens / params;
        let c = 6.0 * params * tokens;
        self.e_irreducible + (self.a * m.powf(self.eta) + self.b * m.powf(-self.eta)) * c.powf(-self.eta)
    }
}

fn sse(th: &[f64; 4], ln_m: &[f64], ln_c: &[f64], y: &[f64], g: &mut [f64; 4]) -> f64 {
    let [e, la, lb, eta] = *th;
    let mut f = 0.0;
    *g = [0.0; 4];
    for i in 0..y.len() {
        let u = (la + eta * (ln_m[i] - ln_c[i])).exp();
        let v = (lb - eta * (ln_m[i] + ln_c[i])).exp();
        let r = e + u + v - y[i];
        f += r * r;
        g[0] += 2.0 * r;
        g[1] += 2.0 * r * u;
        g[2] += 2.0 * r * v;
        g[3] += 2.0 * r * (u * (ln_m[i] - ln_c[i]) - v * (ln_m[i] + ln_c[i]));
    }
    f
}

/// Fits the law to `(params, tokens, loss)` triples (at least 4). `None` if no start converges.
pub fn fit_overtraining(points: &[(f64, f64, f64)]) -> Option<OvertrainingFit> {
    if points.len() < 4 {
        return None;
    }
    let ln_m: Vec<f64> = points.iter().map(|p| (p.1 / p.0).ln()).collect();
    let ln_c: Vec<f64> = points.iter().map(|p| (6.0 * p.0 * p.1).ln()).collect();
    let y: Vec<f64> = points.iter().map(|p| p.2).collect();
    let opts = LbfgsOptions { gtol: 1e-12, ftol: 1e-15, max_iter: 5000, ..LbfgsOptions::default() };
    let mut best: Option<OvertrainingFit> = None;
    for e in [0.5, 1.5, 2.5] {
        for la in [0.0, 3.0, 6.0, 9.0, 12.0] {
            for lb in [0.0, 3.0, 6.0, 9.0, 12.0] {
                for eta in [0.05, 0.1, 0.2, 0.3] {
                    let r = minimize(|x: &[f64; 4], g: &mut [f64; 4]| sse(x, &ln_m, &ln_c, &y, g), [e, la, lb, eta], &opts);
                    if r.f.is_finite() && best.is_none_or(|b| r.f < b.sse) {
                        best = Some(OvertrainingFit {
                            e_irreducible: r.x[0],
                            a: r.x[1].exp(),
                            b: r.x[2].exp(),
                            eta: r.x[3],
                            sse: r.f,
                        });
                    }
                }
            }
        }
    }
    best
}
