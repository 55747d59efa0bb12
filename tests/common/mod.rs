//! Shared helpers of the end-to-end tests: a prepared real corpus, spec files, the binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `isoflop` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_isoflop")
}

/// A corpus prepared once per test binary from the real installed sources (1 MB of training
/// text; every held-out distribution).
pub fn corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("isoflop-test-corpus-{}", std::process::id()));
        let out = Command::new(bin())
            .args(["data", "prepare", "--max-train-bytes", "1000000", "--out"])
            .arg(&dir)
            .output()
            .expect("run isoflop data prepare");
        assert!(out.status.success(), "data prepare failed:\n{}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// Writes `spec.yaml` into `dir` with the manifest of [`corpus`] and a store beside it.
pub fn write_spec(dir: &Path, body: &str) -> PathBuf {
    let manifest = corpus().join("manifest.json");
    let text = body.replace("@MANIFEST@", &manifest.display().to_string());
    let path = dir.join("spec.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `isoflop ARGS` to completion.
pub fn isoflop(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run isoflop")
}

/// Prints a command's output when an assertion is about to fail.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
