//! The crate's error type.

use thiserror::Error;

/// Everything that can stop a fit. Messages name the file, line and column where there is one.
#[derive(Debug, Error)]
pub enum FitError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: line {line}: {message}")]
    Parse { file: String, line: usize, message: String },
    #[error("{file}: missing required column `{column}`")]
    MissingColumn { file: String, column: String },
    #[error("{file}: line {line}, column `{column}`: {message}")]
    BadValue { file: String, line: usize, column: String, message: String },
    #[error("{file}: the table has no data rows")]
    Empty { file: String },
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    #[error("invalid option: {0}")]
    InvalidOption(String),
}
