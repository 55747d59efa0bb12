//! `isoflop fit` and `isoflop report` on CSV input: the JSON fields, the report files, and bad
//! input (exit 2 naming file and column).

mod common;

use common::{isoflop, show};
use std::fmt::Write;

/// A long table from Chinchilla's law (Hoffmann et al.: E 1.69, A 406.4, B 410.7, alpha 0.34,
/// beta 0.28) for `all`, and the same law scaled by 1.2 for `code`: 4 budgets x 7 sizes.
fn synthetic_csv() -> String {
    let law = |n: f64, d: f64| 1.69 + 406.4 / n.powf(0.34) + 410.7 / d.powf(0.28);
    let mut s = String::from("run,params,tokens,loss,budget,distribution\n");
    for (bi, c) in [1e18, 1e19, 1e20, 1e21].iter().enumerate() {
        // Chinchilla's optimum for this law is near N* = 0.6 (C/6)^0.45; sample around it.
        let centre = 0.6 * (c / 6.0f64).powf(0.45);
        for k in -3..=3 {
            let n = centre * 2f64.powi(k);
            let d = c / (6.0 * n);
            let run = format!("b{bi}-n{k}");
            writeln!(s, "{run},{n},{d},{},{c},all", law(n, d)).unwrap();
            writeln!(s, "{run},{n},{d},{},{c},code", 1.2 * law(n, d)).unwrap();
        }
    }
    s
}

/// `isoflop fit --from-csv CSV --format json` with a small bootstrap.
fn fit_json(csv: &std::path::Path) -> std::process::Output {
    isoflop(&["fit", "--from-csv", csv.to_str().unwrap(), "--format", "json", "--bootstrap", "50", "--parametric-bootstrap", "5"])
}

#[test]
fn fit_json_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    std::fs::write(&csv, synthetic_csv()).unwrap();
    let out = fit_json(&csv);
    assert!(out.status.success(), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let budgets = v["isoflop"]["budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), 4);
    for b in budgets {
        for k in ["budget", "n_opt", "d_opt", "l_opt", "bracketed"] {
            assert!(!b[k].is_null(), "isoflop.budgets[].{k}");
        }
    }
    for k in ["n_opt_exponent", "d_opt_exponent", "loss_exponent", "n_opt_exponent_ci", "d_opt_exponent_ci", "loss_exponent_ci"] {
        assert!(!v["isoflop"][k].is_null(), "isoflop.{k}");
    }
    // a = beta / (alpha + beta) = 0.28 / 0.62 for this law.
    let a = v["isoflop"]["n_opt_exponent"].as_f64().unwrap();
    assert!((a - 0.4516).abs() < 0.03, "N* exponent {a}");
    let p = &v["parametric"];
    for k in ["E", "A", "B", "alpha", "beta", "objective", "ci"] {
        assert!(!p[k].is_null(), "parametric.{k}");
    }
    assert!((p["alpha"].as_f64().unwrap() - 0.34).abs() < 1e-3 && (p["E"].as_f64().unwrap() - 1.69).abs() < 1e-3, "{p}");
    let dists = v["distributions"].as_array().unwrap();
    assert_eq!(dists.iter().map(|d| d["name"].as_str().unwrap()).collect::<Vec<_>>(), ["all", "code"]);
    for d in dists {
        for k in ["alpha", "beta", "beta_ci"] {
            assert!(!d[k].is_null(), "distributions[].{k}");
        }
    }
    let rel = &v["relative"][0];
    assert_eq!((rel["target"].as_str(), rel["baseline"].as_str()), (Some("code"), Some("all")));
    for k in ["gamma", "delta_beta", "delta_beta_ci", "verdict"] {
        assert!(!rel[k].is_null(), "relative[].{k}");
    }
    assert!(rel.get("parity_flops").is_some());
    // A constant ratio of 1.2: gamma near 1.2, dbeta near 0, verdict parallel.
    assert_eq!(rel["verdict"], "parallel", "{rel}");
    assert!((rel["gamma"].as_f64().unwrap() - 1.2).abs() < 0.01, "{rel}");

    // The same seed gives the same intervals.
    assert_eq!(out.stdout, fit_json(&csv).stdout);
}

#[test]
fn report_writes_json_html_and_every_plot_in_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    std::fs::write(&csv, synthetic_csv()).unwrap();
    let out_dir = dir.path().join("report");
    let out = isoflop(&[
        "report",
        "--from-csv",
        csv.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--bootstrap",
        "20",
        "--parametric-bootstrap",
        "2",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    for stem in ["isoflop-curves", "optimal-n-d", "distribution-loss", "relative-code"] {
        let svg = std::fs::read_to_string(out_dir.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<circle"), "{stem}.svg");
        let png = std::fs::read(out_dir.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "{stem}.png");
    }
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Relative laws"), "self-contained, with the fits");
    assert!(!html.contains("src=\"http"), "no external resources");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    assert!(json["relative"][0]["band"].as_array().is_some_and(|b| b.len() == 4));
}

#[test]
fn bad_csv_is_an_input_error_naming_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "params,tokens\n1e6,2e7\n").unwrap();
    let out = isoflop(&["fit", "--from-csv", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv") && err.contains("loss"), "{err}");
    std::fs::write(&csv, "params,tokens,loss\n1e6,2e7,3.0\n-5,2e7,3.0\n").unwrap();
    // Nonsense options are refused before any fit (they printed NaN and inf with exit 0).
    for bad in ["0", "-1e21", "inf", "lots"] {
        let out = isoflop(&["fit", "--from-csv", csv.to_str().unwrap(), "--predict-at", bad]);
        assert_eq!(out.status.code(), Some(2), "--predict-at {bad}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--predict-at") && err.contains("expected compute"), "{err}");
    }
    let out = isoflop(&["fit", "--from-csv", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv") && err.contains("line 3") && err.contains("params"), "{err}");
}
