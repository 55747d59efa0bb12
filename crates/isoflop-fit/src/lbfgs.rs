//! A small, allocation-free L-BFGS for fixed dimension `N`: two-loop recursion, weak-Wolfe bracketing
//! line search with safeguarded quadratic interpolation.

/// Stopping rules.
#[derive(Debug, Clone, Copy)]
pub struct LbfgsOptions {
    /// Stop when the infinity norm of the gradient is at most this.
    pub gtol: f64,
    /// Stop when the relative decrease of the objective over an iteration is at most this.
    pub ftol: f64,
    pub max_iter: usize,
    /// Armijo (sufficient decrease) constant.
    pub c1: f64,
    /// Curvature constant (weak Wolfe).
    pub c2: f64,
    /// The first iteration tries a step of this length (infinity norm) along the negative gradient.
    pub first_step: f64,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions { gtol: 1e-10, ftol: 1e-15, max_iter: 2000, c1: 1e-4, c2: 0.9, first_step: 1.0 }
    }
}

/// Why the minimiser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Gradient,
    Objective,
    MaxIter,
    LineSearch,
    NonFinite,
}

#[derive(Debug, Clone, Copy)]
pub struct LbfgsResult<const N: usize> {
    pub x: [f64; N],
    pub f: f64,
    pub grad: [f64; N],
    pub iterations: usize,
    pub evaluations: usize,
    pub stop: Stop,
}

impl<const N: usize> LbfgsResult<N> {
    /// Euclidean norm of the final gradient.
    pub fn grad_norm(&self) -> f64 {
        dot(&self.grad, &self.grad).sqrt()
    }
}

#[inline]
fn dot<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    let mut s = 0.0;
    for i in 0..N {
        s += a[i] * b[i];
    }
    s
}

const M: usize = 10;

/// Minimises `f`, which returns the objective and writes the gradient into its second argument.
pub fn minimize<const N: usize, F: FnMut(&[f64; N], &mut [f64; N]) -> f64>(
    mut f: F,
    x0: [f64; N],
    opts: &LbfgsOptions,
) -> LbfgsResult<N> {
    let mut x = x0;
    let mut g = [0.0; N];
    let mut fx = f(&x, &mut g);
    let mut evals = 1;
    let mut s_hist = [[0.0; N]; M];
    let mut y_hist = [[0.0; N]; M];
    let mut rho = [0.0; M];
    let mut alpha = [0.0; M];
    let mut len = 0usize;
    let mut head = 0usize; // next slot to write
    let inf_norm = |g: &[f64; N]| g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut stop = Stop::MaxIter;
    let mut iter = 0;
    if !fx.is_finite() {
        return LbfgsResult { x, f: fx, grad: g, iterations: 0, evaluations: evals, stop: Stop::NonFinite };
    }
    while iter < opts.max_iter {
        if inf_norm(&g) <= opts.gtol {
            stop = Stop::Gradient;
            break;
        }
        // Two-loop recursion: d = -H g.
        let mut q = g;
        for k in 0..len {
            let j = (head + M - 1 - k) % M;
            alpha[j] = rho[j] * dot(&s_hist[j], &q);
            for i in 0..N {
                q[i] -= alpha[j] * y_hist[j][i];
            }
        }
        let gamma = if len > 0 {
            let j = (head + M - 1) % M;
            dot(&s_hist[j], &y_hist[j]) / dot(&y_hist[j], &y_hist[j])
        } else {
            opts.first_step / inf_norm(&g).max(1e-300)
        };
        for v in q.iter_mut() {
            *v *= gamma;
        }
        for k in (0..len).rev() {
            let j = (head + M - 1 - k) % M;
            let beta = rho[j] * dot(&y_hist[j], &q);
            for i in 0..N {
                q[i] += s_hist[j][i] * (alpha[j] - beta);
            }
        }
        let mut d = q;
        for v in d.iter_mut() {
            *v = -*v;
        }
        let mut gd = dot(&g, &d);
        if gd >= 0.0 || !gd.is_finite() {
            // Not a descent direction: restart from steepest descent.
            len = 0;
            let sc = opts.first_step / inf_norm(&g).max(1e-300);
            for i in 0..N {
                d[i] = -g[i] * sc;
            }
            gd = dot(&g, &d);
        }
        // Weak Wolfe line search by bracketing.
        let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
        let mut t = 1.0;
        let mut xn = x;
        let mut gn = [0.0; N];
        let mut fnew = f64::NAN;
        let mut accepted = false;
        let mut sufficient: Option<(f64, [f64; N], [f64; N], f64)> = None;
        for _ in 0..40 {
            for i in 0..N {
                xn[i] = x[i] + t * d[i];
            }
            fnew = f(&xn, &mut gn);
            evals += 1;
            if !fnew.is_finite() || fnew > fx + opts.c1 * t * gd {
                hi = t;
                // Quadratic interpolation on [0, t] with f(0), f'(0), f(t), safeguarded.
                let denom = 2.0 * (fnew - fx - gd * t);
                let mut tn = if fnew.is_finite() && denom > 0.0 { -gd * t * t / denom } else { 0.5 * (lo + hi) };
                let (a, b) = (lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo));
                tn = tn.clamp(a, b);
                t = tn;
            } else {
                sufficient = Some((t, xn, gn, fnew));
                if dot(&gn, &d) < opts.c2 * gd {
                    lo = t;
                    t = if hi.is_finite() { 0.5 * (lo + hi) } else { 2.0 * lo };
                } else {
                    accepted = true;
                    break;
                }
            }
            if hi.is_finite() && (hi - lo) <= 1e-16 * hi.max(1.0) {
                break;
            }
        }
        if !accepted {
            // Accept the best sufficient-decrease point if there is one.
            match sufficient {
                Some((_, xs, gs, fs)) => {
                    xn = xs;
                    gn = gs;
                    fnew = fs;
                }
                None => {
                    stop = Stop::LineSearch;
                    break;
                }
            }
        }
        iter += 1;
        let mut s = [0.0; N];
        let mut y = [0.0; N];
        for i in 0..N {
            s[i] = xn[i] - x[i];
            y[i] = gn[i] - g[i];
        }
        let sy = dot(&s, &y);
        let fprev = fx;
        x = xn;
        g = gn;
        fx = fnew;
        if sy > 1e-300 * dot(&y, &y).max(f64::MIN_POSITIVE) && sy > 0.0 {
            s_hist[head] = s;
            y_hist[head] = y;
            rho[head] = 1.0 / sy;
            head = (head + 1) % M;
            len = (len + 1).min(M);
        }
        if (fprev - fx) <= opts.ftol * fprev.abs().max(fx.abs()).max(f64::MIN_POSITIVE) {
            stop = Stop::Objective;
            break;
        }
    }
    LbfgsResult { x, f: fx, grad: g, iterations: iter, evaluations: evals, stop }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rosenbrock() {
        let r = minimize(
            |x: &[f64; 2], g: &mut [f64; 2]| {
                let (a, b) = (1.0 - x[0], x[1] - x[0] * x[0]);
                g[0] = -2.0 * a - 400.0 * x[0] * b;
                g[1] = 200.0 * b;
                a * a + 100.0 * b * b
            },
            [-1.2, 1.0],
            &LbfgsOptions::default(),
        );
        assert!((r.x[0] - 1.0).abs() < 1e-6 && (r.x[1] - 1.0).abs() < 1e-6, "{r:?}");
    }
}
