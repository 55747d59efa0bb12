//! Regression tests on published data (see ../../../shared/data/reference/README.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use isoflop_fit::parametric::{
    DataConstrained, LseData, ParametricOptions, fit_parametric, fit_starts, standard_grid, summarize,
};
use isoflop_fit::stats::fit_line;
use isoflop_fit::table::split_records;

/// A file of `../shared/data/reference`. CI always has it beside the clone, so a missing file
/// fails the test (it is never skipped).
fn reference(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/reference").join(name);
    assert!(p.is_file(), "{} not found: the reference data lives in ../shared/data/reference beside the clone", p.display());
    p
}

/// Reads a CSV into rows keyed by column name.
fn rows(name: &str) -> Vec<BTreeMap<String, String>> {
    let path = reference(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let recs = split_records(&text, name).unwrap();
    let (header, body) = recs.split_first().unwrap();
    body.iter().map(|(_, f)| header.1.iter().cloned().zip(f.iter().cloned()).collect()).collect()
}

fn num(r: &BTreeMap<String, String>, k: &str) -> f64 {
    r[k].parse().unwrap_or_else(|_| panic!("column {k}: {}", r[k]))
}

const CONFIG: [&str; 7] = ["dataset", "hparams", "warmup", "decay", "param_count", "val", "source_file"];

fn config_key(r: &BTreeMap<String, String>) -> String {
    CONFIG.iter().map(|k| r[*k].as_str()).collect::<Vec<_>>().join("/")
}

#[test]
fn porian_weighted_exponents() {
    let (optima, fits) = (rows("porian2024_isoflop_optima.csv"), rows("porian2024_fit_results.csv"));
    let mut by_cfg: BTreeMap<String, Vec<&BTreeMap<String, String>>> = BTreeMap::new();
    // Budgets without an optimum (empty cells) were dropped by the authors' fit too.
    for r in optima.iter().filter(|r| !r["N_opt"].is_empty() && !r["n_star_std"].is_empty()) {
        by_cfg.entry(config_key(r)).or_default().push(r);
    }
    let mut checked = 0;
    for f in fits.iter().filter(|f| f["fit_kind"] == "weighted") {
        let key = config_key(f);
        let pts = &by_cfg[&key];
        let x: Vec<f64> = pts.iter().map(|r| num(r, "flops").ln()).collect();
        let y: Vec<f64> = pts.iter().map(|r| num(r, "N_opt").ln()).collect();
        let w: Vec<f64> = pts.iter().map(|r| num(r, "n_star_std").powi(-2)).collect();
        let line = fit_line(&x, &y, Some(&w)).unwrap();
        let want = num(f, "n_exponent");
        eprintln!("{key}: weighted exponent {:.6} (published {want:.6})", line.slope);
        // The issue asks for 4 decimals; the weighted OLS reproduces the published value to 1e-6.
        assert!((line.slope - want).abs() < 1e-6, "{key}: {} vs {want}", line.slope);
        checked += 1;
    }
    assert_eq!(checked, 15);
}

#[test]
fn muennighoff_objective() {
    let rows = rows("muennighoff2023_datablations_c4_182.csv");
    let (a, b, e, ab): (f64, f64, f64, f64) = (6.255414, 7.3049974, 0.6254804, 0.3526596);
    let th = [a, b, e, ab, ab];
    let law = DataConstrained { r_d_star: 15.387756, r_n_star: 5.309743, n_per_unique_token: DataConstrained::base_ratio(&th) };
    let data = LseData::from_raw(rows.iter().map(|r| {
        let (n, d, u, l) = (num(r, "params_N"), num(r, "tokens_D"), num(r, "unique_tokens_U"), num(r, "final_val_loss"));
        let (n_eff, d_eff) = law.effective(n, d, u);
        (n_eff, d_eff, l)
    }));
    let obj = data.value(&th, 1e-3);
    eprintln!("Muennighoff data-constrained Huber objective at the published parameters: {obj:.10}");
    // Published: 0.0158259 (7 significant digits); we must agree within its rounding.
    assert!((obj - 0.0158259).abs() <= 0.5e-7, "{obj}");
}

#[test]
fn muennighoff_4500_start_timing() {
    let rows = rows("muennighoff2023_datablations_c4_182.csv");
    // Base (not data-constrained) Chinchilla law on the raw N, D: a timing and sanity check.
    let data = LseData::from_raw(rows.iter().map(|r| (num(r, "params_N"), num(r, "tokens_D"), num(r, "final_val_loss"))));
    let opts = ParametricOptions::default();
    let t = std::time::Instant::now();
    let fit = fit_parametric(&data, &opts).unwrap();
    let el = t.elapsed();
    eprintln!("4500 starts on {} points: {:?}; {fit:?}", data.len(), el);
    let one = ParametricOptions { threads: 1, ..opts.clone() };
    let t = std::time::Instant::now();
    let single = fit_parametric(&data, &one).unwrap();
    eprintln!("same on one thread: {:?}", t.elapsed());
    assert_eq!(single, fit);
    let tight = ParametricOptions { polish: 0, ..opts.clone() };
    let t = std::time::Instant::now();
    let all = fit_starts(&data, &standard_grid(), &tight);
    eprintln!("every start to the tight tolerances: {:?}; {:?}", t.elapsed(), summarize(&all, &tight).unwrap());
    let iters: usize = all.iter().map(|r| r.iterations).sum();
    let evals: usize = all.iter().map(|r| r.evaluations).sum();
    let mut stops = std::collections::BTreeMap::new();
    for r in &all {
        *stops.entry(format!("{:?}", r.stop)).or_insert(0) += 1;
    }
    eprintln!("iterations {iters}, evaluations {evals}, stops {stops:?}");
    assert_eq!(fit.n_starts, 4500);
    assert!(fit.n_best >= 1);
}

#[test]
fn gadre_overtraining_extrapolation() {
    let rows = rows("gadre2024_overtraining_104_models.csv");
    let rpj: Vec<(f64, f64, f64)> = rows
        .iter()
        .filter(|r| r["dataset_name"] == "rpj")
        .map(|r| (num(r, "N_params"), num(r, "D_tokens"), num(r, "loss_c4_val")))
        .collect();
    let m = |p: &(f64, f64, f64)| (p.1 / p.0).round();
    let smallest = rpj.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let mut sizes: Vec<f64> = rpj.iter().filter(|p| m(p) == 20.0).map(|p| p.0).collect();
    sizes.sort_by(f64::total_cmp);
    // Four smallest sizes at M = 20, plus the smallest size at M = 320.
    let train: Vec<(f64, f64, f64)> =
        rpj.iter().filter(|p| (m(p) == 20.0 && p.0 <= sizes[3]) || (m(p) == 320.0 && p.0 == smallest)).copied().collect();
    assert_eq!(train.len(), 5);
    let fit = isoflop_fit::overtraining::fit_overtraining(&train).unwrap();
    eprintln!("Gadre fit: {fit:?}");
    let err = |n: f64, mult: f64| {
        let p = rpj.iter().find(|p| (p.0 / n - 1.0).abs() < 0.05 && m(p) == mult).unwrap();
        100.0 * (fit.predict(p.0, p.1) - p.2).abs() / p.2
    };
    let (e1, e2) = (err(1.4e9, 640.0), err(6.9e9, 20.0));
    eprintln!("relative error: 1.4B M=640 {e1:.4}% (published 0.7103%), 6.9B M=20 {e2:.4}% (published 0.7320%)");
    assert!((e1 - 0.7103).abs() < 5e-4 && (e2 - 0.7320).abs() < 5e-4, "{e1} {e2}");
}

/// Our approach-2 pipeline (windowed Huber parabolas, vertices, log-log OLS) on Porian et al.'s IsoFLOP
/// points, on the budgets they kept, against their published unweighted (`basic`) exponent. Their
/// optima come from a different interpolation, so this is a sanity band (observed worst difference
/// 0.0267), not a reproduction.
#[test]
fn porian_points_isoflop_pipeline() {
    let (points, optima, fits) =
        (rows("porian2024_isoflop_points.csv"), rows("porian2024_isoflop_optima.csv"), rows("porian2024_fit_results.csv"));
    let kept: std::collections::BTreeSet<(String, String)> =
        optima.iter().filter(|o| !o["N_opt"].is_empty()).map(|o| (config_key(o), o["flops"].clone())).collect();
    let mut by_cfg: BTreeMap<String, Vec<isoflop_fit::Point>> = BTreeMap::new();
    for r in points.iter().filter(|r| kept.contains(&(config_key(r), r["flops"].clone()))) {
        by_cfg.entry(config_key(r)).or_default().push(isoflop_fit::Point {
            run: format!("{}-{}", r["flops"], r["N"]),
            params: num(r, "N"),
            tokens: num(r, "D"),
            loss: num(r, "loss"),
            budget: num(r, "flops"),
            flops: num(r, "flops"),
            distribution: "all".into(),
        });
    }
    let opts = isoflop_fit::isoflop::IsoflopOptions { window_decades: Some(0.5), ..Default::default() };
    let mut worst: f64 = 0.0;
    for f in fits.iter().filter(|f| f["fit_kind"] == "basic") {
        let key = config_key(f);
        let fit = &isoflop_fit::isoflop::fit_isoflop(&by_cfg[&key], &opts)[0];
        let ours = fit.n_opt.unwrap().exponent;
        let want = num(f, "n_exponent");
        eprintln!("{key}: ours {ours:.4} over {} budgets, published basic {want:.4}", fit.used_budgets(&opts).count());
        worst = worst.max((ours - want).abs());
    }
    eprintln!("worst difference {worst:.4}");
    assert!(worst < 0.03, "{worst}");
}
