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
