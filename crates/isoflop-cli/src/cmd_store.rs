//! `isoflop store copy --from sqlite:PATH --to postgres:URL`: a store's whole history into
//! another, empty, store ([`isoflop_store::copy`]).

use crate::exit::{CliResult, input};
use anyhow::anyhow;
use clap::Subcommand;
use isoflop_store::{StoreError, StoreLocation};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy every sweep, run, attempt, event, progress point, checkpoint and result of one
    /// store into another that holds nothing yet (created or migrated first), then compare
    /// the two table by table. The copy keeps the source's identity, so runs' artifacts keys
    /// stay valid: move the artifacts directory with it.
    Copy {
        /// The source: `sqlite:PATH` (or a path), or `postgres:URL`.
        #[arg(long)]
        from: StoreLocation,
        /// The target: `postgres:URL` (or a `postgres://` URL), or `sqlite:PATH`.
        #[arg(long)]
        to: StoreLocation,
    },
}

pub fn store(command: StoreCommand) -> CliResult {
    match command {
        StoreCommand::Copy { from, to } => copy(&from, &to),
    }
}

fn copy(from: &StoreLocation, to: &StoreLocation) -> CliResult {
    if let Some(path) = from.sqlite().filter(|p| !p.is_file()) {
        return Err(input(anyhow!("--from: no isoflop store at {}", path.display())));
    }
    if from == to {
        return Err(input(anyhow!("--from and --to are the same store ({from})")));
    }
    let started = std::time::Instant::now();
    let copied = match isoflop_store::copy::copy(from, to) {
        Ok(c) => c,
        Err(e @ StoreError::NotEmpty { .. }) => return Err(input(anyhow!("--to {to}: {e}"))),
        Err(e) => return Err(crate::exit::store(e)),
    };
    let rows: usize = copied.iter().map(|(_, n)| n).sum();
    let tables: Vec<String> = copied.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!(
        "copied {rows} rows from {from} to {to} in {:.1} s, every table compared equal: {}",
        started.elapsed().as_secs_f64(),
        tables.join(", ")
    );
    Ok(())
}
