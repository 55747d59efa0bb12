//! `isoflop fit` and `isoflop report`: scaling laws from a sweep in the store or from a CSV.

use crate::args::Format;
use crate::exit::{CliResult, input};
use crate::render::fit::render;
use anyhow::anyhow;
use isoflop_fit::sweep::table_from_store;
use isoflop_fit::{FitOptions, Table, fit_all, read_csv};
use isoflop_store::{SqliteStore, Store};
use std::path::{Path, PathBuf};

/// Where the points come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A sweep in a store.
    Sweep {
        store: PathBuf,
        sweep: Option<String>,
        /// One evaluation task's results, and the error metric fitted.
        task: Option<String>,
        metric: Option<String>,
    },
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
    /// Baseline distribution of the relative laws (default: `all`): with `--task`, one of its
    /// subsets or groups (an MMLU category, a variety of English).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Fit one evaluation task's results (its subsets, groups and `all` as the distributions)
    /// instead of the held-out text losses.
    #[arg(long)]
    pub task: Option<String>,
    /// The error fitted for `--task`: text `loss` (default) or `bpb`; multiple choice `bpb` of
    /// the gold answer (default), `error` (1 - acc), `error_norm` (1 - acc_norm), `prob_error`
    /// (1 - choice_prob_norm) or `nll` (-logprob).
    #[arg(long, requires = "task")]
    pub metric: Option<String>,
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
            None => Source::Sweep { store: store.to_path_buf(), sweep, task: self.task.clone(), metric: self.metric.clone() },
        }
    }
}

/// Loads the table of a source.
pub fn load(source: &Source) -> Result<(Table, Vec<String>, String), crate::exit::CliError> {
    match source {
        Source::Csv(path) => Ok((read_csv(path).map_err(input)?, Vec::new(), path.display().to_string())),
        Source::Sweep { store, sweep, task, metric } => {
            if !store.is_file() {
                return Err(input(anyhow!("no isoflop store at {} (set --store or ISOFLOP_STORE)", store.display())));
            }
            let st = SqliteStore::open(store)?;
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
            let (t, notes) = match task {
                Some(task) => isoflop_fit::sweep::table_from_task(&st, &name, task, metric.as_deref()).map_err(input)?,
                None => table_from_store(&st, &name).map_err(input)?,
            };
            let what = match task {
                Some(task) => format!("sweep {name}, task {task}"),
                None => format!("sweep {name}"),
            };
            Ok((t, notes, what))
        }
    }
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

/// `isoflop report`.
pub fn report(source: &Source, args: &FitArgs, out: &Path) -> CliResult {
    let (table, notes, what) = load(source)?;
    let mut report = fit_all(&table, &args.options()).map_err(input)?;
    report.notes.extend(notes);
    let text = render(&report, &what);
    let files = isoflop_plot::report::write_report(&report, &table, &what, &text, out)?;
    print!("{text}");
    println!("wrote {} files to {} (open report.html)", files.len(), out.display());
    Ok(())
}
