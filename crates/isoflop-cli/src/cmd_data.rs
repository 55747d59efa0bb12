//! `isoflop data prepare`: real text from installed packages -> token shards + manifest;
//! `isoflop data verify`: every shard of a prepared directory against its manifest.

use crate::exit::{CliResult, input};
use crate::render::table::{Table, count};
use clap::Subcommand;
use isoflop_data::prepare::{PrepareOptions, prepare_detailed};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Tokenize the corpora (King James Bible, Shakespeare, man pages, Python source, a
    /// dictionary) into a training shard and one held-out eval shard per source.
    Prepare {
        /// Output directory (gets train.bin, eval-*.bin, manifest.json).
        #[arg(long, default_value = "data/corpus")]
        out: PathBuf,
        /// `byte` (256 bytes + specials) or `gpt2` (BPE).
        #[arg(long, default_value = "byte")]
        tokenizer: isoflop_data::TokenizerKind,
        /// Cap on the training text, in bytes.
        #[arg(long)]
        max_train_bytes: Option<u64>,
    },
    /// Check every shard of a prepared directory: its header and size against the manifest,
    /// and its tokens against their digest (hashed in full; workers then skip the files).
    Verify {
        /// The directory holding manifest.json.
        dir: PathBuf,
    },
}

pub fn data(cmd: DataCommand) -> CliResult {
    match cmd {
        DataCommand::Prepare { out, tokenizer, max_train_bytes } => {
            let mut opts = PrepareOptions::new(&out);
            opts.tokenizer = tokenizer;
            if let Some(m) = max_train_bytes {
                opts.max_train_bytes = m;
            }
            let t0 = Instant::now();
            let prepared = prepare_detailed(&opts).map_err(input)?;
            let m = &prepared.manifest;
            let mut t = Table::new(["shard", "documents", "tokens", "bytes"]);
            for e in std::iter::once(&m.train).chain(&m.evals) {
                t.row([e.name.clone(), e.documents.to_string(), count(e.tokens), count(e.bytes)]);
            }
            print!("{}", t.render());
            println!(
                "{} corpus in {} ({} tokenizer, vocab {}) in {:.1}s",
                if prepared.reused { "reused" } else { "prepared" },
                out.display(),
                m.tokenizer,
                m.vocab_size,
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
        DataCommand::Verify { dir } => verify(&dir),
    }
}

/// `isoflop data verify DIR`: exit 2 naming the first bad file, after checking them all.
fn verify(dir: &std::path::Path) -> CliResult {
    let m = isoflop_data::Manifest::load_dir(dir).map_err(input)?;
    let cache = isoflop_data::shard::verify_cache_dir();
    let t0 = Instant::now();
    let mut t = Table::new(["shard", "file", "tokens", "result"]);
    let mut bad = Vec::new();
    let mut bytes = 0u64;
    for e in std::iter::once(&m.train).chain(&m.evals) {
        // Hashed in full, and remembered as a worker would after hashing it.
        let checked = m
            .open_shard(dir, &e.name)
            .map_err(|x| x.to_string())
            .and_then(|s| s.verify_and_remember(cache.as_deref()).map(|()| s).map_err(|x| x.to_string()));
        let result = match checked {
            Ok(s) => {
                bytes += std::fs::metadata(s.path()).map(|x| x.len()).unwrap_or(0);
                "ok".to_string()
            }
            Err(why) => {
                bad.push(why);
                "BAD".to_string()
            }
        };
        t.row([e.name.clone(), e.path.clone(), count(e.tokens), result]);
    }
    print!("{}", t.render());
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{} of {} shards ok in {} ({:.1} MB hashed in {secs:.2}s)",
        1 + m.evals.len() - bad.len(),
        1 + m.evals.len(),
        dir.display(),
        bytes as f64 / 1e6
    );
    match bad.first() {
        None => Ok(()),
        Some(first) => Err(input(anyhow::anyhow!("{} bad shard(s); the first: {first}", bad.len()))),
    }
}
