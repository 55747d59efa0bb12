//! Training throughput measured by `isoflop bench train`, kept per device and precision in
//! `$ISOFLOP_CACHE_DIR/throughput.json` (else `$XDG_CACHE_HOME/isoflop/`, `$HOME/.cache/isoflop/`),
//! so that `isoflop plan` can estimate how long a sweep takes on that device.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Training FLOP/s achieved: model FLOPs per token (PaLM-style, as MFU counts) x tokens per second.
    pub flops_per_second: f64,
    /// The model it was measured on.
    pub params: u64,
    pub tokens_per_second: f64,
    /// When (Unix milliseconds).
    pub at_ms: i64,
}

/// The key of a device and precision: `cpu fp32`, `cuda:0 bf16`.
pub fn key(device: &str, precision: &str) -> String {
    format!("{device} {precision}")
}

fn path() -> Option<PathBuf> {
    isoflop_data::cache_dir().map(|d| d.join("throughput.json"))
}

fn load() -> BTreeMap<String, Throughput> {
    path().and_then(|p| std::fs::read_to_string(p).ok()).and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// The newest measurement for a key.
pub fn lookup(key: &str) -> Option<Throughput> {
    load().remove(key)
}

/// Records a measurement (best effort: a cache that cannot be written is only a warning).
/// `isoflop bench` records; a build without the trainer only reads.
#[cfg_attr(not(feature = "trainer"), allow(dead_code))]
pub fn record(key: &str, t: Throughput) {
    let Some(p) = path() else { return };
    let mut all = load();
    all.insert(key.to_string(), t);
    let write = p
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(&p, serde_json::to_string_pretty(&all).expect("numbers serialise")));
    match write {
        Ok(()) => eprintln!("recorded {key} throughput in {} (isoflop plan estimates wall time from it)", p.display()),
        Err(e) => eprintln!("warning: cannot record the throughput in {}: {e}", p.display()),
    }
}
