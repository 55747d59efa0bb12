//! Scaling-law fitting for isoflop sweeps.
//!
//! * [`table`]: the long input table (`params`, `tokens`, `loss`, optional `run`, `budget`, `flops`,
//!   `distribution`) and its validation.
//! * [`isoflop`]: Chinchilla approach 2: robust parabolas per IsoFLOP budget, vertices, power laws.
//! * [`parametric`]: Chinchilla approach 3: `L = E + A/N^alpha + B/D^beta` fitted in log-sum-exp form with
//!   a summed Huber loss and L-BFGS from the standard 4,500-start grid.
//! * [`relative`]: relative scaling laws (Held et al. 2025): per-distribution loss laws and their ratio.
//! * [`bootstrap`]: a seeded RNG, run-level resampling and percentile intervals.
//! * [`report`]: the JSON report and [`report::fit_all`].
//! * [`overtraining`]: Gadre et al.'s over-training law `L(C, M) = E + (a M^eta + b M^-eta) C^-eta`.
//!
//! ```no_run
//! use isoflop_fit::{FitOptions, fit_all, read_csv};
//!
//! let table = read_csv("sweep.csv")?;
//! let opts = FitOptions { baseline: Some("web".into()), predict_at: vec![1e21, 1e22], ..FitOptions::default() };
//! let report = fit_all(&table, &opts)?;
//! println!("{}", report.to_json());
//! # Ok::<(), isoflop_fit::FitError>(())
//! ```

pub mod bootstrap;
pub mod error;
pub mod isoflop;
pub mod lbfgs;
pub mod overtraining;
pub mod parametric;
pub mod relative;
pub mod report;
pub mod stats;
#[cfg(feature = "store")]
pub mod sweep;
pub mod table;

pub use error::FitError;
pub use report::{FitOptions, FitReport, fit_all};
pub use table::{Point, Table, read_csv};
