//! Workers started by a launcher outside isoflop (a batch system's submit script, a load
//! generator), handed their attempts through a spool directory.
//!
//! The protocol, all in `SPOOL/`:
//! - `pending/RUN-ATTEMPT.json`: written (atomically, mode 0600: it holds the attempt's token)
//!   when the coordinator launches an attempt: an [`ExternalLaunch`].
//! - A launcher takes one by renaming it into `taken/` (a rename has one winner, so two
//!   launchers never start one attempt), starts `isoflop worker` with the file's `env`, and
//!   deletes `taken/RUN-ATTEMPT.json` once the worker has exited.
//! - `stop/RUN-ATTEMPT`: the coordinator asks the worker to checkpoint and stop (the launcher
//!   sends it SIGTERM); the text is `stop` or `kill` (SIGKILL). Workers learn of a stop at their
//!   next report too, so a launcher that ignores these files only delays it.
//!
//! The coordinator never sees these workers exit: an attempt whose worker died silently ends
//! when its lease runs out. They outlive the coordinator (a restarted one adopts every attempt
//! whose file is still pending or taken).

use super::{ExecutorError, LaunchSpec};
use isoflop_proto::env::{ATTEMPT, COORDINATOR, RUN_ID, TOKEN};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What `pending/RUN-ATTEMPT.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalLaunch {
    pub run_id: String,
    pub attempt: u64,
    pub sweep: String,
    /// An evaluation job (a launcher may give it other resources than training).
    pub eval: bool,
    /// CPU threads the worker should have.
    pub threads: u64,
    /// Where the worker's stdout and stderr belong.
    pub log_path: PathBuf,
    /// The environment of `isoflop worker`: coordinator URL, run, attempt and token.
    pub env: BTreeMap<String, String>,
}

/// Hands attempts to an outside launcher through a spool directory.
pub struct ExternalExecutor {
    spool: PathBuf,
    slots: usize,
    threads: u64,
}

const PENDING: &str = "pending";
const TAKEN: &str = "taken";
const STOP: &str = "stop";

impl ExternalExecutor {
    /// Creates `spool`'s directories; at most `slots` attempts are handed out at once.
    pub fn new(spool: PathBuf, slots: usize, threads: u64) -> Result<Self, ExecutorError> {
        for d in [PENDING, TAKEN, STOP] {
            let dir = spool.join(d);
            std::fs::create_dir_all(&dir).map_err(|source| ExecutorError::Spool { path: dir.clone(), source })?;
        }
        Ok(Self { spool, slots, threads })
    }

    fn name(run_id: &str, attempt: u64) -> String {
        format!("{run_id}-{attempt}")
    }

    fn file(&self, dir: &str, run_id: &str, attempt: u64) -> PathBuf {
        self.spool.join(dir).join(format!("{}.json", Self::name(run_id, attempt)))
    }

    fn ask(&self, run_id: &str, attempt: u64, what: &str) {
        let path = self.spool.join(STOP).join(Self::name(run_id, attempt));
        if let Err(e) = std::fs::write(&path, what) {
            tracing::warn!(run_id, attempt, "cannot write {}: {e}", path.display());
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, mode 0600.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[async_trait::async_trait]
impl super::Executor for ExternalExecutor {
    fn slots(&self) -> usize {
        self.slots
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecutorError> {
        let env = BTreeMap::from([
            (COORDINATOR.to_string(), spec.coordinator_url.clone()),
            (RUN_ID.to_string(), spec.run_id.clone()),
            (ATTEMPT.to_string(), spec.attempt.to_string()),
            (TOKEN.to_string(), spec.token.clone()),
        ]);
        let launch = ExternalLaunch {
            run_id: spec.run_id.clone(),
            attempt: spec.attempt,
            sweep: spec.sweep.clone(),
            eval: spec.eval,
            threads: self.threads,
            log_path: spec.log_path.clone(),
            env,
        };
        let path = self.file(PENDING, &spec.run_id, spec.attempt);
        let bytes = serde_json::to_vec_pretty(&launch).expect("a launch serialises");
        write_atomically(&path, &bytes).map_err(|source| ExecutorError::Spool { path: path.clone(), source })?;
        Ok(format!("spool:{}", Self::name(&spec.run_id, spec.attempt)))
    }

    fn stop(&self, run_id: &str, attempt: u64) {
        if self.is_tracking(run_id, attempt) {
            self.ask(run_id, attempt, "stop");
        }
    }

    fn kill(&self, run_id: &str, attempt: u64) {
        // Not taken yet: nobody starts it now.
        let _ = std::fs::remove_file(self.file(PENDING, run_id, attempt));
        if self.file(TAKEN, run_id, attempt).exists() {
            self.ask(run_id, attempt, "kill");
        }
    }

    fn is_tracking(&self, run_id: &str, attempt: u64) -> bool {
        self.file(PENDING, run_id, attempt).exists() || self.file(TAKEN, run_id, attempt).exists()
    }

    /// Adopted attempts are tracked; one that is not has no file left to act on.
    fn stop_orphan(&self, _orphan: &super::Orphan<'_>) {}

    fn forget_runs(&self, run_ids: &[String]) {
        let Ok(entries) = std::fs::read_dir(self.spool.join(PENDING)) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if run_ids.iter().any(|r| name.starts_with(&format!("{r}-"))) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn survives_restart(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Executor;

    fn spec(run: &str, attempt: u64) -> LaunchSpec {
        LaunchSpec {
            run_id: run.into(),
            sweep: "s".into(),
            attempt,
            token: "secret".into(),
            coordinator_url: "http://127.0.0.1:7700".into(),
            log_path: PathBuf::from("/runs/r/logs/attempt-1.log"),
            artifacts_key: run.into(),
            eval: false,
        }
    }

    #[test]
    fn launches_are_spooled_taken_stopped_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let x = ExternalExecutor::new(dir.path().join("spool"), 4, 2).unwrap();
        assert_eq!(x.launch(&spec("r1", 1)).unwrap(), "spool:r1-1");
        let pending = dir.path().join("spool/pending/r1-1.json");
        let launch: ExternalLaunch = serde_json::from_slice(&std::fs::read(&pending).unwrap()).unwrap();
        assert_eq!((launch.threads, launch.env[TOKEN].as_str(), launch.env[ATTEMPT].as_str()), (2, "secret", "1"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777, 0o600, "it holds a token");
        assert!(x.is_tracking("r1", 1));
        // A launcher takes it; a stop asks it through the stop file.
        std::fs::rename(&pending, dir.path().join("spool/taken/r1-1.json")).unwrap();
        assert!(x.is_tracking("r1", 1));
        x.stop("r1", 1);
        assert_eq!(std::fs::read_to_string(dir.path().join("spool/stop/r1-1")).unwrap(), "stop");
        x.kill("r1", 1);
        assert_eq!(std::fs::read_to_string(dir.path().join("spool/stop/r1-1")).unwrap(), "kill");
        // The worker exited: the launcher removed its file; nothing is tracked.
        std::fs::remove_file(dir.path().join("spool/taken/r1-1.json")).unwrap();
        assert!(!x.is_tracking("r1", 1));
        // A pending launch of a cancelled run is withdrawn; a kill withdraws one too.
        x.launch(&spec("r2", 1)).unwrap();
        x.launch(&spec("r3", 1)).unwrap();
        x.forget_runs(&["r2".into()]);
        x.kill("r3", 1);
        assert!(!x.is_tracking("r2", 1) && !x.is_tracking("r3", 1));
    }
}
