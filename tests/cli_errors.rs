//! The binary's contract at its edges: bad input gets a clear error naming the file and key,
//! exit code 2, and nothing written to the store; `plan` of the Marin preset equals an
//! independent implementation of the published grid, run by run.

mod common;

use common::{TINY_SWEEP, isoflop, show, write_spec};
use std::path::Path;

fn good() -> String {
    TINY_SWEEP.replace("name: tiny", "name: errs").replace("[1.5e9, 3.0e9]", "[1.5e9]")
}

/// `isoflop run` of a broken spec: exit 2, the message contains `expect`, no store file.
fn rejects(body: &str, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), body);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(spec.to_str().unwrap()), "names the file: {err}");
    for e in expect {
        assert!(err.contains(e), "expected `{e}` in: {err}");
    }
    assert!(!dir.path().join("state").exists(), "nothing written to the store");
}

#[test]
fn bad_specs_exit_2_and_write_nothing() {
    rejects(&good().replace("  fixed_batch: 8", "  fixed_batch: 8\n  fixd: 1"), &["9:3: grid: unknown field `fixd`"]);
    rejects(&good().replace("seq_len: 32", "seq_len: short"), &["model.seq_len: invalid type: string \"short\", expected u64"]);
    rejects(&good().replace("[1.5e9]", "[1.5e9, 0]"), &["budgets[1]: expected FLOPs > 0, got 0"]);
    // Duplicates would plan every run of a budget or width twice.
    rejects(&good().replace("[1.5e9]", "[1.5e9, 1.5e9]"), &["budgets[1]: 1.5e9 repeats budgets[0]"]);
    rejects(&good().replace("hidden: [16, 32]", "hidden: [16, 32, 16]"), &["grid.hidden[2]: 16 repeats grid.hidden[0]"]);
    rejects(
        &good().replace("heads: {head_size: 16}", "heads: {fixed: 3}"),
        &["grid.heads.fixed: width 16 is not divisible by its 3 heads"],
    );
    rejects(
        &good().replace("manifest: @MANIFEST@", "manifest: nowhere/manifest.json"),
        &["data.manifest:", "nowhere/manifest.json", "isoflop data prepare"],
    );
    rejects(
        &good().replace("corpora: [{name: mix}]", "corpora: [{name: mix, shard: nope}]"),
        &["data.corpora[0].shard:", "no shard `nope`"],
    );
    rejects(
        &good().replace("corpora: [{name: mix}]", "corpora: [{name: mix}]\n  evals: [bible, klingon]"),
        &["data.evals[1]:", "no shard `klingon`"],
    );
    rejects(
        &good().replace("progress_every: 5}", "progress_every: 5, precision: fp16}"),
        &["runtime.precision: unknown variant `fp16`", "`fp32`", "`bf16`"],
    );
    rejects(&good().replace("grad_clip: 1.0}", "grad_clip: 1.0, decay_norms: 1}"), &["recipe.decay_norms:"]);
    rejects(&good().replace("layers: {fixed: 1}", "layers: {fixed: 1, width_per_layer: 16}"), &["grid.layers:", "not several"]);
}

/// A shape the trainer would refuse (width 36 with 4 heads: head dimension 9, odd, which RoPE
/// cannot rotate) is refused by `plan` and `run` naming `grid.heads`, before anything is stored.
#[test]
fn untrainable_shapes_are_refused_by_the_planner() {
    let body = good().replace("hidden: [16, 32]", "hidden: [36]").replace("heads: {head_size: 16}", "heads: {fixed: 4}");
    let expect = ["grid.heads.fixed: width 36 with 4 heads has head dimension 9; RoPE needs an even head dimension"];
    rejects(&body, &expect);
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &body);
    let out = isoflop(&["plan", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(spec.to_str().unwrap()) && err.contains(expect[0]), "{err}");
    assert!(!dir.path().join("state").exists(), "nothing written to the store");
}

/// `isoflop bench train --bf16` trains in bf16 mixed precision and says so.
#[test]
fn bench_train_runs_in_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.json");
    std::fs::write(&model, r#"{"vocab_size": 64, "hidden": 32, "layers": 1, "heads": 2, "seq_len": 16}"#).unwrap();
    for (flag, precision) in [(None, "fp32"), (Some("--bf16"), "bf16")] {
        let mut args = vec!["bench", "train", "--model-json", model.to_str().unwrap(), "--batch", "2", "--steps", "3"];
        args.extend(flag);
        // Its throughput record goes to this test's cache, not the user's.
        let out = std::process::Command::new(common::bin()).args(&args).env("ISOFLOP_CACHE_DIR", dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["precision"], precision, "{r}");
        assert!(r["loss_last"].as_f64().unwrap() < r["loss_first"].as_f64().unwrap(), "{r}");
    }
}

/// Issue 12, feature 11: `plan` says what a sweep costs (FLOPs per budget and in all, tokens
/// per parameter, epochs over the corpus), warns about budgets with fewer than three
/// candidates, candidates that miss the compute-optimal size, and data repeated more than
/// four times, and estimates the time once `bench train` measured the device.
#[test]
fn plan_says_what_a_sweep_costs_and_how_long_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &good().replace("[1.5e9]", "[1.5e9, 1.0e12]"));
    let plan = || {
        let out = std::process::Command::new(common::bin())
            .args(["plan", spec.to_str().unwrap()])
            .env("ISOFLOP_CACHE_DIR", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = plan();
    assert!(text.contains("tokens/param") && text.contains("epochs") && text.contains("total: "), "{text}");
    assert!(text.contains("warning: budget 1.5e+09 has 2 candidate(s) per corpus"), "{text}");
    assert!(text.contains("warning: budget 1e+12: a run repeats its corpus"), "{text}");
    assert!(text.contains("compute-optimal model near 20 tokens per parameter"), "{text}");
    assert!(text.contains("no wall-time estimate: no throughput measured on cpu fp32"), "{text}");
    let model = dir.path().join("model.json");
    std::fs::write(&model, r#"{"vocab_size": 259, "hidden": 32, "layers": 1, "heads": 2, "seq_len": 32}"#).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["bench", "train", "--model-json", model.to_str().unwrap(), "--batch", "4", "--steps", "5"])
        .env("ISOFLOP_CACHE_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(dir.path().join("throughput.json").is_file(), "{}", show(&out));
    let text = plan();
    assert!(text.contains("estimated time on cpu fp32:") && text.contains("measured by `isoflop bench train`"), "{text}");
}

/// Issue 12, defect 8: `plan` of a cluster spec previews its grid without the data mounted
/// (run ids need the data, so none are shown); a local spec without its data is still refused.
#[test]
fn a_cluster_spec_plans_without_its_data_and_a_local_one_does_not() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster-sweep.yaml");
    assert!(!Path::new("/data/quickstart/manifest.json").exists(), "the example's data is not on this machine");
    let out = isoflop(&["plan", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(needs data)") && text.contains("isoflop-"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("a preview"), "{}", show(&out));
    let out = isoflop(&["plan", spec.to_str().unwrap(), "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(runs.as_array().unwrap().iter().all(|r| r["run_id"] == ""), "no made-up run ids");

    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("spec.yaml");
    std::fs::write(&local, good().replace("@MANIFEST@", "/nonexistent/manifest.json")).unwrap();
    let out = isoflop(&["plan", local.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("isoflop data prepare").count(), 1, "one hint: {err}");
}

/// Issue 12, defect 2: a truncated training shard is refused by `plan` and `run` (exit 2,
/// naming the file) instead of failing in every worker.
#[test]
fn a_truncated_shard_is_refused_at_plan_time() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = common::copy_corpus(&dir.path().join("corpus"));
    let train = corpus.join("train.bin");
    let len = std::fs::metadata(&train).unwrap().len();
    std::fs::File::options().write(true).open(&train).unwrap().set_len(len - 1000).unwrap();
    let body = good().replace("@MANIFEST@", &corpus.join("manifest.json").display().to_string());
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, body).unwrap();
    for cmd in ["plan", "run"] {
        let out = isoflop(&[cmd, spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("data.corpora[0].shard") && err.contains("train.bin") && err.contains("bytes"), "{cmd}: {err}");
    }
    assert!(!dir.path().join("state").exists(), "nothing written to the store");
}

/// Issue 13 (a full artifacts disk panicked workers: exit 101, empty log): an error whose
/// message cannot be written still exits with its own code.
#[test]
fn an_unwritable_stderr_keeps_the_exit_code() {
    let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
    let out = std::process::Command::new(common::bin()).args(["plan", "/nonexistent/spec.yaml"]).stderr(full).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "not a panic (101)");
}

#[test]
fn missing_spec_file_and_store_are_input_errors() {
    let out = isoflop(&["plan", "/nonexistent/spec.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/spec.yaml: cannot read spec"), "{}", show(&out));
    let out = isoflop(&["status", "--store", "/nonexistent/isoflop.db"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(!Path::new("/nonexistent").exists());
}

#[test]
fn marin_plan_equals_the_published_grid_run_by_run() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/marin-2025.yaml");
    let out = isoflop(&["plan", spec, "--format", "json"]);
    assert!(out.status.success(), "{}", show(&out));
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.len(), 255, "85 runs x 3 corpora");
    let reference = include_str!("data/marin-2025-runs.tsv");
    let mut lines = reference.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let expected: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(expected.len(), 85);
    for corpus in ["dclm", "nemotron", "comma"] {
        let ours: Vec<&serde_json::Value> = runs.iter().filter(|r| r["corpus"] == corpus).collect();
        assert_eq!(ours.len(), 85, "{corpus}");
        for (got, want) in ours.iter().zip(&expected) {
            for (i, key) in header.iter().enumerate() {
                let w = want[i];
                match *key {
                    "name" => assert_eq!(got["name"].as_str().unwrap(), w.replace("-dclm", &format!("-{corpus}"))),
                    "budget" | "lr" => {
                        let (g, w) = (got[*key].as_f64().unwrap(), w.parse::<f64>().unwrap());
                        assert!((g - w).abs() <= 1e-12 * w.abs(), "{key}: {g} vs {w} for {}", got["name"]);
                    }
                    _ => assert_eq!(got[*key].as_u64().unwrap(), w.parse::<u64>().unwrap(), "{key} of {}", got["name"]),
                }
            }
            for key in ["run_id", "seq_len", "flops_per_token"] {
                assert!(!got[key].is_null(), "{key}");
            }
        }
    }
}
