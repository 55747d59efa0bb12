//! What a worker produces about its run: progress points and evaluation scores. The trainer
//! makes them, the wire carries them (`isoflop_proto::convert`), the store keeps them.

/// One training progress point.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// Optimiser steps completed.
    pub step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// Mean training loss (nats/token) of the steps since the previous progress point; at
    /// step 0, the loss of the first batch before any update (the initial loss).
    pub loss: f64,
    /// Learning rate of the latest update (at step 0: of the first update).
    pub lr: f64,
    /// Global gradient norm, before clipping, of the latest update (at step 0: of the first).
    pub grad_norm: f64,
    /// Training tokens consumed (`step · batch · seq_len`).
    pub tokens_seen: u64,
    /// Training throughput since the previous progress point.
    pub tokens_per_second: f64,
    /// Model FLOPs utilisation against the device's peak (0 when the peak is unknown).
    pub mfu: f64,
    /// Wall-clock seconds since the attempt started its first step.
    pub elapsed_seconds: f64,
    /// Sequences per forward/backward pass in use (smaller than requested after an
    /// out-of-memory retry); `None` when the reporter did not say.
    pub micro_batch: Option<u64>,
}

/// The score of a model on one evaluation distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalScore {
    /// The distribution's name.
    pub distribution: String,
    /// Mean cross-entropy over the scored tokens, nats per token.
    pub loss: f64,
    /// Bits per UTF-8 byte of the scored text.
    pub bits_per_byte: f64,
    /// Tokens scored.
    pub tokens: u64,
    /// UTF-8 bytes the scored tokens stand for (estimated from the shard's bytes per token).
    pub bytes: f64,
}
