//! The client side of `isoflop serve`: `submit`, `watch`, and `status`, `logs`, `cancel`,
//! `resume` with `--coordinator URL`, over the control API.

use crate::Format;
use crate::cmd_status::{print_status, summary_line};
use crate::exit::{CliError, CliResult, input};
use anyhow::{Context, anyhow};
use isoflop_coordinator::coordinator::class_from_pb;
use isoflop_core::spec::SweepSpec;
use isoflop_core::{FailureClass, RunState};
use isoflop_proto::v1 as pb;
use isoflop_proto::v1::control_service_client::ControlServiceClient;
use isoflop_store::{EvalRow, RunRow};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Which coordinator to talk to, and the admin token it wants.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// URL of an `isoflop serve` coordinator; without it, commands read the local store.
    #[arg(long, env = "ISOFLOP_COORDINATOR")]
    pub coordinator: Option<String>,
    /// File holding the coordinator's admin token (or set ISOFLOP_TOKEN to the token itself).
    #[arg(long, env = "ISOFLOP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// A connection to a coordinator's control API.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    client: ControlServiceClient<Channel>,
    token: Option<String>,
    url: String,
}

/// A gRPC error as a CLI error: the caller's mistakes exit 2, the rest 1.
fn rpc(url: &str, s: tonic::Status) -> CliError {
    use tonic::Code::*;
    match s.code() {
        InvalidArgument | NotFound | AlreadyExists | Unauthenticated | PermissionDenied | FailedPrecondition => {
            input(anyhow!("{}", s.message()))
        }
        Unavailable => anyhow!("cannot reach the coordinator at {url}: {}", s.message()).into(),
        _ => anyhow!("coordinator at {url}: {}", s.message()).into(),
    }
}

impl Remote {
    pub fn connect(args: &RemoteArgs) -> Result<Remote, CliError> {
        let url =
            args.coordinator.clone().ok_or_else(|| input(anyhow!("--coordinator URL (or ISOFLOP_COORDINATOR) is required")))?;
        let token = match (&args.token_file, std::env::var("ISOFLOP_TOKEN").ok().filter(|t| !t.is_empty())) {
            (Some(f), _) => {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read token file {}", f.display()))
                    .map_err(input)?;
                Some(t.trim().to_string())
            }
            (None, t) => t,
        };
        let endpoint = Channel::from_shared(url.clone()).map_err(|e| input(anyhow!("bad coordinator URL `{url}`: {e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
        let channel = rt
            .block_on(endpoint.connect_timeout(Duration::from_secs(10)).connect())
            .map_err(|e| anyhow!("cannot reach the coordinator at {url}: {e}"))?;
        Ok(Remote { rt, client: ControlServiceClient::new(channel), token, url })
    }

    fn req<T>(&self, m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        if let Some(t) = &self.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    fn runs(&mut self, sweep: &str) -> Result<Vec<pb::RunSummary>, CliError> {
        let req = self.req(pb::ListRunsRequest { sweep: sweep.into() });
        let r = self.rt.block_on(self.client.list_runs(req)).map_err(|s| rpc(&self.url, s))?;
        Ok(r.into_inner().runs)
    }
}

fn run_state(v: i32) -> RunState {
    match pb::RunState::try_from(v).unwrap_or(pb::RunState::Unspecified) {
        pb::RunState::Queued => RunState::Queued,
        pb::RunState::Blocked => RunState::Blocked,
        pb::RunState::Launching => RunState::Launching,
        pb::RunState::Running => RunState::Running,
        pb::RunState::Succeeded => RunState::Succeeded,
        pb::RunState::Failed => RunState::Failed,
        pb::RunState::Cancelled => RunState::Cancelled,
        pb::RunState::Planned | pb::RunState::Unspecified => RunState::Planned,
    }
}

fn failure_class(v: i32) -> Option<FailureClass> {
    (v != pb::FailureClass::Unspecified as i32).then(|| class_from_pb(v))
}

/// A run summary as the rows the local status tables read.
fn run_row(s: &pb::RunSummary) -> (RunRow, Vec<EvalRow>) {
    let row = RunRow {
        run_id: s.run_id.clone(),
        name: s.name.clone(),
        corpus: s.corpus.clone(),
        budget: s.budget,
        config_json: s.config_json.clone(),
        state: run_state(s.state),
        failure_class: failure_class(s.failure_class),
        message: s.message.clone(),
        attempts: s.attempts,
        retries_used: 0,
        not_before_ms: 0,
        updated_ms: 0,
        progress: s.progress.as_ref().map(|p| isoflop_coordinator::convert::progress_row(p, s.attempts, 0)),
    };
    (row, s.evals.iter().map(isoflop_coordinator::convert::eval_row).collect())
}

/// `isoflop submit SPEC --coordinator URL`.
pub fn submit(spec_path: &Path, args: &RemoteArgs) -> CliResult {
    // Check it here first: a bad spec is refused with its line and key before any network.
    let loaded = SweepSpec::load(spec_path).map_err(input)?;
    let path = std::path::absolute(spec_path).unwrap_or_else(|_| spec_path.to_path_buf());
    let mut remote = Remote::connect(args)?;
    let req = remote.req(pb::SubmitSweepRequest { spec_yaml: loaded.text.clone(), spec_path: path.display().to_string() });
    let r = remote.rt.block_on(remote.client.submit_sweep(req)).map_err(|s| rpc(&remote.url, s))?.into_inner();
    let runs = remote.runs(&r.sweep)?;
    let done = runs.iter().filter(|s| run_state(s.state) == RunState::Succeeded).count();
    println!(
        "submitted sweep {} to {}: {} runs ({} already succeeded, {} shared with earlier sweeps)",
        r.sweep, remote.url, r.runs, done, r.reused_runs
    );
    if !r.note.is_empty() {
        println!("{}", r.note);
    }
    println!("`isoflop watch {} --coordinator {}` follows it", r.sweep, remote.url);
    Ok(())
}

/// `isoflop status SWEEP --coordinator URL`.
pub fn status(sweep: Option<&str>, format: Format, args: &RemoteArgs) -> CliResult {
    let sweep =
        sweep.ok_or_else(|| input(anyhow!("with --coordinator, name the sweep: `isoflop status SWEEP --coordinator URL`")))?;
    let mut remote = Remote::connect(args)?;
    let (runs, evals): (Vec<RunRow>, Vec<Vec<EvalRow>>) = remote.runs(sweep)?.iter().map(run_row).unzip();
    print_status(sweep, &runs, &evals, format)
}

/// `isoflop logs RUN --coordinator URL`: the log files as the coordinator reads them.
pub fn logs(run: &str, attempt: Option<u64>, args: &RemoteArgs) -> CliResult {
    let mut remote = Remote::connect(args)?;
    let req = remote.req(pb::GetRunLogsRequest { run: run.into(), attempt: attempt.unwrap_or(0) });
    let r = remote.rt.block_on(remote.client.get_run_logs(req)).map_err(|s| rpc(&remote.url, s))?.into_inner();
    if r.logs.is_empty() {
        return Err(input(anyhow!("run {} ({}) has not started yet", r.name, r.run_id)));
    }
    for l in r.logs {
        println!("==> {} attempt {}: {} (on the coordinator) <==", r.name, l.attempt, l.path);
        if l.error.is_empty() {
            print!("{}", l.text);
        } else {
            println!("(no log: {})", l.error);
        }
    }
    Ok(())
}

/// `isoflop cancel TARGET [--run] --coordinator URL`.
pub fn cancel(target: &str, run: bool, args: &RemoteArgs) -> CliResult {
    let mut remote = Remote::connect(args)?;
    let r = if run {
        let req = remote.req(pb::CancelRunRequest { run_id: target.into() });
        remote.rt.block_on(remote.client.cancel_run(req))
    } else {
        let req = remote.req(pb::CancelSweepRequest { sweep: target.into() });
        remote.rt.block_on(remote.client.cancel_sweep(req))
    };
    let n = r.map_err(|s| rpc(&remote.url, s))?.into_inner().cancelled;
    println!("cancelled {n} run(s)");
    Ok(())
}

/// `isoflop resume SWEEP --coordinator URL`: requeues; the coordinator runs them.
pub fn resume(sweep: &str, include_diverged: bool, args: &RemoteArgs) -> CliResult {
    let mut remote = Remote::connect(args)?;
    let req = remote.req(pb::ResumeSweepRequest { sweep: sweep.into(), include_diverged });
    let n = remote.rt.block_on(remote.client.resume_sweep(req)).map_err(|s| rpc(&remote.url, s))?.into_inner().requeued;
    println!("requeued {n} run(s) of sweep {sweep}; the coordinator at {} runs them", remote.url);
    Ok(())
}

/// One line for an event, or `None` for events not worth a line.
fn event_line(ev: &pb::RunEvent, names: &HashMap<String, String>) -> Option<String> {
    let name = names.get(&ev.run_id).cloned().unwrap_or_else(|| ev.run_id.clone());
    Some(match ev.event.as_ref()? {
        pb::run_event::Event::State(s) => {
            let mut line = format!("{name}: {} -> {}", run_state(s.from), run_state(s.to));
            if let Some(c) = failure_class(s.failure_class) {
                line.push_str(&format!(" ({c})"));
            }
            if !s.message.is_empty() {
                line.push_str(&format!(": {}", s.message));
            }
            line
        }
        pb::run_event::Event::Progress(p) => format!(
            "{name}: step {}/{} loss {:.4} {} tok/s",
            p.step,
            p.total_steps,
            p.loss,
            crate::table::count(p.tokens_per_second as u64)
        ),
        pb::run_event::Event::Eval(e) => {
            format!("{name}: eval {} loss {:.4} ({:.4} bits/byte)", e.distribution, e.loss, e.bits_per_byte)
        }
    })
}

/// `isoflop watch SWEEP --coordinator URL`: one line per event until every run of the sweep
/// has finished; exit code 0 when all succeeded, 1 otherwise.
pub fn watch(sweep: &str, args: &RemoteArgs) -> CliResult {
    let mut remote = Remote::connect(args)?;
    let started = Instant::now();
    let rows = |runs: &[pb::RunSummary]| runs.iter().map(|s| run_row(s).0).collect::<Vec<_>>();
    loop {
        // Subscribe first, then read the current state: no event falls in between.
        let req = remote.req(pb::WatchSweepRequest { sweep: sweep.into() });
        let mut stream = remote.rt.block_on(remote.client.watch_sweep(req)).map_err(|s| rpc(&remote.url, s))?.into_inner();
        let mut runs = rows(&remote.runs(sweep)?);
        let names: HashMap<String, String> = runs.iter().map(|r| (r.run_id.clone(), r.name.clone())).collect();
        println!("{}", summary_line(sweep, &runs));
        let mut resync = remote.rt.block_on(async { tokio::time::interval(Duration::from_secs(5)) });
        let lost = loop {
            if runs.iter().all(|r| r.state.is_terminal()) {
                let failed = runs.iter().filter(|r| r.state != RunState::Succeeded).count();
                println!("{}  elapsed {}", summary_line(sweep, &runs), crate::table::duration(started.elapsed().as_secs_f64()));
                return if failed == 0 {
                    Ok(())
                } else {
                    Err(anyhow!("{failed} run(s) of sweep {sweep} did not succeed").into())
                };
            }
            let next = remote.rt.block_on(async {
                tokio::select! {
                    m = stream.message() => Next::Message(m),
                    _ = resync.tick() => Next::Resync,
                    _ = tokio::signal::ctrl_c() => Next::Interrupted,
                }
            });
            match next {
                // Periodically re-read the state, in case an event was missed.
                Next::Resync => runs = rows(&remote.runs(sweep)?),
                Next::Interrupted => return Err(CliError::Interrupted),
                Next::Message(Ok(Some(ev))) => {
                    if let Some(line) = event_line(&ev, &names) {
                        println!("{line}");
                    }
                    if let Some(pb::run_event::Event::State(s)) = &ev.event
                        && let Some(r) = runs.iter_mut().find(|r| r.run_id == ev.run_id)
                    {
                        r.state = run_state(s.to);
                    }
                }
                Next::Message(Ok(None)) => break true,
                Next::Message(Err(s)) if s.code() == tonic::Code::DataLoss => break false,
                Next::Message(Err(s)) => return Err(rpc(&remote.url, s)),
            }
        };
        if lost {
            return Err(anyhow!("the coordinator at {} closed the stream (shutting down?)", remote.url).into());
        }
        println!("(fell behind the coordinator's events; re-reading the state)");
    }
}

enum Next {
    Message(Result<Option<pb::RunEvent>, tonic::Status>),
    Resync,
    Interrupted,
}
