//! The run state machine: the only legal ways a run's state may change.
//!
//! ```text
//! planned -> queued -> launching -> running -> succeeded
//!              |  \        |  \        |  \-> failed -> queued (retry / resume)
//!              |   \       |   \       \-> queued (interrupted: resumes from its checkpoint)
//!              |    \-> blocked -> queued | launching
//!              \-> cancelled (from any unfinished state)
//! launching <-> blocked -> running | failed   (a cluster attempt not placed yet)
//! ```
//! Every change goes through [`RunState::transition`]; the store records each as an event.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Known to the store, not yet eligible to launch.
    Planned,
    /// Waiting for an executor slot.
    Queued,
    /// Waiting for capacity the executor does not have, with the reason recorded (for
    /// Kubernetes: the attempt's pod is unschedulable and the scheduler's message is kept). The
    /// attempt stays live; it moves to `launching` once placed.
    Blocked,
    /// The executor is starting a worker; the worker has not attached yet.
    Launching,
    /// A worker attached and is training.
    Running,
    /// Trained and evaluated; results stored.
    Succeeded,
    /// Ended with a failure that is not retried (or the retry budget is spent).
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

/// A state change the machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal run state transition {from} -> {to}")]
pub struct TransitionError {
    pub from: RunState,
    pub to: RunState,
}

impl RunState {
    /// Every state, in lifecycle order.
    pub const ALL: [RunState; 8] = [
        RunState::Planned,
        RunState::Queued,
        RunState::Blocked,
        RunState::Launching,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// Whether `self -> to` is a legal edge.
    pub fn can_transition(self, to: RunState) -> bool {
        use RunState::*;
        matches!(
            (self, to),
            (Planned, Queued)
                | (Planned, Cancelled)
                | (Queued, Launching)
                | (Queued, Blocked)
                | (Queued, Cancelled)
                | (Blocked, Queued)
                | (Blocked, Launching)
                | (Blocked, Cancelled)
                | (Blocked, Running)
                | (Blocked, Failed)
                | (Launching, Blocked)
                | (Launching, Running)
                | (Launching, Queued)
                | (Launching, Failed)
                | (Launching, Cancelled)
                | (Running, Succeeded)
                | (Running, Queued)
                | (Running, Failed)
                | (Running, Cancelled)
                | (Failed, Queued)
                | (Cancelled, Queued)
        )
    }

    /// Checked transition.
    pub fn transition(self, to: RunState) -> Result<RunState, TransitionError> {
        if self.can_transition(to) { Ok(to) } else { Err(TransitionError { from: self, to }) }
    }

    /// True for states a run leaves only by a user's action (resume).
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed | RunState::Cancelled)
    }

    /// True while a worker may be alive for this run.
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Launching | RunState::Running)
    }

    /// Stable lowercase name (store column, CLI output, proto mapping).
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Planned => "planned",
            RunState::Queued => "queued",
            RunState::Blocked => "blocked",
            RunState::Launching => "launching",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| format!("unknown run state `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::RunState::{self, *};

    /// The full table of legal edges, written out independently of `can_transition`.
    const LEGAL: &[(RunState, RunState)] = &[
        (Planned, Queued),
        (Planned, Cancelled),
        (Queued, Launching),
        (Queued, Blocked),
        (Queued, Cancelled),
        (Blocked, Queued),
        (Blocked, Launching),
        (Blocked, Cancelled),
        (Blocked, Running),
        (Blocked, Failed),
        (Launching, Blocked),
        (Launching, Running),
        (Launching, Queued),
        (Launching, Failed),
        (Launching, Cancelled),
        (Running, Succeeded),
        (Running, Queued),
        (Running, Failed),
        (Running, Cancelled),
        (Failed, Queued),
        (Cancelled, Queued),
    ];

    #[test]
    fn every_edge_is_legal_or_rejected() {
        let mut legal = 0;
        for from in RunState::ALL {
            for to in RunState::ALL {
                let expect = LEGAL.contains(&(from, to));
                assert_eq!(from.can_transition(to), expect, "{from} -> {to}");
                match from.transition(to) {
                    Ok(s) => {
                        assert!(expect);
                        assert_eq!(s, to);
                        legal += 1;
                    }
                    Err(e) => {
                        assert!(!expect);
                        assert_eq!(e.to_string(), format!("illegal run state transition {from} -> {to}"));
                    }
                }
            }
        }
        assert_eq!(legal, LEGAL.len());
    }

    #[test]
    fn succeeded_is_final_and_no_self_loops() {
        for to in RunState::ALL {
            assert!(!Succeeded.can_transition(to), "succeeded -> {to}");
        }
        for s in RunState::ALL {
            assert!(!s.can_transition(s), "{s} -> {s}");
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
        }
    }
}
