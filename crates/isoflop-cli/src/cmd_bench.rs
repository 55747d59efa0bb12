//! `isoflop bench fit`: the timed core of the benchmark in bench/fit (the 4,500-start
//! parametric fit on a CSV table), printed as one JSON line.
//!
//! `isoflop bench train`: timed training steps of a model described by a JSON file (the Rust
//! side of bench/train), printed as one JSON line.

use crate::exit::{CliResult, input};
use isoflop_core::{Device, Precision};
use isoflop_fit::parametric::{LseData, ParametricOptions, fit_parametric};
use isoflop_fit::read_csv;
use isoflop_train::bench::{BenchModel, BenchOptions};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Time the 4,500-start parametric fit (approach 3) on a CSV table (params, tokens, loss).
    Fit {
        #[arg(long, value_name = "FILE")]
        from_csv: PathBuf,
        /// Worker threads (0: all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Timed repetitions; the fastest is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Time forward + backward + AdamW steps of a model on fixed random tokens.
    ///
    /// The model JSON holds vocab_size, hidden, layers, heads, seq_len, rope_theta, qk_norm
    /// and optionally ffn_hidden (default 4 x hidden). The tokens are splitmix64(seed) mod
    /// vocab_size, the same as bench/train/torch_train.py draws.
    Train {
        #[arg(long, value_name = "FILE")]
        model_json: PathBuf,
        /// Sequences per step.
        #[arg(long, default_value_t = 8)]
        batch: u64,
        /// Timed optimizer steps (after the warm-up steps).
        #[arg(long, default_value_t = 20)]
        steps: u64,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: Device,
        /// bf16 mixed precision: bf16 forward and backward, fp32 master weights, clipping and
        /// AdamW (as `runtime.precision: bf16` trains; bench/train/torch_train.py --bf16 uses
        /// torch.autocast with fp32 parameters).
        #[arg(long)]
        bf16: bool,
        /// Peak FLOP/s of the device for MFU (default: looked up by the accelerator's name and
        /// the precision, e.g. 989.4e12 for an H100 or H200 in bf16; 0 on the CPU).
        #[arg(long)]
        peak_flops: Option<f64>,
        /// Seed of the tokens and of the initialization.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// libtorch intra-op threads (0: libtorch's default, all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

#[allow(clippy::too_many_arguments)]
fn bench_train(
    model_json: PathBuf,
    batch: u64,
    steps: u64,
    warmup: u64,
    device: Device,
    bf16: bool,
    peak_flops: Option<f64>,
    seed: u64,
    threads: usize,
) -> CliResult {
    let text = std::fs::read_to_string(&model_json).map_err(|e| input(anyhow::anyhow!("{}: {e}", model_json.display())))?;
    let model: BenchModel = serde_json::from_str(&text).map_err(|e| input(anyhow::anyhow!("{}: {e}", model_json.display())))?;
    if device.is_cuda() && !tch::Cuda::is_available() {
        return Err(input(anyhow::anyhow!("CUDA is not available")));
    }
    if threads > 0 {
        tch::set_num_threads(threads.min(i32::MAX as usize) as i32);
    }
    let precision = if bf16 { Precision::Bf16 } else { Precision::Fp32 };
    let peak_flops = peak_flops.or_else(|| isoflop_worker::device::peak_flops_of(device, precision)).unwrap_or(0.0);
    let device_name = device.to_string();
    let device = isoflop_train::tch_device(device);
    let opts = BenchOptions { batch, steps, warmup, device, bf16, peak_flops, seed, ..BenchOptions::default() };
    let r = isoflop_train::bench::bench_train(&model, &opts)?;
    println!("{}", serde_json::to_string(&r)?);
    let tps = r.tokens_per_second_median.unwrap_or(r.tokens_per_second);
    let t = crate::throughput::Throughput {
        flops_per_second: r.flops_per_token * tps,
        params: r.params,
        tokens_per_second: tps,
        at_ms: isoflop_core::Clock::now_ms(&isoflop_core::SystemClock),
    };
    crate::throughput::record(&crate::throughput::key(&device_name, precision.as_str()), t);
    Ok(())
}

pub fn bench(cmd: BenchCommand) -> CliResult {
    match cmd {
        BenchCommand::Train { model_json, batch, steps, warmup, device, bf16, peak_flops, seed, threads } => {
            bench_train(model_json, batch, steps, warmup, device, bf16, peak_flops, seed, threads)
        }
        BenchCommand::Fit { from_csv, threads, repeat } => {
            let table = read_csv(&from_csv).map_err(input)?;
            let data = LseData::from_points(&table.points);
            let opts = ParametricOptions { threads, ..ParametricOptions::default() };
            let mut best_time = f64::INFINITY;
            let mut fit = None;
            for _ in 0..repeat.max(1) {
                let t0 = Instant::now();
                let f = fit_parametric(&data, &opts);
                best_time = best_time.min(t0.elapsed().as_secs_f64());
                fit = f;
            }
            let fit =
                fit.ok_or_else(|| input(anyhow::anyhow!("{}: too few points for the parametric fit", from_csv.display())))?;
            let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
            println!(
                "{}",
                json!({
                    "seconds": best_time,
                    "objective": fit.objective,
                    "theta": [fit.log_a, fit.log_b, fit.log_e, fit.alpha, fit.beta],
                    "starts_at_best": fit.n_best,
                    "starts": fit.n_starts,
                    "grad_norm": fit.grad_norm,
                    "threads": threads,
                    "points": data.len(),
                })
            );
            Ok(())
        }
    }
}
