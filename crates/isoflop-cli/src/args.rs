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
    /// The store: a SQLite file, or a PostgreSQL database (`postgres://USER@HOST/DATABASE`).
    #[arg(long, env = "ISOFLOP_STORE", default_value = ".isoflop/isoflop.db")]
    pub store: isoflop_store::StoreLocation,
}

/// Which coordinator to talk to, and the admin token it wants.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// URL of an `isoflop serve` coordinator; without it, commands use the local store.
    #[arg(long, env = "ISOFLOP_COORDINATOR")]
    pub coordinator: Option<String>,
    /// File holding the coordinator's admin token (or set ISOFLOP_TOKEN to the token itself).
    /// An empty value is no file.
    #[arg(long, env = "ISOFLOP_TOKEN_FILE")]
    pub token_file: Option<String>,
}

impl RemoteArgs {
    /// The coordinator's URL, if one is named (an empty `ISOFLOP_COORDINATOR=` names none).
    pub fn coordinator(&self) -> Option<&str> {
        self.coordinator.as_deref().filter(|c| !c.trim().is_empty())
    }

    /// The token file, if one is named (an empty `ISOFLOP_TOKEN_FILE=` names none).
    pub fn token_file(&self) -> Option<PathBuf> {
        self.token_file.as_deref().filter(|f| !f.trim().is_empty()).map(PathBuf::from)
    }
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

/// Output format of `isoflop curves`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CurveFormat {
    Csv,
    Json,
}
