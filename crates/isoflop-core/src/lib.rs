//! The pure heart of isoflop: what a sweep is, how it becomes runs, what each run costs,
//! what identifies a run, and which state changes a run may make.
//!
//! Nothing here touches the network, a database or libtorch; every other crate builds on it.

pub mod config;
pub mod failure;
pub mod flops;
pub mod kubernetes;
pub mod plan;
pub mod spec;
pub mod state;

pub use config::{DataRef, EvalRef, ModelShape, Recipe, RopeScaling, RunConfig, RunId};
pub use failure::FailureClass;
pub use spec::Precision;
pub use state::{RunState, TransitionError};
