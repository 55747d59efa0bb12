//! The pure heart of isoflop: what a sweep is, how it becomes runs, what each run costs,
//! what identifies a run, and which state changes a run may make.
//!
//! Nothing here touches the network, a database or libtorch; every other crate builds on it.

pub mod choice;
pub mod clock;
pub mod config;
pub mod device;
pub mod eval;
pub mod failure;
pub mod flops;
pub mod kubernetes;
pub mod plan;
pub mod record;
pub mod spec;
pub mod state;
pub mod tokenizer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{DataRef, EvalRef, InvalidRun, ModelShape, Recipe, RopeScaling, RunConfig, RunId};
pub use device::Device;
pub use eval::{ChoiceTask, EvalJobConfig, EvalMetric, EvalTask, SubsetGroup, TaskKind, TextTask};
pub use failure::{FailureClass, Retries, RetryDecision, after_failure};
pub use record::{EvalScore, Progress};
pub use spec::Precision;
pub use state::{RunState, TransitionError};
pub use tokenizer::Tokenizer;
