//! isoflop's multiple-choice scores against lm-evaluation-harness itself (lm-eval 0.4.13 from
//! PyPI, run offline on the CPU): a trained run is exported with `isoflop export --format hf`,
//! lm-eval scores the items isoflop compiled for MMLU (a local JSONL task) with the `hf` model
//! at batch size 1, and every question's per-choice log-likelihood agrees within 1e-4 and its
//! `acc` and `acc_norm` are identical.

mod common;

use common::{TINY_SWEEP, isoflop, show, write_spec};
use isoflop_core::TaskKind;
use isoflop_store::{SqliteStore, Store};
use std::path::{Path, PathBuf};
use std::process::Command;

fn lm_eval_dir() -> PathBuf {
    let d = std::env::var("ISOFLOP_LM_EVAL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/isoflop/lm-eval-0.4.13"));
    assert!(d.join("lm_eval").is_dir(), "{} is missing: run scripts/install-evals.sh", d.display());
    d
}

fn python() -> String {
    let venv = std::env::var("ISOFLOP_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/isoflop/venv", std::env::var("HOME").unwrap_or_default()));
    format!("{venv}/bin/python")
}

fn find(dir: &Path, prefix: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find(&p, prefix) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)) {
            return Some(p);
        }
    }
    None
}

#[test]
fn per_question_log_likelihoods_equal_lm_evaluation_harness() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        TINY_SWEEP.replace("budgets: [1.5e9, 3.0e9]", "budgets: [3.0e9]").replace("hidden: [16, 32]", "hidden: [32]").replace(
            "executor:",
            "eval:\n  heldout: false\n  tasks: [{name: mmlu, mmlu: {shots: 1, per_subset: 5, seed: 3}}]\nexecutor:",
        );
    let spec = write_spec(dir.path(), &text);
    let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
    assert!(out.status.success(), "{}", show(&out));
    let db = dir.path().join("state/isoflop.db");
    let store = SqliteStore::open(&db).unwrap();
    let jobs = store.sweep_runs("tiny").unwrap();
    let run = jobs.iter().find(|r| r.is_training()).unwrap();
    let job = jobs.iter().find(|r| !r.is_training()).unwrap();
    let config: isoflop_core::EvalJobConfig = serde_json::from_str(&job.config_json).unwrap();
    let TaskKind::MultipleChoice(task) = &config.task.kind else { panic!("{:?}", config.task) };
    let ours = store.eval_items(&job.run_id).unwrap();
    assert_eq!(ours.len(), 57 * 5);

    let hf = dir.path().join("hf");
    let out = isoflop(&["export", &run.run_id, "--out", hf.to_str().unwrap(), "--store", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let tasks = dir.path().join("tasks");
    std::fs::create_dir_all(&tasks).unwrap();
    std::fs::write(
        tasks.join("isoflop_mmlu.yaml"),
        format!(
            "task: isoflop_mmlu\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {}\ntest_split: test\n\
             output_type: multiple_choice\ndoc_to_text: context\ndoc_to_choice: choices\ndoc_to_target: gold\n\
             target_delimiter: \" \"\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n",
            task.items.path
        ),
    )
    .unwrap();
    let results = dir.path().join("lm-eval-out");
    let started = std::time::Instant::now();
    let out = Command::new(python())
        .args(["-m", "lm_eval", "--model", "hf", "--model_args"])
        .arg(format!("pretrained={},dtype=float32", hf.display()))
        .args(["--tasks", "isoflop_mmlu", "--include_path"])
        .arg(&tasks)
        .args(["--batch_size", "1", "--device", "cpu", "--log_samples", "--output_path"])
        .arg(&results)
        .current_dir(dir.path())
        .env("PYTHONPATH", lm_eval_dir())
        .env("HF_HOME", dir.path().join("hf-home"))
        .env("HF_DATASETS_CACHE", dir.path().join("hf-datasets"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let seconds = started.elapsed().as_secs_f64();
    let samples = find(&results, "samples_isoflop_mmlu").unwrap_or_else(|| panic!("no samples under {}", results.display()));
    let mut compared = 0;
    let mut worst = 0.0f64;
    let (mut acc_diff, mut norm_diff) = (0, 0);
    for line in std::fs::read_to_string(&samples).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let i = v["doc_id"].as_u64().unwrap() as usize;
        let theirs: Vec<f64> = v["resps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let x = &r[0][0];
                x.as_f64().unwrap_or_else(|| x.as_str().unwrap().parse().unwrap())
            })
            .collect();
        let mine = &ours[i];
        assert_eq!(mine.item as usize, i);
        assert_eq!(theirs.len(), mine.ll.len(), "question {i}");
        for (a, b) in mine.ll.iter().zip(&theirs) {
            worst = worst.max((a - b).abs());
        }
        let m = mine.metrics();
        acc_diff += (m.acc != v["acc"].as_f64().unwrap()) as usize;
        norm_diff += (m.acc_norm != v["acc_norm"].as_f64().unwrap()) as usize;
        compared += 1;
    }
    println!(
        "lm-eval 0.4.13: {compared} questions compared in {seconds:.1} s; largest log-likelihood difference {worst:.2e}; \
         acc differs on {acc_diff}, acc_norm on {norm_diff}"
    );
    assert_eq!(compared, ours.len());
    assert!(worst < 1e-4, "log-likelihoods differ by up to {worst}");
    assert_eq!((acc_diff, norm_diff), (0, 0));
}
