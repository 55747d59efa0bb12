//! `isoflop export --format hf` against the real `transformers` (from PyPI, in the project's
//! venv, offline): the exported directory loads as `Qwen3ForCausalLM` (QK-norm on) and as
//! `LlamaForCausalLM` (off), its logits equal isoflop's to 1e-4 in fp32 on the CPU, and its
//! tokenizer gives the byte ids isoflop's does.

mod common;

use common::{TINY_SWEEP, isoflop, show, write_spec};
use isoflop_store::{SqliteStore, Store};
use std::path::Path;
use std::process::Command;

fn python() -> String {
    let venv = std::env::var("ISOFLOP_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/isoflop/venv", std::env::var("HOME").unwrap_or_default()));
    let p = format!("{venv}/bin/python");
    assert!(Path::new(&p).is_file(), "{p} is missing: run scripts/setup.sh (it installs torch and transformers)");
    p
}

/// isoflop's logits `[T, V]` for `tokens` from the checkpoint at `dir`.
fn isoflop_logits(dir: &Path, config: &isoflop_core::RunConfig, tokens: &[i64]) -> Vec<Vec<f64>> {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = isoflop_train::Transformer::new(&vs.root(), &config.model).unwrap();
    let mut opt = isoflop_train::AdamW::new(model.params(), isoflop_train::AdamWConfig::from_recipe(&config.recipe)).unwrap();
    isoflop_train::checkpoint::load(dir, &mut opt).unwrap();
    let t = tch::Tensor::from_slice(tokens).view([1, tokens.len() as i64]);
    let logits = tch::no_grad(|| model.forward(&t).unwrap()).squeeze_dim(0).to_kind(tch::Kind::Double);
    Vec::<Vec<f64>>::try_from(&logits).unwrap()
}

#[test]
fn exported_models_load_in_transformers_with_equal_logits() {
    for qk_norm in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let text = TINY_SWEEP
            .replace("budgets: [1.5e9, 3.0e9]", "budgets: [1.5e9]")
            .replace("hidden: [16, 32]", "hidden: [32]")
            .replace("qk_norm: true", &format!("qk_norm: {qk_norm}"));
        let spec = write_spec(dir.path(), &text);
        let out = isoflop(&["run", spec.to_str().unwrap(), "--plain"]);
        assert!(out.status.success(), "{}", show(&out));
        let db = dir.path().join("state/isoflop.db");
        let store = SqliteStore::open(&db).unwrap();
        let run = common::training(&store, "tiny").remove(0);
        let config: isoflop_core::RunConfig = serde_json::from_str(&run.config_json).unwrap();
        let hf = dir.path().join("hf");
        let out =
            isoflop(&["export", &run.name, "--format", "hf", "--out", hf.to_str().unwrap(), "--store", db.to_str().unwrap()]);
        assert!(out.status.success(), "{}", show(&out));
        for f in ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"] {
            assert!(hf.join(f).is_file(), "{f}");
        }
        let sample = "In the beginning God created the heaven and the earth. é";
        let tokens: Vec<i64> = sample.bytes().map(i64::from).take(config.model.seq_len as usize).collect();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/hf/logits.py");
        let out = Command::new(python())
            .arg(&script)
            .arg(&hf)
            .arg(serde_json::to_string(&tokens).unwrap())
            .arg(sample)
            .env("HF_HOME", dir.path().join("hf-home"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want_arch = if qk_norm { "Qwen3ForCausalLM" } else { "LlamaForCausalLM" };
        assert_eq!(v["architecture"], want_arch);
        let theirs: Vec<Vec<f64>> = serde_json::from_value(v["logits"].clone()).unwrap();
        let ours = isoflop_logits(Path::new(&store.latest_checkpoint(&run.run_id).unwrap().unwrap().path), &config, &tokens);
        assert_eq!((theirs.len(), theirs[0].len()), (tokens.len(), config.model.vocab_size as usize));
        let mut worst = 0.0f64;
        for (a, b) in ours.iter().flatten().zip(theirs.iter().flatten()) {
            worst = worst.max((a - b).abs());
        }
        let spread = ours.iter().flatten().fold(0.0f64, |m, x| m.max(x.abs()));
        println!("{want_arch}: largest logit difference {worst:.2e} (logits up to {spread:.2})");
        assert!(worst < 1e-4, "{want_arch}: logits differ by {worst}");
        assert!(spread > 1.0, "a trained model, not a constant");
        let encoded: Vec<i64> = serde_json::from_value(v["encoded"].clone()).unwrap();
        assert_eq!(encoded, sample.bytes().map(i64::from).collect::<Vec<_>>(), "the tokenizer is isoflop's byte tokenizer");
        assert_eq!(v["decoded"], sample);
    }
}
