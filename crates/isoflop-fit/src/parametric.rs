//! Chinchilla approach 3: `L(N, D) = E + A/N^alpha + B/D^beta`, fitted exactly as Hoffmann et al. (2022)
//! and Besiroglu et al. (2024) do: on log loss in log-sum-exp form,
//! `log L = LSE(a - alpha log N, b - beta log D, e)` with `A = exp(a)`, `B = exp(b)`, `E = exp(e)`,
//! a Huber loss (delta = 1e-3) summed over points, minimised by L-BFGS from a grid of 4,500 starts.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::lbfgs::{LbfgsOptions, Stop, minimize};
use crate::table::Point;

/// The parameter vector `[a, b, e, alpha, beta]`.
pub type Theta = [f64; 5];

/// Precomputed logs of the data (structure of arrays, so the objective allocates nothing).
#[derive(Debug, Clone, Default)]
pub struct LseData {
    pub ln_n: Vec<f64>,
    pub ln_d: Vec<f64>,
    pub ln_l: Vec<f64>,
}

impl LseData {
    pub fn from_points(points: &[Point]) -> Self {
        Self::from_raw(points.iter().map(|p| (p.params, p.tokens, p.loss)))
    }

    /// From `(N, D, L)` triples.
    pub fn from_raw(it: impl IntoIterator<Item = (f64, f64, f64)>) -> Self {
        let mut d = LseData::default();
        for (n, t, l) in it {
            d.ln_n.push(n.ln());
            d.ln_d.push(t.ln());
            d.ln_l.push(l.ln());
        }
        d
    }

    pub fn len(&self) -> usize {
        self.ln_l.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ln_l.is_empty()
    }

    /// The summed Huber objective; writes its gradient into `grad`. Allocation-free.
    #[inline]
    pub fn objective(&self, th: &Theta, delta: f64, grad: &mut Theta) -> f64 {
        let [a, b, e, alpha, beta] = *th;
        let mut f = 0.0;
        let mut g = [0.0; 5];
        for ((&ln_n, &ln_d), &ln_l) in self.ln_n.iter().zip(&self.ln_d).zip(&self.ln_l) {
            let t1 = a - alpha * ln_n;
            let t2 = b - beta * ln_d;
            // Exponentiate only the two terms below the maximum; the largest contributes exp(0) = 1.
            // (Measured faster than three branch-free exps with libm, and than a vectorisable polynomial exp.)
            let (m, e1, e2, e3) = if t1 >= t2 && t1 >= e {
                (t1, 1.0, (t2 - t1).exp(), (e - t1).exp())
            } else if t2 >= e {
                (t2, (t1 - t2).exp(), 1.0, (e - t2).exp())
            } else {
                (e, (t1 - e).exp(), (t2 - e).exp(), 1.0)
            };
            let s = e1 + e2 + e3;
            let r = m + s.ln() - ln_l;
            let psi = if r.abs() <= delta {
                f += 0.5 * r * r;
                r
            } else {
                f += delta * (r.abs() - 0.5 * delta);
                delta.copysign(r)
            };
            let k = psi / s;
            let w1 = k * e1;
            let w2 = k * e2;
            g[0] += w1;
            g[1] += w2;
            g[2] += k * e3;
            g[3] -= w1 * ln_n;
            g[4] -= w2 * ln_d;
        }
        *grad = g;
        f
    }

    /// The objective alone.
    pub fn value(&self, th: &Theta, delta: f64) -> f64 {
        let mut g = [0.0; 5];
        self.objective(th, delta, &mut g)
    }
}

/// Options for the parametric fit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParametricOptions {
    pub huber_delta: f64,
    /// Starts whose objective is within `best_rel_tol * |best| + best_abs_tol` count as reaching the best.
    pub best_rel_tol: f64,
    pub best_abs_tol: f64,
    /// Worker threads (0: all available cores).
    pub threads: usize,
    /// Tolerances of the final fit (and of the polish of the best screened starts).
    pub gtol: f64,
    pub ftol: f64,
    pub max_iter: usize,
    /// Multi-start screening: every start runs to these (SciPy L-BFGS-B's defaults: pgtol 1e-5,
    /// ftol 2.2e-9), then the `polish` lowest are continued to `gtol`/`ftol`. `polish = 0` runs every
    /// start to the tight tolerances.
    pub screen_gtol: f64,
    pub screen_ftol: f64,
    pub polish: usize,
}

impl Default for ParametricOptions {
    fn default() -> Self {
        ParametricOptions {
            huber_delta: 1e-3,
            best_rel_tol: 1e-6,
            best_abs_tol: 1e-12,
            threads: 0,
            gtol: 1e-10,
            ftol: 1e-15,
            max_iter: 2000,
            screen_gtol: 1e-5,
            screen_ftol: 2.2e-9,
            polish: 16,
        }
    }
}

impl ParametricOptions {
    fn lbfgs(&self) -> LbfgsOptions {
        LbfgsOptions { gtol: self.gtol, ftol: self.ftol, max_iter: self.max_iter, ..LbfgsOptions::default() }
    }
}

/// The standard grid of Hoffmann et al.: alpha, beta in {0, 0.5, ..., 2}; e in {-1, -0.5, ..., 1};
/// a, b in {0, 5, ..., 25}: 5 * 5 * 5 * 6 * 6 = 4,500 starts, as `[a, b, e, alpha, beta]`.
pub fn standard_grid() -> Vec<Theta> {
    let mut v = Vec::with_capacity(4500);
    for ia in 0..6 {
        for ib in 0..6 {
            for ie in 0..5 {
                for ial in 0..5 {
                    for ibe in 0..5 {
                        v.push([5.0 * ia as f64, 5.0 * ib as f64, -1.0 + 0.5 * ie as f64, 0.5 * ial as f64, 0.5 * ibe as f64]);
                    }
                }
            }
        }
    }
    v
}

/// One local minimisation.
#[derive(Debug, Clone, Copy)]
pub struct LocalFit {
    pub theta: Theta,
    pub objective: f64,
    pub grad_norm: f64,
    pub iterations: usize,
    pub evaluations: usize,
    pub stop: Stop,
    pub converged: bool,
}

/// Minimises from one start.
pub fn fit_from(data: &LseData, start: Theta, opts: &ParametricOptions) -> LocalFit {
    let delta = opts.huber_delta;
    let r = minimize(|x: &Theta, g: &mut Theta| data.objective(x, delta, g), start, &opts.lbfgs());
    LocalFit {
        theta: r.x,
        objective: r.f,
        grad_norm: r.grad_norm(),
        iterations: r.iterations,
        evaluations: r.evaluations,
        stop: r.stop,
        converged: matches!(r.stop, Stop::Gradient | Stop::Objective),
    }
}

/// The fitted law `L = E + A/N^alpha + B/D^beta` and how the multi-start search went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParametricFit {
    #[serde(rename = "E")]
    pub e_irreducible: f64,
    #[serde(rename = "A")]
    pub a_coef: f64,
    #[serde(rename = "B")]
    pub b_coef: f64,
    pub alpha: f64,
    pub beta: f64,
    /// log A, log B, log E as fitted.
    pub log_a: f64,
    pub log_b: f64,
    pub log_e: f64,
    /// Summed Huber objective at the best start.
    pub objective: f64,
    pub n_starts: usize,
    /// Starts whose final objective is within tolerance of the best.
    pub n_best: usize,
    /// Euclidean norm of the objective's gradient at the best fit.
    pub grad_norm: f64,
    pub iterations: usize,
    /// N* ~ C^a with a = beta / (alpha + beta).
    pub a: f64,
    /// D* ~ C^b with b = alpha / (alpha + beta).
    pub b: f64,
}

impl ParametricFit {
    pub fn from_theta(th: &Theta) -> Self {
        let [la, lb, le, alpha, beta] = *th;
        ParametricFit {
            e_irreducible: le.exp(),
            a_coef: la.exp(),
            b_coef: lb.exp(),
            alpha,
            beta,
            log_a: la,
            log_b: lb,
            log_e: le,
            objective: f64::NAN,
            n_starts: 0,
            n_best: 0,
            grad_norm: f64::NAN,
            iterations: 0,
            a: beta / (alpha + beta),
            b: alpha / (alpha + beta),
        }
    }

    pub fn theta(&self) -> Theta {
        [self.log_a, self.log_b, self.log_e, self.alpha, self.beta]
    }

    /// Predicted loss.
    pub fn loss(&self, n: f64, d: f64) -> f64 {
        self.e_irreducible + self.a_coef * n.powf(-self.alpha) + self.b_coef * d.powf(-self.beta)
    }

    /// Compute-optimal allocation under `C = 6 N D`: `N* = G (C/6)^a`, `D* = (C/6)^b / G` with
    /// `G = (alpha A / (beta B))^(1 / (alpha + beta))`. Returns `(N*, D*, L(N*, D*))`.
    pub fn optimal(&self, flops: f64) -> (f64, f64, f64) {
        let g = ((self.alpha * self.a_coef) / (self.beta * self.b_coef)).powf(1.0 / (self.alpha + self.beta));
        let n = g * (flops / 6.0).powf(self.a);
        let d = (flops / 6.0).powf(self.b) / g;
        (n, d, self.loss(n, d))
    }
}

/// Minimises from every start on `opts.threads` threads (0: all cores); results in start order.
pub fn fit_starts(data: &LseData, starts: &[Theta], opts: &ParametricOptions) -> Vec<LocalFit> {
    let threads = if opts.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.threads };
    let threads = threads.clamp(1, starts.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, LocalFit)> = Vec::with_capacity(starts.len());
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| {
                    let mut local = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= starts.len() {
                            break;
                        }
                        local.push((i, fit_from(data, starts[i], opts)));
                    }
                    local
                })
            })
            .collect();
        for h in handles {
            results.extend(h.join().expect("parametric fit worker panicked"));
        }
    });
    results.sort_by_key(|r| r.0);
    results.into_iter().map(|r| r.1).collect()
}

/// Fits from every start in `starts` and summarises. Deterministic: the best is the lowest objective,
/// ties going to the earliest start. `None` with no starts or fewer than 5 points.
///
/// With `opts.polish > 0`, every start is first run to the screening tolerances and the `polish` lowest
/// are then continued to the tight ones; `n_best` counts the screened starts within tolerance of the
/// polished best.
pub fn fit_multistart(data: &LseData, starts: &[Theta], opts: &ParametricOptions) -> Option<ParametricFit> {
    if starts.is_empty() || data.len() < 5 {
        return None;
    }
    if opts.polish == 0 {
        return summarize(&fit_starts(data, starts, opts), opts);
    }
    let screen_opts = ParametricOptions { gtol: opts.screen_gtol, ftol: opts.screen_ftol, ..opts.clone() };
    let screened = fit_starts(data, starts, &screen_opts);
    let mut order: Vec<usize> = (0..screened.len()).filter(|&i| screened[i].objective.is_finite()).collect();
    order.sort_by(|&i, &j| screened[i].objective.total_cmp(&screened[j].objective).then(i.cmp(&j)));
    order.truncate(opts.polish);
    let seeds: Vec<Theta> = order.iter().map(|&i| screened[i].theta).collect();
    let mut polished = fit_starts(data, &seeds, opts);
    // L-BFGS can stall at a Huber kink with a stale curvature history: restart the best a few times
    // from where it stopped (keeping a restart only if it does not raise the objective).
    if let Some(bi) = (0..polished.len()).min_by(|&i, &j| polished[i].objective.total_cmp(&polished[j].objective)) {
        for _ in 0..3 {
            let again = fit_from(data, polished[bi].theta, opts);
            if again.objective.partial_cmp(&polished[bi].objective) != Some(std::cmp::Ordering::Less) || again.iterations == 0 {
                break;
            }
            let iterations = polished[bi].iterations + again.iterations;
            polished[bi] = LocalFit { iterations, ..again };
        }
    }
    let mut fit = summarize(&polished, opts)?;
    let tol = opts.best_rel_tol * fit.objective.abs() + opts.best_abs_tol;
    fit.n_best = screened.iter().filter(|r| r.objective.is_finite() && r.objective - fit.objective <= tol).count().max(1);
    fit.n_starts = starts.len();
    let best_seed = polished.iter().position(|r| r.objective == fit.objective).unwrap_or(0);
    fit.iterations += screened[order[best_seed]].iterations;
    Some(fit)
}

/// The best of several local fits, and how many starts reached it.
pub fn summarize(results: &[LocalFit], opts: &ParametricOptions) -> Option<ParametricFit> {
    let best = results.iter().filter(|r| r.objective.is_finite()).min_by(|x, y| x.objective.total_cmp(&y.objective))?;
    let tol = opts.best_rel_tol * best.objective.abs() + opts.best_abs_tol;
    let n_best = results.iter().filter(|r| r.objective.is_finite() && r.objective - best.objective <= tol).count();
    let mut fit = ParametricFit::from_theta(&best.theta);
    fit.objective = best.objective;
    fit.n_starts = results.len();
    fit.n_best = n_best;
    fit.grad_norm = best.grad_norm;
    fit.iterations = best.iterations;
    Some(fit)
}

/// Fits from the standard 4,500-start grid.
pub fn fit_parametric(data: &LseData, opts: &ParametricOptions) -> Option<ParametricFit> {
    fit_multistart(data, &standard_grid(), opts)
}

/// The data-constrained effective sizes of Muennighoff et al. (2023): with `U_D = min(U, D)` unique tokens
/// and `R_D = D / U_D - 1` repetitions, `D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*))`; likewise
/// `N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*))` with `U_N = min(N, N_opt(U_D))`, `R_N = N / U_N - 1`, where
/// `N_opt(U_D) = n_per_unique_token * U_D` is the compute-optimal size for `U_D` tokens under the base law.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DataConstrained {
    pub r_d_star: f64,
    pub r_n_star: f64,
    pub n_per_unique_token: f64,
}

impl DataConstrained {
    /// `N_opt / D_opt` of the base law `[a, b, e, alpha, beta]` (constant in C only when alpha = beta):
    /// `G^2` with `G = (alpha A / (beta B))^(1 / (alpha + beta))`.
    pub fn base_ratio(th: &Theta) -> f64 {
        let [a, b, _, alpha, beta] = *th;
        let g = ((alpha.ln() + a - beta.ln() - b) / (alpha + beta)).exp();
        g * g
    }

    /// `(N', D')` for `n` parameters trained on `d` tokens of which `u` are unique.
    pub fn effective(&self, n: f64, d: f64, u: f64) -> (f64, f64) {
        let ud = u.min(d);
        let rd = d / ud - 1.0;
        let d_eff = ud + ud * self.r_d_star * (1.0 - (-rd / self.r_d_star).exp());
        let un = n.min(self.n_per_unique_token * ud);
        let rn = n / un - 1.0;
        let n_eff = un + un * self.r_n_star * (1.0 - (-rn / self.r_n_star).exp());
        (n_eff, d_eff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let data = LseData::from_raw((0..30).map(|i| {
            let n = 1e7 * 1.3f64.powi(i);
            let d = 2e8 * 1.2f64.powi(30 - i);
            (n, d, 1.7 + 400.0 / n.powf(0.34) + 410.0 / d.powf(0.28) + 0.01 * ((i % 5) as f64 - 2.0))
        }));
        let th = [6.0, 6.1, 0.5, 0.34, 0.27];
        for delta in [1e-3, 1.0] {
            let mut g = [0.0; 5];
            data.objective(&th, delta, &mut g);
            for k in 0..5 {
                let h = 1e-6;
                let (mut p, mut m) = (th, th);
                p[k] += h;
                m[k] -= h;
                let fd = (data.value(&p, delta) - data.value(&m, delta)) / (2.0 * h);
                assert!((fd - g[k]).abs() <= 1e-5 * (1.0 + g[k].abs()), "k={k} fd={fd} g={}", g[k]);
            }
        }
    }

    /// The objective written plainly with libm.
    fn reference_objective(d: &LseData, th: &Theta, delta: f64) -> f64 {
        let mut f = 0.0;
        for i in 0..d.len() {
            let t = [th[0] - th[3] * d.ln_n[i], th[1] - th[4] * d.ln_d[i], th[2]];
            let m = t[0].max(t[1]).max(t[2]);
            let r = m + t.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - d.ln_l[i];
            f += if r.abs() <= delta { 0.5 * r * r } else { delta * (r.abs() - 0.5 * delta) };
        }
        f
    }

    #[test]
    fn fast_objective_matches_reference() {
        let data = LseData::from_raw((0..37).map(|i| {
            let n = 1e7 * 1.3f64.powi(i);
            let d = 2e8 * 1.2f64.powi(37 - i);
            (n, d, 1.7 + 400.0 / n.powf(0.34) + 410.0 / d.powf(0.28) * (1.0 + 0.01 * ((i % 5) as f64 - 2.0)))
        }));
        for th in standard_grid().iter().step_by(7).chain([[6.0, 6.0, 0.5, 0.34, 0.28]].iter()) {
            for delta in [1e-3, 0.1] {
                let (a, b) = (data.value(th, delta), reference_objective(&data, th, delta));
                assert!((a - b).abs() <= 1e-13 * b.abs().max(1e-300), "{th:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn grid_has_4500_starts() {
        let g = standard_grid();
        assert_eq!(g.len(), 4500);
        assert!(g.contains(&[25.0, 0.0, 1.0, 2.0, 0.5]));
    }
}
