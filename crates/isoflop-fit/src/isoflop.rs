//! Chinchilla approach 2: per IsoFLOP budget, robust parabolas of loss in log N and in log D; their
//! vertices give N*, D* and L*; power laws of those optima against compute.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::{Line, Parabola, fit_line, huber_parabola};
use crate::table::Point;

/// Options for the IsoFLOP analysis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IsoflopOptions {
    /// Budgets with fewer distinct model sizes than this are excluded (at least 3).
    pub min_sizes: usize,
    /// Huber tuning constant in units of the robust residual scale.
    pub huber_k: f64,
    /// Use budgets whose vertex lies outside the sampled sizes in the power laws.
    pub include_unbracketed: bool,
    /// Fit each parabola only to the points whose size is within this many decades (log10 units) of the
    /// lowest-loss size of the budget; `None` fits all points. Wide IsoFLOP curves are not parabolic far
    /// from their minimum, so a window reduces the vertex bias.
    pub window_decades: Option<f64>,
    /// The distribution whose IsoFLOP minima are the compute-optimal models of every budget:
    /// each other distribution's error is read at that N* (from its own parabola in log N over
    /// the budget's sizes) instead of at its own minimum. Downstream errors of small models
    /// (multiple-choice answers) are too noisy, or too monotone in N, to have a minimum of
    /// their own; the models a sweep would train are the ones its held-out loss picks.
    /// `None`: every distribution at its own minimum.
    #[serde(default)]
    pub frontier: Option<String>,
}

impl Default for IsoflopOptions {
    fn default() -> Self {
        IsoflopOptions { min_sizes: 3, huber_k: 1.345, include_unbracketed: false, window_decades: None, frontier: None }
    }
}

/// The compute-optimal point of one budget and distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetOptimum {
    pub distribution: String,
    pub budget: f64,
    pub n_opt: f64,
    pub d_opt: f64,
    pub l_opt: f64,
    /// Both vertices (in log N and in log D) lie within the sampled range.
    pub bracketed: bool,
    pub n_points: usize,
    pub n_sizes: usize,
    /// The fitted parabola of loss in ln N (for plots).
    pub parabola_ln_n: Parabola,
}

/// A budget left out of the analysis, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exclusion {
    pub distribution: String,
    /// The budget left out; `None` when the exclusion concerns the whole distribution.
    pub budget: Option<f64>,
    pub reason: String,
}

/// `y = coef * x^exponent`, fitted as a line in log-log space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerLaw {
    pub coef: f64,
    pub exponent: f64,
    pub r2: f64,
}

impl PowerLaw {
    pub fn from_line(l: &Line) -> Self {
        PowerLaw { coef: l.intercept.exp(), exponent: l.slope, r2: l.r2 }
    }

    pub fn eval(&self, x: f64) -> f64 {
        self.coef * x.powf(self.exponent)
    }
}

/// The IsoFLOP analysis of one distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsoflopFit {
    pub distribution: String,
    pub budgets: Vec<BudgetOptimum>,
    pub exclusions: Vec<Exclusion>,
    /// N* = k C^a.
    pub n_opt: Option<PowerLaw>,
    /// D* = k' C^b.
    pub d_opt: Option<PowerLaw>,
    /// L* = alpha C^-beta, stored as `coef = alpha`, `exponent = -beta`.
    pub loss: Option<PowerLaw>,
}

impl IsoflopFit {
    /// Budgets used in the power laws.
    pub fn used_budgets<'a>(&'a self, opts: &'a IsoflopOptions) -> impl Iterator<Item = &'a BudgetOptimum> + 'a {
        self.budgets.iter().filter(move |b| b.bracketed || opts.include_unbracketed)
    }
}

/// Fits one budget's parabolas. `points` all share distribution and budget.
pub fn fit_budget(points: &[&Point], opts: &IsoflopOptions) -> Result<BudgetOptimum, String> {
    let first = points.first().ok_or("no points")?;
    let windowed: Vec<&Point>;
    let points = match opts.window_decades {
        Some(w) => {
            let best = points.iter().min_by(|a, b| a.loss.total_cmp(&b.loss)).ok_or("no points")?;
            let centre = best.params.log10();
            windowed = points.iter().copied().filter(|p| (p.params.log10() - centre).abs() <= w).collect();
            &windowed[..]
        }
        None => points,
    };
    let mut sizes: Vec<f64> = points.iter().map(|p| p.params).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let min_sizes = opts.min_sizes.max(3);
    if sizes.len() < min_sizes {
        let within = if opts.window_decades.is_some() { " within the window" } else { "" };
        return Err(format!("{} distinct model sizes{within}, fewer than {min_sizes}", sizes.len()));
    }
    let ln_n: Vec<f64> = points.iter().map(|p| p.params.ln()).collect();
    let ln_d: Vec<f64> = points.iter().map(|p| p.tokens.ln()).collect();
    let loss: Vec<f64> = points.iter().map(|p| p.loss).collect();
    let pn = huber_parabola(&ln_n, &loss, opts.huber_k).ok_or("parabola in log N is singular")?;
    let pd = huber_parabola(&ln_d, &loss, opts.huber_k).ok_or("parabola in log D is singular")?;
    let (xn, ln_) = pn.vertex().ok_or("parabola in log N has no minimum (opens downward)")?;
    let (xd, _) = pd.vertex().ok_or("parabola in log D has no minimum (opens downward)")?;
    let within = |x: f64, v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        x >= lo && x <= hi
    };
    let bracketed = within(xn, &ln_n) && within(xd, &ln_d);
    Ok(BudgetOptimum {
        distribution: first.distribution.clone(),
        budget: first.budget,
        n_opt: xn.exp(),
        d_opt: xd.exp(),
        l_opt: ln_,
        bracketed,
        n_points: points.len(),
        parabola_ln_n: pn,
        n_sizes: sizes.len(),
    })
}

/// One budget of a distribution read at the compute-optimal size of the frontier's budget
/// `at`: the distribution's parabola in ln N over the budget's sizes, evaluated at ln N* (a
/// local quadratic smoother over the IsoFLOP curve; with a bracketed N* it interpolates).
pub fn fit_budget_at(points: &[&Point], at: &BudgetOptimum, opts: &IsoflopOptions) -> Result<BudgetOptimum, String> {
    let first = points.first().ok_or("no points")?;
    let centre = at.n_opt.log10();
    let points: Vec<&Point> = match opts.window_decades {
        Some(w) => points.iter().copied().filter(|p| (p.params.log10() - centre).abs() <= w).collect(),
        None => points.to_vec(),
    };
    let mut sizes: Vec<f64> = points.iter().map(|p| p.params).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let min_sizes = opts.min_sizes.max(3);
    if sizes.len() < min_sizes {
        return Err(format!("{} distinct model sizes, fewer than {min_sizes}", sizes.len()));
    }
    let ln_n: Vec<f64> = points.iter().map(|p| p.params.ln()).collect();
    let loss: Vec<f64> = points.iter().map(|p| p.loss).collect();
    let pn = huber_parabola(&ln_n, &loss, opts.huber_k).ok_or("parabola in log N is singular")?;
    let l = pn.eval(at.n_opt.ln());
    if !(l.is_finite() && l > 0.0) {
        return Err(format!("the fitted error at the compute-optimal N* = {:.3e} is {l:.4}, not positive", at.n_opt));
    }
    Ok(BudgetOptimum {
        distribution: first.distribution.clone(),
        budget: first.budget,
        n_opt: at.n_opt,
        d_opt: at.d_opt,
        l_opt: l,
        bracketed: at.bracketed,
        n_points: points.len(),
        n_sizes: sizes.len(),
        parabola_ln_n: pn,
    })
}

/// Fits log-log power laws of the optima against the budget.
pub fn fit_power_laws(optima: &[&BudgetOptimum]) -> (Option<PowerLaw>, Option<PowerLaw>, Option<PowerLaw>) {
    let c: Vec<f64> = optima.iter().map(|b| b.budget.ln()).collect();
    let law = |f: &dyn Fn(&BudgetOptimum) -> f64| {
        let y: Vec<f64> = optima.iter().map(|b| f(b).ln()).collect();
        fit_line(&c, &y, None).map(|l| PowerLaw::from_line(&l))
    };
    (law(&|b| b.n_opt), law(&|b| b.d_opt), law(&|b| b.l_opt))
}

/// Runs the IsoFLOP analysis for every distribution in `points` (sorted by name); with
/// `opts.frontier`, every other distribution is read at the frontier's minima.
pub fn fit_isoflop(points: &[Point], opts: &IsoflopOptions) -> Vec<IsoflopFit> {
    let mut groups: BTreeMap<&str, BTreeMap<u64, Vec<&Point>>> = BTreeMap::new();
    for p in points {
        groups.entry(p.distribution.as_str()).or_default().entry(p.budget.to_bits()).or_default().push(p);
    }
    let frontier = opts.frontier.as_deref().and_then(|f| {
        let own = IsoflopOptions { frontier: None, ..opts.clone() };
        Some(fit_distribution(f, groups.get(f)?, &own, None))
    });
    groups
        .iter()
        .map(|(dist, budgets)| match &frontier {
            Some(f) if f.distribution == *dist => f.clone(),
            f => fit_distribution(dist, budgets, opts, f.as_ref()),
        })
        .collect()
}

/// One distribution's analysis: at its own minima, or at the frontier's.
fn fit_distribution(
    dist: &str,
    budgets: &BTreeMap<u64, Vec<&Point>>,
    opts: &IsoflopOptions,
    frontier: Option<&IsoflopFit>,
) -> IsoflopFit {
    let mut fit = IsoflopFit {
        distribution: dist.to_string(),
        budgets: Vec::new(),
        exclusions: Vec::new(),
        n_opt: None,
        d_opt: None,
        loss: None,
    };
    let mut ordered: Vec<(f64, Vec<&Point>)> = budgets.iter().map(|(k, v)| (f64::from_bits(*k), v.clone())).collect();
    ordered.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (budget, pts) in ordered {
        let result = match frontier {
            None => fit_budget(&pts, opts),
            Some(f) => match f.budgets.iter().find(|b| b.budget.to_bits() == budget.to_bits()) {
                Some(at) => fit_budget_at(&pts, at, opts),
                None => Err(format!("the frontier `{}` has no compute-optimal size at this budget", f.distribution)),
            },
        };
        match result {
            Ok(b) => fit.budgets.push(b),
            Err(reason) => fit.exclusions.push(Exclusion { distribution: dist.to_string(), budget: Some(budget), reason }),
        }
    }
    let used: Vec<&BudgetOptimum> = fit.used_budgets(opts).collect();
    if used.len() >= 2 {
        (fit.n_opt, fit.d_opt, fit.loss) = fit_power_laws(&used);
    }
    let unbracketed: Vec<f64> =
        fit.budgets.iter().filter(|b| !b.bracketed && !opts.include_unbracketed).map(|b| b.budget).collect();
    let whose = match frontier {
        Some(f) => format!("the frontier `{}`'s vertex", f.distribution),
        None => "vertex".to_string(),
    };
    for budget in unbracketed {
        fit.exclusions.push(Exclusion {
            distribution: dist.to_string(),
            budget: Some(budget),
            reason: format!("{whose} outside the sampled sizes (bracketed: false); left out of the power laws"),
        });
    }
    fit
}
