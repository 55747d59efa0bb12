//! Token data for isoflop: tokenizers, the memory-mapped token shard format, and the
//! preparation of real corpora into training and evaluation shards.

pub mod corpus;
pub mod english;
pub mod error;
pub mod prepare;
pub mod roff;
pub mod shard;
pub mod tasks;
pub mod tokenizer;

pub use corpus::{Document, SOURCE_NAMES, Source, SourcePaths};
pub use error::DataError;
pub use prepare::{Manifest, PrepareOptions, Prepared, ShardEntry, SourceEntry, prepare, prepare_detailed};
pub use shard::{Shard, ShardError, ShardHeader, ShardWriter, TokenDtype};
pub use tokenizer::{ByteTokenizer, Gpt2Tokenizer, PREPARABLE, Tokenizer, TokenizerKind, tokenizer_for};

/// This machine's isoflop cache: `$ISOFLOP_CACHE_DIR`, else `$XDG_CACHE_HOME/isoflop`, else
/// `$HOME/.cache/isoflop` (shard verification markers, recorded throughput).
pub fn cache_dir() -> Option<std::path::PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    var("ISOFLOP_CACHE_DIR")
        .or_else(|| Some(var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?.join("isoflop")))
}
