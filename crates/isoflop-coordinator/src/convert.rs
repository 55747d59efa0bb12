//! Conversions between stored rows and protocol messages.

use isoflop_proto::v1 as pb;
use isoflop_store::{EvalRow, ProgressPoint};

/// A reported progress point as stored for an attempt, received at `at_ms`.
pub fn progress_row(p: &pb::Progress, attempt: u64, at_ms: i64) -> ProgressPoint {
    ProgressPoint {
        attempt,
        step: p.step,
        total_steps: p.total_steps,
        loss: p.loss,
        lr: p.lr,
        grad_norm: p.grad_norm,
        tokens_seen: p.tokens_seen,
        tokens_per_second: p.tokens_per_second,
        mfu: p.mfu,
        elapsed_seconds: p.elapsed_seconds,
        at_ms,
        micro_batch: p.micro_batch,
    }
}

/// A stored progress point on the wire.
pub fn progress_msg(p: &ProgressPoint) -> pb::Progress {
    pb::Progress {
        step: p.step,
        total_steps: p.total_steps,
        loss: p.loss,
        lr: p.lr,
        grad_norm: p.grad_norm,
        tokens_seen: p.tokens_seen,
        tokens_per_second: p.tokens_per_second,
        mfu: p.mfu,
        elapsed_seconds: p.elapsed_seconds,
        micro_batch: p.micro_batch,
    }
}

/// A reported eval result as stored.
pub fn eval_row(e: &pb::EvalResult) -> EvalRow {
    EvalRow {
        distribution: e.distribution.clone(),
        loss: e.loss,
        bits_per_byte: e.bits_per_byte,
        tokens: e.tokens,
        bytes: e.bytes,
    }
}

/// A stored eval result on the wire.
pub fn eval_msg(e: EvalRow) -> pb::EvalResult {
    pb::EvalResult {
        distribution: e.distribution,
        loss: e.loss,
        bits_per_byte: e.bits_per_byte,
        tokens: e.tokens,
        bytes: e.bytes,
    }
}
