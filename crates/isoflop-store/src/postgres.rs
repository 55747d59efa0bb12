//! The PostgreSQL backend: a cluster's shared database.
//!
//! The synchronous `postgres` client (tokio-postgres underneath) with a small pool of
//! connections, each keeping its prepared statements. A write is a SERIALIZABLE transaction,
//! run again when PostgreSQL cannot serialise it with a concurrent one (SQLSTATE 40001,
//! 40P01); a read is a READ ONLY, REPEATABLE READ one (a consistent snapshot, never a
//! serialisation failure). The schema has its own migrations ([`MIGRATIONS`]), counted in
//! table `isoflop_schema`, applied under an advisory lock so that two coordinators starting
//! together migrate once.
//!
//! A client must not be used on a thread that drives an async runtime: the coordinator calls
//! the store from blocking threads (`StoreHandle` in isoflop-coordinator).

use crate::sql::{Backend, Row, Tx, Value};
use crate::store::SqlStore;
use crate::{Result, StoreError};
use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, IsolationLevel, NoTls, Statement};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Schema migrations in order; `isoflop_schema.version` holds how many have been applied.
/// Version 1 is the SQLite schema at its version 6, in PostgreSQL's types.
const MIGRATIONS: &[&str] = &[include_str!("migrations/postgres/0001_init.sql")];

/// The advisory lock key of migrations (any constant; "isoflop" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x69736f666c6f70;
/// The advisory lock key that orders event inserts.
const EVENTS_LOCK: i64 = 0x69736f666c6f71;
/// Connections a store opens at most.
const MAX_CONNECTIONS: usize = 16;
/// How often a write is tried when it cannot be serialised.
const MAX_TRIES: u32 = 50;

/// The cluster store: a PostgreSQL database.
pub type PgStore = SqlStore<PgDb>;

/// A PostgreSQL database behind a pool of connections.
pub struct PgDb {
    config: Config,
    pool: Mutex<Pool>,
    freed: Condvar,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Conn>,
    open: usize,
}

struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or a `key=value` string) and
    /// applies pending migrations.
    pub fn connect(url: &str) -> Result<Self> {
        let config: Config = url.parse().map_err(|e: postgres::Error| StoreError::PgUrl { message: e.to_string() })?;
        let target = isoflop_core::spec::redact(url);
        let db = PgDb { config, pool: Mutex::new(Pool::default()), freed: Condvar::new() };
        let mut conn = db.connect().map_err(|source| StoreError::PgConnect { target: target.clone(), source })?;
        migrate(&mut conn.client, &target)?;
        db.checkin(conn);
        Ok(SqlStore::on(db))
    }
}

/// The session lock one coordinator at a time holds on a database (the PostgreSQL
/// counterpart of a SQLite store's lock file), as the two-key advisory lock
/// (`COORDINATOR_LOCK`): held while the value lives, released by the server if the process dies.
pub struct PgLock {
    client: Option<Client>,
}

/// Closes clients on a thread of their own: closing blocks on the client's own runtime,
/// which panics on a thread that drives an async runtime (a store dropped at the end of an
/// async `main`).
fn close_apart<T: Send + 'static>(clients: T) {
    let _ = std::thread::spawn(move || drop(clients)).join();
}

impl Drop for PgLock {
    fn drop(&mut self) {
        close_apart(self.client.take());
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let pool = self.pool.get_mut().unwrap_or_else(|p| p.into_inner());
        close_apart(std::mem::take(&mut pool.idle));
    }
}

impl std::fmt::Debug for PgLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgLock")
    }
}

/// The coordinator lock's keys: "isof", 1.
const COORDINATOR_LOCK: (i32, i32) = (0x69736f66, 1);

impl PgStore {
    /// Takes the coordinator lock of the database at `url`, naming the holder `holder` (what
    /// [`PgStore::lock_holder`] tells the next one to try); `None` when another session holds it.
    pub fn try_lock(url: &str, holder: &str) -> Result<Option<PgLock>> {
        let mut client = Self::admin_client(url)?;
        client.execute("SELECT set_config('application_name', $1, false)", &[&holder])?;
        let got: bool =
            client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&COORDINATOR_LOCK.0, &COORDINATOR_LOCK.1])?.get(0);
        if got {
            Ok(Some(PgLock { client: Some(client) }))
        } else {
            close_apart(client);
            Ok(None)
        }
    }

    /// Who holds the coordinator lock of the database at `url` (its session's
    /// `application_name` and host), or `None` when nobody does.
    pub fn lock_holder(url: &str) -> Result<Option<String>> {
        let mut client = Self::admin_client(url)?;
        let row = client.query_opt(
            "SELECT a.application_name, COALESCE(host(a.client_addr), 'local socket') FROM pg_locks l
             JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 2",
            &[&i64::from(COORDINATOR_LOCK.0), &i64::from(COORDINATOR_LOCK.1)],
        )?;
        Ok(row.map(|r| format!("`{}` (from {})", r.get::<_, String>(0), r.get::<_, String>(1))))
    }

    fn admin_client(url: &str) -> Result<Client> {
        let config: Config = url.parse().map_err(|e: postgres::Error| StoreError::PgUrl { message: e.to_string() })?;
        config.connect(NoTls).map_err(|source| StoreError::PgConnect { target: isoflop_core::spec::redact(url), source })
    }
}

fn migrate(client: &mut Client, target: &str) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS isoflop_schema (version BIGINT NOT NULL)")?;
    let version: i64 = match tx.query_opt("SELECT version FROM isoflop_schema", &[])? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO isoflop_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::TooNew { path: target.into(), found: version, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql)?;
        tx.execute("UPDATE isoflop_schema SET version = $1", &[&((i + 1) as i64)])?;
    }
    tx.commit()?;
    Ok(())
}

impl PgDb {
    fn connect(&self) -> std::result::Result<Conn, postgres::Error> {
        Ok(Conn { client: self.config.connect(NoTls)?, statements: HashMap::new() })
    }

    /// A connection: an idle one, a new one while fewer than [`MAX_CONNECTIONS`] are open,
    /// else the next one freed.
    fn checkout(&self) -> Result<Conn> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = pool.idle.pop() {
                if conn.client.is_closed() {
                    pool.open -= 1;
                    continue;
                }
                return Ok(conn);
            }
            if pool.open < MAX_CONNECTIONS {
                pool.open += 1;
                drop(pool);
                return self.connect().map_err(|e| {
                    self.release_slot();
                    StoreError::Postgres(e)
                });
            }
            pool = self.freed.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn checkin(&self, conn: Conn) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if conn.client.is_closed() {
            pool.open -= 1;
        } else {
            pool.idle.push(conn);
        }
        self.freed.notify_one();
    }

    fn release_slot(&self) {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
        self.freed.notify_one();
    }
}

/// Whether another try of the transaction may succeed and cannot apply it twice: a
/// serialisation failure or a deadlock (PostgreSQL rolled it back), or, for a read only, a
/// connection that closed (the next try opens another; a write whose connection closed may
/// have committed, so it is the caller's error).
fn retryable(e: &StoreError, write: bool) -> bool {
    match e {
        StoreError::Postgres(e) => {
            (!write && e.is_closed())
                || matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
        }
        _ => false,
    }
}

impl Backend for PgDb {
    fn transact<T>(&self, write: bool, f: &mut dyn FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut conn = self.checkout()?;
            let out = run_once(&mut conn, write, f);
            self.checkin(conn);
            match out {
                Err(e) if tries < MAX_TRIES && retryable(&e, write) => {
                    // Back off a little, more each time, so that contending writers spread out.
                    let jitter =
                        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_micros();
                    std::thread::sleep(Duration::from_micros((500 << tries.min(6)) + u64::from(jitter % 1000)));
                }
                out => return out,
            }
        }
    }
}

fn run_once<T>(conn: &mut Conn, write: bool, f: &mut dyn FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
    let isolation = if write { IsolationLevel::Serializable } else { IsolationLevel::RepeatableRead };
    let tx = conn.client.build_transaction().isolation_level(isolation).read_only(!write).start()?;
    let mut tx = PgTx { tx, statements: &mut conn.statements };
    let out = f(&mut tx)?;
    tx.tx.commit()?;
    Ok(out)
}

struct PgTx<'a> {
    tx: postgres::Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
}

/// `?N` placeholders as PostgreSQL's `$N`.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(&dollar_placeholders(sql))?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

fn params(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl Tx for PgTx<'_> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<usize> {
        let stmt = self.statement(sql)?;
        Ok(self.tx.execute(&stmt, &params(args))? as usize)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        let stmt = self.statement(sql)?;
        let found = self.tx.query(&stmt, &params(args))?;
        found.iter().map(|r| Ok(Row((0..r.len()).map(|i| r.try_get::<_, Value>(i)).collect::<Result<_, _>>()?))).collect()
    }

    fn copied_ids(&mut self) -> Result<()> {
        self.tx
            .execute("SELECT setval(pg_get_serial_sequence('events', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM events", &[])?;
        Ok(())
    }

    fn order_events(&mut self) -> Result<()> {
        self.tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK])?;
        Ok(())
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

const INTS: [Type; 3] = [Type::INT8, Type::INT4, Type::INT2];
const REALS: [Type; 2] = [Type::FLOAT8, Type::FLOAT4];
const TEXTS: [Type; 4] = [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME];

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) if *ty == Type::INT8 => i.to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::BOOL => (*i != 0).to_sql(ty, out),
            Value::Int(i) if *ty == Type::FLOAT8 => (*i as f64).to_sql(ty, out),
            Value::Int(i) if *ty == Type::FLOAT4 => (*i as f32).to_sql(ty, out),
            Value::Real(f) if *ty == Type::FLOAT8 => f.to_sql(ty, out),
            Value::Real(f) if *ty == Type::FLOAT4 => (*f as f32).to_sql(ty, out),
            Value::Text(s) if TEXTS.contains(ty) || *ty == Type::UNKNOWN => s.as_str().to_sql(ty, out),
            v => Err(format!("{v:?} for a parameter of type {ty}").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        INTS.contains(ty) || REALS.contains(ty) || TEXTS.contains(ty) || *ty == Type::BOOL || *ty == Type::UNKNOWN
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(match ty {
            t if *t == Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            t if *t == Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            t if *t == Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            t if *t == Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            t if *t == Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            t if *t == Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            _ => Value::Text(<&str>::from_sql(ty, raw)?.to_owned()),
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(ty: &Type) -> bool {
        INTS.contains(ty) || REALS.contains(ty) || TEXTS.contains(ty) || *ty == Type::BOOL
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(super::dollar_placeholders("a = ?1 AND b = ?12 OR c = '?'"), "a = $1 AND b = $12 OR c = '?'");
    }
}
