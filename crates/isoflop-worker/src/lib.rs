//! The worker role: one attempt of one run, as `isoflop worker` runs it in a local process or
//! a Kubernetes pod.
//!
//! [`run_attempt`] attaches to the coordinator with the attempt's token, trains on a dedicated
//! thread (libtorch work never runs on the async runtime), reports progress and checkpoints
//! once a second, checkpoints and stops when interrupted (SIGTERM/SIGINT, see
//! [`interrupt_on_signals`]) or when the coordinator says so, and finishes with the outcome:
//! success with per-distribution losses, a classified failure, or an interruption after a
//! checkpoint. It talks to the coordinator through [`WorkerClient`], so it can be tested
//! without a process or a network ([`GrpcWorkerClient`] is the real one).
//!
//! [`device`] is `isoflop worker --check-device` and the peak-FLOPs lookup for MFU.

mod attempt;
mod client;
pub mod device;

pub use attempt::{Attempt, Ended, Options, RUN_LOCK_FILE, WorkerError, interrupt_on_signals, run_attempt};
pub use client::{GrpcWorkerClient, WorkerClient};
