//! The fit report as terminal text (`isoflop fit`, and the summary in `report.html`).

use crate::render::table::{Table as TextTable, sci};
use isoflop_fit::report::FitReport;

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
    if let Some(f) = &report.frontier {
        out.push_str(&format!(
            "N* and D* are the compute-optimal sizes of `{f}` (the held-out text loss); L* is the error of `{}` there\n",
            iso.distribution
        ));
    }
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
        out.push_str(if report.frontier.is_some() {
            "Per distribution E(F) = alpha F^-beta on the errors at the held-out compute-optimal sizes:\n"
        } else {
            "Per distribution E(F) = alpha F^-beta on the compute-optimal losses:\n"
        });
        let mut t = TextTable::new(["distribution", "alpha", "beta", "beta 95% CI", "budgets"]);
        for d in &report.distributions {
            let frontier = report.frontier.as_ref() == Some(&d.name);
            t.row([
                if frontier { format!("{} (frontier, nats/token)", d.name) } else { d.name.clone() },
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
        "intervals: {} bootstrap replicates resampling whole runs{}, seed {}\n",
        report.bootstrap_replicates,
        if report.questions_resampled { " and the task's questions" } else { "" },
        report.seed
    ));
    out
}

/// The verdicts of every section's relative laws in one table (`isoflop report`'s summary).
pub fn render_verdicts(sections: &[(&str, &FitReport)]) -> String {
    let mut t = TextTable::new(["section", "target", "baseline", "dbeta", "dbeta 95% CI", "verdict", "parity FLOPs"]);
    let mut any = false;
    for (name, r) in sections {
        for g in &r.relative {
            any = true;
            t.row([
                name.to_string(),
                g.target.clone(),
                g.baseline.clone(),
                format!("{:+.5}", g.delta_beta),
                ci(g.delta_beta_ci),
                format!("{:?}", g.verdict).to_lowercase(),
                g.parity_flops.map(sci).unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    if !any {
        return "verdicts: no relative law could be fitted\n".into();
    }
    format!("Verdicts of the relative laws (converging or diverging when the interval of dbeta excludes 0):\n{}", t.render())
}
