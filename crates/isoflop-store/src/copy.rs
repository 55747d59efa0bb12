//! `isoflop store copy`: a store's whole history into another, empty, store (a laptop's
//! SQLite file into a cluster's PostgreSQL), table by table in one transaction on each side,
//! then read back and compared.

use crate::sql::{Backend, Row, Value};
use crate::store::SqlStore;
use crate::{PgStore, Result, SqliteStore, StoreError, StoreLocation};

/// Every table, parents before the rows that refer to them: its columns, and the order rows
/// are read (and so inserted) in. `sweeps` and `sweep_runs` keep their insertion order (which
/// sweep owns a shared run, which of two sweeps of one millisecond is newer) by being
/// inserted in it; events keep their ids.
pub const TABLES: &[(&str, &str, &str)] = &[
    ("meta", "key, value", "key"),
    ("sweeps", "name, spec_yaml, spec_path, created_ms", "rowid"),
    (
        "runs",
        "run_id, config_json, state, failure_class, message, attempts, retries_used, not_before_ms, created_ms, updated_ms, \
         artifacts_key",
        "run_id",
    ),
    ("sweep_runs", "sweep, run_id, ordinal, name, corpus, budget", "rowid"),
    (
        "attempts",
        "run_id, attempt, token_hash, outcome, failure_class, message, executor_ref, resume_step, lease_expires_ms, \
         started_ms, ended_ms",
        "run_id, attempt",
    ),
    ("events", "id, run_id, attempt, at_ms, from_state, to_state, failure_class, message", "id"),
    (
        "progress",
        "run_id, attempt, step, total_steps, loss, lr, grad_norm, tokens_seen, tokens_per_second, mfu, elapsed_seconds, \
         at_ms, micro_batch",
        "run_id, attempt, step",
    ),
    ("checkpoints", "run_id, step, attempt, path, tokens_seen, at_ms", "run_id, step"),
    ("evals", "run_id, distribution, attempt, loss, bits_per_byte, tokens, bytes, at_ms", "run_id, distribution"),
    ("eval_jobs", "run_id, parent_run, step, task, family", "run_id"),
    ("eval_results", "run_id, subset, metric, value, attempt, at_ms", "run_id, subset, metric"),
    ("eval_items", "run_id, item, subset, gold, ll, chars, bytes, attempt", "run_id, item"),
];

/// The rows of every table, in [`TABLES`] order.
pub type Dump = Vec<(&'static str, Vec<Row>)>;

/// What a store copy reads and writes.
trait Tables {
    fn dump(&self) -> Result<Dump>;
    fn load(&self, dump: &Dump) -> Result<()>;
}

impl<B: Backend> Tables for SqlStore<B> {
    fn dump(&self) -> Result<Dump> {
        self.db.transact(false, &mut |tx| {
            TABLES
                .iter()
                .map(|(table, cols, order)| Ok((*table, tx.query(&format!("SELECT {cols} FROM {table} ORDER BY {order}"), &[])?)))
                .collect()
        })
    }

    fn load(&self, dump: &Dump) -> Result<()> {
        self.db.transact(true, &mut |tx| {
            let held: i64 = tx.scalar("SELECT COUNT(*) FROM sweeps", &[])?;
            let runs: i64 = tx.scalar("SELECT COUNT(*) FROM runs", &[])?;
            if held + runs > 0 {
                return Err(StoreError::NotEmpty { sweeps: held as usize, runs: runs as usize });
            }
            for ((table, rows), (_, cols, _)) in dump.iter().zip(TABLES) {
                let n = cols.split(", ").count();
                let marks: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
                // The target's own identity gives way to the source's (runs' artifacts keys name it).
                let conflict = if *table == "meta" { " ON CONFLICT (key) DO UPDATE SET value = excluded.value" } else { "" };
                let sql = format!("INSERT INTO {table} ({cols}) VALUES ({}){conflict}", marks.join(", "));
                for row in rows {
                    tx.execute(&sql, &row.0)?;
                }
            }
            tx.copied_ids()
        })
    }
}

fn tables(location: &StoreLocation) -> Result<Box<dyn Tables>> {
    Ok(match location {
        StoreLocation::Sqlite(path) => Box::new(SqliteStore::open(path)?),
        StoreLocation::Postgres(url) => Box::new(PgStore::connect(url)?),
    })
}

/// Two dumps hold the same rows (NaN equal to NaN); the first table that differs, if any.
pub fn first_difference(a: &Dump, b: &Dump) -> Option<String> {
    let same = |x: &Value, y: &Value| match (x, y) {
        (Value::Real(p), Value::Real(q)) => p == q || (p.is_nan() && q.is_nan()),
        _ => x == y,
    };
    for ((table, ra), (_, rb)) in a.iter().zip(b) {
        if ra.len() != rb.len() {
            return Some(format!("{table}: {} rows, then {}", ra.len(), rb.len()));
        }
        if let Some(i) =
            ra.iter().zip(rb).position(|(x, y)| x.0.len() != y.0.len() || !x.0.iter().zip(&y.0).all(|(p, q)| same(p, q)))
        {
            return Some(format!("{table}: row {i} is {:?}, then {:?}", ra[i].0, rb[i].0));
        }
    }
    None
}

/// Copies every row of the store at `from` into the empty store at `to` (created, or
/// migrated, first), then reads both back and compares them table by table. Returns the
/// number of rows per table. Blocks.
pub fn copy(from: &StoreLocation, to: &StoreLocation) -> Result<Vec<(&'static str, usize)>> {
    let source = tables(from)?;
    let target = tables(to)?;
    let dump = source.dump()?;
    target.load(&dump)?;
    if let Some(diff) = first_difference(&dump, &target.dump()?) {
        return Err(StoreError::Corrupt(format!("the copy differs from its source: {diff}")));
    }
    Ok(dump.iter().map(|(t, rows)| (*t, rows.len())).collect())
}

/// Every row of the store at `location` (for tests that compare stores).
pub fn dump(location: &StoreLocation) -> Result<Dump> {
    tables(location)?.dump()
}
