//! The crate's error type: every variant names the file, source or setting involved.

use crate::shard::ShardError;
use std::path::PathBuf;

/// Errors from tokenizers, corpus loading, preparation and manifests.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A shard could not be written or read.
    #[error("shard {path}: {source}")]
    Shard { path: PathBuf, source: ShardError },
    /// A manifest is missing, unreadable, malformed or of an unknown format.
    #[error("manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    /// A manifest has no shard of the requested name.
    #[error("manifest {path}: no shard named {name:?} (it has: {valid})")]
    UnknownShard { path: PathBuf, name: String, valid: String },
    /// The tokenizer cannot prepare corpora here.
    #[error("tokenizer {name:?} cannot prepare corpora: use one of {valid}")]
    UnknownTokenizer { name: String, valid: String },
    /// A tokenizer could not be built.
    #[error("tokenizer {name}: {reason}")]
    Tokenizer { name: String, reason: String },
    /// A corpus source is not installed where it was looked for.
    #[error("corpus source {corpus}: {path} not found; {hint}")]
    MissingSource { corpus: String, path: PathBuf, hint: String },
    /// A corpus source exists but could not be read or parsed.
    #[error("corpus source {corpus} ({path}): {reason}")]
    Source { corpus: String, path: PathBuf, reason: String },
    /// A preparation option is out of range.
    #[error("prepare option {option}: {reason}")]
    Option { option: String, reason: String },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |source| DataError::Io { path, source }
    }

    pub(crate) fn shard(path: impl Into<PathBuf>) -> impl FnOnce(ShardError) -> DataError {
        let path = path.into();
        move |source| DataError::Shard { path, source }
    }

    pub(crate) fn source(corpus: &str, path: impl Into<PathBuf>, reason: impl Into<String>) -> DataError {
        DataError::Source { corpus: corpus.to_string(), path: path.into(), reason: reason.into() }
    }
}
