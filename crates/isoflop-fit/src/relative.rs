//! Relative scaling laws (Held et al. 2025, arXiv 2510.24626): per distribution `d`, the compute-optimal
//! loss follows `E_d(F) = alpha_d F^-beta_d`; against a baseline `b`, the ratio
//! `G(F) = E_t / E_b = gamma F^dbeta` with `dbeta = beta_b - beta_t`, fitted as a line of log G on log F.

use serde::{Deserialize, Serialize};

use crate::isoflop::{IsoflopFit, IsoflopOptions};
use crate::stats::fit_line;

/// `E_d(F) = alpha F^-beta` for one distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionLaw {
    pub name: String,
    pub alpha: f64,
    pub beta: f64,
    pub r2: f64,
    pub n_budgets: usize,
}

/// The distribution's law, from its IsoFLOP loss power law (`None` with fewer than 2 usable budgets).
pub fn distribution_law(fit: &IsoflopFit, opts: &IsoflopOptions) -> Option<DistributionLaw> {
    let l = fit.loss?;
    Some(DistributionLaw {
        name: fit.distribution.clone(),
        alpha: l.coef,
        beta: -l.exponent,
        r2: l.r2,
        n_budgets: fit.used_budgets(opts).count(),
    })
}

/// How the gap between a target and the baseline evolves with compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// |log G| shrinks as compute grows and the interval of dbeta excludes 0.
    Converging,
    /// |log G| grows as compute grows and the interval of dbeta excludes 0.
    Diverging,
    /// The interval of dbeta includes 0 (or there is no interval).
    Parallel,
}

/// The point fit of `G(F)` for one target against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelativeFit {
    pub target: String,
    pub baseline: String,
    pub gamma: f64,
    pub delta_beta: f64,
    /// Budgets (compute values) shared by target and baseline and used in the fit.
    pub budgets: Vec<f64>,
    /// log G at the largest shared budget, from the fitted line.
    pub log_gap_at_max: f64,
}

impl RelativeFit {
    /// `ln F` at which the fitted `G` reaches 1: `-ln gamma / dbeta` (infinite when dbeta = 0).
    pub fn log_parity_flops(&self) -> f64 {
        -self.gamma.ln() / self.delta_beta
    }

    /// Whether |log G| shrinks with compute at the largest budget.
    pub fn gap_shrinks(&self) -> bool {
        self.log_gap_at_max * self.delta_beta < 0.0
    }
}

/// Fits `G(F)` on the budgets both distributions have (and use, per `opts`). Needs 2 shared budgets.
pub fn fit_relative(target: &IsoflopFit, baseline: &IsoflopFit, opts: &IsoflopOptions) -> Option<RelativeFit> {
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut budgets = Vec::new();
    for t in target.used_budgets(opts) {
        if let Some(b) = baseline.used_budgets(opts).find(|b| b.budget.to_bits() == t.budget.to_bits()) {
            x.push(t.budget.ln());
            y.push((t.l_opt / b.l_opt).ln());
            budgets.push(t.budget);
        }
    }
    let line = fit_line(&x, &y, None)?;
    let xmax = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(RelativeFit {
        target: target.distribution.clone(),
        baseline: baseline.distribution.clone(),
        gamma: line.intercept.exp(),
        delta_beta: line.slope,
        budgets,
        log_gap_at_max: line.intercept + line.slope * xmax,
    })
}

/// The verdict from the point fit and the interval of dbeta.
pub fn verdict(fit: &RelativeFit, delta_beta_ci: Option<[f64; 2]>) -> Verdict {
    let Some([lo, hi]) = delta_beta_ci else { return Verdict::Parallel };
    if lo <= 0.0 && hi >= 0.0 {
        return Verdict::Parallel;
    }
    if fit.gap_shrinks() { Verdict::Converging } else { Verdict::Diverging }
}
