//! The scaling-law report as files: `report.json`, each chart as SVG and PNG (IsoFLOP curves
//! with their parabolas and minima; N* and D* against compute; the loss of each distribution
//! against compute; the gap G(F) of each target with its interval band), and a self-contained
//! `report.html`. `isoflop report` and `isoflop run` both write it.

use crate::{Band, Chart, PlotError, Style};
use isoflop_fit::Table;
use isoflop_fit::report::FitReport;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// Log-spaced points between `a` and `b`.
fn logspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    let (la, lb) = (a.ln(), b.ln());
    (0..n).map(|i| (la + (lb - la) * i as f64 / (n - 1) as f64).exp()).collect()
}

fn range(xs: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let v: Vec<f64> = xs.filter(|x| x.is_finite() && *x > 0.0).collect();
    if v.is_empty() {
        return None;
    }
    Some((v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max)))
}

/// The report's charts, by file stem.
pub fn charts(report: &FitReport, table: &Table) -> Vec<(String, Chart)> {
    let mut out = Vec::new();
    let iso = &report.isoflop;
    let primary = &iso.distribution;

    // 1. IsoFLOP curves of the primary distribution.
    let mut c = Chart::new(format!("IsoFLOP curves ({primary})"), "parameters N", "loss (nats/token)").log(true, false);
    let pts = table.of_distribution(primary);
    let mut by_budget: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    for p in &pts {
        by_budget.entry(p.budget.to_bits()).or_default().push((p.params, p.loss));
    }
    for (i, (bits, mut v)) in by_budget.into_iter().enumerate() {
        let budget = f64::from_bits(bits);
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        c.add(format!("C = {}", crate::label(budget)), v.clone(), Style::Points, i);
        if let (Some(b), Some((lo, hi))) = (iso.budgets.iter().find(|b| b.optimum.budget == budget), range(v.iter().map(|p| p.0)))
        {
            let curve: Vec<(f64, f64)> =
                logspace(lo, hi, 60).into_iter().map(|n| (n, b.optimum.parabola_ln_n.eval(n.ln()))).collect();
            c.add("", curve, Style::Dashed, i);
            if b.optimum.bracketed {
                c.add("fitted minimum", vec![(b.optimum.n_opt, b.optimum.l_opt)], Style::Marked, 7);
            }
        }
    }
    out.push(("isoflop-curves".to_string(), c));

    // 2. N* and D* against compute.
    let mut c = Chart::new(format!("Compute-optimal N* and D* ({primary})"), "compute C (FLOPs)", "N* (parameters), D* (tokens)")
        .log(true, true);
    let used: Vec<_> = iso.budgets.iter().filter(|b| b.optimum.bracketed).collect();
    c.add("N*", used.iter().map(|b| (b.optimum.budget, b.optimum.n_opt)).collect(), Style::Points, 0);
    c.add("D*", used.iter().map(|b| (b.optimum.budget, b.optimum.d_opt)).collect(), Style::Points, 1);
    if let Some((lo, hi)) = range(used.iter().map(|b| b.optimum.budget)) {
        let xs = logspace(lo, hi, 20);
        if let (Some(k), Some(a)) = (iso.n_opt_coef, iso.n_opt_exponent) {
            c.add(
                format!("N* = {} C^{a:.3}", crate::label(k)),
                xs.iter().map(|&x| (x, k * x.powf(a))).collect(),
                Style::Dashed,
                0,
            );
        }
        if let (Some(k), Some(b)) = (iso.d_opt_coef, iso.d_opt_exponent) {
            c.add(
                format!("D* = {} C^{b:.3}", crate::label(k)),
                xs.iter().map(|&x| (x, k * x.powf(b))).collect(),
                Style::Dashed,
                1,
            );
        }
    }
    out.push(("optimal-n-d".to_string(), c));

    // 3. Loss of each distribution against compute.
    let mut c = Chart::new("Compute-optimal loss per distribution", "compute F (FLOPs)", "E(F) (nats/token)").log(true, true);
    for (i, d) in report.distributions.iter().enumerate() {
        let used: Vec<_> = d.isoflop.budgets.iter().filter(|b| b.optimum.bracketed).collect();
        c.add(d.name.clone(), used.iter().map(|b| (b.optimum.budget, b.optimum.l_opt)).collect(), Style::Points, i);
        if let (Some(alpha), Some(beta), Some((lo, hi))) = (d.alpha, d.beta, range(used.iter().map(|b| b.optimum.budget))) {
            c.add("", logspace(lo, hi, 20).into_iter().map(|f| (f, alpha * f.powf(-beta))).collect(), Style::Dashed, i);
        }
    }
    out.push(("distribution-loss".to_string(), c));

    // 4. The gap of each target against the baseline.
    let l_opt = |dist: &str, budget: f64| {
        report
            .distributions
            .iter()
            .find(|d| d.name == dist)?
            .isoflop
            .budgets
            .iter()
            .find(|b| b.optimum.budget == budget)
            .map(|b| b.optimum.l_opt)
    };
    for r in &report.relative {
        let verdict = format!("{:?}", r.verdict).to_lowercase();
        let title = format!("Gap G(F) = E_{} / E_{}: {verdict}", r.target, r.baseline);
        let mut c = Chart::new(title, "compute F (FLOPs)", "G(F)").log(true, true);
        c.h_lines.push(1.0);
        let g: Vec<(f64, f64)> =
            r.budgets.iter().filter_map(|&f| Some((f, l_opt(&r.target, f)? / l_opt(&r.baseline, f)?))).collect();
        if !r.band.is_empty() {
            c.bands.push(Band {
                label: "95% interval".into(),
                xs: r.band.iter().map(|b| b[0]).collect(),
                lo: r.band.iter().map(|b| b[1]).collect(),
                hi: r.band.iter().map(|b| b[2]).collect(),
                color: 0,
            });
        }
        c.add("G at each budget", g, Style::Points, 0);
        if let Some((lo, hi)) = range(r.budgets.iter().copied()) {
            let fit: Vec<(f64, f64)> = logspace(lo, hi, 20).into_iter().map(|f| (f, r.gamma * f.powf(r.delta_beta))).collect();
            c.add(format!("fit, dbeta {:+.4}", r.delta_beta), fit, Style::Dashed, 1);
        }
        out.push((format!("relative-{}", r.target), c));
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Writes the report into `dir`: `report.json`, every chart as SVG and PNG, and a
/// self-contained `report.html` (titled `what`, with `summary`, the fits as text, and the
/// charts inline). Returns the files written.
pub fn write_report(
    report: &FitReport,
    table: &Table,
    what: &str,
    summary: &str,
    dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    let mut written = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| -> Result<(), ReportError> {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|source| ReportError::Io { path: p.clone(), source })?;
        written.push(p);
        Ok(())
    };
    write("report.json", report.to_json().as_bytes())?;
    let mut figures = String::new();
    for (stem, chart) in charts(report, table) {
        let svg = match chart.svg() {
            Ok(s) => s,
            Err(e) => {
                figures.push_str(&format!("<p>{}</p>\n", html_escape(&e.to_string())));
                continue;
            }
        };
        write(&format!("{stem}.svg"), svg.as_bytes())?;
        write(&format!("{stem}.png"), &chart.png()?)?;
        figures.push_str(&format!("<figure>{svg}<figcaption>{stem}.svg / {stem}.png</figcaption></figure>\n"));
    }
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>isoflop report: {title}</title>\n<style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}\
         figure{{margin:1.5em 0}}figcaption{{color:#666;font-size:90%}}</style></head><body>\n\
         <h1>Scaling-law report: {title}</h1>\n<h2>Fits</h2>\n<pre>{text}</pre>\n<h2>Figures</h2>\n{figures}\
         <h2>Data</h2><p>Every number above, with its interval, is in <code>report.json</code> beside this page.</p>\n</body></html>\n",
        title = html_escape(what),
        text = html_escape(summary),
    );
    write("report.html", html.as_bytes())?;
    Ok(written)
}
