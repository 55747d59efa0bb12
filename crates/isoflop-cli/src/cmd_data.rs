//! `isoflop data prepare`: real text from installed packages -> token shards + manifest.

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
    }
}
