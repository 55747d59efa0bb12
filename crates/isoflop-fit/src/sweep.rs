//! The long table of a sweep in an isoflop store (feature `store`): every succeeded run on
//! every eval distribution, plus `all`, the token-weighted loss over the distributions.

use crate::table::DEFAULT_DISTRIBUTION;
use crate::{FitError, Point, Table};
use isoflop_core::{FailureClass, RunConfig, RunState, flops};
use isoflop_store::{Store, StoreError};

/// Why a sweep's table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SweepTableError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run {run}: stored configuration is not readable: {source}")]
    Config { run: String, source: serde_json::Error },
    #[error("sweep `{0}` has no succeeded run with eval results yet")]
    Empty(String),
    #[error(transparent)]
    Table(#[from] FitError),
}

/// The points of a sweep, and a note for every run left out (diverged, failed, unfinished).
/// Diverged runs are never included.
pub fn table_from_store(store: &dyn Store, sweep: &str) -> Result<(Table, Vec<String>), SweepTableError> {
    let mut points = Vec::new();
    let mut notes = Vec::new();
    for r in store.sweep_runs(sweep)?.into_iter().filter(|r| r.is_training()) {
        if r.state != RunState::Succeeded {
            let why = match r.failure_class {
                Some(FailureClass::Diverged) => "diverged".to_string(),
                _ => r.state.to_string(),
            };
            notes.push(format!("run {} ({}) left out: {why}", r.name, r.run_id));
            continue;
        }
        let c: RunConfig =
            serde_json::from_str(&r.config_json).map_err(|source| SweepTableError::Config { run: r.run_id.clone(), source })?;
        let params = flops::params(&c.model) as f64;
        let tokens = c.tokens() as f64;
        let evals = store.evals(&r.run_id)?;
        let point = |distribution: &str, loss: f64| Point {
            run: r.run_id.clone(),
            params,
            tokens,
            loss,
            budget: r.budget,
            flops: r.budget,
            distribution: distribution.to_string(),
        };
        for e in &evals {
            points.push(point(&e.distribution, e.loss));
        }
        let weight: f64 = evals.iter().map(|e| e.tokens as f64).sum();
        if weight > 0.0 {
            points.push(point(DEFAULT_DISTRIBUTION, evals.iter().map(|e| e.loss * e.tokens as f64).sum::<f64>() / weight));
        }
    }
    if points.is_empty() {
        return Err(SweepTableError::Empty(sweep.into()));
    }
    Ok((Table::from_points(points)?, notes))
}
