//! `isoflop worker`: one attempt of one run (`isoflop_worker`), started by an executor with its
//! coordinator, run, attempt and token in the environment; and `--check-device`.

use crate::exit::{CliError, CliResult, input};
use anyhow::{Context, anyhow};
use isoflop_core::Device;
use isoflop_proto::env;
use isoflop_worker::{Attempt, Ended, GrpcWorkerClient, Options, WorkerError, interrupt_on_signals, run_attempt};

/// Arguments of `isoflop worker` (normally passed through the environment by executors).
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Coordinator URL.
    #[arg(long, env = env::COORDINATOR, required_unless_present = "check_device")]
    coordinator: Option<String>,
    /// Run id.
    #[arg(long, env = env::RUN_ID, required_unless_present = "check_device")]
    run: Option<String>,
    /// Attempt number.
    #[arg(long, env = env::ATTEMPT, required_unless_present = "check_device")]
    attempt: Option<u64>,
    /// Print the libtorch and device the worker would use, run a tiny matmul on the device,
    /// and exit (no coordinator needed).
    #[arg(long)]
    check_device: bool,
    /// Device for --check-device: cpu, cuda or cuda:N (default: cuda when available).
    #[arg(long, requires = "check_device")]
    device: Option<Device>,
    /// Peak FLOP/s of the device for MFU (default: looked up by the accelerator's name, e.g.
    /// 989.4e12 for an H100 or H200 in bf16; none on the CPU).
    #[arg(long, env = "ISOFLOP_PEAK_FLOPS")]
    peak_flops: Option<f64>,
}

/// Entry point of `isoflop worker`.
pub fn main(args: WorkerArgs) -> CliResult {
    if args.check_device {
        return check_device(args.device);
    }
    let (Some(url), Some(run_id), Some(attempt)) = (args.coordinator, args.run, args.attempt) else {
        return Err(input(anyhow!("--coordinator, --run and --attempt are required")));
    };
    let token = std::env::var(env::TOKEN).map_err(|_| input(anyhow!("{} is not set", env::TOKEN)))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async {
        let interrupt = interrupt_on_signals().context("signal handlers")?;
        // SIGTERM while the coordinator cannot be reached (an orphan whose coordinator died)
        // ends the worker at once.
        let mut client = tokio::select! {
            c = GrpcWorkerClient::connect(&url, token) => c?,
            _ = interrupt.cancelled() => return Err(CliError::from(WorkerError::Interrupted)),
        };
        let who = Attempt { run_id, attempt };
        match run_attempt(&mut client, &who, &Options { peak_flops: args.peak_flops }, interrupt).await {
            Ok(Ended::Succeeded | Ended::Interrupted { .. }) => Ok(()),
            Ok(Ended::Failed { class, message }) => Err(anyhow!("{class}: {message}").into()),
            Err(e @ WorkerError::BadAssignment(_)) => Err(input(e)),
            Err(e) => Err(CliError::from(e)),
        }
    })
}

/// `isoflop worker --check-device`: what the worker would train on, and a matmul there.
fn check_device(requested: Option<Device>) -> CliResult {
    let r = isoflop_worker::device::check(requested, option_env!("ISOFLOP_LIBTORCH_LIB"))?;
    match &r.libtorch {
        Some((lib, version)) => println!("libtorch: {} ({})", version.as_deref().unwrap_or("unknown"), lib.display()),
        None => println!("libtorch: loaded library not found in /proc/self/maps"),
    }
    println!("built against: {}", r.built_against.unwrap_or("unknown"));
    println!("libtorch_cuda loaded: {}", r.cuda_linked);
    println!("cuda available: {}", r.cuda_available);
    println!("cuda devices: {}", r.cuda_devices);
    println!("cudnn available: {}", r.cudnn_available);
    println!("device: {}{}", r.device, r.device_name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default());
    println!("matmul on {}: ok {:?}", r.device, r.matmul);
    Ok(())
}
