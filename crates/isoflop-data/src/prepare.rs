//! Corpus preparation: sources → held-out split → token shards + `manifest.json`.
//!
//! ```text
//! DIR/train.bin           every source's training documents, shuffled deterministically
//! DIR/eval-<source>.bin   one held-out distribution per source
//! DIR/manifest.json       what is in them (see [`Manifest`])
//! ```

use crate::corpus::{self, Document, Source, SourcePaths};
use crate::error::DataError;
use crate::shard::{Shard, ShardHeader, ShardWriter};
use crate::tokenizer::{Tokenizer, TokenizerKind, tokenizer_for};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Manifest format written by this build.
pub const MANIFEST_FORMAT: u32 = 1;
/// File name of the manifest inside a corpus directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Name of the training shard.
pub const TRAIN_NAME: &str = "train";
/// Bumped whenever preparation would produce different shards from the same inputs.
const PREPARE_VERSION: u32 = 1;

/// Default cap on training text: 12 MB.
pub const DEFAULT_MAX_TRAIN_BYTES: u64 = 12_000_000;
/// Default share of documents held out per source.
pub const DEFAULT_HOLDOUT_FRACTION: f64 = 0.1;
/// Default largest share of the training budget one source may take.
pub const DEFAULT_MAX_SOURCE_FRACTION: f64 = 0.4;
/// Default smallest eval distribution (held-out documents are topped up to it).
pub const DEFAULT_MIN_EVAL_BYTES: u64 = 200_000;
/// Default cap on one eval distribution.
pub const DEFAULT_MAX_EVAL_BYTES: u64 = 1_000_000;

/// What to prepare and where.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareOptions {
    /// Output directory (created if needed).
    pub out_dir: PathBuf,
    /// The tokenizer (`byte` or `gpt2`).
    pub tokenizer: TokenizerKind,
    /// Cap on the training shard's text bytes.
    pub max_train_bytes: u64,
    /// Largest share of `max_train_bytes` one source may take.
    pub max_source_fraction: f64,
    /// Share of each source's documents held out (by a hash of the document's name).
    pub holdout_fraction: f64,
    /// Held-out documents are topped up (in hash order) to at least this many bytes per source.
    pub min_eval_bytes: u64,
    /// Cap on each eval shard's text bytes.
    pub max_eval_bytes: u64,
    /// Where the sources are read from.
    pub sources: SourcePaths,
}

impl PrepareOptions {
    /// Defaults: byte tokenizer, 12 MB of training text, 10% held out, sources at their standard
    /// install locations.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            out_dir: out_dir.into(),
            tokenizer: TokenizerKind::Byte,
            max_train_bytes: DEFAULT_MAX_TRAIN_BYTES,
            max_source_fraction: DEFAULT_MAX_SOURCE_FRACTION,
            holdout_fraction: DEFAULT_HOLDOUT_FRACTION,
            min_eval_bytes: DEFAULT_MIN_EVAL_BYTES,
            max_eval_bytes: DEFAULT_MAX_EVAL_BYTES,
            sources: SourcePaths::discover(),
        }
    }

    fn validate(&self) -> Result<(), DataError> {
        let bad = |option: &str, reason: String| Err(DataError::Option { option: option.into(), reason });
        if !(0.0..=1.0).contains(&self.holdout_fraction) {
            return bad("holdout_fraction", format!("{} is not in [0, 1]", self.holdout_fraction));
        }
        if !(self.max_source_fraction > 0.0 && self.max_source_fraction <= 1.0) {
            return bad("max_source_fraction", format!("{} is not in (0, 1]", self.max_source_fraction));
        }
        if self.max_train_bytes == 0 {
            return bad("max_train_bytes", "must be positive".into());
        }
        if self.max_eval_bytes < self.min_eval_bytes {
            return bad("max_eval_bytes", format!("{} is below min_eval_bytes {}", self.max_eval_bytes, self.min_eval_bytes));
        }
        Ok(())
    }
}

/// One shard as described in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// `train` or the eval distribution's name.
    pub name: String,
    /// Path relative to the corpus directory.
    pub path: String,
    /// Hex SHA-256 of the token payload (the shard header's digest).
    pub digest: String,
    pub tokens: u64,
    /// UTF-8 bytes of the text the tokens encode (for bits per byte).
    pub bytes: u64,
    pub documents: u64,
}

/// One source as described in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEntry {
    pub name: String,
    /// Package(s) and version(s) it came from, and the number of files read.
    pub origin: String,
    /// All documents of the source (before the split and the size caps).
    pub documents: u64,
    pub bytes: u64,
    /// Documents and bytes of it in the training shard.
    #[serde(default)]
    pub train_documents: u64,
    #[serde(default)]
    pub train_bytes: u64,
    /// Documents and bytes in its eval shard.
    #[serde(default)]
    pub eval_documents: u64,
    #[serde(default)]
    pub eval_bytes: u64,
}

/// `manifest.json`: the shards of a prepared corpus and where their text came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: u32,
    pub tokenizer: TokenizerKind,
    pub vocab_size: u32,
    pub train: ShardEntry,
    pub evals: Vec<ShardEntry>,
    pub sources: Vec<SourceEntry>,
    /// Hash of the options and of every source document; preparation is skipped when it matches.
    #[serde(default)]
    pub fingerprint: String,
}

impl Manifest {
    /// `dir/manifest.json`.
    pub fn path_in(dir: impl AsRef<Path>) -> PathBuf {
        dir.as_ref().join(MANIFEST_FILE)
    }

    /// Reads a manifest; errors name the file (missing, not JSON, unknown format, bad fields).
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest, DataError> {
        let path = path.as_ref();
        let bad = |reason: String| DataError::Manifest { path: path.to_path_buf(), reason };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad("not found".into()));
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        match value.get("format").and_then(serde_json::Value::as_u64) {
            Some(f) if f == MANIFEST_FORMAT as u64 => {}
            Some(f) => return Err(bad(format!("unknown format {f}; this build reads format {MANIFEST_FORMAT}"))),
            None => return Err(bad("no numeric \"format\" field; not an isoflop corpus manifest".into())),
        }
        serde_json::from_value(value).map_err(|e| bad(format!("invalid manifest: {e}")))
    }

    /// Reads `dir/manifest.json`.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Manifest, DataError> {
        Self::load(Self::path_in(dir))
    }

    /// Writes the manifest atomically (temporary file + rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), DataError> {
        let path = path.as_ref();
        let mut json = serde_json::to_string_pretty(self).expect("manifest serializes");
        json.push('\n');
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(DataError::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(DataError::io(path))
    }

    /// The shard entry named `name` (`train` or an eval distribution).
    pub fn shard(&self, name: &str) -> Option<&ShardEntry> {
        std::iter::once(&self.train).chain(&self.evals).find(|e| e.name == name)
    }

    /// Names of the eval distributions, in manifest order.
    pub fn eval_names(&self) -> Vec<&str> {
        self.evals.iter().map(|e| e.name.as_str()).collect()
    }

    /// Path of the shard named `name` for a manifest read from `dir`.
    pub fn shard_path(&self, dir: impl AsRef<Path>, name: &str) -> Result<PathBuf, DataError> {
        let dir = dir.as_ref();
        match self.shard(name) {
            Some(e) => Ok(dir.join(&e.path)),
            None => Err(DataError::UnknownShard {
                path: Self::path_in(dir),
                name: name.to_string(),
                valid: std::iter::once(TRAIN_NAME).chain(self.eval_names()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Path of the training shard.
    pub fn train_path(&self, dir: impl AsRef<Path>) -> PathBuf {
        dir.as_ref().join(&self.train.path)
    }

    /// Opens the shard named `name` and checks that its header matches the manifest (digest,
    /// counts, vocabulary). Does not re-hash the payload; see [`Shard::verify`].
    pub fn open_shard(&self, dir: impl AsRef<Path>, name: &str) -> Result<Shard, DataError> {
        let path = self.shard_path(&dir, name)?;
        let entry = self.shard(name).expect("shard_path found it");
        let shard = Shard::open(&path).map_err(DataError::shard(&path))?;
        let h = shard.header();
        let matches = h.digest == entry.digest
            && h.token_count == entry.tokens
            && h.byte_count == entry.bytes
            && h.doc_count == entry.documents
            && h.vocab_size == self.vocab_size;
        if !matches {
            return Err(DataError::Manifest {
                path: Self::path_in(&dir),
                reason: format!("shard {} does not match the manifest's entry {name:?}", path.display()),
            });
        }
        Ok(shard)
    }
}

/// The result of [`prepare_detailed`].
#[derive(Debug, Clone)]
pub struct Prepared {
    pub manifest: Manifest,
    /// True when an existing, matching corpus was reused and nothing was written.
    pub reused: bool,
}

/// Prepares the corpus in `opts.out_dir` (see the module docs); returns its manifest. Prints
/// nothing. If the directory already holds a corpus prepared with the same options from the same
/// source text, it is returned as is.
pub fn prepare(opts: &PrepareOptions) -> Result<Manifest, DataError> {
    prepare_detailed(opts).map(|p| p.manifest)
}

/// [`prepare`], also telling whether an existing corpus was reused.
pub fn prepare_detailed(opts: &PrepareOptions) -> Result<Prepared, DataError> {
    opts.validate()?;
    let tokenizer = tokenizer_for(opts.tokenizer)?;
    let sources = corpus::load_sources(&opts.sources)?;
    let fingerprint = fingerprint(opts, tokenizer.as_ref(), &sources);
    let manifest_path = Manifest::path_in(&opts.out_dir);
    if let Ok(existing) = Manifest::load(&manifest_path)
        && existing.fingerprint == fingerprint
        && shards_match(&existing, &opts.out_dir)
    {
        return Ok(Prepared { manifest: existing, reused: true });
    }
    let plan = plan(opts, &sources)?;
    std::fs::create_dir_all(&opts.out_dir).map_err(DataError::io(&opts.out_dir))?;

    let mut evals = Vec::new();
    for (s, split) in sources.iter().zip(&plan.splits) {
        let docs: Vec<&Document> = split.eval.iter().map(|&i| &s.documents[i]).collect();
        let rel = format!("eval-{}.bin", s.name);
        let header = write_shard(&opts.out_dir.join(&rel), tokenizer.as_ref(), &docs)?;
        evals.push(entry(&s.name, rel, &header));
    }
    let train_docs: Vec<&Document> = plan.train.iter().map(|&(s, i)| &sources[s].documents[i]).collect();
    let rel = format!("{TRAIN_NAME}.bin");
    let header = write_shard(&opts.out_dir.join(&rel), tokenizer.as_ref(), &train_docs)?;
    let train = entry(TRAIN_NAME, rel, &header);

    let source_entries = sources
        .iter()
        .enumerate()
        .map(|(si, s)| {
            let split = &plan.splits[si];
            let in_train: Vec<&Document> = plan.train.iter().filter(|&&(t, _)| t == si).map(|&(_, i)| &s.documents[i]).collect();
            SourceEntry {
                name: s.name.clone(),
                origin: s.origin.clone(),
                documents: s.documents.len() as u64,
                bytes: s.bytes(),
                train_documents: in_train.len() as u64,
                train_bytes: in_train.iter().map(|d| d.bytes()).sum(),
                eval_documents: split.eval.len() as u64,
                eval_bytes: split.eval.iter().map(|&i| s.documents[i].bytes()).sum(),
            }
        })
        .collect();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        tokenizer: opts.tokenizer,
        vocab_size: tokenizer.vocab_size(),
        train,
        evals,
        sources: source_entries,
        fingerprint,
    };
    manifest.save(&manifest_path)?;
    Ok(Prepared { manifest, reused: false })
}

fn entry(name: &str, path: String, h: &ShardHeader) -> ShardEntry {
    ShardEntry {
        name: name.to_string(),
        path,
        digest: h.digest.clone(),
        tokens: h.token_count,
        bytes: h.byte_count,
        documents: h.doc_count,
    }
}

/// Whether every shard of the manifest exists with the recorded header.
fn shards_match(m: &Manifest, dir: &Path) -> bool {
    std::iter::once(TRAIN_NAME).chain(m.eval_names()).all(|name| m.open_shard(dir, name).is_ok())
}

/// Hash of everything that determines the output.
fn fingerprint(opts: &PrepareOptions, tokenizer: &dyn Tokenizer, sources: &[Source]) -> String {
    let mut h = Sha256::new();
    let settings = format!(
        "isoflop-prepare v{PREPARE_VERSION} manifest {MANIFEST_FORMAT}\ntokenizer {} {} {}\ntrain {} source-fraction {}\n\
         holdout {} eval {}..{}\n",
        tokenizer.name(),
        tokenizer.vocab_size(),
        tokenizer.eot(),
        opts.max_train_bytes,
        opts.max_source_fraction,
        opts.holdout_fraction,
        opts.min_eval_bytes,
        opts.max_eval_bytes,
    );
    h.update(settings.as_bytes());
    for s in sources {
        for part in [s.name.as_str(), s.origin.as_str()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.update((s.documents.len() as u64).to_le_bytes());
        for d in &s.documents {
            for part in [d.name.as_str(), d.text.as_str()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
        }
    }
    hex::encode(h.finalize())
}

/// Which documents go where.
struct Plan {
    splits: Vec<corpus::SourceSplit>,
    /// (source, document) in training-shard order.
    train: Vec<(usize, usize)>,
}

fn plan(opts: &PrepareOptions, sources: &[Source]) -> Result<Plan, DataError> {
    let mut splits = Vec::new();
    for s in sources {
        if s.documents.len() < 2 {
            return Err(DataError::source(
                &s.name,
                PathBuf::from(&s.origin),
                format!("{} document(s); need at least 2 to hold some out", s.documents.len()),
            ));
        }
        splits.push(corpus::split_source(&s.documents, opts.holdout_fraction, opts.min_eval_bytes, opts.max_eval_bytes));
    }
    let available: Vec<u64> =
        sources.iter().zip(&splits).map(|(s, sp)| sp.train.iter().map(|&i| s.documents[i].bytes()).sum()).collect();
    let cap = (opts.max_source_fraction * opts.max_train_bytes as f64) as u64;
    let budgets = water_fill(opts.max_train_bytes, &available.iter().map(|&a| a.min(cap)).collect::<Vec<_>>());
    let mut train = Vec::new();
    for (si, (s, sp)) in sources.iter().zip(&splits).enumerate() {
        let mut used = 0;
        for &i in &sp.train {
            let b = s.documents[i].bytes();
            if used + b <= budgets[si] {
                used += b;
                train.push((si, i));
            }
        }
    }
    train.sort_by_cached_key(|&(s, i)| (corpus::shuffle_key(&sources[s].documents[i].name), s, i));
    Ok(Plan { splits, train })
}

/// Splits `total` among sources with `limits`, as evenly as the limits allow.
fn water_fill(total: u64, limits: &[u64]) -> Vec<u64> {
    let mut out = vec![0u64; limits.len()];
    let mut open: Vec<usize> = (0..limits.len()).collect();
    let mut left = total;
    while !open.is_empty() {
        let share = left / open.len() as u64;
        let (settled, rest): (Vec<usize>, Vec<usize>) = open.iter().partition(|&&i| limits[i] <= share);
        if settled.is_empty() {
            for &i in &rest {
                out[i] = share;
            }
            break;
        }
        for &i in &settled {
            out[i] = limits[i];
            left -= limits[i];
        }
        open = rest;
    }
    out
}

/// Tokenizes documents (in parallel) and writes them, each followed by the end-of-text token.
fn write_shard(path: &Path, tokenizer: &dyn Tokenizer, docs: &[&Document]) -> Result<ShardHeader, DataError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    let mut writer = ShardWriter::create(path, tokenizer.vocab_size()).map_err(DataError::shard(path))?;
    // Tokenize in batches so memory stays bounded for large corpora.
    for batch in docs.chunks(1024) {
        let encoded: Vec<Vec<u32>> = if threads == 1 || batch.len() < 2 {
            batch.iter().map(|d| encode_doc(tokenizer, d)).collect()
        } else {
            let chunk = batch.len().div_ceil(threads);
            std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .chunks(chunk)
                    .map(|part| s.spawn(move || part.iter().map(|d| encode_doc(tokenizer, d)).collect::<Vec<_>>()))
                    .collect();
                handles.into_iter().flat_map(|h| h.join().expect("tokenizer thread panicked")).collect()
            })
        };
        for (d, tokens) in batch.iter().zip(&encoded) {
            writer.push_document(tokens, d.bytes()).map_err(DataError::shard(path))?;
        }
    }
    writer.finish().map_err(DataError::shard(path))
}

fn encode_doc(tokenizer: &dyn Tokenizer, d: &Document) -> Vec<u32> {
    let mut t = tokenizer.encode(&d.text);
    t.push(tokenizer.eot());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_fill_balances() {
        assert_eq!(water_fill(100, &[1000, 1000, 1000, 1000]), vec![25, 25, 25, 25]);
        assert_eq!(water_fill(100, &[10, 1000, 1000]), vec![10, 45, 45]);
        assert_eq!(water_fill(100, &[10, 20, 30]), vec![10, 20, 30]);
        assert_eq!(water_fill(100, &[40, 40, 5, 1000]), vec![31, 31, 5, 31]);
        assert_eq!(water_fill(100, &[50, 20, 5, 1000]), vec![37, 20, 5, 37]);
    }
}
