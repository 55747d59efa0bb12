//! Argument types several commands share.

use std::path::PathBuf;

/// Output format of listing commands.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// Where to find the store when no spec is given.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// SQLite store file.
    #[arg(long, env = "ISOFLOP_STORE", default_value = ".isoflop/isoflop.db")]
    pub store: PathBuf,
}

/// Which coordinator to talk to, and the admin token it wants.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// URL of an `isoflop serve` coordinator; without it, commands use the local store.
    #[arg(long, env = "ISOFLOP_COORDINATOR")]
    pub coordinator: Option<String>,
    /// File holding the coordinator's admin token (or set ISOFLOP_TOKEN to the token itself).
    #[arg(long, env = "ISOFLOP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// How the process logs (stderr).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with span fields (`run_id`, `attempt`, `method`).
    Json,
}
