//! The executor of a coordinator that only answers control calls.

use super::{ExecutorError, LaunchSpec};

/// The executor of a coordinator that schedules nothing: `isoflop status`, `logs`, `cancel` and
/// `resume --no-run` on a local store run an in-process coordinator over the store with it
/// (the scheduler never starts). It launches nothing, and stopping reaches no worker: the
/// workers of a store belong to the `isoflop run` that launched them, and learn of a
/// cancellation at their next report, which the store then refuses. A store whose sweep runs
/// on Kubernetes gets the real Kubernetes executor instead when a command acts on the cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detached;

#[async_trait::async_trait]
impl super::Executor for Detached {
    fn slots(&self) -> usize {
        0
    }
    fn launch(&self, _spec: &LaunchSpec) -> Result<String, ExecutorError> {
        Err(ExecutorError::Detached)
    }
    fn stop(&self, _run_id: &str, _attempt: u64) {}
    fn kill(&self, _run_id: &str, _attempt: u64) {}
    fn is_tracking(&self, _run_id: &str, _attempt: u64) -> bool {
        false
    }
    fn stop_orphan(&self, _orphan: &super::Orphan<'_>) {}
}
