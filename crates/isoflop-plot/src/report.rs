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

/// The report's charts, by file stem; `metric` names the error on the axes (held-out text:
/// `loss (nats/token)`).
pub fn charts(report: &FitReport, table: &Table, metric: &str) -> Vec<(String, Chart)> {
    let mut out = Vec::new();
    let iso = &report.isoflop;
    let primary = &iso.distribution;
    let at_frontier = report.frontier.is_some();

    // 1. IsoFLOP curves of the primary distribution.
    let mut c = Chart::new(format!("IsoFLOP curves ({primary})"), "parameters N", metric).log(true, false);
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
                let what = if at_frontier { "at the held-out optimum N*" } else { "fitted minimum" };
                c.add(what, vec![(b.optimum.n_opt, b.optimum.l_opt)], Style::Marked, 7);
            }
        }
    }
    out.push(("isoflop-curves".to_string(), c));

    // 2. N* and D* against compute (the frontier's, shown in its own section).
    if !at_frontier {
        out.push(("optimal-n-d".to_string(), optimal_n_d(report)));
    }

    // 3. Error of each distribution against compute.
    let title =
        if at_frontier { "E(F) at the held-out optimum, per distribution" } else { "Compute-optimal E(F) per distribution" };
    let mut c = Chart::new(title, "compute F (FLOPs)", format!("E(F): {metric}")).log(true, true);
    for (i, d) in report.distributions.iter().filter(|d| report.frontier.as_ref() != Some(&d.name)).enumerate() {
        let used: Vec<_> = d.isoflop.budgets.iter().filter(|b| b.optimum.bracketed).collect();
        c.add(d.name.clone(), used.iter().map(|b| (b.optimum.budget, b.optimum.l_opt)).collect(), Style::Points, i);
        if let (Some(alpha), Some(beta), Some((lo, hi))) = (d.alpha, d.beta, range(used.iter().map(|b| b.optimum.budget))) {
            c.add("", logspace(lo, hi, 20).into_iter().map(|f| (f, alpha * f.powf(-beta))).collect(), Style::Dashed, i);
        }
    }
    out.push(("distribution-loss".to_string(), c));
    out.extend(gap_charts(report));
    out
}

/// N* and D* against compute with their power laws.
fn optimal_n_d(report: &FitReport) -> Chart {
    let iso = &report.isoflop;
    let primary = &iso.distribution;
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
    c
}

/// The gap of every target against the baseline in one chart (each with its band), then one
/// chart per target.
fn gap_charts(report: &FitReport) -> Vec<(String, Chart)> {
    let mut out = Vec::new();
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
    if let Some(first) = report.relative.first() {
        let mut c =
            Chart::new(format!("Relative laws G(F) against {}", first.baseline), "compute F (FLOPs)", "G(F)").log(true, true);
        c.h_lines.push(1.0);
        for (i, r) in report.relative.iter().enumerate() {
            if !r.band.is_empty() {
                c.bands.push(Band {
                    label: String::new(),
                    xs: r.band.iter().map(|b| b[0]).collect(),
                    lo: r.band.iter().map(|b| b[1]).collect(),
                    hi: r.band.iter().map(|b| b[2]).collect(),
                    color: i,
                });
            }
            let g: Vec<(f64, f64)> =
                r.budgets.iter().filter_map(|&f| Some((f, l_opt(&r.target, f)? / l_opt(&r.baseline, f)?))).collect();
            let verdict = format!("{:?}", r.verdict).to_lowercase();
            c.add(format!("{} ({verdict})", r.target), g, Style::Points, i);
            if let Some((lo, hi)) = range(r.budgets.iter().copied()) {
                let fit = logspace(lo, hi, 20).into_iter().map(|f| (f, r.gamma * f.powf(r.delta_beta))).collect();
                c.add("", fit, Style::Dashed, i);
            }
        }
        out.push(("relative-gaps".to_string(), c));
    }
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

/// One section of a report: the held-out text, or one evaluation task (a case study).
pub struct Section<'a> {
    /// Its name: the task's (`heldout` for the held-out text). Every section but the first
    /// writes its files into a directory of this name.
    pub id: &'a str,
    /// Its heading.
    pub title: String,
    /// What the section fits, in one line.
    pub describe: String,
    /// The error on the axes.
    pub metric: &'a str,
    /// The fits as text.
    pub text: String,
    /// The fit and its table, or why there is none.
    pub fit: Result<(&'a FitReport, &'a Table), String>,
}

fn verdict_rows(sections: &[Section]) -> String {
    let mut rows = String::new();
    for s in sections {
        let Ok((r, _)) = &s.fit else { continue };
        for g in &r.relative {
            let ci = g.delta_beta_ci.map(|[a, b]| format!("[{a:+.4}, {b:+.4}]")).unwrap_or_else(|| "-".into());
            let parity = g.parity_flops.map(crate::label).unwrap_or_else(|| "-".into());
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:+.4}</td><td>{ci}</td><td><b>{:?}</b></td><td>{parity}</td></tr>\n",
                html_escape(s.id),
                html_escape(&g.target),
                html_escape(&g.baseline),
                g.delta_beta,
                g.verdict
            ));
        }
    }
    rows
}

/// Writes a report of one or more sections into `dir`: the first section's `report.json` and
/// charts (SVG and PNG) at the top, every other section's in `dir/ID/`, and one
/// self-contained `report.html` titled `what`: the verdicts of every relative law, then each
/// section with its fits as text and its charts inline. Returns the files written.
pub fn write_sections(what: &str, sections: &[Section], dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    let mut body = String::new();
    let rows = verdict_rows(sections);
    if !rows.is_empty() {
        body.push_str(
            "<h2>Verdicts</h2>\n<p>G(F) = E<sub>t</sub>(F) / E<sub>b</sub>(F) = &gamma; F<sup>&Delta;&beta;</sup>: a gap \
             converges or diverges when the interval of &Delta;&beta; excludes 0, else it stays parallel.</p>\n\
             <table><tr><th>section</th><th>target</th><th>baseline</th><th>&Delta;&beta;</th><th>95% interval</th>\
             <th>verdict</th><th>parity FLOPs</th></tr>\n",
        );
        body.push_str(&rows);
        body.push_str("</table>\n");
    }
    for (i, s) in sections.iter().enumerate() {
        let sub = if i == 0 { dir.to_path_buf() } else { dir.join(s.id) };
        let prefix = if i == 0 { String::new() } else { format!("{}/", s.id) };
        std::fs::create_dir_all(&sub).map_err(|source| ReportError::Io { path: sub.clone(), source })?;
        let mut write = |name: &str, bytes: &[u8]| -> Result<(), ReportError> {
            let p = sub.join(name);
            std::fs::write(&p, bytes).map_err(|source| ReportError::Io { path: p.clone(), source })?;
            written.push(p);
            Ok(())
        };
        body.push_str(&format!(
            "<h2 id=\"{}\">{}</h2>\n<p>{}</p>\n",
            html_escape(s.id),
            html_escape(&s.title),
            html_escape(&s.describe)
        ));
        let (report, table) = match &s.fit {
            Ok(f) => *f,
            Err(e) => {
                body.push_str(&format!("<p>No fit: {}</p>\n", html_escape(e)));
                continue;
            }
        };
        write("report.json", report.to_json().as_bytes())?;
        body.push_str(&format!("<pre>{}</pre>\n", html_escape(&s.text)));
        for (stem, chart) in charts(report, table, s.metric) {
            let svg = match chart.svg() {
                Ok(svg) => svg,
                Err(e) => {
                    body.push_str(&format!("<p>{}</p>\n", html_escape(&e.to_string())));
                    continue;
                }
            };
            write(&format!("{stem}.svg"), svg.as_bytes())?;
            write(&format!("{stem}.png"), &chart.png()?)?;
            body.push_str(&format!("<figure>{svg}<figcaption>{prefix}{stem}.svg / {prefix}{stem}.png</figcaption></figure>\n"));
        }
        body.push_str(&format!(
            "<p>Every number of this section, with its interval, is in <code>{prefix}report.json</code>.</p>\n"
        ));
    }
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>isoflop report: {title}</title>\n<style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}\
         figure{{margin:1.5em 0}}figcaption{{color:#666;font-size:90%}}table{{border-collapse:collapse}}\
         td,th{{border-bottom:1px solid #ddd;padding:.2em .8em;text-align:left}}</style></head><body>\n\
         <h1>Scaling-law report: {title}</h1>\n{body}</body></html>\n",
        title = html_escape(what),
    );
    let p = dir.join("report.html");
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    std::fs::write(&p, html).map_err(|source| ReportError::Io { path: p.clone(), source })?;
    written.push(p);
    Ok(written)
}

/// Writes a report of one fit into `dir` (see [`write_sections`]): `report.json`, every chart
/// as SVG and PNG, and `report.html` titled `what` with `summary`, the fits as text.
pub fn write_report(
    report: &FitReport,
    table: &Table,
    what: &str,
    summary: &str,
    dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let section = Section {
        id: "fits",
        title: "Fits".to_string(),
        describe: what.to_string(),
        metric: "loss (nats/token)",
        text: summary.to_string(),
        fit: Ok((report, table)),
    };
    write_sections(what, &[section], dir)
}
