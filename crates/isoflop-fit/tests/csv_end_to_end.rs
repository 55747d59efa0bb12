//! From a CSV file on disk to the JSON report.

use std::io::Write;

use isoflop_fit::{FitError, FitOptions, fit_all, read_csv};

#[test]
fn csv_to_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sweep.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "run,params,tokens,loss,budget,distribution").unwrap();
    // L = 1.7 + 400/N^0.34 + 410/D^0.28 on three budgets of five sizes, two distributions.
    for (bi, c) in [1e18f64, 1e19, 1e20].iter().enumerate() {
        for j in 0..5 {
            let n = 0.06 * c.sqrt() * 3f64.powi(j - 2);
            let d = c / (6.0 * n);
            let l = 1.7 + 400.0 / n.powf(0.34) + 410.0 / d.powf(0.28);
            writeln!(f, "\"r{bi}-{j}\",{n},{d},{l},{c},web").unwrap();
            writeln!(f, "\"r{bi}-{j}\",{n},{d},{},{c},code", l * 1.05).unwrap();
        }
    }
    drop(f);
    let table = read_csv(&path).unwrap();
    assert_eq!(table.points.len(), 30);
    let opts = FitOptions {
        bootstrap: 20,
        parametric_bootstrap: 5,
        baseline: Some("web".into()),
        predict_at: vec![1e21],
        ..FitOptions::default()
    };
    let rep = fit_all(&table, &opts).unwrap();
    assert_eq!(rep.isoflop.distribution, "web"); // no `all`: the baseline given (else the first by name)
    let json: serde_json::Value = serde_json::from_str(&rep.to_json()).unwrap();
    for key in ["budget", "n_opt", "d_opt", "l_opt", "bracketed"] {
        assert!(json["isoflop"]["budgets"][0].get(key).is_some(), "{key}");
    }
    for key in ["n_opt_exponent", "n_opt_exponent_ci", "d_opt_exponent", "d_opt_exponent_ci", "loss_exponent", "loss_exponent_ci"]
    {
        assert!(json["isoflop"].get(key).is_some(), "{key}");
    }
    for key in ["E", "A", "B", "alpha", "beta", "objective", "ci", "n_best", "grad_norm", "a", "b", "predictions"] {
        assert!(json["parametric"].get(key).is_some(), "{key}");
    }
    for key in ["name", "alpha", "beta", "beta_ci"] {
        assert!(json["distributions"][0].get(key).is_some(), "{key}");
    }
    for key in ["target", "baseline", "gamma", "delta_beta", "delta_beta_ci", "verdict", "parity_flops"] {
        assert!(json["relative"][0].get(key).is_some(), "{key}");
    }
    assert_eq!(json["relative"][0]["target"], "code");
    let p = rep.parametric.unwrap();
    assert!((p.fit.alpha - 0.34).abs() < 1e-3 && (p.fit.beta - 0.28).abs() < 1e-3, "{:?}", p.fit);
    assert_eq!(p.predictions.len(), 1);
}

#[test]
fn bad_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "params,tokens,loss\n1e6,1e8,3.1\n2e6,-5e7,3.0\n").unwrap();
    let e = read_csv(&path).unwrap_err();
    assert!(matches!(e, FitError::BadValue { line: 3, .. }), "{e}");
    assert!(e.to_string().contains("bad.csv"));
    let e = read_csv(dir.path().join("missing.csv")).unwrap_err();
    assert!(matches!(e, FitError::Io { .. }), "{e}");
}
