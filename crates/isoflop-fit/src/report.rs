//! The JSON report and [`fit_all`], which runs every analysis and its bootstrap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::FitError;
use crate::bootstrap::{Rng, percentile_ci, resample_runs};
use crate::isoflop::{BudgetOptimum, Exclusion, IsoflopFit, IsoflopOptions, fit_isoflop};
use crate::parametric::{LseData, ParametricFit, ParametricOptions, fit_from, fit_parametric};
use crate::relative::{RelativeFit, Verdict, distribution_law, fit_relative, verdict};
use crate::table::{DEFAULT_DISTRIBUTION, Point, Table};

/// Everything [`fit_all`] can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitOptions {
    pub isoflop: IsoflopOptions,
    pub parametric: ParametricOptions,
    /// Run the parametric (approach 3) fit.
    pub run_parametric: bool,
    /// Bootstrap replicates for the IsoFLOP and relative fits (0: no intervals).
    pub bootstrap: usize,
    /// Bootstrap replicates for the parametric fit; each refits from the full-data optimum.
    pub parametric_bootstrap: usize,
    pub seed: u64,
    /// Interval level, 0.95 for 95% percentile intervals.
    pub ci_level: f64,
    /// The distribution of the `isoflop` and `parametric` sections (default: `all` if present,
    /// else the baseline when one is given, else the first by name).
    pub primary: Option<String>,
    /// The baseline of the relative fits (default: the primary distribution).
    pub baseline: Option<String>,
    /// Budgets (FLOPs) at which to predict the parametric compute-optimal N*, D*, L.
    pub predict_at: Vec<f64>,
    /// Worker threads for the bootstrap (0: all cores).
    pub threads: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            isoflop: IsoflopOptions::default(),
            parametric: ParametricOptions::default(),
            run_parametric: true,
            bootstrap: 200,
            parametric_bootstrap: 100,
            seed: 0,
            ci_level: 0.95,
            primary: None,
            baseline: None,
            predict_at: Vec::new(),
            threads: 0,
        }
    }
}

/// One budget's optimum with its intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetReport {
    #[serde(flatten)]
    pub optimum: BudgetOptimum,
    pub n_opt_ci: Option<[f64; 2]>,
    pub d_opt_ci: Option<[f64; 2]>,
    pub l_opt_ci: Option<[f64; 2]>,
}

/// Approach 2 for one distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsoflopReport {
    pub distribution: String,
    pub budgets: Vec<BudgetReport>,
    /// a in N* = k C^a.
    pub n_opt_exponent: Option<f64>,
    pub n_opt_exponent_ci: Option<[f64; 2]>,
    pub n_opt_coef: Option<f64>,
    pub n_opt_coef_ci: Option<[f64; 2]>,
    /// b in D* = k' C^b.
    pub d_opt_exponent: Option<f64>,
    pub d_opt_exponent_ci: Option<[f64; 2]>,
    pub d_opt_coef: Option<f64>,
    pub d_opt_coef_ci: Option<[f64; 2]>,
    /// beta in L* = alpha C^-beta.
    pub loss_exponent: Option<f64>,
    pub loss_exponent_ci: Option<[f64; 2]>,
    pub loss_coef: Option<f64>,
    pub loss_coef_ci: Option<[f64; 2]>,
    pub exclusions: Vec<Exclusion>,
}

/// The parametric prediction at one budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub flops: f64,
    pub n_opt: f64,
    pub d_opt: f64,
    pub loss: f64,
    pub n_opt_ci: Option<[f64; 2]>,
    pub d_opt_ci: Option<[f64; 2]>,
    pub loss_ci: Option<[f64; 2]>,
}

/// Approach 3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParametricReport {
    pub distribution: String,
    #[serde(flatten)]
    pub fit: ParametricFit,
    /// Percentile intervals keyed by parameter name (`E`, `A`, `B`, `alpha`, `beta`, `a`, `b`).
    pub ci: BTreeMap<String, [f64; 2]>,
    pub predictions: Vec<Prediction>,
    pub bootstrap_replicates: usize,
}

/// E_d(F) = alpha F^-beta for one distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionReport {
    pub name: String,
    pub alpha: Option<f64>,
    pub alpha_ci: Option<[f64; 2]>,
    pub beta: Option<f64>,
    pub beta_ci: Option<[f64; 2]>,
    pub n_budgets: usize,
    pub isoflop: IsoflopReport,
}

/// G(F) = E_t / E_b = gamma F^dbeta for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelativeReport {
    pub target: String,
    pub baseline: String,
    pub gamma: f64,
    pub gamma_ci: Option<[f64; 2]>,
    pub delta_beta: f64,
    pub delta_beta_ci: Option<[f64; 2]>,
    pub verdict: Verdict,
    /// Compute at which G would reach 1; only for a converging gap.
    pub parity_flops: Option<f64>,
    pub parity_flops_ci: Option<[f64; 2]>,
    pub budgets: Vec<f64>,
    /// Pointwise interval of the fitted G at each budget: `[F, lo, hi]`.
    pub band: Vec<[f64; 3]>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    pub isoflop: IsoflopReport,
    pub parametric: Option<ParametricReport>,
    pub distributions: Vec<DistributionReport>,
    pub relative: Vec<RelativeReport>,
    /// Budgets and comparisons left out, with reasons.
    pub exclusions: Vec<Exclusion>,
    pub notes: Vec<String>,
    pub bootstrap_replicates: usize,
    /// The replicates resampled a multiple-choice task's questions as well as the runs.
    #[serde(default)]
    pub questions_resampled: bool,
    /// The distribution whose minima picked the compute-optimal models at which every other
    /// distribution was read (`None`: each at its own minimum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontier: Option<String>,
    pub seed: u64,
    pub ci_level: f64,
}

impl FitReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }
}

/// Named scalars of one (replicate) analysis, for the bootstrap.
fn scalars(fits: &[IsoflopFit], rels: &[RelativeFit], opts: &IsoflopOptions) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for f in fits {
        let d = &f.distribution;
        for b in &f.budgets {
            let k = b.budget.to_bits();
            m.insert(format!("{d}/budget/{k}/n_opt"), b.n_opt);
            m.insert(format!("{d}/budget/{k}/d_opt"), b.d_opt);
            m.insert(format!("{d}/budget/{k}/l_opt"), b.l_opt);
        }
        if let Some(p) = f.n_opt {
            m.insert(format!("{d}/n_exp"), p.exponent);
            m.insert(format!("{d}/n_coef"), p.coef);
        }
        if let Some(p) = f.d_opt {
            m.insert(format!("{d}/d_exp"), p.exponent);
            m.insert(format!("{d}/d_coef"), p.coef);
        }
        if let Some(law) = distribution_law(f, opts) {
            m.insert(format!("{d}/beta"), law.beta);
            m.insert(format!("{d}/alpha"), law.alpha);
        }
    }
    for r in rels {
        let t = &r.target;
        m.insert(format!("rel/{t}/gamma"), r.gamma);
        m.insert(format!("rel/{t}/dbeta"), r.delta_beta);
        m.insert(format!("rel/{t}/log_parity"), r.log_parity_flops());
        for f in &r.budgets {
            m.insert(format!("rel/{t}/log_g/{}", f.to_bits()), r.gamma.ln() + r.delta_beta * f.ln());
        }
    }
    m
}

/// Whether a distribution is compared with the baseline: every one but the baseline and the
/// frontier (which measures another quantity: the held-out loss that picks the models).
fn is_target(dist: &str, baseline: &str, opts: &IsoflopOptions) -> bool {
    dist != baseline && opts.frontier.as_deref() != Some(dist)
}

fn relatives(fits: &[IsoflopFit], baseline: &str, opts: &IsoflopOptions) -> Vec<RelativeFit> {
    let Some(base) = fits.iter().find(|f| f.distribution == baseline) else { return Vec::new() };
    fits.iter().filter(|f| is_target(&f.distribution, baseline, opts)).filter_map(|f| fit_relative(f, base, opts)).collect()
}

fn threads(n: usize) -> usize {
    if n == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { n }
}

/// Runs `job(i, rng_i)` for `i in 0..n` on worker threads; replicate `i` gets an RNG seeded from
/// `(seed, i)`, so results do not depend on the thread count. Results come back in index order.
fn run_replicates<T: Send>(n: usize, seed: u64, nthreads: usize, job: impl Fn(&mut Rng) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, T)> = Vec::with_capacity(n);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads(nthreads).clamp(1, n.max(1)))
            .map(|_| {
                sc.spawn(|| {
                    let mut local = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1));
                        local.push((i, job(&mut rng)));
                    }
                    local
                })
            })
            .collect();
        for h in hs {
            out.extend(h.join().expect("bootstrap worker panicked"));
        }
    });
    out.sort_by_key(|r| r.0);
    out.into_iter().map(|r| r.1).collect()
}

struct Cis {
    values: BTreeMap<String, Vec<f64>>,
    level: f64,
}

impl Cis {
    fn new(reps: Vec<BTreeMap<String, f64>>, level: f64) -> Self {
        let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in reps {
            for (k, v) in r {
                values.entry(k).or_default().push(v);
            }
        }
        Cis { values, level }
    }

    fn get(&self, key: &str) -> Option<[f64; 2]> {
        percentile_ci(self.values.get(key)?, self.level)
    }

    /// Interval of `exp(key)`.
    fn get_exp(&self, key: &str) -> Option<[f64; 2]> {
        self.get(key).map(|[a, b]| [a.exp(), b.exp()])
    }
}

fn isoflop_report(f: &IsoflopFit, cis: &Cis, opts: &IsoflopOptions) -> IsoflopReport {
    let d = &f.distribution;
    let budgets = f
        .budgets
        .iter()
        .map(|b| {
            let k = b.budget.to_bits();
            BudgetReport {
                optimum: b.clone(),
                n_opt_ci: cis.get(&format!("{d}/budget/{k}/n_opt")),
                d_opt_ci: cis.get(&format!("{d}/budget/{k}/d_opt")),
                l_opt_ci: cis.get(&format!("{d}/budget/{k}/l_opt")),
            }
        })
        .collect();
    let law = distribution_law(f, opts);
    IsoflopReport {
        distribution: d.clone(),
        budgets,
        n_opt_exponent: f.n_opt.map(|p| p.exponent),
        n_opt_exponent_ci: cis.get(&format!("{d}/n_exp")),
        n_opt_coef: f.n_opt.map(|p| p.coef),
        n_opt_coef_ci: cis.get(&format!("{d}/n_coef")),
        d_opt_exponent: f.d_opt.map(|p| p.exponent),
        d_opt_exponent_ci: cis.get(&format!("{d}/d_exp")),
        d_opt_coef: f.d_opt.map(|p| p.coef),
        d_opt_coef_ci: cis.get(&format!("{d}/d_coef")),
        loss_exponent: law.as_ref().map(|l| l.beta),
        loss_exponent_ci: cis.get(&format!("{d}/beta")),
        loss_coef: law.as_ref().map(|l| l.alpha),
        loss_coef_ci: cis.get(&format!("{d}/alpha")),
        exclusions: f.exclusions.clone(),
    }
}

/// Runs the IsoFLOP analysis of every distribution, the relative fits against the baseline, the
/// parametric fit of the primary distribution, and the bootstraps.
pub fn fit_all(table: &Table, opts: &FitOptions) -> Result<FitReport, FitError> {
    if table.points.is_empty() {
        return Err(FitError::NotEnoughData("the table has no points".into()));
    }
    if !(opts.ci_level > 0.0 && opts.ci_level < 1.0) {
        return Err(FitError::InvalidOption(format!("ci_level {} is not in (0, 1)", opts.ci_level)));
    }
    if let Some(c) = opts.predict_at.iter().find(|c| !(c.is_finite() && **c > 0.0)) {
        return Err(FitError::InvalidOption(format!("predict_at: expected compute budgets (FLOPs) > 0, got {c}")));
    }
    let iso = &opts.isoflop;
    let frontier = iso.frontier.as_deref();
    let all = table.distributions();
    if let Some(f) = frontier
        && !all.iter().any(|d| d == f)
    {
        return Err(FitError::InvalidOption(format!("frontier distribution `{f}` is not in the table")));
    }
    let dists: Vec<String> = all.into_iter().filter(|d| Some(d.as_str()) != frontier).collect();
    if dists.is_empty() {
        return Err(FitError::NotEnoughData("the table has no distribution besides the frontier".into()));
    }
    let primary = match &opts.primary {
        Some(p) if dists.contains(p) => p.clone(),
        Some(p) => return Err(FitError::InvalidOption(format!("primary distribution `{p}` is not in the table"))),
        None if dists.iter().any(|d| d == DEFAULT_DISTRIBUTION) => DEFAULT_DISTRIBUTION.to_string(),
        // Without `all`, the baseline when one is given (as a sweep's task section does).
        None => opts.baseline.clone().filter(|b| dists.contains(b)).unwrap_or_else(|| dists[0].clone()),
    };
    let baseline = match &opts.baseline {
        Some(b) if dists.contains(b) => b.clone(),
        Some(b) => {
            return Err(FitError::InvalidOption(format!(
                "baseline distribution `{b}` is not in the table (expected one of {})",
                dists.join(", ")
            )));
        }
        None => primary.clone(),
    };
    let fits = fit_isoflop(&table.points, iso);
    let rels = relatives(&fits, &baseline, iso);
    let mut notes = Vec::new();
    let mut exclusions: Vec<Exclusion> = fits.iter().flat_map(|f| f.exclusions.iter().cloned()).collect();
    for f in fits.iter().filter(|f| is_target(&f.distribution, &baseline, iso)) {
        if !rels.iter().any(|r| r.target == f.distribution) {
            exclusions.push(Exclusion {
                distribution: f.distribution.clone(),
                budget: None,
                reason: format!("fewer than 2 usable budgets shared with baseline `{baseline}`: no relative fit"),
            });
        }
    }

    // Bootstrap of approach 2 and the relative fits: resample whole runs within each budget.
    let reps = run_replicates(opts.bootstrap, opts.seed, opts.threads, |rng| {
        let pts = match &table.questions {
            Some(q) => resample_runs(&q.resample(&table.points, rng), rng),
            None => resample_runs(&table.points, rng),
        };
        let f = fit_isoflop(&pts, iso);
        let r = relatives(&f, &baseline, iso);
        scalars(&f, &r, iso)
    });
    let cis = Cis::new(reps, opts.ci_level);

    let distributions: Vec<DistributionReport> = fits
        .iter()
        .map(|f| {
            let law = distribution_law(f, iso);
            let d = &f.distribution;
            DistributionReport {
                name: d.clone(),
                alpha: law.as_ref().map(|l| l.alpha),
                alpha_ci: cis.get(&format!("{d}/alpha")),
                beta: law.as_ref().map(|l| l.beta),
                beta_ci: cis.get(&format!("{d}/beta")),
                n_budgets: law.as_ref().map_or(0, |l| l.n_budgets),
                isoflop: isoflop_report(f, &cis, iso),
            }
        })
        .collect();
    let relative = rels
        .iter()
        .map(|r| {
            let t = &r.target;
            let delta_beta_ci = cis.get(&format!("rel/{t}/dbeta"));
            let v = verdict(r, delta_beta_ci);
            let converging = v == Verdict::Converging;
            RelativeReport {
                target: t.clone(),
                baseline: r.baseline.clone(),
                gamma: r.gamma,
                gamma_ci: cis.get(&format!("rel/{t}/gamma")),
                delta_beta: r.delta_beta,
                delta_beta_ci,
                verdict: v,
                parity_flops: converging.then(|| r.log_parity_flops().exp()),
                parity_flops_ci: if converging { cis.get_exp(&format!("rel/{t}/log_parity")) } else { None },
                budgets: r.budgets.clone(),
                band: r
                    .budgets
                    .iter()
                    .filter_map(|f| cis.get_exp(&format!("rel/{t}/log_g/{}", f.to_bits())).map(|[lo, hi]| [*f, lo, hi]))
                    .collect(),
            }
        })
        .collect();
    let isoflop = distributions.iter().find(|d| d.name == primary).map(|d| d.isoflop.clone()).expect("primary has a fit");

    let parametric = if opts.run_parametric {
        let pts = table.of_distribution(&primary);
        let data = LseData::from_points(&pts);
        match fit_parametric(&data, &opts.parametric) {
            None => {
                notes.push(format!("parametric fit skipped: {} points in `{primary}`, need at least 5", data.len()));
                None
            }
            Some(fit) => Some(parametric_report(&primary, &pts, fit, opts)),
        }
    } else {
        None
    };
    let mut report = FitReport {
        isoflop,
        parametric,
        distributions,
        relative,
        exclusions,
        notes,
        bootstrap_replicates: opts.bootstrap,
        questions_resampled: table.questions.is_some(),
        frontier: iso.frontier.clone(),
        seed: opts.seed,
        ci_level: opts.ci_level,
    };
    report.notes.extend(warnings(&report));
    Ok(report)
}

/// Warnings about a report a reader should not take at face value: a parametric fit with a
/// non-positive exponent (loss that does not fall with N or D), and intervals that exclude
/// their own estimate (a sign of too few bootstrap replicates, or of an unstable fit).
pub fn warnings(r: &FitReport) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = &r.parametric {
        for (name, v) in [("alpha", p.fit.alpha), ("beta", p.fit.beta)] {
            if v.is_nan() || v <= 0.0 {
                out.push(format!(
                    "warning: the parametric fit of `{}` is unphysical: {name} = {v:.4} is not positive (the loss would not fall \
                     with {}); do not use its predictions",
                    p.distribution,
                    if name == "alpha" { "N" } else { "D" }
                ));
            }
        }
    }
    let mut checks: Vec<(String, Option<f64>, Option<[f64; 2]>)> = Vec::new();
    for d in &r.distributions {
        let i = &d.isoflop;
        checks.push((format!("{} beta", d.name), d.beta, d.beta_ci));
        checks.push((format!("{} N* exponent", d.name), i.n_opt_exponent, i.n_opt_exponent_ci));
        checks.push((format!("{} D* exponent", d.name), i.d_opt_exponent, i.d_opt_exponent_ci));
    }
    for g in &r.relative {
        checks.push((format!("{} gamma", g.target), Some(g.gamma), g.gamma_ci));
        checks.push((format!("{} dbeta", g.target), Some(g.delta_beta), g.delta_beta_ci));
    }
    if let Some(p) = &r.parametric {
        for (k, v) in [("alpha", p.fit.alpha), ("beta", p.fit.beta), ("E", p.fit.e_irreducible), ("a", p.fit.a), ("b", p.fit.b)] {
            checks.push((format!("parametric {k}"), Some(v), p.ci.get(k).copied()));
        }
    }
    let outside: Vec<String> = checks
        .into_iter()
        .filter_map(|(name, v, ci)| {
            let (v, [lo, hi]) = (v?, ci?);
            (v < lo || v > hi).then(|| format!("{name} {v:.4} not in [{lo:.4}, {hi:.4}]"))
        })
        .collect();
    if !outside.is_empty() {
        out.push(format!(
            "warning: {} interval(s) exclude their own estimate ({}{}): too few bootstrap replicates ({}) or an unstable fit; \
             use more replicates (--bootstrap 200 or more) before trusting them",
            outside.len(),
            outside.iter().take(3).cloned().collect::<Vec<_>>().join("; "),
            if outside.len() > 3 { "; ..." } else { "" },
            r.bootstrap_replicates
        ));
    }
    out
}

/// Reads one parameter of a fit.
type Getter = fn(&ParametricFit) -> f64;

fn parametric_report(primary: &str, pts: &[Point], fit: ParametricFit, opts: &FitOptions) -> ParametricReport {
    let start = fit.theta();
    let mut popts = opts.parametric.clone();
    popts.threads = 1;
    let reps = run_replicates(opts.parametric_bootstrap, opts.seed.wrapping_add(0x5eed), opts.threads, |rng| {
        let data = LseData::from_points(&resample_runs(pts, rng));
        let local = fit_from(&data, start, &popts);
        let mut f = ParametricFit::from_theta(&local.theta);
        f.objective = local.objective;
        f
    });
    let mut ci = BTreeMap::new();
    let params: [(&str, Getter); 7] = [
        ("E", |f| f.e_irreducible),
        ("A", |f| f.a_coef),
        ("B", |f| f.b_coef),
        ("alpha", |f| f.alpha),
        ("beta", |f| f.beta),
        ("a", |f| f.a),
        ("b", |f| f.b),
    ];
    for (name, get) in params {
        let v: Vec<f64> = reps.iter().map(get).collect();
        if let Some(c) = percentile_ci(&v, opts.ci_level) {
            ci.insert(name.to_string(), c);
        }
    }
    let predictions = opts
        .predict_at
        .iter()
        .map(|&c| {
            let (n, d, l) = fit.optimal(c);
            let rep: Vec<(f64, f64, f64)> = reps.iter().map(|f| f.optimal(c)).collect();
            let pick = |k: usize| -> Vec<f64> { rep.iter().map(|r| [r.0, r.1, r.2][k]).collect() };
            Prediction {
                flops: c,
                n_opt: n,
                d_opt: d,
                loss: l,
                n_opt_ci: percentile_ci(&pick(0), opts.ci_level),
                d_opt_ci: percentile_ci(&pick(1), opts.ci_level),
                loss_ci: percentile_ci(&pick(2), opts.ci_level),
            }
        })
        .collect();
    ParametricReport { distribution: primary.to_string(), fit, ci, predictions, bootstrap_replicates: opts.parametric_bootstrap }
}
