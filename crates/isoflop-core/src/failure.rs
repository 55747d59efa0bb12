//! Failure classes: why an attempt ended badly, and what the coordinator does about it.

use crate::state::RunState;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why an attempt failed. Travels on the wire as the proto enum `FailureClass` and in the
/// store as its [`FailureClass::as_str`] name; retry policy matches on it, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The worker was stopped from outside the sweep (SIGTERM from a cluster's preemption or
    /// eviction, or from a person).
    Preempted,
    /// The worker's machine or its lease disappeared.
    NodeLost,
    /// The worker ran out of memory.
    Oom,
    /// The loss became NaN/inf or blew up; the result is excluded from fits.
    Diverged,
    /// Bad configuration or data; retrying cannot help.
    UserError,
    /// Anything else (crash, killed by a signal, non-zero exit without a report).
    Unknown,
    /// The sweep's own coordinator stopped it: Ctrl-C of `isoflop run`, a drain of `isoflop
    /// serve`, or a coordinator that restarted.
    Interrupted,
}

/// What the coordinator does after a failure of a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Requeue at once; does not spend the run's retry budget.
    Free,
    /// Requeue after exponential back-off; spends one retry.
    Counted,
    /// The run ends failed.
    Never,
}

impl FailureClass {
    /// All classes, in wire order.
    pub const ALL: [FailureClass; 7] = [
        FailureClass::Preempted,
        FailureClass::NodeLost,
        FailureClass::Oom,
        FailureClass::Diverged,
        FailureClass::UserError,
        FailureClass::Unknown,
        FailureClass::Interrupted,
    ];

    /// Stable lowercase name (store column, CLI output).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Preempted => "preempted",
            FailureClass::NodeLost => "node_lost",
            FailureClass::Oom => "oom",
            FailureClass::Diverged => "diverged",
            FailureClass::UserError => "user_error",
            FailureClass::Unknown => "unknown",
            FailureClass::Interrupted => "interrupted",
        }
    }

    /// The retry policy of this class.
    pub fn retry_policy(self) -> RetryPolicy {
        match self {
            FailureClass::Preempted | FailureClass::NodeLost | FailureClass::Interrupted => RetryPolicy::Free,
            FailureClass::Oom | FailureClass::Unknown => RetryPolicy::Counted,
            FailureClass::Diverged | FailureClass::UserError => RetryPolicy::Never,
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureClass::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| format!("unknown failure class `{s}`"))
    }
}

/// A run's retry settings: how many counted retries it has, and the first back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Counted retries per run.
    pub max: u64,
    /// First back-off of a counted retry; each further one doubles it (capped at 5 minutes).
    pub backoff_base: Duration,
}

/// The decision after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryDecision {
    /// `queued` (retry) or `failed` (final).
    pub next: RunState,
    /// Wait this long before launching again.
    pub delay: Duration,
    /// Whether this retry spends one of the run's retries.
    pub spend_retry: bool,
}

/// Longest back-off of a counted retry.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Decides whether and when to retry a run whose attempt failed with `class`, having already
/// spent `retries_used` of its retries: a pure function of the class and the budget. Counted
/// retries back off exponentially from `retries.backoff_base`, capped at [`MAX_BACKOFF`].
pub fn after_failure(class: FailureClass, retries_used: u64, retries: Retries) -> RetryDecision {
    match class.retry_policy() {
        RetryPolicy::Free => RetryDecision { next: RunState::Queued, delay: Duration::ZERO, spend_retry: false },
        RetryPolicy::Counted if retries_used < retries.max => {
            let factor = 1u32 << retries_used.min(16) as u32;
            let delay = retries.backoff_base.saturating_mul(factor).min(MAX_BACKOFF);
            RetryDecision { next: RunState::Queued, delay, spend_retry: true }
        }
        RetryPolicy::Counted | RetryPolicy::Never => {
            RetryDecision { next: RunState::Failed, delay: Duration::ZERO, spend_retry: false }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_decisions() {
        let r = |max| Retries { max, backoff_base: Duration::from_secs(2) };
        for c in [FailureClass::Preempted, FailureClass::NodeLost] {
            let d = after_failure(c, 99, r(3));
            assert_eq!((d.next, d.spend_retry, d.delay), (RunState::Queued, false, Duration::ZERO));
        }
        let d = after_failure(FailureClass::Unknown, 0, r(3));
        assert_eq!((d.next, d.spend_retry, d.delay), (RunState::Queued, true, Duration::from_secs(2)));
        assert_eq!(after_failure(FailureClass::Oom, 2, r(3)).delay, Duration::from_secs(8));
        assert_eq!(after_failure(FailureClass::Unknown, 3, r(3)).next, RunState::Failed);
        assert_eq!(after_failure(FailureClass::Unknown, 10, r(30)).delay, MAX_BACKOFF);
        assert_eq!(after_failure(FailureClass::Diverged, 0, r(3)).next, RunState::Failed);
        assert_eq!(after_failure(FailureClass::UserError, 0, r(3)).next, RunState::Failed);
    }

    #[test]
    fn names_round_trip_and_policies() {
        for c in FailureClass::ALL {
            assert_eq!(c.as_str().parse::<FailureClass>().unwrap(), c);
        }
        assert_eq!(FailureClass::Preempted.retry_policy(), RetryPolicy::Free);
        assert_eq!(FailureClass::NodeLost.retry_policy(), RetryPolicy::Free);
        assert_eq!(FailureClass::Unknown.retry_policy(), RetryPolicy::Counted);
        assert_eq!(FailureClass::Diverged.retry_policy(), RetryPolicy::Never);
        assert_eq!(FailureClass::UserError.retry_policy(), RetryPolicy::Never);
        assert!("bogus".parse::<FailureClass>().is_err());
    }
}
