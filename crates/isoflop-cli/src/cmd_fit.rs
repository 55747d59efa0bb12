//! `isoflop fit` and `isoflop report`: scaling laws from a sweep in the store or from a CSV.

use crate::Format;
use crate::cmd_status::open_store;
use crate::exit::{CliResult, input};
use crate::table::{Table as TextTable, sci};
use anyhow::anyhow;
use isoflop_core::{FailureClass, RunConfig, RunState, flops};
use isoflop_fit::report::FitReport;
use isoflop_fit::table::DEFAULT_DISTRIBUTION;
use isoflop_fit::{FitOptions, Point, Table, fit_all, read_csv};
use isoflop_store::Store;
use std::path::{Path, PathBuf};

/// Where the points come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A sweep in a store.
    Sweep { store: PathBuf, sweep: Option<String> },
    /// A long CSV table.
    Csv(PathBuf),
}

/// Options of `isoflop fit` shared with `isoflop report`.
#[derive(clap::Args, Debug, Clone)]
pub struct FitArgs {
    /// Read a long CSV table (params, tokens, loss; optional run, budget, flops, distribution)
    /// instead of a sweep.
    #[arg(long, value_name = "FILE")]
    pub from_csv: Option<PathBuf>,
    /// Baseline distribution of the relative laws (default: `all`).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Bootstrap replicates (resampling whole runs within budgets) for every interval.
    #[arg(long, default_value_t = 200)]
    pub bootstrap: usize,
    /// Bootstrap replicates of the parametric fit.
    #[arg(long, default_value_t = 50)]
    pub parametric_bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the parametric (approach 3) fit.
    #[arg(long)]
    pub no_parametric: bool,
    /// Compute budgets (FLOPs) at which to predict N*, D* and the loss.
    #[arg(long, value_delimiter = ',')]
    pub predict_at: Vec<f64>,
    /// Keep budgets whose IsoFLOP minimum is not bracketed in the power laws.
    #[arg(long)]
    pub include_unbracketed: bool,
    /// Fit each IsoFLOP parabola only to sizes within this many decades of the budget's
    /// lowest-loss size (wide curves are not parabolic far from their minimum).
    #[arg(long)]
    pub window_decades: Option<f64>,
}

impl FitArgs {
    pub fn options(&self) -> FitOptions {
        let mut o = FitOptions {
            bootstrap: self.bootstrap,
            parametric_bootstrap: self.parametric_bootstrap,
            seed: self.seed,
            ..FitOptions::default()
        };
        o.run_parametric = !self.no_parametric;
        o.baseline = self.baseline.clone();
        o.predict_at = self.predict_at.clone();
        o.isoflop.include_unbracketed = self.include_unbracketed;
        o.isoflop.window_decades = self.window_decades;
        o
    }

    pub fn source(&self, sweep: Option<String>, store: &Path) -> Source {
        match &self.from_csv {
            Some(p) => Source::Csv(p.clone()),
            None => Source::Sweep { store: store.to_path_buf(), sweep },
        }
    }
}

/// The points of a sweep: every succeeded run on every eval distribution, plus `all` (the
/// token-weighted loss over the distributions). Diverged runs are never included.
pub fn table_from_store(store: &dyn Store, sweep: &str) -> anyhow::Result<(Table, Vec<String>)> {
    let mut points = Vec::new();
    let mut notes = Vec::new();
    for r in store.sweep_runs(sweep)? {
        if r.state != RunState::Succeeded {
            let why = match r.failure_class {
                Some(FailureClass::Diverged) => "diverged".to_string(),
                _ => r.state.to_string(),
            };
            notes.push(format!("run {} ({}) left out: {why}", r.name, r.run_id));
            continue;
        }
        let c: RunConfig = serde_json::from_str(&r.config_json)?;
        let params = flops::params(&c.model) as f64;
        let tokens = c.tokens() as f64;
        let evals = store.evals(&r.run_id)?;
        let point = |distribution: &str, loss: f64| Point {
            run: r.run_id.clone(),
            params,
            tokens,
            loss,
            budget: r.budget,
            flops: r.budget,
            distribution: distribution.to_string(),
        };
        for e in &evals {
            points.push(point(&e.distribution, e.loss));
        }
        let weight: f64 = evals.iter().map(|e| e.tokens as f64).sum();
        if weight > 0.0 {
            points.push(point(DEFAULT_DISTRIBUTION, evals.iter().map(|e| e.loss * e.tokens as f64).sum::<f64>() / weight));
        }
    }
    if points.is_empty() {
        return Err(anyhow!("sweep `{sweep}` has no succeeded run with eval results yet"));
    }
    Ok((Table::from_points(points)?, notes))
}

/// Loads the table of a source.
pub fn load(source: &Source) -> Result<(Table, Vec<String>, String), crate::exit::CliError> {
    match source {
        Source::Csv(path) => Ok((read_csv(path).map_err(input)?, Vec::new(), path.display().to_string())),
        Source::Sweep { store, sweep } => {
            let st = open_store(store)?;
            let name = match sweep {
                Some(s) => s.clone(),
                None => st
                    .sweeps()?
                    .into_iter()
                    .next()
                    .map(|s| s.name)
                    .ok_or_else(|| input(anyhow!("the store holds no sweep yet")))?,
            };
            if st.sweep(&name)?.is_none() {
                return Err(input(anyhow!("sweep `{name}` not found in {}", store.display())));
            }
            let (t, notes) = table_from_store(st.as_ref(), &name).map_err(input)?;
            Ok((t, notes, format!("sweep {name}")))
        }
    }
}

fn ci(c: Option<[f64; 2]>) -> String {
    c.map(|[lo, hi]| format!("[{lo:.4}, {hi:.4}]")).unwrap_or_else(|| "-".into())
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into())
}

/// The report as terminal text.
pub fn render(report: &FitReport, what: &str) -> String {
    let mut out = String::new();
    let iso = &report.isoflop;
    out.push_str(&format!("IsoFLOP fits (approach 2) of {what}, distribution `{}`:\n", iso.distribution));
    let mut t = TextTable::new(["budget", "N*", "D*", "L*", "bracketed", "sizes"]);
    for b in &iso.budgets {
        let o = &b.optimum;
        t.row([
            sci(o.budget),
            sci(o.n_opt),
            sci(o.d_opt),
            format!("{:.4}", o.l_opt),
            o.bracketed.to_string(),
            o.n_sizes.to_string(),
        ]);
    }
    out.push_str(&t.render());
    out.push_str(&format!(
        "N* = k C^a: a = {} {}   D* = k' C^b: b = {} {}   L* = alpha C^-beta: beta = {} {}\n\n",
        opt(iso.n_opt_exponent),
        ci(iso.n_opt_exponent_ci),
        opt(iso.d_opt_exponent),
        ci(iso.d_opt_exponent_ci),
        opt(iso.loss_exponent),
        ci(iso.loss_exponent_ci)
    ));
    if let Some(p) = &report.parametric {
        let f = &p.fit;
        let c = |k: &str| ci(p.ci.get(k).copied());
        out.push_str(&format!("Parametric fit (approach 3) L = E + A/N^alpha + B/D^beta, distribution `{}`:\n", p.distribution));
        out.push_str(&format!(
            "  E = {:.4} {}  A = {:.4e} {}  B = {:.4e} {}\n  alpha = {:.4} {}  beta = {:.4} {}  a = {:.4} {}  b = {:.4} {}\n",
            f.e_irreducible,
            c("E"),
            f.a_coef,
            c("A"),
            f.b_coef,
            c("B"),
            f.alpha,
            c("alpha"),
            f.beta,
            c("beta"),
            f.a,
            c("a"),
            f.b,
            c("b")
        ));
        out.push_str(&format!(
            "  objective {:.6e} (Huber, summed), {} of {} starts reach it, gradient norm {:.2e}\n",
            f.objective, f.n_best, f.n_starts, f.grad_norm
        ));
        for pr in &p.predictions {
            out.push_str(&format!(
                "  at C = {}: N* = {}, D* = {}, L = {:.4}\n",
                sci(pr.flops),
                sci(pr.n_opt),
                sci(pr.d_opt),
                pr.loss
            ));
        }
        out.push('\n');
    }
    if !report.distributions.is_empty() {
        out.push_str("Per distribution E(F) = alpha F^-beta on the compute-optimal losses:\n");
        let mut t = TextTable::new(["distribution", "alpha", "beta", "beta 95% CI", "budgets"]);
        for d in &report.distributions {
            t.row([
                d.name.clone(),
                d.alpha.map(sci).unwrap_or_else(|| "-".into()),
                opt(d.beta),
                ci(d.beta_ci),
                d.n_budgets.to_string(),
            ]);
        }
        out.push_str(&t.render());
        out.push('\n');
    }
    if !report.relative.is_empty() {
        out.push_str(&format!("Relative laws G(F) = E_t/E_b = gamma F^dbeta against `{}`:\n", report.relative[0].baseline));
        let mut t = TextTable::new(["target", "gamma", "dbeta", "dbeta 95% CI", "verdict", "parity FLOPs"]);
        for r in &report.relative {
            t.row([
                r.target.clone(),
                format!("{:.4}", r.gamma),
                format!("{:+.5}", r.delta_beta),
                ci(r.delta_beta_ci),
                format!("{:?}", r.verdict).to_lowercase(),
                r.parity_flops.map(sci).unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&t.render());
        out.push('\n');
    }
    for e in &report.exclusions {
        out.push_str(&format!(
            "excluded: {}{}: {}\n",
            e.distribution,
            e.budget.map(|b| format!(" at {}", sci(b))).unwrap_or_default(),
            e.reason
        ));
    }
    for n in &report.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str(&format!(
        "intervals: {} bootstrap replicates resampling whole runs, seed {}\n",
        report.bootstrap_replicates, report.seed
    ));
    out
}

/// `isoflop fit`.
pub fn fit(source: &Source, args: &FitArgs, format: Format) -> CliResult {
    let (table, notes, what) = load(source)?;
    let mut report = fit_all(&table, &args.options()).map_err(input)?;
    report.notes.extend(notes);
    match format {
        Format::Json => println!("{}", report.to_json()),
        Format::Table => print!("{}", render(&report, &what)),
    }
    Ok(())
}
