//! `isoflop fit` and `isoflop report`: scaling laws from a sweep in the store or from a CSV.

use crate::args::Format;
use crate::exit::{CliError, CliResult, client, input};
use crate::render::fit::{render, render_verdicts};
use anyhow::{Context, anyhow};
use isoflop_fit::sweep::{FRONTIER, Frontier, SectionOptions, Sections, TaskInfo, find_task, section, sections};
use isoflop_fit::{FitOptions, FitReport, fit_all, read_csv};
use isoflop_store::{Store, StoreLocation};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the points come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A sweep in a store.
    Sweep { store: StoreLocation, sweep: Option<String> },
    /// A sweep on a coordinator (`--coordinator URL`): it builds the tables from its store,
    /// this command fits them.
    Remote { remote: crate::args::RemoteArgs, sweep: Option<String> },
    /// A long CSV table.
    Csv(PathBuf),
}

/// Where each distribution's compute-optimal error is read (`--frontier`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontierArg {
    /// At its own IsoFLOP minimum.
    Own,
    /// At the minimum of the sweep's held-out text loss.
    Heldout,
}

/// Options of `isoflop fit` shared with `isoflop report`.
#[derive(clap::Args, Debug, Clone)]
pub struct FitArgs {
    /// Read a long CSV table (params, tokens, loss; optional run, budget, flops, distribution)
    /// instead of a sweep.
    #[arg(long, value_name = "FILE")]
    pub from_csv: Option<PathBuf>,
    /// Baseline distribution of the relative laws (default: `all`; for a text task, its first
    /// distribution): with `--task`, one of its subsets or groups (an MMLU category, a variety
    /// of English).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Fit one evaluation task's results (its subsets, groups and `all` as the distributions)
    /// instead of the held-out text losses; `isoflop report` without it writes a section for
    /// every task of the sweep.
    #[arg(long)]
    pub task: Option<String>,
    /// The error fitted for `--task`: text `bpb` (default; `loss` for `heldout`) or `loss`
    /// (nats/token); multiple choice `bpb` of
    /// the gold answer (default), `error` (1 - acc), `error_norm` (1 - acc_norm), `prob_error`
    /// (1 - choice_prob_norm) or `nll` (-logprob).
    #[arg(long, requires = "task")]
    pub metric: Option<String>,
    /// Where a task's compute-optimal errors are read: at each distribution's own IsoFLOP
    /// minimum, or at the models the held-out text loss picks (default: `heldout` for multiple
    /// choice, `own` for text).
    #[arg(long, value_enum)]
    pub frontier: Option<FrontierArg>,
    /// Bootstrap replicates (resampling whole runs within budgets) for every interval.
    #[arg(long, default_value_t = FitOptions::default().bootstrap)]
    pub bootstrap: usize,
    /// Bootstrap replicates of the parametric fit.
    #[arg(long, default_value_t = FitOptions::default().parametric_bootstrap)]
    pub parametric_bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = FitOptions::default().seed)]
    pub seed: u64,
    /// Skip the parametric (approach 3) fit.
    #[arg(long)]
    pub no_parametric: bool,
    /// Compute budgets (FLOPs) at which to predict N*, D* and the loss.
    #[arg(long, value_delimiter = ',', value_parser = positive_flops, allow_negative_numbers = true)]
    pub predict_at: Vec<f64>,
    /// Keep budgets whose IsoFLOP minimum is not bracketed in the power laws.
    #[arg(long)]
    pub include_unbracketed: bool,
    /// Fit each IsoFLOP parabola only to sizes within this many decades of the budget's
    /// lowest-loss size (wide curves are not parabolic far from their minimum).
    #[arg(long)]
    pub window_decades: Option<f64>,
}

/// A compute budget: finite FLOPs > 0.
fn positive_flops(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("expected compute (FLOPs) > 0, got {v}")),
        Err(e) => Err(format!("expected compute in FLOPs (like 1e21): {e}")),
    }
}

impl Default for FitArgs {
    /// What `isoflop fit` and `isoflop report` do without options (and `isoflop run` writes).
    fn default() -> Self {
        let o = FitOptions::default();
        FitArgs {
            from_csv: None,
            baseline: None,
            task: None,
            metric: None,
            frontier: None,
            bootstrap: o.bootstrap,
            parametric_bootstrap: o.parametric_bootstrap,
            seed: o.seed,
            no_parametric: !o.run_parametric,
            predict_at: o.predict_at,
            include_unbracketed: o.isoflop.include_unbracketed,
            window_decades: o.isoflop.window_decades,
        }
    }
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
        // A table's own `heldout` distribution as the frontier (a sweep's section decides
        // this itself; a CSV exported from one carries the distribution).
        if self.frontier == Some(FrontierArg::Heldout) && self.from_csv.is_some() {
            o.isoflop.frontier = Some(FRONTIER.to_string());
        }
        o
    }

    fn section_options(&self, every_subset: bool) -> SectionOptions {
        SectionOptions {
            metric: self.metric.clone(),
            baseline: self.baseline.clone(),
            frontier: self.frontier.map(|f| match f {
                FrontierArg::Own => Frontier::Own,
                FrontierArg::Heldout => Frontier::Heldout,
            }),
            every_subset,
        }
    }

    pub fn source(&self, sweep: Option<String>, store: &StoreLocation, remote: &crate::args::RemoteArgs) -> Source {
        match (&self.from_csv, remote.coordinator()) {
            (Some(p), _) => Source::Csv(p.clone()),
            (None, Some(_)) => Source::Remote { remote: remote.clone(), sweep },
            (None, None) => Source::Sweep { store: store.clone(), sweep },
        }
    }
}

/// `isoflop export SWEEP --csv [--out FILE]`: the table `isoflop fit SWEEP` (with `--task`,
/// `--metric`) fits, as the CSV `isoflop fit --from-csv` reads; the hint on stderr says which
/// options make that fit the same.
pub fn export_csv(sweep: &str, args: &FitArgs, store: &StoreLocation, out: Option<&Path>) -> CliResult {
    let (st, name) = open_sweep(store, &Some(sweep.to_string()))?;
    let task = find_task(st.as_ref(), &name, args.task.as_deref()).map_err(input)?;
    let s = section(st.as_ref(), &name, &task, &args.options(), &args.section_options(true)).map_err(input)?;
    let csv = isoflop_fit::table::write_csv(&s.table);
    let mut flags = format!("--baseline {}", s.baseline);
    if !s.options.run_parametric {
        flags.push_str(" --no-parametric");
    }
    if s.frontier == Frontier::Heldout {
        flags.push_str(" --frontier heldout");
    }
    let file = match out {
        Some(p) => {
            std::fs::write(p, &csv).with_context(|| format!("cannot write {}", p.display()))?;
            p.display().to_string()
        }
        None => {
            print!("{csv}");
            "FILE".to_string()
        }
    };
    eprintln!(
        "{} rows of {} ({}); `isoflop fit --from-csv {file} {flags}` fits them as `isoflop fit {name}{}` does{}",
        s.table.points.len(),
        name,
        s.describe(),
        args.task.as_ref().map(|t| format!(" --task {t}")).unwrap_or_default(),
        if s.table.questions.is_some() {
            " (but its intervals resample runs only: the per-question results stay in the store)"
        } else {
            ""
        }
    );
    Ok(())
}

/// The sections of a sweep source, from the local store or from a coordinator, and the
/// sweep's name (default: the newest).
fn sweep_sections(source: &Source, args: &FitArgs, report: bool) -> Result<(String, Sections), CliError> {
    let task = args.task.as_deref();
    let so = args.section_options(!report);
    match source {
        Source::Sweep { store, sweep } => {
            let (st, name) = open_sweep(store, sweep)?;
            let secs = sections(st.as_ref(), &name, task, &args.options(), &so, report).map_err(input)?;
            Ok((name, secs))
        }
        Source::Remote { remote, sweep } => crate::control::runtime()?.block_on(async {
            let mut c = isoflop_server::ControlClient::connect(remote.url()?, remote.token()?).await.map_err(client)?;
            let name = match sweep {
                Some(s) => s.clone(),
                None => c.newest_sweep().await.map_err(client)?,
            };
            let json = c.fit_sections(&name, task, &args.options(), &so, report).await.map_err(client)?;
            let secs: Sections = serde_json::from_str(&json).context("the coordinator's sections")?;
            Ok((name, secs))
        }),
        Source::Csv(_) => unreachable!("a CSV has no sections"),
    }
}

/// Opens the store of a sweep source and names the sweep (default: the newest).
fn open_sweep(store: &StoreLocation, sweep: &Option<String>) -> Result<(Arc<dyn Store>, String), CliError> {
    let st = crate::control::open_existing(store)?;
    let name = match sweep {
        Some(s) => s.clone(),
        None => st.sweeps()?.into_iter().next().map(|s| s.name).ok_or_else(|| input(anyhow!("the store holds no sweep yet")))?,
    };
    if st.sweep(&name)?.is_none() {
        return Err(input(anyhow!("sweep `{name}` not found in {store}")));
    }
    Ok((st, name))
}

/// A section's heading.
fn title(task: &TaskInfo) -> String {
    if task.name == FRONTIER { "Held-out text".to_string() } else { format!("Task {}", task.name) }
}

/// `isoflop fit`.
pub fn fit(source: &Source, args: &FitArgs, format: Format) -> CliResult {
    let (report, text) = match source {
        Source::Csv(path) => {
            let table = read_csv(path).map_err(input)?;
            let report = fit_all(&table, &args.options()).map_err(input)?;
            let text = render(&report, &path.display().to_string());
            (report, text)
        }
        Source::Sweep { .. } | Source::Remote { .. } => {
            let (name, mut built) = sweep_sections(source, args, false)?;
            let (task, s) = built.remove(0);
            let s = s.map_err(|e| input(anyhow!("{}: {e}", what(&name, &task))))?;
            let report = s.fit().map_err(input)?;
            let what = what(&name, &task);
            let text = format!("{}\n{}", s.describe(), render(&report, &what));
            (report, text)
        }
    };
    match format {
        Format::Json => println!("{}", report.to_json()),
        Format::Table => print!("{text}"),
    }
    Ok(())
}

fn what(sweep: &str, task: &TaskInfo) -> String {
    if task.name == FRONTIER { format!("sweep {sweep}") } else { format!("sweep {sweep}, task {}", task.name) }
}

/// A written report: its files and each section's fit (or why it has none).
pub struct Written {
    pub files: Vec<PathBuf>,
    pub fits: Vec<(String, Result<FitReport, String>)>,
    pub text: String,
}

/// Fits a sweep's held-out text and every evaluation task (only `args.task` when given) and
/// writes the report into `out`. What `isoflop report` and `isoflop run` both write.
pub fn sweep_report(store: &dyn Store, sweep: &str, args: &FitArgs, out: &Path) -> Result<Written, CliError> {
    let secs =
        sections(store, sweep, args.task.as_deref(), &args.options(), &args.section_options(false), true).map_err(input)?;
    write_report_of(sweep, secs, args, out)
}

/// Fits the sections of a report and writes it (local or from a coordinator alike).
fn write_report_of(sweep: &str, secs: Sections, args: &FitArgs, out: &Path) -> Result<Written, CliError> {
    let mut built = Vec::new();
    for (task, s) in &secs {
        let fitted = s.clone().and_then(|s| s.fit().map(|r| (s, r)).map_err(|e| e.to_string()));
        built.push((task, fitted));
    }
    if let Some((task, Err(e))) = built.first()
        && (args.task.is_some() || built.len() == 1)
    {
        return Err(input(anyhow!("{}: {e}", what(sweep, task))));
    }
    let mut text = String::new();
    let mut views = Vec::new();
    for (task, fitted) in &built {
        let (describe, body) = match fitted {
            Ok((s, r)) => (s.describe(), render(r, &what(sweep, task))),
            Err(e) => (format!("task `{}`", task.name), format!("no fit: {e}\n")),
        };
        let section_text = format!("== {} ==\n{describe}\n{body}", title(task));
        text.push_str(&section_text);
        text.push('\n');
        views.push(isoflop_plot::report::Section {
            id: &task.name,
            title: title(task),
            describe,
            metric: fitted.as_ref().map_or("error", |(s, _)| s.metric_label()),
            text: body,
            fit: fitted.as_ref().map(|(s, r)| (r, &s.table)).map_err(|e| e.clone()),
        });
    }
    let reports: Vec<(&str, &FitReport)> =
        built.iter().filter_map(|(t, f)| f.as_ref().ok().map(|(_, r)| (t.name.as_str(), r))).collect();
    text.push_str(&render_verdicts(&reports));
    let files = isoflop_plot::report::write_sections(&format!("sweep {sweep}"), &views, out)?;
    let fits = built.into_iter().map(|(t, f)| (t.name.clone(), f.map(|(_, r)| r))).collect();
    Ok(Written { files, fits, text })
}

/// `isoflop report`.
pub fn report(source: &Source, args: &FitArgs, out: &Path) -> CliResult {
    match source {
        Source::Csv(path) => {
            let table = read_csv(path).map_err(input)?;
            let report = fit_all(&table, &args.options()).map_err(input)?;
            let what = path.display().to_string();
            let text = render(&report, &what);
            let files = isoflop_plot::report::write_report(&report, &table, &what, &text, out)?;
            print!("{text}");
            println!("wrote {} files to {} (open report.html)", files.len(), out.display());
        }
        Source::Sweep { .. } | Source::Remote { .. } => {
            let (name, secs) = sweep_sections(source, args, true)?;
            let w = write_report_of(&name, secs, args, out)?;
            print!("{}", w.text);
            println!("wrote {} files to {} (open report.html)", w.files.len(), out.display());
        }
    }
    Ok(())
}
