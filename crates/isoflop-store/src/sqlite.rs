//! The SQLite backend: one file, WAL journal, foreign keys on, migrations by `user_version`.

use crate::sql::{Backend, Row, Tx, Value};
use crate::store::SqlStore;
use crate::{Result, StoreError};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;

/// One schema or data migration.
enum Migration {
    Sql(&'static str),
    /// Data moves SQL cannot express (see [`crate::migrate`]); gets the time now.
    Code(fn(&Transaction<'_>, i64) -> Result<()>),
}

/// Migrations in order; `PRAGMA user_version` holds how many have been applied.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(include_str!("migrations/sqlite/0001_init.sql")),
    Migration::Sql(include_str!("migrations/sqlite/0002_progress_micro_batch.sql")),
    Migration::Sql(include_str!("migrations/sqlite/0003_eval_jobs.sql")),
    Migration::Code(crate::migrate::evals_leave_run_identity),
    Migration::Sql(include_str!("migrations/sqlite/0005_eval_items.sql")),
    Migration::Sql(include_str!("migrations/sqlite/0006_store_id.sql")),
];

/// The embedded store: one SQLite file.
pub type SqliteStore = SqlStore<SqliteDb>;

/// A SQLite database: one connection (SQLite serialises writers anyway); a write is an
/// IMMEDIATE transaction, a read a deferred one.
pub struct SqliteDb {
    conn: Mutex<Connection>,
    /// For a file: WAL checkpoints on a thread of their own (see [`Checkpointer`]).
    _checkpointer: Option<Checkpointer>,
}

/// Copies the write-ahead log back into the database file every second from a second
/// connection (a PASSIVE checkpoint, which never blocks the writer), instead of SQLite's
/// automatic checkpoint inside a committing write: that one ran its fsync inside a worker's
/// report transaction, and with 1,000 reports a second one report in a hundred waited over
/// 200 ms (bench/coordinator). Stopped when the store is dropped.
struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Option<Checkpointer> {
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(std::time::Duration::from_secs(1)).ok()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::park_timeout(std::time::Duration::from_secs(1));
                    // Best effort: a failed one leaves the log to the next (or to the close).
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .ok()?;
        Some(Checkpointer { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                open_err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot create directory {}: {e}", dir.display())),
                ))
            })?;
        }
        let conn = Connection::open(path).map_err(open_err)?;
        let mut store: SqliteStore = Self::init(conn, &path.display().to_string())?;
        if let Some(c) = Checkpointer::start(path) {
            let db = &mut store.db;
            db.conn.get_mut().unwrap_or_else(|p| p.into_inner()).pragma_update(None, "wal_autocheckpoint", 0)?;
            db._checkpointer = Some(c);
        }
        Ok(store)
    }

    /// An in-memory store (tests).
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    fn init(mut conn: Connection, path: &str) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::TooNew { path: path.into(), found: version, supported });
        }
        let now = isoflop_core::Clock::now_ms(&isoflop_core::SystemClock);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            match m {
                Migration::Sql(sql) => tx.execute_batch(sql)?,
                Migration::Code(f) => f(&tx, now)?,
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(SqlStore::on(SqliteDb { conn: Mutex::new(conn), _checkpointer: None }))
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn value_of(v: ValueRef<'_>) -> Result<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => {
            Value::Text(String::from_utf8(t.to_vec()).map_err(|e| StoreError::Corrupt(format!("text that is not UTF-8: {e}")))?)
        }
        ValueRef::Blob(_) => return Err(StoreError::Corrupt("a blob where the store writes none".into())),
    })
}

struct SqliteTx<'a>(Transaction<'a>);

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<usize> {
        Ok(self.0.prepare_cached(sql)?.execute(rusqlite::params_from_iter(args))?)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(Row((0..n).map(|i| value_of(r.get_ref(i)?)).collect::<Result<_>>()?));
        }
        Ok(out)
    }
}

impl Backend for SqliteDb {
    fn transact<T>(&self, write: bool, f: &mut dyn FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let behaviour = if write { TransactionBehavior::Immediate } else { TransactionBehavior::Deferred };
        let mut tx = SqliteTx(conn.transaction_with_behavior(behaviour)?);
        let out = f(&mut tx)?;
        tx.0.commit()?;
        Ok(out)
    }
}
