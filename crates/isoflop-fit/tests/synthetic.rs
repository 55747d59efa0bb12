//! Recovery tests on data generated from known laws with noise.

use isoflop_fit::bootstrap::Rng;
use isoflop_fit::parametric::{LseData, ParametricOptions, fit_parametric};
use isoflop_fit::relative::Verdict;
use isoflop_fit::{FitOptions, Point, Table, fit_all};

const BUDGETS: [f64; 9] = [1e17, 3e17, 1e18, 3e18, 1e19, 3e19, 1e20, 3e20, 1e21];

/// Chinchilla's published law (Hoffmann et al. 2022).
const E: f64 = 1.69;
const A: f64 = 406.4;
const B: f64 = 410.7;
const ALPHA: f64 = 0.34;
const BETA: f64 = 0.28;

fn chinchilla(n: f64, d: f64) -> f64 {
    E + A / n.powf(ALPHA) + B / d.powf(BETA)
}

fn true_n_opt(c: f64) -> f64 {
    let g = ((ALPHA * A) / (BETA * B)).powf(1.0 / (ALPHA + BETA));
    g * (c / 6.0).powf(BETA / (ALPHA + BETA))
}

/// Nine sizes per budget, log-spaced over a factor 16 each side of the true optimum, with
/// multiplicative noise of relative size `noise`.
fn chinchilla_points(noise: f64, seed: u64) -> Vec<Point> {
    let mut rng = Rng::new(seed);
    let mut pts = Vec::new();
    for (i, &c) in BUDGETS.iter().enumerate() {
        let n0 = true_n_opt(c);
        for j in 0..9 {
            let n = n0 * 16f64.powf((j as f64 - 4.0) / 4.0);
            let d = c / (6.0 * n);
            pts.push(Point {
                run: format!("c{i}n{j}"),
                params: n,
                tokens: d,
                loss: chinchilla(n, d) * (noise * rng.normal()).exp(),
                budget: c,
                flops: c,
                distribution: "all".into(),
            });
        }
    }
    pts
}

#[test]
fn parametric_recovers_chinchilla() {
    let pts = chinchilla_points(0.001, 1);
    let data = LseData::from_points(&pts);
    let fit = fit_parametric(&data, &ParametricOptions::default()).unwrap();
    eprintln!("{fit:?}");
    assert!((fit.alpha - ALPHA).abs() < 0.03, "alpha {}", fit.alpha);
    assert!((fit.beta - BETA).abs() < 0.03, "beta {}", fit.beta);
    assert!((fit.e_irreducible - E).abs() < 0.05, "E {}", fit.e_irreducible);
    assert!((fit.a - BETA / (ALPHA + BETA)).abs() < 0.02, "a {}", fit.a);
    assert!(fit.n_best >= 10, "n_best {}", fit.n_best);
    assert!(fit.grad_norm < 1e-6, "grad {}", fit.grad_norm);
    // Noise-free data: the exact parameters.
    let exact = LseData::from_points(&chinchilla_points(0.0, 1));
    let f = fit_parametric(&exact, &ParametricOptions::default()).unwrap();
    assert!((f.alpha - ALPHA).abs() < 1e-4 && (f.beta - BETA).abs() < 1e-4, "{f:?}");
    assert!((f.a_coef / A - 1.0).abs() < 1e-2 && (f.b_coef / B - 1.0).abs() < 1e-2, "{f:?}");
    let (n, _, l) = f.optimal(1e21);
    assert!((n / true_n_opt(1e21) - 1.0).abs() < 1e-2, "{n}");
    assert!((l / chinchilla(n, 1e21 / (6.0 * n)) - 1.0).abs() < 1e-9);
}

#[test]
fn isoflop_recovers_exponents_with_intervals() {
    let table = Table::from_points(chinchilla_points(0.002, 2)).unwrap();
    let opts = FitOptions { run_parametric: false, bootstrap: 100, ..FitOptions::default() };
    let rep = fit_all(&table, &opts).unwrap();
    let iso = &rep.isoflop;
    let a = BETA / (ALPHA + BETA);
    let na = iso.n_opt_exponent.unwrap();
    let da = iso.d_opt_exponent.unwrap();
    eprintln!("n exponent {na} {:?}, d exponent {da} {:?}", iso.n_opt_exponent_ci, iso.d_opt_exponent_ci);
    assert!((na - a).abs() < 0.02, "{na} vs {a}");
    assert!((da - (1.0 - a)).abs() < 0.02, "{da}");
    let ci = iso.n_opt_exponent_ci.unwrap();
    assert!(ci[0] < na && na < ci[1]);
    assert!(iso.budgets.iter().all(|b| b.optimum.bracketed));
    assert_eq!(iso.budgets.len(), BUDGETS.len());
    assert!(iso.loss_exponent.unwrap() > 0.0);
    // Same seed, same report.
    let again = fit_all(&table, &opts).unwrap();
    assert_eq!(rep, again);
}

#[test]
fn exclusions_are_named() {
    let mut pts = chinchilla_points(0.0, 3);
    // A budget with two sizes only.
    for (j, n) in [1e8, 2e8].into_iter().enumerate() {
        pts.push(Point {
            run: format!("small{j}"),
            params: n,
            tokens: 5e22 / (6.0 * n),
            loss: chinchilla(n, 5e22 / (6.0 * n)),
            budget: 5e22,
            flops: 5e22,
            distribution: "all".into(),
        });
    }
    // A budget sampled only on one side of its optimum.
    let c = 2e19;
    let n0 = true_n_opt(c);
    for j in 0..4 {
        let n = n0 * 2.0 * 1.5f64.powi(j);
        pts.push(Point {
            run: format!("side{j}"),
            params: n,
            tokens: c / (6.0 * n),
            loss: chinchilla(n, c / (6.0 * n)),
            budget: c,
            flops: c,
            distribution: "all".into(),
        });
    }
    let table = Table::from_points(pts).unwrap();
    let rep = fit_all(&table, &FitOptions { run_parametric: false, bootstrap: 0, ..FitOptions::default() }).unwrap();
    let ex = &rep.isoflop.exclusions;
    assert!(ex.iter().any(|e| e.budget == Some(5e22) && e.reason.contains("2 distinct model sizes")), "{ex:?}");
    let side = rep.isoflop.budgets.iter().find(|b| b.optimum.budget == c).unwrap();
    assert!(!side.optimum.bracketed);
    assert!(ex.iter().any(|e| e.budget == Some(c) && e.reason.contains("bracketed: false")), "{ex:?}");
    assert!(rep.isoflop.n_opt_exponent_ci.is_none());
    let json = rep.to_json();
    for key in ["\"bracketed\"", "\"n_opt_exponent\"", "\"d_opt_exponent_ci\"", "\"loss_exponent\"", "\"relative\""] {
        assert!(json.contains(key), "{key}");
    }
}

/// Compute-optimal loss of distribution `d` at budget F is exactly `alpha_d F^-beta_d`; each budget has
/// nine runs around N* = 0.1 F^0.5, and every run is evaluated on every distribution.
fn relative_points(laws: &[(&str, f64, f64)], noise: f64, seed: u64) -> Vec<Point> {
    let mut rng = Rng::new(seed);
    let mut pts = Vec::new();
    for (i, &f) in BUDGETS.iter().enumerate() {
        let n0 = 0.1 * f.sqrt();
        for j in 0..9 {
            let n = n0 * 16f64.powf((j as f64 - 4.0) / 4.0);
            let shared = noise * rng.normal();
            for &(name, alpha, beta) in laws {
                let shape = 1.0 + 0.03 * (n / n0).ln().powi(2);
                pts.push(Point {
                    run: format!("f{i}n{j}"),
                    params: n,
                    tokens: f / (6.0 * n),
                    loss: alpha * f.powf(-beta) * shape * (shared + noise * rng.normal()).exp(),
                    budget: f,
                    flops: f,
                    distribution: name.into(),
                });
            }
        }
    }
    pts
}

#[test]
fn relative_verdicts() {
    // Baseline beta 0.05; targets 10% worse at F = 1e19 with dbeta = -0.02, +0.02 and 0.
    let fref: f64 = 1e19;
    let base_alpha = 30.0;
    let beta_b = 0.05;
    let target = |dbeta: f64| {
        let beta_t = beta_b - dbeta;
        // alpha_t F^-beta_t = 1.1 alpha_b F^-beta_b at fref.
        1.1 * base_alpha * fref.powf(beta_t - beta_b)
    };
    let laws = [
        ("base", base_alpha, beta_b),
        ("conv", target(-0.02), beta_b + 0.02),
        ("div", target(0.02), beta_b - 0.02),
        ("par", target(0.0), beta_b),
    ];
    let table = Table::from_points(relative_points(&laws, 0.003, 5)).unwrap();
    let opts = FitOptions { run_parametric: false, bootstrap: 200, baseline: Some("base".into()), ..FitOptions::default() };
    let rep = fit_all(&table, &opts).unwrap();
    let get = |t: &str| rep.relative.iter().find(|r| r.target == t).unwrap();
    for r in &rep.relative {
        eprintln!(
            "{}: dbeta {} {:?} gamma {} verdict {:?} parity {:?} {:?}",
            r.target, r.delta_beta, r.delta_beta_ci, r.gamma, r.verdict, r.parity_flops, r.parity_flops_ci
        );
    }
    let conv = get("conv");
    assert_eq!(conv.verdict, Verdict::Converging);
    assert!((conv.delta_beta + 0.02).abs() < 0.003, "{}", conv.delta_beta);
    // G = 1.1 (F / fref)^-0.02 reaches 1 at ln F = ln fref + ln 1.1 / 0.02.
    let parity = (fref.ln() + 1.1f64.ln() / 0.02).exp();
    let p = conv.parity_flops.unwrap();
    assert!((p.ln() - parity.ln()).abs() < 1.5, "{p:e} vs {parity:e}");
    let pci = conv.parity_flops_ci.unwrap();
    assert!(pci[0] < p && p < pci[1]);
    let div = get("div");
    assert_eq!(div.verdict, Verdict::Diverging);
    assert!((div.delta_beta - 0.02).abs() < 0.003);
    assert!(div.parity_flops.is_none());
    let par = get("par");
    assert_eq!(par.verdict, Verdict::Parallel);
    assert!(par.delta_beta.abs() < 0.003);
    let ci = par.delta_beta_ci.unwrap();
    assert!(ci[0] < 0.0 && ci[1] > 0.0);
    let d = rep.distributions.iter().find(|d| d.name == "conv").unwrap();
    assert!((d.beta.unwrap() - 0.07).abs() < 0.003);
    let bci = d.beta_ci.unwrap();
    assert!(bci[0] < 0.07 && bci[1] > 0.07, "{bci:?}");
}

#[test]
fn parametric_intervals_cover_the_truth() {
    let table = Table::from_points(chinchilla_points(0.003, 4)).unwrap();
    let opts = FitOptions { bootstrap: 0, parametric_bootstrap: 60, predict_at: vec![1e22], ..FitOptions::default() };
    let p = fit_all(&table, &opts).unwrap().parametric.unwrap();
    eprintln!("{:?}\n{:?}\n{:?}", p.fit, p.ci, p.predictions);
    for (name, truth, est) in [("alpha", ALPHA, p.fit.alpha), ("beta", BETA, p.fit.beta), ("a", BETA / (ALPHA + BETA), p.fit.a)] {
        let [lo, hi] = p.ci[name];
        assert!(lo <= est && est <= hi, "{name}: {est} not in [{lo}, {hi}]");
        assert!(hi - lo < 0.2, "{name}: [{lo}, {hi}] too wide");
        assert!((est - truth).abs() < 0.05, "{name}: {est} vs {truth}");
    }
    let pred = &p.predictions[0];
    let [lo, hi] = pred.n_opt_ci.unwrap();
    assert!(lo <= pred.n_opt && pred.n_opt <= hi);
    assert!((pred.n_opt / true_n_opt(1e22)).ln().abs() < 0.3, "{} vs {}", pred.n_opt, true_n_opt(1e22));
}

/// Errors with no IsoFLOP minimum of their own (monotone in N, as small models' multiple-choice
/// errors are) are read at the frontier's compute-optimal sizes: their laws and the gap
/// between them come back; without a frontier they have none.
#[test]
fn errors_without_a_minimum_are_read_at_the_frontier() {
    let mut rng = Rng::new(5);
    let mut pts = chinchilla_points(0.001, 3);
    for p in &mut pts {
        p.distribution = "heldout".into();
    }
    let truth = [("task", 3.0, 0.05), ("task2", 5.0, 0.08)];
    for p in pts.clone() {
        let ratio = p.params / true_n_opt(p.budget);
        for (name, alpha, beta) in truth {
            let mut q = p.clone();
            q.distribution = name.into();
            // Falls with N at every budget: its own parabola has no vertex within the sizes.
            q.loss = alpha * p.budget.powf(-beta) * ratio.powf(-0.1) * (0.001 * rng.normal()).exp();
            pts.push(q);
        }
    }
    let table = Table::from_points(pts).unwrap();
    let mut opts = FitOptions { run_parametric: false, bootstrap: 50, baseline: Some("task".into()), ..FitOptions::default() };

    let own = fit_all(&table, &opts).unwrap();
    let task = own.distributions.iter().find(|d| d.name == "task").unwrap();
    assert_eq!((task.beta, task.n_budgets), (None, 0), "no minimum of its own: {:?}", task.isoflop.exclusions);
    assert!(own.relative.iter().all(|r| r.target != "task2"), "no gap without laws");

    opts.isoflop.frontier = Some("heldout".into());
    let at = fit_all(&table, &opts).unwrap();
    assert_eq!(at.frontier.as_deref(), Some("heldout"));
    for (name, _, beta) in truth {
        let d = at.distributions.iter().find(|d| d.name == name).unwrap();
        assert_eq!(d.n_budgets, BUDGETS.len(), "{name}");
        assert!((d.beta.unwrap() - beta).abs() < 0.003, "{name}: beta {:?}, truth {beta}", d.beta);
        let n_star = at.distributions.iter().find(|d| d.name == "heldout").unwrap().isoflop.budgets[0].optimum.n_opt;
        assert_eq!(d.isoflop.budgets[0].optimum.n_opt, n_star, "read at the frontier's N*");
    }
    assert_eq!(at.relative.len(), 1, "the frontier is no target: {:?}", at.relative);
    let g = &at.relative[0];
    assert_eq!((g.target.as_str(), g.baseline.as_str()), ("task2", "task"));
    assert!((g.delta_beta - (0.05 - 0.08)).abs() < 0.004, "dbeta {}", g.delta_beta);
    assert_eq!(g.verdict, Verdict::Diverging, "{g:?}");

    opts.isoflop.frontier = Some("nope".into());
    let e = fit_all(&table, &opts).unwrap_err().to_string();
    assert!(e.contains("frontier distribution `nope` is not in the table"), "{e}");
}

/// A report says when not to trust it: an unphysical parametric fit, and intervals that
/// exclude their own estimate; a sound report has no warning, and nonsense budgets to predict
/// at are refused.
#[test]
fn unsound_fits_come_with_warnings() {
    let table = Table::from_points(chinchilla_points(0.002, 2)).unwrap();
    let opts = FitOptions { bootstrap: 50, parametric_bootstrap: 10, ..FitOptions::default() };
    let mut rep = fit_all(&table, &opts).unwrap();
    assert!(rep.notes.iter().all(|n| !n.starts_with("warning")), "{:?}", rep.notes);
    assert!(isoflop_fit::report::warnings(&rep).is_empty());
    let p = rep.parametric.as_mut().unwrap();
    p.fit.alpha = -0.2;
    let iso = &mut rep.distributions[0].isoflop;
    iso.n_opt_exponent_ci = Some([0.9, 1.0]);
    let w = isoflop_fit::report::warnings(&rep);
    assert!(w.iter().any(|w| w.contains("unphysical: alpha = -0.2000 is not positive")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("all N* exponent") && w.contains("not in [0.9000, 1.0000]")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("exclude their own estimate") && w.contains("(50)")), "{w:?}");
    for bad in [0.0, -1e21, f64::NAN, f64::INFINITY] {
        let o = FitOptions { predict_at: vec![1e21, bad], ..opts.clone() };
        let e = fit_all(&table, &o).unwrap_err().to_string();
        assert!(e.contains("predict_at: expected compute budgets (FLOPs) > 0"), "{e}");
    }
}
