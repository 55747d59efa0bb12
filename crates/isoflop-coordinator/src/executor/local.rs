//! The embedded default: each attempt is an `isoflop worker` process on this machine.
//!
//! Workers run in their own process group (a Ctrl-C at the terminal reaches only the
//! coordinator, which then stops them in order), write stdout and stderr to the attempt's log
//! file, and get the coordinator URL and their token through the environment.

use super::{ExecutorError, ExecutorEvent, ExitReport, LaunchSpec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Environment variable with the coordinator URL.
pub const ENV_COORDINATOR: &str = "ISOFLOP_COORDINATOR";
/// Environment variable with the run id.
pub const ENV_RUN_ID: &str = "ISOFLOP_RUN_ID";
/// Environment variable with the attempt number.
pub const ENV_ATTEMPT: &str = "ISOFLOP_ATTEMPT";
/// Environment variable with the attempt's bearer token.
pub const ENV_TOKEN: &str = "ISOFLOP_RUN_TOKEN";

/// Spawns `isoflop worker` processes.
pub struct LocalExecutor {
    program: PathBuf,
    slots: usize,
    extra_env: Vec<(String, String)>,
    children: Arc<Mutex<HashMap<(String, u64), u32>>>,
    exits: mpsc::UnboundedSender<ExecutorEvent>,
}

impl LocalExecutor {
    /// `program` is the `isoflop` binary; at most `slots` workers run at once.
    pub fn new(program: PathBuf, slots: usize, exits: mpsc::UnboundedSender<ExecutorEvent>) -> Self {
        Self { program, slots, extra_env: Vec::new(), children: Arc::default(), exits }
    }

    /// Adds an environment variable to every worker (tests use it to inject faults).
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    fn signal(&self, run_id: &str, attempt: u64, sig: Signal) {
        let pid = self.children.lock().unwrap_or_else(|p| p.into_inner()).get(&(run_id.to_string(), attempt)).copied();
        if let Some(pid) = pid {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }
}

impl super::Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

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
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|source| ExecutorError::Spawn { run_id: spec.run_id.clone(), source })?;
        let pid = child.id().unwrap_or(0);
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

    fn stop_orphan(&self, executor_ref: &str, run_id: &str) {
        let Some(pid) = executor_ref.strip_prefix("pid:").and_then(|p| p.parse::<i32>().ok()) else { return };
        // Only signal the process if it still is a worker of this run (pids are reused).
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let needle = format!("{ENV_RUN_ID}={run_id}");
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}
