//! Exit codes: 0 success, 1 failure (a run failed, an internal error), 2 bad input (spec,
//! arguments, data), 3 the coordinator cannot be reached or the connection to it was lost,
//! 130 interrupted.

use std::fmt;

/// An error at the binary's edge, with the exit code it maps to.
pub enum CliError {
    /// Bad input from the user: exit code 2.
    Input(anyhow::Error),
    /// Anything else: exit code 1.
    Failure(anyhow::Error),
    /// The coordinator cannot be reached, or the connection to it was lost: exit code 3.
    Unavailable(anyhow::Error),
    /// Stopped by Ctrl-C or SIGTERM after a clean shutdown: exit code 130.
    Interrupted,
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Input(_) => 2,
            CliError::Failure(_) => 1,
            CliError::Unavailable(_) => 3,
            CliError::Interrupted => 130,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Input(e) | CliError::Failure(e) | CliError::Unavailable(e) => {
                if f.alternate() {
                    write!(f, "{e:#}")
                } else {
                    write!(f, "{e}")
                }
            }
            CliError::Interrupted => f.write_str("interrupted; run the same command again to continue"),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::Failure(e.into())
    }
}

/// Marks an error as bad input.
pub fn input(e: impl Into<anyhow::Error>) -> CliError {
    CliError::Input(e.into())
}

/// Result of a command.
pub type CliResult = Result<(), CliError>;

/// A hosting error at the edge: the user's mistakes (no store, a store in use) exit 2.
pub fn server(e: isoflop_server::ServerError) -> CliError {
    if e.is_input() { CliError::Input(e.into()) } else { CliError::Failure(e.into()) }
}

/// A store's error at the edge: a URL that does not parse, or a database this build cannot
/// read, is the user's mistake (exit 2).
pub fn store(e: isoflop_store::StoreError) -> CliError {
    if e.is_input() { CliError::Input(e.into()) } else { CliError::Failure(e.into()) }
}

/// A control call's error at the edge: the user's mistakes (unknown sweep or run, bad spec,
/// wrong token) exit 2.
pub fn client(e: isoflop_server::ClientError) -> CliError {
    if e.is_input() {
        CliError::Input(e.into())
    } else if e.is_unavailable() {
        CliError::Unavailable(e.into())
    } else {
        CliError::Failure(e.into())
    }
}
