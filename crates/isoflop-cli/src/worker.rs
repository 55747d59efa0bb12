//! `isoflop worker`: one attempt of one run. Attaches to the coordinator with its token,
//! trains on a dedicated thread (libtorch work never runs on the async runtime), reports
//! progress and checkpoints, checkpoints and stops on SIGTERM/SIGINT or when the coordinator
//! says so, and finishes with the outcome: success with per-distribution losses, a classified
//! failure, or an interruption after a checkpoint.

use crate::exit::{CliResult, input};
use anyhow::{Context, anyhow};
use isoflop_coordinator::executor::local::{ENV_ATTEMPT, ENV_COORDINATOR, ENV_RUN_ID, ENV_TOKEN};
use isoflop_core::flops::mfu_flops_per_token;
use isoflop_core::{Precision, RunConfig};
use isoflop_proto::PROTOCOL_VERSION;
use isoflop_proto::v1 as pb;
use isoflop_proto::v1::worker_service_client::WorkerServiceClient;
use isoflop_train::{CheckpointInfo, Control, Progress, TrainError, TrainHooks, TrainJob, TrainOutcome};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Arguments of `isoflop worker` (normally passed through the environment by executors).
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Coordinator URL.
    #[arg(long, env = ENV_COORDINATOR, required_unless_present = "check_device")]
    coordinator: Option<String>,
    /// Run id.
    #[arg(long, env = ENV_RUN_ID, required_unless_present = "check_device")]
    run: Option<String>,
    /// Attempt number.
    #[arg(long, env = ENV_ATTEMPT, required_unless_present = "check_device")]
    attempt: Option<u64>,
    /// Print the libtorch and device the worker would use, run a tiny matmul on the device,
    /// and exit (no coordinator needed).
    #[arg(long)]
    check_device: bool,
    /// Device for --check-device: cpu, cuda or cuda:N (default: cuda when available).
    #[arg(long, requires = "check_device")]
    device: Option<String>,
    /// Peak FLOP/s of the device for MFU (default: 989e12 on CUDA, none on CPU).
    #[arg(long, env = "ISOFLOP_PEAK_FLOPS")]
    peak_flops: Option<f64>,
}

enum Msg {
    Progress(pb::Progress),
    Checkpoint(pb::CheckpointSaved),
}

struct Hooks {
    tx: mpsc::UnboundedSender<Msg>,
    stop: Arc<AtomicBool>,
    mfu_flops_per_token: f64,
    peak_flops: f64,
}

impl TrainHooks for Hooks {
    fn progress(&mut self, p: &Progress) -> Control {
        let mfu = if self.peak_flops > 0.0 { p.tokens_per_second * self.mfu_flops_per_token / self.peak_flops } else { 0.0 };
        let _ = self.tx.send(Msg::Progress(pb::Progress {
            step: p.step,
            total_steps: p.total_steps,
            loss: p.loss,
            lr: p.lr,
            grad_norm: p.grad_norm,
            tokens_seen: p.tokens_seen,
            tokens_per_second: p.tokens_per_second,
            mfu,
            elapsed_seconds: p.elapsed_seconds,
            micro_batch: Some(p.micro_batch),
        }));
        if self.stop.load(Ordering::SeqCst) { Control::Stop } else { Control::Continue }
    }

    fn notice(&mut self, msg: &str) {
        eprintln!("worker: {msg}");
    }

    fn checkpoint_saved(&mut self, c: &CheckpointInfo) {
        let _ = self.tx.send(Msg::Checkpoint(pb::CheckpointSaved {
            step: c.step,
            path: c.path.display().to_string(),
            tokens_seen: c.tokens_seen,
        }));
    }
}

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

fn parse_device(s: &str) -> anyhow::Result<tch::Device> {
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| anyhow!("unknown device `{other}`; expected cpu, cuda or cuda:N")),
    }
}

/// The assignment's precision; empty (a coordinator predating the field) means fp32.
fn parse_precision(s: &str) -> anyhow::Result<Precision> {
    if s.is_empty() { Ok(Precision::Fp32) } else { s.parse().map_err(|e: String| anyhow!(e)) }
}

/// Entry point of `isoflop worker`.
pub fn main(args: WorkerArgs) -> CliResult {
    if args.check_device {
        return check_device(args.device.as_deref());
    }
    let token = std::env::var(ENV_TOKEN).map_err(|_| input(anyhow!("{ENV_TOKEN} is not set")))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(run(args, token))
}

async fn connect(url: &str) -> anyhow::Result<WorkerServiceClient<Channel>> {
    let mut last = None;
    for _ in 0..20 {
        match WorkerServiceClient::connect(url.to_string()).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(anyhow!("cannot reach coordinator at {url}: {}", last.map(|e| e.to_string()).unwrap_or_default()))
}

/// The libtorch library this process has loaded (from `/proc/self/maps`), if any.
fn loaded_libtorch() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.ends_with("/libtorch_cpu.so")).map(PathBuf::from)
}

/// libtorch's version from the `torch/version.py` beside its `lib/` directory (PyTorch wheels).
fn libtorch_version(lib: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(lib.parent()?.parent()?.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split('=').nth(1)?.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// `isoflop worker --check-device`: what the worker would train on, and a matmul there.
fn check_device(requested: Option<&str>) -> CliResult {
    // Touch libtorch so that it (and its CUDA library, when linked) is loaded.
    let cuda = tch::Cuda::is_available();
    let count = tch::Cuda::device_count();
    let cudnn = tch::Cuda::cudnn_is_available();
    match loaded_libtorch() {
        Some(lib) => {
            let version = libtorch_version(&lib).unwrap_or_else(|| "unknown".into());
            println!("libtorch: {version} ({})", lib.display());
        }
        None => println!("libtorch: loaded library not found in /proc/self/maps"),
    }
    println!("built against: {}", option_env!("ISOFLOP_LIBTORCH_LIB").unwrap_or("unknown"));
    let cuda_linked = std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("libtorch_cuda.so"));
    println!("libtorch_cuda loaded: {cuda_linked}");
    println!("cuda available: {cuda}");
    println!("cuda devices: {count}");
    println!("cudnn available: {cudnn}");
    let name = requested.unwrap_or(if cuda { "cuda" } else { "cpu" });
    let device = parse_device(name).map_err(input)?;
    if let tch::Device::Cuda(i) = device {
        if !cuda {
            return Err(anyhow!("device {name} requested but CUDA is not available (libtorch_cuda loaded: {cuda_linked})").into());
        }
        if i >= count as usize {
            return Err(anyhow!("device {name} requested but only {count} CUDA device(s) are visible").into());
        }
    }
    println!("device: {name} ({device:?})");
    let a = tch::Tensor::f_from_slice(&[1f32, 2., 3., 4.])
        .and_then(|t| t.f_reshape([2, 2]))
        .and_then(|t| t.f_to_device(device))
        .context("copying a tensor to the device")?;
    let got: Vec<f32> = a
        .f_matmul(&a)
        .and_then(|p| p.f_to_device(tch::Device::Cpu))
        .and_then(|p| (0..4).map(|i| p.f_double_value(&[i / 2, i % 2]).map(|v| v as f32)).collect())
        .context("matmul on the device")?;
    let want = [7f32, 10., 15., 22.];
    if got != want {
        return Err(anyhow!("matmul on {name} gave {got:?}, expected {want:?}").into());
    }
    println!("matmul on {name}: ok {got:?}");
    Ok(())
}

async fn run(args: WorkerArgs, token: String) -> CliResult {
    let coordinator = args.coordinator.clone().ok_or_else(|| input(anyhow!("--coordinator is required")))?;
    let run_id = args.run.clone().ok_or_else(|| input(anyhow!("--run is required")))?;
    let attempt = args.attempt.ok_or_else(|| input(anyhow!("--attempt is required")))?;
    let mut client = connect(&coordinator).await?;
    let assignment = client
        .attach(authed(
            pb::AttachRequest {
                protocol_version: PROTOCOL_VERSION,
                run_id: run_id.clone(),
                attempt,
                hostname: std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().into(),
                pid: std::process::id(),
            },
            &token,
        ))
        .await
        .map_err(|s| anyhow!("attach refused: {}", s.message()))?
        .into_inner();

    let finish = |outcome: pb::finish_request::Outcome| pb::FinishRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: run_id.clone(),
        attempt,
        outcome: Some(outcome),
    };
    let fail = |class: pb::FailureClass, message: String| {
        finish(pb::finish_request::Outcome::Failure(pb::Failure { class: class as i32, message }))
    };

    let config: RunConfig = match serde_json::from_str(&assignment.run_config_json) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("assignment is not a valid run configuration: {e}");
            let _ = client.finish(authed(fail(pb::FailureClass::UserError, msg.clone()), &token)).await;
            return Err(input(anyhow!(msg)));
        }
    };
    if config.run_id().0 != run_id {
        let msg = format!("configuration hashes to {}, not run {run_id}", config.run_id());
        let _ = client.finish(authed(fail(pb::FailureClass::UserError, msg.clone()), &token)).await;
        return Err(input(anyhow!(msg)));
    }
    let device = match parse_device(&assignment.device) {
        Ok(d) => d,
        Err(e) => {
            let _ = client.finish(authed(fail(pb::FailureClass::UserError, e.to_string()), &token)).await;
            return Err(input(e));
        }
    };
    let precision = match parse_precision(&assignment.precision) {
        Ok(p) => p,
        Err(e) => {
            let _ = client.finish(authed(fail(pb::FailureClass::UserError, e.to_string()), &token)).await;
            return Err(input(e));
        }
    };
    // Resume from the newest checkpoint: the one the store knows, or a newer one on disk
    // (saved while the coordinator was not listening).
    let checkpoint_dir = PathBuf::from(&assignment.checkpoint_dir);
    let mut resume = (!assignment.resume_checkpoint.is_empty())
        .then(|| (assignment.resume_step, PathBuf::from(&assignment.resume_checkpoint)))
        .filter(|(_, p)| p.is_dir());
    if let Some((step, path)) = isoflop_train::checkpoint::latest(&checkpoint_dir)
        && resume.as_ref().is_none_or(|(s, _)| step > *s)
    {
        resume = Some((step, path));
    }
    let resumed_from = resume.as_ref().map(|(s, _)| *s).unwrap_or(0);
    eprintln!(
        "worker: run {run_id} attempt {attempt}: {} steps, {} {precision}{}",
        config.recipe.steps,
        assignment.device,
        if resumed_from > 0 { format!(", resuming from step {resumed_from}") } else { String::new() }
    );

    let peak = args.peak_flops.unwrap_or(if matches!(device, tch::Device::Cuda(_)) { 989e12 } else { 0.0 });
    let job = TrainJob {
        run_id: run_id.clone(),
        config: config.clone(),
        checkpoint_dir,
        resume_from: resume.map(|(_, p)| p),
        checkpoint_every: assignment.checkpoint_every,
        progress_every: assignment.progress_every,
        threads: assignment.threads as usize,
        device,
        micro_batch: assignment.micro_batch as usize,
        precision,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = oneshot::channel();
    let hooks = Hooks { tx, stop: stop.clone(), mfu_flops_per_token: mfu_flops_per_token(&config.model), peak_flops: peak };
    let train_stop = stop.clone();
    std::thread::Builder::new()
        .name("isoflop-train".into())
        .spawn(move || {
            let mut hooks = hooks;
            let r = isoflop_train::train(&job, &mut hooks, &train_stop);
            let _ = done_tx.send(r);
        })
        .context("cannot start the training thread")?;

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).context("SIGINT handler")?;
    let lease = Duration::from_secs(assignment.lease_seconds.max(3));
    let mut heartbeat = tokio::time::interval(Duration::from_millis(1000).min(lease / 3));
    let mut pending_progress = Vec::new();
    let mut pending_ckpts = Vec::new();
    let mut last_ok = Instant::now();
    let mut last_log = Instant::now();
    let mut revoked = false;
    let mut resumed_from = Some(resumed_from);
    let result = loop {
        tokio::select! {
            r = &mut done_rx => break r.map_err(|_| anyhow!("training thread ended without a result"))?,
            Some(m) = rx.recv() => {
                match m {
                    Msg::Progress(p) => {
                        if p.step == 0 || p.step == p.total_steps || last_log.elapsed() >= Duration::from_secs(10) {
                            eprintln!(
                                "worker: step {}/{} loss {:.4} lr {:.2e} grad-norm {:.3} {:.0} tok/s",
                                p.step, p.total_steps, p.loss, p.lr, p.grad_norm, p.tokens_per_second
                            );
                            last_log = Instant::now();
                        }
                        pending_progress.push(p)
                    }
                    Msg::Checkpoint(c) => {
                        eprintln!("worker: checkpoint at step {}: {}", c.step, c.path);
                        pending_ckpts.push(c)
                    }
                }
                continue;
            }
            _ = sigterm.recv() => { eprintln!("worker: SIGTERM: checkpointing and stopping"); stop.store(true, Ordering::SeqCst); continue; }
            _ = sigint.recv() => { eprintln!("worker: SIGINT: checkpointing and stopping"); stop.store(true, Ordering::SeqCst); continue; }
            _ = heartbeat.tick() => {}
        }
        if revoked {
            continue;
        }
        let req = pb::ReportRequest {
            protocol_version: PROTOCOL_VERSION,
            run_id: run_id.clone(),
            attempt,
            progress: std::mem::take(&mut pending_progress),
            checkpoints: std::mem::take(&mut pending_ckpts),
            resumed_from,
        };
        match client.report(authed(req.clone(), &token)).await {
            Ok(resp) => {
                last_ok = Instant::now();
                resumed_from = None;
                if resp.into_inner().stop && !stop.swap(true, Ordering::SeqCst) {
                    eprintln!("worker: coordinator asked to stop: checkpointing");
                }
            }
            Err(s) if matches!(s.code(), Code::Aborted | Code::Unauthenticated | Code::NotFound) => {
                // The attempt was ended by the coordinator (cancelled, or presumed lost).
                eprintln!("worker: attempt revoked by the coordinator ({}); stopping", s.message());
                revoked = true;
                stop.store(true, Ordering::SeqCst);
            }
            Err(s) => {
                pending_progress = req.progress;
                pending_ckpts = req.checkpoints;
                if last_ok.elapsed() > lease && !stop.swap(true, Ordering::SeqCst) {
                    eprintln!("worker: coordinator unreachable for {:?} ({}); checkpointing and stopping", lease, s.message());
                }
            }
        }
    };
    while let Ok(m) = rx.try_recv() {
        match m {
            Msg::Progress(p) => pending_progress.push(p),
            Msg::Checkpoint(c) => pending_ckpts.push(c),
        }
    }
    if revoked {
        return Err(anyhow!("attempt {attempt} of run {run_id} was revoked by the coordinator").into());
    }
    let last = pb::ReportRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: run_id.clone(),
        attempt,
        progress: pending_progress,
        checkpoints: pending_ckpts,
        resumed_from,
    };
    let _ = client.report(authed(last, &token)).await;
    let (outcome, exit): (pb::finish_request::Outcome, CliResult) = match result {
        Ok(TrainOutcome::Completed { final_loss, evals }) => {
            for e in &evals {
                eprintln!("worker: eval {}: loss {:.4} nats/token, {:.4} bits/byte", e.name, e.loss, e.bpb);
            }
            let evals = evals
                .into_iter()
                .map(|e| pb::EvalResult {
                    distribution: e.name,
                    loss: e.loss,
                    bits_per_byte: e.bpb,
                    tokens: e.tokens,
                    bytes: e.bytes.round() as u64,
                })
                .collect();
            (pb::finish_request::Outcome::Success(pb::Success { final_loss, evals }), Ok(()))
        }
        Ok(TrainOutcome::Stopped { step, checkpoint }) => (
            pb::finish_request::Outcome::Interrupted(pb::Interrupted {
                checkpoint_step: step,
                checkpoint_path: checkpoint.display().to_string(),
            }),
            Ok(()),
        ),
        Ok(TrainOutcome::Diverged { step, loss }) => {
            let msg = format!("loss became {loss} at step {step}");
            (
                pb::finish_request::Outcome::Failure(pb::Failure {
                    class: pb::FailureClass::Diverged as i32,
                    message: msg.clone(),
                }),
                Err(anyhow!(msg).into()),
            )
        }
        Err(e) => {
            let class = classify(&e);
            let msg = e.to_string();
            (
                pb::finish_request::Outcome::Failure(pb::Failure { class: class as i32, message: msg.clone() }),
                Err(anyhow!(msg).into()),
            )
        }
    };
    // A coordinator that is restarting (a cluster deployment, a rolling update) comes back
    // within the lease; the outcome is worth waiting for.
    let req = finish(outcome);
    let deadline = Instant::now() + lease;
    loop {
        match client.finish(authed(req.clone(), &token)).await {
            Ok(_) => break,
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                eprintln!("worker: coordinator unreachable ({}); retrying the outcome", s.message());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(s) => return Err(anyhow!("finish refused: {}", s.message()).into()),
        }
    }
    exit
}

/// Failure class of a training error.
fn classify(e: &TrainError) -> pb::FailureClass {
    if e.is_user_error() {
        return pb::FailureClass::UserError;
    }
    let msg = e.to_string();
    // libtorch reports allocation failures only as text; this is the one place we read it.
    if msg.contains("out of memory") || msg.contains("DefaultCPUAllocator: can't allocate") {
        pb::FailureClass::Oom
    } else {
        pb::FailureClass::Unknown
    }
}
