//! The training-step benchmark behind `isoflop bench train` (and bench/train).
//!
//! A model described by a small JSON file ([`BenchModel`]) is built exactly as a run would
//! build it, then trained for a number of timed optimiser steps (forward, backward, global
//! clipping at 1.0 and an AdamW update) on one fixed batch of random tokens. The tokens are
//! `splitmix64(seed) mod vocab_size` (see [`bench_tokens`]), a formula bench/train's plain
//! PyTorch implementation reproduces, so both sides train on the same data.

use crate::model::Transformer;
use crate::optim::{AdamW, AdamWConfig};
use isoflop_core::ModelShape;
use isoflop_core::flops::mfu_flops_per_token;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, TchError, Tensor, nn};

/// The model of a benchmark, as read from `--model-json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchModel {
    pub vocab_size: u64,
    pub hidden: u64,
    pub layers: u64,
    pub heads: u64,
    pub seq_len: u64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub qk_norm: bool,
    /// SwiGLU width; `4 × hidden` when absent.
    #[serde(default)]
    pub ffn_hidden: Option<u64>,
}

fn default_theta() -> f64 {
    10_000.0
}

impl BenchModel {
    /// The full shape: `kv_heads = heads`, no RoPE scaling, untied embeddings,
    /// `norm_eps = 1e-5`, `init_std = 0.02`.
    pub fn shape(&self) -> ModelShape {
        ModelShape {
            vocab_size: self.vocab_size,
            hidden: self.hidden,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.heads,
            ffn_hidden: self.ffn_hidden.unwrap_or(4 * self.hidden),
            seq_len: self.seq_len,
            rope_theta: self.rope_theta,
            rope_scaling: None,
            qk_norm: self.qk_norm,
            tie_embeddings: false,
            norm_eps: 1e-5,
            init_std: 0.02,
        }
    }
}

/// Options of one benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Sequences per step.
    pub batch: u64,
    /// Timed optimiser steps (after [`BenchOptions::warmup`] untimed ones).
    pub steps: u64,
    /// Untimed steps first.
    pub warmup: u64,
    pub device: Device,
    /// bf16 mixed precision (bf16 forward and backward, fp32 master weights, clipping and
    /// AdamW), as a `runtime.precision: bf16` run trains.
    pub bf16: bool,
    /// Peak FLOP/s of the device for MFU; 0 reports an MFU of 0.
    pub peak_flops: f64,
    /// Seed of the tokens and of the initialisation.
    pub seed: u64,
    /// Constant learning rate of every step.
    pub lr: f64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { batch: 8, steps: 20, warmup: 3, device: Device::Cpu, bf16: false, peak_flops: 0.0, seed: 0, lr: 1e-3 }
    }
}

/// What one benchmark measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    pub tokens_per_second: f64,
    pub mfu: f64,
    pub step_ms: f64,
    /// Median step time (CPU only: on CUDA steps are timed without a sync).
    pub step_ms_median: Option<f64>,
    /// Throughput at the median step time (CPU only), robust to a busy machine.
    pub tokens_per_second_median: Option<f64>,
    pub device: String,
    pub params: u64,
    /// Loss of the first (warm-up) step, before any update.
    pub loss_first: f64,
    /// Loss of the last timed step.
    pub loss_last: f64,
    pub batch: u64,
    pub seq_len: u64,
    pub steps: u64,
    pub threads: i32,
    pub flops_per_token: f64,
    /// `fp32` or `bf16`.
    pub precision: &'static str,
    /// The peak FLOP/s MFU is measured against (0: none, MFU is 0).
    pub peak_flops: f64,
}

/// One step of the splitmix64 generator: advances `state` and returns the next output.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The benchmark's tokens, `[batch, seq_len + 1]` row-major: element `i` is the `i`-th output
/// (0-based) of splitmix64 started from state `seed`, modulo `vocab`.
pub fn bench_tokens(seed: u64, batch: u64, seq_len: u64, vocab: u64) -> Vec<i64> {
    let mut state = seed;
    (0..batch * (seq_len + 1)).map(|_| (splitmix64(&mut state) % vocab) as i64).collect()
}

/// Runs the benchmark.
pub fn bench_train(model: &BenchModel, opts: &BenchOptions) -> Result<BenchResult, TchError> {
    let shape = model.shape();
    shape.validate().map_err(|e| TchError::Shape(e.to_string()))?;
    if opts.batch == 0 || opts.steps == 0 {
        return Err(TchError::Shape("batch and steps must be positive".into()));
    }
    crate::alloc::keep_freed_memory();
    let (b, t) = (opts.batch as i64, shape.seq_len as i64);
    let toks = bench_tokens(opts.seed, opts.batch, shape.seq_len, shape.vocab_size);
    let toks = Tensor::f_from_slice(&toks)?.f_view([b, t + 1])?.f_to_device(opts.device)?;
    let inputs = toks.f_narrow(1, 0, t)?.f_contiguous()?;
    let targets = toks.f_narrow(1, 1, t)?.f_contiguous()?;

    let vs = nn::VarStore::new(opts.device);
    let net = Transformer::seeded(&vs.root(), &shape, opts.seed)?;
    let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0, ..AdamWConfig::default() };
    let compute = if opts.bf16 { Kind::BFloat16 } else { Kind::Float };
    let mut opt = AdamW::with_compute_kind(net.params(), cfg, compute)?;
    let step = |opt: &mut AdamW| -> Result<Tensor, TchError> {
        opt.zero_grad();
        let loss = net.loss(&inputs, &targets)?;
        loss.f_backward()?;
        let _ = opt.step(opts.lr)?;
        loss.f_detach()
    };
    let mut loss_first = f64::NAN;
    for i in 0..opts.warmup {
        let l = step(&mut opt)?;
        if i == 0 {
            loss_first = l.f_double_value(&[])?;
        }
    }
    sync(opts.device);
    let t0 = Instant::now();
    let mut last = None;
    let mut times: Vec<f64> = Vec::with_capacity(opts.steps as usize);
    for _ in 0..opts.steps {
        let ts = Instant::now();
        last = Some(step(&mut opt)?);
        times.push(ts.elapsed().as_secs_f64());
    }
    let loss_last = last.expect("steps > 0").f_double_value(&[])?;
    sync(opts.device);
    let secs = t0.elapsed().as_secs_f64();
    if opts.warmup == 0 {
        loss_first = f64::NAN;
    }
    let tokens = (opts.steps * opts.batch * shape.seq_len) as f64;
    let tokens_per_second = tokens / secs;
    // Per-step times only mean something where ops run synchronously (the CPU).
    let median = if opts.device.is_cuda() {
        None
    } else {
        times.sort_by(f64::total_cmp);
        Some(times[times.len() / 2])
    };
    let flops_per_token = mfu_flops_per_token(&shape);
    let mfu = if opts.peak_flops > 0.0 { tokens_per_second * flops_per_token / opts.peak_flops } else { 0.0 };
    Ok(BenchResult {
        tokens_per_second,
        mfu,
        step_ms: secs * 1e3 / opts.steps as f64,
        step_ms_median: median.map(|m| m * 1e3),
        tokens_per_second_median: median.map(|m| (opts.batch * shape.seq_len) as f64 / m),
        device: format!("{:?}", opts.device).to_lowercase(),
        params: net.param_count(),
        loss_first,
        loss_last,
        batch: opts.batch,
        seq_len: shape.seq_len,
        steps: opts.steps,
        threads: tch::get_num_threads(),
        flops_per_token,
        precision: if opts.bf16 { "bf16" } else { "fp32" },
        peak_flops: opts.peak_flops,
    })
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_known_values() {
        // Reference outputs of splitmix64 seeded with 0.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
        let t = bench_tokens(0, 2, 3, 4096);
        assert_eq!(t.len(), 8);
        assert_eq!(t[0], (0xE220_A839_7B1D_CDAFu64 % 4096) as i64);
    }

    #[test]
    fn tiny_bench_runs_and_learns() {
        let m = BenchModel {
            vocab_size: 64,
            hidden: 32,
            layers: 1,
            heads: 2,
            seq_len: 16,
            rope_theta: 10_000.0,
            qk_norm: true,
            ffn_hidden: None,
        };
        let m2: BenchModel =
            serde_json::from_str(r#"{"vocab_size":64,"hidden":32,"layers":1,"heads":2,"seq_len":16,"qk_norm":true}"#).unwrap();
        assert_eq!(m, m2);
        let r = bench_train(&m, &BenchOptions { batch: 2, steps: 20, lr: 1e-2, ..Default::default() }).unwrap();
        assert!((r.loss_first - 64f64.ln()).abs() < 0.2, "{r:?}");
        assert!(r.loss_last < r.loss_first - 0.5, "{r:?}");
        assert!(r.tokens_per_second > 0.0 && r.mfu == 0.0);
        assert_eq!(r.params, crate::model::param_count_for(&m.shape()));
        // bf16 mixed precision: same data and initial parameters, a close loss curve.
        let b = bench_train(&m, &BenchOptions { batch: 2, steps: 20, lr: 1e-2, bf16: true, ..Default::default() }).unwrap();
        assert_eq!(b.precision, "bf16");
        assert!((b.loss_first - r.loss_first).abs() < 0.02 * r.loss_first, "{b:?} vs {r:?}");
        assert!((b.loss_last - r.loss_last).abs() < 0.05 * r.loss_last, "{b:?} vs {r:?}");
    }
}
