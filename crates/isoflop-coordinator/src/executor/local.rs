//! The embedded default: each attempt is an `isoflop worker` process on this machine.
//!
//! Workers run in their own process group (a Ctrl-C at the terminal reaches only the
//! coordinator, which then stops them in order), write stdout and stderr to the attempt's log
//! file, and get the coordinator URL and their token through the environment.

use super::{ExecutorError, ExecutorEvent, ExitReport, LaunchSpec, Orphan};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use isoflop_proto::env::{ATTEMPT as ENV_ATTEMPT, COORDINATOR as ENV_COORDINATOR, RUN_ID as ENV_RUN_ID, TOKEN as ENV_TOKEN};

/// Spawns `isoflop worker` processes.
pub struct LocalExecutor {
    program: PathBuf,
    slots: usize,
    /// Live workers by (run, attempt): their process ids (never 0).
    children: Arc<Mutex<HashMap<(String, u64), u32>>>,
    exits: mpsc::UnboundedSender<ExecutorEvent>,
}

impl LocalExecutor {
    /// `program` is the `isoflop` binary; at most `slots` workers run at once.
    pub fn new(program: PathBuf, slots: usize, exits: mpsc::UnboundedSender<ExecutorEvent>) -> Self {
        Self { program, slots, children: Arc::default(), exits }
    }

    fn signal(&self, run_id: &str, attempt: u64, sig: Signal) {
        let pid = self.children.lock().unwrap_or_else(|p| p.into_inner()).get(&(run_id.to_string(), attempt)).copied();
        if let Some(pid) = pid {
            send(pid as i32, sig);
        }
    }
}

/// How long an orphaned worker may take to stop after SIGTERM.
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The process id in a stored executor reference (`pid:N`).
fn orphan_pid(executor_ref: &str) -> Option<i32> {
    executor_ref.strip_prefix("pid:").and_then(|p| p.parse::<i32>().ok()).filter(|p| *p > 0)
}

/// Whether process `pid` exists and has not exited (a zombie has).
fn is_running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `PID (COMM) STATE ...`: the state follows the last parenthesis.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

/// Whether `pid` is a running `isoflop worker` of the attempt.
fn is_worker_of(pid: i32, run_id: &str, attempt: u64) -> bool {
    if !is_running(pid) {
        return false;
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let (run, att) = (format!("{ENV_RUN_ID}={run_id}"), format!("{ENV_ATTEMPT}={attempt}"));
    let has = |want: &str| environ.split(|b| *b == 0).any(|kv| kv == want.as_bytes());
    has(&run) && has(&att)
}

/// The worker process of an earlier coordinator's attempt: the one its stored reference
/// names, or, when that coordinator died before storing it, the one `/proc` shows with the
/// attempt's run and number in its environment.
fn orphan_process(orphan: &Orphan<'_>) -> Option<i32> {
    if let Some(pid) = orphan_pid(orphan.executor_ref) {
        // Only while it still is that attempt's worker (pids are reused).
        return is_worker_of(pid, orphan.run_id, orphan.attempt).then_some(pid);
    }
    let own = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .find(|pid| *pid != own && is_worker_of(*pid, orphan.run_id, orphan.attempt))
}

/// Sends a signal; a process that is already gone is not an error.
fn send(pid: i32, sig: Signal) {
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, signal = %sig, "cannot signal the worker: {e}"),
    }
}

#[async_trait::async_trait]
impl super::Executor for LocalExecutor {
    fn slots(&self) -> usize {
        self.slots
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecutorError> {
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ExecutorError::Log { path: dir.to_path_buf(), source })?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(|source| ExecutorError::Log { path: spec.log_path.clone(), source })?;
        let log2 = log.try_clone().map_err(|source| ExecutorError::Log { path: spec.log_path.clone(), source })?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("worker")
            .env(ENV_COORDINATOR, &spec.coordinator_url)
            .env(ENV_RUN_ID, &spec.run_id)
            .env(ENV_ATTEMPT, spec.attempt.to_string())
            .env(ENV_TOKEN, &spec.token)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|source| ExecutorError::Spawn { run_id: spec.run_id.clone(), source })?;
        // A child without a pid has already been reaped: there is nothing to signal, and a
        // pid of 0 would signal this whole process group.
        let Some(pid) = child.id().filter(|p| *p != 0) else {
            return Err(ExecutorError::NoPid { run_id: spec.run_id.clone() });
        };
        let key = (spec.run_id.clone(), spec.attempt);
        self.children.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), pid);
        let children = self.children.clone();
        let exits = self.exits.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            children.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            let (code, signal) = match status {
                Ok(s) => (s.code(), s.signal()),
                Err(_) => (None, None),
            };
            // The receiver is gone only when the coordinator has stopped; nobody is left to tell.
            let _ = exits.send(ExitReport { run_id: key.0, attempt: key.1, code, signal, ..ExitReport::default() }.into());
        });
        Ok(format!("pid:{pid}"))
    }

    fn stop(&self, run_id: &str, attempt: u64) {
        self.signal(run_id, attempt, Signal::SIGTERM);
    }

    fn kill(&self, run_id: &str, attempt: u64) {
        self.signal(run_id, attempt, Signal::SIGKILL);
    }

    fn is_tracking(&self, run_id: &str, attempt: u64) -> bool {
        self.children.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&(run_id.to_string(), attempt))
    }

    fn orphan_alive(&self, orphan: &Orphan<'_>) -> bool {
        orphan_process(orphan).is_some()
    }

    /// SIGTERM, then waits for the worker to exit (it checkpoints and gives up on its lost
    /// coordinator within seconds), SIGKILL after [`ORPHAN_GRACE`]: the attempt that replaces
    /// it never trains beside it, nor reads a checkpoint directory it still writes. Blocks.
    fn stop_orphan(&self, orphan: &Orphan<'_>) {
        let Some(pid) = orphan_process(orphan) else { return };
        let run_id = orphan.run_id;
        send(pid, Signal::SIGTERM);
        let started = std::time::Instant::now();
        let mut killed = false;
        // Until it is gone (exiting, it loses its environment before its process entry).
        while is_running(pid) {
            if !killed && started.elapsed() > ORPHAN_GRACE {
                tracing::warn!(pid, run_id, "the orphaned worker did not stop in {ORPHAN_GRACE:?}; killing it");
                send(pid, Signal::SIGKILL);
                killed = true;
            }
            if started.elapsed() > super::ORPHAN_STOP_LIMIT {
                tracing::error!(pid, run_id, "the orphaned worker outlived SIGKILL; resuming the run anyway");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        tracing::info!(pid, run_id, "the orphaned worker exited after {:.1} s", started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Executor;

    /// A process standing in for a worker: `sleep` with a worker's environment.
    fn fake_worker(run_id: &str, attempt: u64) -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("60")
            .env(ENV_RUN_ID, run_id)
            .env(ENV_ATTEMPT, attempt.to_string())
            .spawn()
            .unwrap()
    }

    /// Found by the chaos drill (one moment of two live workers in 150 coordinator kills): a
    /// coordinator killed between starting a worker and storing its pid left an attempt with
    /// no reference; its successor took the worker for gone and started the next attempt beside
    /// it. The worker is now found by its run and attempt and stopped first.
    #[test]
    fn an_orphan_whose_pid_was_never_stored_is_found_and_stopped() {
        let run_id = format!("r-orphan-{}", std::process::id());
        let mut worker = fake_worker(&run_id, 3);
        let (tx, _rx) = mpsc::unbounded_channel();
        let exec = LocalExecutor::new(PathBuf::from("isoflop"), 1, tx);
        let unnamed = Orphan { run_id: &run_id, attempt: 3, executor_ref: "" };
        // /proc shows the new process's environment once it has exec'd.
        let t0 = std::time::Instant::now();
        while !exec.orphan_alive(&unnamed) {
            assert!(t0.elapsed().as_secs() < 10, "the unnamed worker was not found");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Another attempt of the run, another run, and a stored pid that is not that attempt's
        // worker are not it.
        assert!(!exec.orphan_alive(&Orphan { attempt: 2, ..unnamed }));
        assert!(!exec.orphan_alive(&Orphan { run_id: "r-other", ..unnamed }));
        let own = format!("pid:{}", std::process::id());
        assert!(!exec.orphan_alive(&Orphan { executor_ref: &own, ..unnamed }));
        let named = format!("pid:{}", worker.id());
        assert!(exec.orphan_alive(&Orphan { executor_ref: &named, ..unnamed }));

        exec.stop_orphan(&unnamed);
        let status = worker.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "stopped with SIGTERM: {status}");
        assert!(!exec.orphan_alive(&unnamed));
    }
}
