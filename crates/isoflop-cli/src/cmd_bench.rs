//! `isoflop bench fit`: the timed core of the benchmark in bench/fit (the 4,500-start
//! parametric fit on a CSV table), printed as one JSON line.

use crate::exit::{CliResult, input};
use isoflop_fit::parametric::{LseData, ParametricOptions, fit_parametric};
use isoflop_fit::read_csv;
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
}

pub fn bench(cmd: BenchCommand) -> CliResult {
    match cmd {
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
