//! `isoflop export RUN --format hf --out DIR`: a training run's checkpoint as a Hugging Face
//! model directory.

use crate::exit::{CliResult, input};
use anyhow::anyhow;
use isoflop_store::StoreLocation;
use std::path::Path;

pub fn export(run: &str, format: &str, out: &Path, step: Option<u64>, location: &StoreLocation) -> CliResult {
    if format != "hf" {
        return Err(input(anyhow!("--format {format}: expected hf")));
    }
    let store = crate::control::open_existing(location)?;
    let row = isoflop_coordinator::find_run(store.as_ref(), run).map_err(input)?;
    if !row.is_training() {
        return Err(input(anyhow!("{} ({}) is an evaluation job, not a training run", row.name, row.run_id)));
    }
    let config = isoflop_coordinator::resolve::run_config(&row.config_json)
        .map_err(|e| anyhow!("run {}: its stored configuration does not parse: {e}", row.run_id))?;
    let checkpoints = store.checkpoints(&row.run_id)?;
    let ckpt = match step {
        Some(s) => checkpoints.iter().find(|c| c.step == s).ok_or_else(|| {
            let have: Vec<String> = checkpoints.iter().map(|c| c.step.to_string()).collect();
            input(anyhow!("run {} has no checkpoint at step {s} (it has: {})", row.name, have.join(", ")))
        })?,
        None => checkpoints.last().ok_or_else(|| input(anyhow!("run {} has no checkpoint yet", row.name)))?,
    };
    let dir = Path::new(&ckpt.path);
    if !dir.is_dir() {
        return Err(input(anyhow!("checkpoint {} of run {} is not on disk", dir.display(), row.name)));
    }
    write_hf(dir, &config, out, &row.name, ckpt.step)
}

#[cfg(feature = "trainer")]
fn write_hf(dir: &Path, config: &isoflop_core::RunConfig, out: &Path, name: &str, step: u64) -> CliResult {
    let done = isoflop_train::export::export_hf(dir, config, out).map_err(|e| match e {
        isoflop_train::export::ExportError::Unsupported(_) => input(e),
        e => e.into(),
    })?;
    println!("exported {name} step {step} ({}, {} tensors) to {}", done.architecture, done.tensors, out.display());
    Ok(())
}

#[cfg(not(feature = "trainer"))]
fn write_hf(_: &Path, _: &isoflop_core::RunConfig, _: &Path, _: &str, _: u64) -> CliResult {
    Err(input(anyhow!(
        "this isoflop was built without the trainer (the coordinator's build): export --format hf needs libtorch; \
         run it with the full isoflop (the worker image)"
    )))
}
