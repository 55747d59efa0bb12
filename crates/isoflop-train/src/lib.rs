//! The worker's engine: trains one isoflop run with tch (libtorch).
//!
//! * [`model`]: a Llama/Qwen3-style decoder-only Transformer.
//! * [`optim`]: a hand-written AdamW whose state can be checkpointed.
//! * [`schedule`]: the warmup-stable-decay learning-rate schedule.
//! * [`data`]: the deterministic training batch sampler.
//! * [`eval`]: evaluation jobs: loss and bits-per-byte on held-out shards, multiple choice.
//! * [`export`]: a checkpoint as a Hugging Face model directory.
//! * [`checkpoint`]: atomic checkpoint directories.
//! * [`trainer`]: [`train`], the entry point tying them together.
//! * [`bench`]: the training-step benchmark of `isoflop bench train`.
//! * [`alloc`]: host allocator tuning for training processes.

pub mod alloc;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod export;
pub mod model;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use checkpoint::{CheckpointError, Manifest};
pub use data::{Batch, BatchSampler};
pub use eval::{EvalJob, EvalOutput, EvalScore, bits_per_byte, evaluate, run_eval, score_choices};
pub use model::{Param, ParamKind, Transformer};
pub use optim::{AdamW, AdamWConfig, DecayScope};
pub use schedule::Schedule;
pub use trainer::{CheckpointInfo, Control, NoHooks, Progress, TrainError, TrainHooks, TrainJob, TrainOutcome, train};

/// The libtorch device of an isoflop [`Device`](isoflop_core::Device).
pub fn tch_device(d: isoflop_core::Device) -> tch::Device {
    match d {
        isoflop_core::Device::Cpu => tch::Device::Cpu,
        isoflop_core::Device::Cuda(i) => tch::Device::Cuda(i as usize),
    }
}
