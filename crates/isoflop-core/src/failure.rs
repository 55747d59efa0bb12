//! Failure classes: why an attempt ended badly, and what the coordinator does about it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why an attempt failed. Travels on the wire as the proto enum `FailureClass` and in the
/// store as its [`FailureClass::as_str`] name; retry policy matches on it, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The worker was stopped from outside (SIGTERM, preemption, the sweep interrupted).
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
    pub const ALL: [FailureClass; 6] = [
        FailureClass::Preempted,
        FailureClass::NodeLost,
        FailureClass::Oom,
        FailureClass::Diverged,
        FailureClass::UserError,
        FailureClass::Unknown,
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
        }
    }

    /// The retry policy of this class.
    pub fn retry_policy(self) -> RetryPolicy {
        match self {
            FailureClass::Preempted | FailureClass::NodeLost => RetryPolicy::Free,
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

#[cfg(test)]
mod tests {
    use super::*;

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
