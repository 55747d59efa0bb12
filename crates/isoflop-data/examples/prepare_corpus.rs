//! Prepares the real corpus: `cargo run --release -p isoflop-data --example prepare_corpus -- DIR [byte|gpt2] [MAX_TRAIN_BYTES]`.
//! Run `scripts/install-corpora.sh` first.

use isoflop_data::{PrepareOptions, prepare_detailed};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: prepare_corpus DIR [byte|gpt2] [MAX_TRAIN_BYTES]");
        std::process::exit(2);
    };
    let mut opts = PrepareOptions::new(dir);
    if let Some(t) = args.next() {
        opts.tokenizer = t;
    }
    if let Some(b) = args.next() {
        opts.max_train_bytes = b.parse().expect("MAX_TRAIN_BYTES is a number");
    }
    let start = std::time::Instant::now();
    match prepare_detailed(&opts) {
        Ok(p) => {
            let m = &p.manifest;
            let verb = if p.reused { "reused" } else { "prepared" };
            println!("{verb} {} in {:.2?} ({} tokenizer)", opts.out_dir.display(), start.elapsed(), m.tokenizer);
            println!("{:<12} {:>9} {:>12} {:>12}  digest", "shard", "docs", "bytes", "tokens");
            for e in std::iter::once(&m.train).chain(&m.evals) {
                println!("{:<12} {:>9} {:>12} {:>12}  {}", e.name, e.documents, e.bytes, e.tokens, &e.digest[..16]);
            }
            println!();
            println!(
                "{:<12} {:>7} {:>11} {:>7} {:>11} {:>7} {:>11}  origin",
                "source", "docs", "bytes", "train", "bytes", "eval", "bytes"
            );
            for s in &m.sources {
                println!(
                    "{:<12} {:>7} {:>11} {:>7} {:>11} {:>7} {:>11}  {}",
                    s.name, s.documents, s.bytes, s.train_documents, s.train_bytes, s.eval_documents, s.eval_bytes, s.origin
                );
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
