//! What happens to a run after a failed attempt: a pure function of the failure class and the
//! run's retry budget.

use isoflop_core::failure::RetryPolicy;
use isoflop_core::{FailureClass, RunState};
use std::time::Duration;

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

/// Decides whether and when to retry a run whose attempt failed with `class`, having already
/// spent `retries_used` of `max_retries`. Counted retries back off exponentially from `base`
/// (capped at 5 minutes).
pub fn after_failure(class: FailureClass, retries_used: u64, max_retries: u64, base: Duration) -> RetryDecision {
    match class.retry_policy() {
        RetryPolicy::Free => RetryDecision { next: RunState::Queued, delay: Duration::ZERO, spend_retry: false },
        RetryPolicy::Counted if retries_used < max_retries => {
            let factor = 1u32 << retries_used.min(16) as u32;
            let delay = base.saturating_mul(factor).min(Duration::from_secs(300));
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
    fn policies() {
        let b = Duration::from_secs(2);
        for c in [FailureClass::Preempted, FailureClass::NodeLost] {
            let d = after_failure(c, 99, 3, b);
            assert_eq!((d.next, d.spend_retry, d.delay), (RunState::Queued, false, Duration::ZERO));
        }
        let d = after_failure(FailureClass::Unknown, 0, 3, b);
        assert_eq!((d.next, d.spend_retry, d.delay), (RunState::Queued, true, b));
        assert_eq!(after_failure(FailureClass::Oom, 2, 3, b).delay, Duration::from_secs(8));
        assert_eq!(after_failure(FailureClass::Unknown, 3, 3, b).next, RunState::Failed);
        assert_eq!(after_failure(FailureClass::Unknown, 10, 30, b).delay, Duration::from_secs(300));
        assert_eq!(after_failure(FailureClass::Diverged, 0, 3, b).next, RunState::Failed);
        assert_eq!(after_failure(FailureClass::UserError, 0, 3, b).next, RunState::Failed);
    }
}
