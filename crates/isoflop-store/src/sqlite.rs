//! The SQLite backend: one file, WAL journal, foreign keys on, migrations by `user_version`.

use crate::*;
use isoflop_core::choice::ItemScore;
use isoflop_core::eval::metric;
use isoflop_core::{Clock, EvalMetric, SystemClock, after_failure};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

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

/// The embedded store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn class_of(s: Option<String>) -> Result<Option<FailureClass>> {
    s.map(|s| s.parse().map_err(StoreError::Corrupt)).transpose()
}
fn state_of(s: String) -> Result<RunState> {
    s.parse().map_err(StoreError::Corrupt)
}

/// Which runs a run query reads, and from which sweep each is seen.
#[derive(Debug, Clone, Copy)]
enum RunScope<'a> {
    /// The runs of one sweep, with that sweep's names.
    Sweep(&'a str),
    /// One run, seen from its owner sweep.
    Run(&'a str),
    /// Runs in a state (queued ones ready by a time), seen from their owners.
    State(RunState, Option<i64>),
    /// Runs named by a user's key: id prefix or any sweep's name for it.
    Key(&'a str),
}

const RUN_COLS: &str = "r.run_id, sr.sweep, sr.name, sr.corpus, sr.budget, r.config_json, r.state, r.failure_class, \
     r.message, r.attempts, r.retries_used, r.not_before_ms, r.updated_ms, COALESCE(r.artifacts_key, r.run_id), \
     e.parent_run, e.step, e.task, e.family";
const PROGRESS_COLS: &str =
    "attempt, step, total_steps, loss, lr, grad_norm, tokens_seen, tokens_per_second, mfu, elapsed_seconds, at_ms, micro_batch";
const ATTEMPT_COLS: &str = "run_id, attempt, token_hash, outcome, failure_class, message, executor_ref, resume_step, \
     lease_expires_ms, started_ms, ended_ms";
const EVENT_COLS: &str = "id, run_id, attempt, at_ms, from_state, to_state, failure_class, message";

fn run_row(r: &Row<'_>) -> rusqlite::Result<(RunRow, String, Option<String>)> {
    Ok((
        RunRow {
            run_id: r.get(0)?,
            sweep: r.get(1)?,
            name: r.get(2)?,
            corpus: r.get(3)?,
            budget: r.get(4)?,
            config_json: r.get(5)?,
            state: RunState::Planned,
            failure_class: None,
            message: r.get(8)?,
            attempts: r.get::<_, i64>(9)? as u64,
            retries_used: r.get::<_, i64>(10)? as u64,
            not_before_ms: r.get(11)?,
            updated_ms: r.get(12)?,
            progress: None,
            artifacts_key: r.get(13)?,
            eval: match r.get::<_, Option<String>>(14)? {
                Some(parent) => Some(EvalOf { parent, step: r.get::<_, i64>(15)? as u64, task: r.get(16)?, family: r.get(17)? }),
                None => None,
            },
        },
        r.get(6)?,
        r.get(7)?,
    ))
}

fn progress_row(r: &Row<'_>) -> rusqlite::Result<ProgressPoint> {
    Ok(ProgressPoint {
        attempt: r.get::<_, i64>(0)? as u64,
        step: r.get::<_, i64>(1)? as u64,
        total_steps: r.get::<_, i64>(2)? as u64,
        loss: r.get(3)?,
        lr: r.get(4)?,
        grad_norm: r.get(5)?,
        tokens_seen: r.get::<_, i64>(6)? as u64,
        tokens_per_second: r.get(7)?,
        mfu: r.get(8)?,
        elapsed_seconds: r.get(9)?,
        at_ms: r.get(10)?,
        micro_batch: r.get::<_, Option<i64>>(11)?.map(|m| m as u64),
    })
}

fn checkpoint_row(r: &Row<'_>) -> rusqlite::Result<CheckpointRow> {
    Ok(CheckpointRow {
        step: r.get::<_, i64>(0)? as u64,
        attempt: r.get::<_, i64>(1)? as u64,
        path: r.get(2)?,
        tokens_seen: r.get::<_, i64>(3)? as u64,
        at_ms: r.get(4)?,
    })
}

fn attempt_row(r: &Row<'_>) -> rusqlite::Result<(AttemptRow, String, Option<String>)> {
    Ok((
        AttemptRow {
            run_id: r.get(0)?,
            attempt: r.get::<_, i64>(1)? as u64,
            token_hash: r.get(2)?,
            outcome: AttemptOutcome::Active,
            failure_class: None,
            message: r.get(5)?,
            executor_ref: r.get(6)?,
            resume_step: r.get::<_, i64>(7)? as u64,
            lease_expires_ms: r.get(8)?,
            started_ms: r.get(9)?,
            ended_ms: r.get(10)?,
        },
        r.get(3)?,
        r.get(4)?,
    ))
}

fn finish_attempt_row((mut a, outcome, class): (AttemptRow, String, Option<String>)) -> Result<AttemptRow> {
    a.outcome = AttemptOutcome::parse(&outcome).ok_or_else(|| StoreError::Corrupt(format!("attempt outcome `{outcome}`")))?;
    a.failure_class = class_of(class)?;
    Ok(a)
}

type RawEvent = (i64, String, Option<i64>, i64, String, String, Option<String>, String);

fn raw_event(r: &Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
}

fn event_row((id, run_id, attempt, at_ms, from, to, class, message): RawEvent) -> Result<EventRow> {
    Ok(EventRow {
        id,
        run_id,
        attempt: attempt.map(|a| a as u64),
        at_ms,
        from: state_of(from)?,
        to: state_of(to)?,
        failure_class: class_of(class)?,
        message,
    })
}

/// A run's row as a lifecycle verb reads it in its transaction.
struct RunNow {
    state: RunState,
    failure_class: Option<FailureClass>,
    retries_used: u64,
    attempts: u64,
}

/// An update that must touch exactly one row; zero rows means `missing`.
fn one_row(n: usize, missing: impl FnOnce() -> StoreError) -> Result<()> {
    match n {
        1 => Ok(()),
        0 => Err(missing()),
        n => Err(StoreError::Corrupt(format!("an update meant for one row touched {n}"))),
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
        Self::init(conn, &path.display().to_string())
    }

    /// An in-memory store (tests).
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    /// The same store reading time from `clock` (event times, back-off deadlines, ...).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
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
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            match m {
                Migration::Sql(sql) => tx.execute_batch(sql)?,
                Migration::Code(f) => f(&tx, clock.now_ms())?,
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Self { conn: Mutex::new(conn), clock })
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn with<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// What a verb decides from: the run's state, failure class, retries used and attempts.
    fn run_now(tx: &Transaction<'_>, run_id: &str) -> Result<RunNow> {
        let row: Option<(String, Option<String>, i64, i64)> = tx
            .query_row("SELECT state, failure_class, retries_used, attempts FROM runs WHERE run_id = ?1", [run_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let (state, class, retries, attempts) = row.ok_or_else(|| StoreError::NotFound { what: "run", key: run_id.into() })?;
        Ok(RunNow {
            state: state_of(state)?,
            failure_class: class_of(class)?,
            retries_used: retries as u64,
            attempts: attempts as u64,
        })
    }

    /// Whether `attempt` is the run's current attempt and still active.
    fn is_live(tx: &Transaction<'_>, run_id: &str, attempt: u64) -> Result<bool> {
        let outcome: Option<String> = tx
            .query_row(
                "SELECT a.outcome FROM attempts a JOIN runs r ON r.run_id = a.run_id
                 WHERE a.run_id = ?1 AND a.attempt = ?2 AND r.attempts = ?2",
                params![run_id, attempt as i64],
                |r| r.get(0),
            )
            .optional()?;
        Ok(outcome.as_deref() == Some(AttemptOutcome::Active.as_str()))
    }

    fn do_transition(&self, tx: &Transaction<'_>, run_id: &str, to: RunState, c: &Change) -> Result<EventRow> {
        let from = Self::run_now(tx, run_id)?.state;
        from.transition(to).map_err(|source| StoreError::Transition { run_id: run_id.into(), source })?;
        let now = self.now();
        let class = c.failure_class.map(|f| f.as_str());
        let n = tx.execute(
            "UPDATE runs SET state = ?2, failure_class = ?3, message = ?4, updated_ms = ?5,
                 not_before_ms = COALESCE(?6, not_before_ms),
                 retries_used = CASE WHEN ?8 THEN 0 ELSE retries_used + ?7 END
             WHERE run_id = ?1",
            params![run_id, to.as_str(), class, c.message, now, c.not_before_ms, c.spend_retry as i64, c.reset_retries],
        )?;
        one_row(n, || StoreError::NotFound { what: "run", key: run_id.into() })?;
        tx.execute(
            "INSERT INTO events (run_id, attempt, at_ms, from_state, to_state, failure_class, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![run_id, c.attempt.map(|a| a as i64), now, from.as_str(), to.as_str(), class, c.message],
        )?;
        Ok(EventRow {
            id: tx.last_insert_rowid(),
            run_id: run_id.into(),
            attempt: c.attempt,
            at_ms: now,
            from,
            to,
            failure_class: c.failure_class,
            message: c.message.clone(),
        })
    }

    /// Marks an active attempt ended; [`StoreError::StaleAttempt`] when it is not active.
    fn close_attempt(
        &self,
        tx: &Transaction<'_>,
        run_id: &str,
        attempt: u64,
        outcome: AttemptOutcome,
        class: Option<FailureClass>,
        message: &str,
    ) -> Result<()> {
        let n = tx.execute(
            "UPDATE attempts SET outcome = ?3, failure_class = ?4, message = ?5, ended_ms = ?6
             WHERE run_id = ?1 AND attempt = ?2 AND outcome = 'active'",
            params![run_id, attempt as i64, outcome.as_str(), class.map(|c| c.as_str()), message, self.now()],
        )?;
        one_row(n, || StoreError::StaleAttempt { run_id: run_id.into(), attempt })
    }

    /// Records a checkpoint; a row for the same step keeps its tokens count when the new one
    /// does not say (0).
    fn put_checkpoint(tx: &Transaction<'_>, run_id: &str, c: &CheckpointRow) -> Result<()> {
        tx.execute(
            "INSERT INTO checkpoints (run_id, step, attempt, path, tokens_seen, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (run_id, step) DO UPDATE SET attempt = excluded.attempt, path = excluded.path,
                 at_ms = excluded.at_ms,
                 tokens_seen = CASE WHEN excluded.tokens_seen > 0 THEN excluded.tokens_seen ELSE checkpoints.tokens_seen END",
            params![run_id, c.step as i64, c.attempt as i64, c.path, c.tokens_seen as i64, c.at_ms],
        )?;
        Ok(())
    }

    /// A job this submission plans that the store knows already. Its configuration becomes
    /// the submitter's: the identity is the same (the data's digests), but the files may lie
    /// elsewhere for this sweep, and the next attempt reads them from there. A job that joins
    /// the sweep now, having failed (not diverged) or been cancelled in another, is queued
    /// again with a fresh retry budget: this sweep never tried it.
    fn join_known(&self, tx: &Transaction<'_>, sweep: &str, run: &NewRun, out: &mut SubmitResult) -> Result<()> {
        tx.execute(
            "UPDATE runs SET config_json = ?2 WHERE run_id = ?1 AND config_json <> ?2",
            params![run.run_id, run.config_json],
        )?;
        let member: bool =
            tx.query_row("SELECT COUNT(*) FROM sweep_runs WHERE sweep = ?1 AND run_id = ?2", params![sweep, run.run_id], |r| {
                r.get::<_, i64>(0)
            })? > 0;
        if member {
            return Ok(());
        }
        let now = Self::run_now(tx, &run.run_id)?;
        let retry = match now.state {
            RunState::Failed => now.failure_class != Some(FailureClass::Diverged),
            RunState::Cancelled => true,
            _ => false,
        };
        if retry {
            let change = Change {
                message: format!("queued again for sweep `{sweep}` (it had {} in another sweep)", now.state.as_str()),
                reset_retries: true,
                not_before_ms: Some(0),
                ..Change::default()
            };
            self.do_transition(tx, &run.run_id, RunState::Queued, &change)?;
            out.requeued += 1;
        }
        Ok(())
    }

    fn end_in(&self, tx: &Transaction<'_>, run_id: &str, attempt: u64, ending: &Ending) -> Result<EventRow> {
        let retries_used = Self::run_now(tx, run_id)?.retries_used;
        let now = self.now();
        let (outcome, to, change) = match ending {
            Ending::Succeeded { results, items, message } => {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO eval_results (run_id, subset, metric, value, attempt, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for m in results {
                    stmt.execute(params![run_id, m.subset, m.metric, m.value, attempt as i64, now])?;
                }
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO eval_items (run_id, item, subset, gold, ll, chars, bytes, attempt)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                fn json<T: serde::Serialize>(v: &T) -> String {
                    serde_json::to_string(v).expect("numbers serialise")
                }
                for it in items {
                    stmt.execute(params![
                        run_id,
                        it.item as i64,
                        it.subset,
                        it.gold as i64,
                        json(&it.ll),
                        json(&it.chars),
                        json(&it.bytes),
                        attempt as i64
                    ])?;
                }
                let change = Change { attempt: Some(attempt), message: message.clone(), ..Change::default() };
                (AttemptOutcome::Succeeded, RunState::Succeeded, change)
            }
            Ending::Failed { class, message, retries } => {
                let d = after_failure(*class, retries_used, *retries);
                let change = Change {
                    attempt: Some(attempt),
                    failure_class: Some(*class),
                    message: message.clone(),
                    not_before_ms: (d.next == RunState::Queued).then(|| now + d.delay.as_millis() as i64),
                    spend_retry: d.spend_retry,
                    reset_retries: false,
                };
                (AttemptOutcome::Failed, d.next, change)
            }
            Ending::Interrupted { checkpoint, class, message } => {
                if let Some(c) = checkpoint {
                    Self::put_checkpoint(tx, run_id, c)?;
                }
                let change = Change {
                    attempt: Some(attempt),
                    failure_class: Some(*class),
                    message: message.clone(),
                    not_before_ms: Some(0),
                    ..Change::default()
                };
                (AttemptOutcome::Interrupted, RunState::Queued, change)
            }
        };
        self.close_attempt(tx, run_id, attempt, outcome, change.failure_class, &change.message)?;
        self.do_transition(tx, run_id, to, &change)
    }

    fn runs_where(tx: &Transaction<'_>, scope: RunScope<'_>) -> Result<Vec<RunRow>> {
        // The sweep a run is seen from: the asked sweep, or its owner (the first sweep_runs row).
        let owner = "sr.rowid = (SELECT rowid FROM sweep_runs WHERE run_id = r.run_id ORDER BY rowid LIMIT 1)";
        let (join, filter, args): (String, &str, Vec<Box<dyn rusqlite::ToSql>>) = match scope {
            RunScope::Sweep(s) => ("sr.run_id = r.run_id AND sr.sweep = ?1".into(), "1", vec![Box::new(s.to_string())]),
            RunScope::Run(id) => (owner.into(), "r.run_id = ?1", vec![Box::new(id.to_string())]),
            RunScope::State(state, None) => (owner.into(), "r.state = ?1", vec![Box::new(state.as_str())]),
            RunScope::State(state, Some(t)) => (
                owner.into(),
                // An evaluation job is ready once its checkpoint is recorded.
                "r.state = ?1 AND r.not_before_ms <= ?2 AND (e.run_id IS NULL OR EXISTS
                     (SELECT 1 FROM checkpoints c WHERE c.run_id = e.parent_run AND c.step = e.step))",
                vec![Box::new(state.as_str()), Box::new(t)],
            ),
            RunScope::Key(key) => (
                owner.into(),
                "(substr(r.run_id, 1, length(?1)) = ?1 OR r.run_id IN (SELECT run_id FROM sweep_runs WHERE name = ?1))",
                vec![Box::new(key.to_string())],
            ),
        };
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs r JOIN sweep_runs sr ON {join} LEFT JOIN eval_jobs e ON e.run_id = r.run_id \
                     WHERE {filter} ORDER BY sr.sweep, sr.ordinal"
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        let params: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a.as_ref()).collect();
        let rows = stmt.query_map(params.as_slice(), run_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(rows.len());
        let mut latest = tx.prepare_cached(&format!(
            "SELECT {PROGRESS_COLS} FROM progress WHERE run_id = ?1 ORDER BY attempt DESC, step DESC LIMIT 1"
        ))?;
        for (mut row, state, class) in rows {
            row.state = state_of(state)?;
            row.failure_class = class_of(class)?;
            row.progress = latest.query_row([&row.run_id], progress_row).optional()?;
            out.push(row);
        }
        Ok(out)
    }

    fn attempts_where(&self, filter: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<AttemptRow>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached(&format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE {filter}"))?;
            let rows = stmt.query_map(args, attempt_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(finish_attempt_row).collect()
        })
    }

    fn events_filtered(&self, filter: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<EventRow>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached(&format!("SELECT {EVENT_COLS} FROM events WHERE {filter} ORDER BY id"))?;
            let rows = stmt.query_map(args, raw_event)?.collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(event_row).collect()
        })
    }
}

impl Store for SqliteStore {
    fn submit_sweep(&self, sweep: &NewSweep, runs: &[NewRun]) -> Result<SubmitResult> {
        self.with(|tx| {
            let existing: Option<String> =
                tx.query_row("SELECT spec_yaml FROM sweeps WHERE name = ?1", [&sweep.name], |r| r.get(0)).optional()?;
            let (existed, updated) = match existing {
                Some(spec) if spec == sweep.spec_yaml => {
                    // The same spec from another place (a moved or copied directory): its
                    // relative paths now resolve from where it was submitted.
                    if !sweep.spec_path.is_empty() {
                        tx.execute(
                            "UPDATE sweeps SET spec_path = ?2 WHERE name = ?1 AND spec_path <> ?2",
                            params![sweep.name, sweep.spec_path],
                        )?;
                    }
                    (true, false)
                }
                Some(_) => {
                    // Another spec under this name: allowed when it trains every stored run
                    // (and perhaps more: the sweep grows).
                    let mut stmt = tx.prepare(
                        "SELECT sr.run_id, sr.name FROM sweep_runs sr WHERE sr.sweep = ?1
                         AND NOT EXISTS (SELECT 1 FROM eval_jobs e WHERE e.run_id = sr.run_id) ORDER BY sr.ordinal",
                    )?;
                    let stored = stmt
                        .query_map([&sweep.name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    let planned: std::collections::HashSet<&str> =
                        runs.iter().filter(|r| r.eval.is_none()).map(|r| r.run_id.as_str()).collect();
                    let missing: Vec<&(String, String)> =
                        stored.iter().filter(|(id, _)| !planned.contains(id.as_str())).collect();
                    if let Some((id, name)) = missing.first() {
                        return Err(StoreError::SweepConflict {
                            sweep: sweep.name.clone(),
                            missing: missing.len(),
                            example: format!("{name} ({id})"),
                        });
                    }
                    tx.execute(
                        "UPDATE sweeps SET spec_yaml = ?2, spec_path = ?3 WHERE name = ?1",
                        params![sweep.name, sweep.spec_yaml, sweep.spec_path],
                    )?;
                    (false, true)
                }
                None => {
                    tx.execute(
                        "INSERT INTO sweeps (name, spec_yaml, spec_path, created_ms) VALUES (?1, ?2, ?3, ?4)",
                        params![sweep.name, sweep.spec_yaml, sweep.spec_path, self.now()],
                    )?;
                    (false, false)
                }
            };
            let mut out = SubmitResult { runs: 0, reused: 0, evals: 0, evals_reused: 0, existed, updated, requeued: 0 };
            // Ordinals continue after what the sweep holds, so added jobs list last.
            let base: i64 =
                tx.query_row("SELECT COALESCE(MAX(ordinal) + 1, 0) FROM sweep_runs WHERE sweep = ?1", [&sweep.name], |r| {
                    r.get(0)
                })?;
            for (i, run) in runs.iter().enumerate() {
                let known: bool =
                    tx.query_row("SELECT COUNT(*) FROM runs WHERE run_id = ?1", [&run.run_id], |r| r.get::<_, i64>(0))? > 0;
                match (&run.eval, known) {
                    (None, k) => {
                        out.runs += 1;
                        out.reused += k as usize;
                    }
                    (Some(_), k) => {
                        out.evals += 1;
                        out.evals_reused += k as usize;
                    }
                }
                if !known {
                    let now = self.now();
                    // Its files live under this store's directory of the artifacts.
                    tx.execute(
                        "INSERT INTO runs (run_id, config_json, state, created_ms, updated_ms, artifacts_key)
                         VALUES (?1, ?2, ?3, ?4, ?4, (SELECT value FROM meta WHERE key = 'store_id') || '/' || ?1)",
                        params![run.run_id, run.config_json, RunState::Planned.as_str(), now],
                    )?;
                    if let Some(e) = &run.eval {
                        tx.execute(
                            "INSERT INTO eval_jobs (run_id, parent_run, step, task, family) VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![run.run_id, e.parent, e.step as i64, e.task, e.family],
                        )?;
                    }
                    self.do_transition(tx, &run.run_id, RunState::Queued, &Change::default())?;
                } else {
                    self.join_known(tx, &sweep.name, run, &mut out)?;
                }
                tx.execute(
                    "INSERT OR IGNORE INTO sweep_runs (sweep, run_id, ordinal, name, corpus, budget)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![sweep.name, run.run_id, base + i as i64, run.name, run.corpus, run.budget],
                )?;
            }
            Ok(out)
        })
    }

    fn delete_sweep(&self, name: &str, dry_run: bool) -> Result<Deleted> {
        self.with(|tx| {
            if tx.query_row("SELECT COUNT(*) FROM sweeps WHERE name = ?1", [name], |r| r.get::<_, i64>(0))? == 0 {
                return Err(StoreError::NotFound { what: "sweep", key: name.into() });
            }
            let runs = Self::runs_where(tx, RunScope::Sweep(name))?;
            let mut shared: std::collections::HashSet<String> = std::collections::HashSet::new();
            let mut stmt = tx.prepare_cached("SELECT COUNT(*) FROM sweep_runs WHERE run_id = ?1 AND sweep <> ?2")?;
            for r in &runs {
                if stmt.query_row(params![r.run_id, name], |x| x.get::<_, i64>(0))? > 0 {
                    shared.insert(r.run_id.clone());
                }
            }
            // A run a kept evaluation job scores stays too.
            let mine: std::collections::HashSet<&str> =
                runs.iter().map(|r| r.run_id.as_str()).filter(|id| !shared.contains(*id)).collect();
            let mut scoring = tx.prepare_cached("SELECT run_id FROM eval_jobs WHERE parent_run = ?1")?;
            let mut keep = Vec::new();
            for r in runs.iter().filter(|r| r.is_training() && mine.contains(r.run_id.as_str())) {
                let jobs = scoring.query_map([&r.run_id], |x| x.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
                if jobs.iter().any(|j| !mine.contains(j.as_str())) {
                    keep.push(r.run_id.clone());
                }
            }
            shared.extend(keep);
            let own: Vec<&RunRow> = runs.iter().filter(|r| !shared.contains(&r.run_id)).collect();
            let active = own.iter().filter(|r| r.state.is_active()).count();
            if active > 0 {
                return Err(StoreError::SweepActive { sweep: name.into(), active });
            }
            let out = Deleted {
                jobs: own
                    .iter()
                    .map(|r| DeletedJob {
                        run_id: r.run_id.clone(),
                        name: r.name.clone(),
                        artifacts_key: r.artifacts_key.clone(),
                        training: r.is_training(),
                    })
                    .collect(),
                shared: shared.len(),
            };
            if dry_run {
                return Ok(out);
            }
            // Evaluation jobs first (they point at their runs), then the runs.
            let ordered = own.iter().filter(|r| !r.is_training()).chain(own.iter().filter(|r| r.is_training()));
            for r in ordered {
                for table in [
                    "eval_items",
                    "eval_results",
                    "evals",
                    "checkpoints",
                    "progress",
                    "events",
                    "attempts",
                    "eval_jobs",
                    "sweep_runs",
                ] {
                    tx.execute(&format!("DELETE FROM {table} WHERE run_id = ?1"), [&r.run_id])?;
                }
                tx.execute("DELETE FROM runs WHERE run_id = ?1", [&r.run_id])?;
            }
            tx.execute("DELETE FROM sweep_runs WHERE sweep = ?1", [name])?;
            tx.execute("DELETE FROM sweeps WHERE name = ?1", [name])?;
            Ok(out)
        })
    }

    fn store_id(&self) -> Result<String> {
        self.with(|tx| Ok(tx.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| r.get(0))?))
    }

    fn sweep(&self, name: &str) -> Result<Option<SweepRow>> {
        self.with(|tx| {
            Ok(tx
                .query_row("SELECT name, spec_yaml, spec_path, created_ms FROM sweeps WHERE name = ?1", [name], |r| {
                    Ok(SweepRow { name: r.get(0)?, spec_yaml: r.get(1)?, spec_path: r.get(2)?, created_ms: r.get(3)? })
                })
                .optional()?)
        })
    }

    fn sweeps(&self) -> Result<Vec<SweepRow>> {
        self.with(|tx| {
            let mut stmt =
                tx.prepare("SELECT name, spec_yaml, spec_path, created_ms FROM sweeps ORDER BY created_ms DESC, rowid DESC")?;
            let rows = stmt.query_map([], |r| {
                Ok(SweepRow { name: r.get(0)?, spec_yaml: r.get(1)?, spec_path: r.get(2)?, created_ms: r.get(3)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn sweep_runs(&self, sweep: &str) -> Result<Vec<RunRow>> {
        self.with(|tx| Self::runs_where(tx, RunScope::Sweep(sweep)))
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRow>> {
        self.with(|tx| Ok(Self::runs_where(tx, RunScope::Run(run_id))?.into_iter().next()))
    }

    fn find_runs(&self, key: &str) -> Result<Vec<RunRow>> {
        self.with(|tx| {
            let exact = Self::runs_where(tx, RunScope::Run(key))?;
            if !exact.is_empty() {
                return Ok(exact);
            }
            Self::runs_where(tx, RunScope::Key(key))
        })
    }

    fn runs_in_state(&self, state: RunState, ready_at_ms: Option<i64>) -> Result<Vec<RunRow>> {
        self.with(|tx| Self::runs_where(tx, RunScope::State(state, ready_at_ms)))
    }

    fn transition(&self, run_id: &str, to: RunState, change: &Change) -> Result<EventRow> {
        self.with(|tx| self.do_transition(tx, run_id, to, change))
    }

    fn start_attempt(&self, run_id: &str, token_hash: &str, lease_expires_ms: i64) -> Result<(AttemptRow, EventRow)> {
        self.with(|tx| {
            let attempts = Self::run_now(tx, run_id)?.attempts;
            let attempt = attempts + 1;
            let event =
                self.do_transition(tx, run_id, RunState::Launching, &Change { attempt: Some(attempt), ..Change::default() })?;
            let now = self.now();
            let n = tx.execute("UPDATE runs SET attempts = ?2 WHERE run_id = ?1", params![run_id, attempt as i64])?;
            one_row(n, || StoreError::NotFound { what: "run", key: run_id.into() })?;
            tx.execute(
                "INSERT INTO attempts (run_id, attempt, token_hash, lease_expires_ms, started_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, attempt as i64, token_hash, lease_expires_ms, now],
            )?;
            let row = AttemptRow {
                run_id: run_id.into(),
                attempt,
                token_hash: token_hash.into(),
                outcome: AttemptOutcome::Active,
                failure_class: None,
                message: String::new(),
                executor_ref: String::new(),
                resume_step: 0,
                lease_expires_ms,
                started_ms: now,
                ended_ms: None,
            };
            Ok((row, event))
        })
    }

    fn set_executor_ref(&self, run_id: &str, attempt: u64, executor_ref: &str) -> Result<()> {
        self.with(|tx| {
            let n = tx.execute(
                "UPDATE attempts SET executor_ref = ?3 WHERE run_id = ?1 AND attempt = ?2",
                params![run_id, attempt as i64, executor_ref],
            )?;
            one_row(n, || StoreError::NotFound { what: "attempt", key: format!("{run_id}/{attempt}") })
        })
    }

    fn attempt(&self, run_id: &str, attempt: u64) -> Result<Option<AttemptRow>> {
        self.with(|tx| {
            tx.query_row(
                &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE run_id = ?1 AND attempt = ?2"),
                params![run_id, attempt as i64],
                attempt_row,
            )
            .optional()?
            .map(finish_attempt_row)
            .transpose()
        })
    }

    fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>> {
        self.attempts_where("run_id = ?1 ORDER BY attempt", &[&run_id])
    }

    fn active_attempts(&self) -> Result<Vec<AttemptRow>> {
        self.attempts_where("outcome = 'active' ORDER BY started_ms", &[])
    }

    fn attach(&self, run_id: &str, attempt: u64, resume_step: u64, lease_expires_ms: i64) -> Result<EventRow> {
        self.with(|tx| {
            let n = tx.execute(
                "UPDATE attempts SET resume_step = ?3, lease_expires_ms = ?4
                 WHERE run_id = ?1 AND attempt = ?2 AND outcome = 'active'",
                params![run_id, attempt as i64, resume_step as i64, lease_expires_ms],
            )?;
            one_row(n, || StoreError::StaleAttempt { run_id: run_id.into(), attempt })?;
            let message = if resume_step > 0 { format!("resuming from step {resume_step}") } else { String::new() };
            self.do_transition(tx, run_id, RunState::Running, &Change { attempt: Some(attempt), message, ..Change::default() })
        })
    }

    fn report(&self, run_id: &str, attempt: u64, report: &Report) -> Result<()> {
        self.with(|tx| {
            let n = tx.execute(
                "UPDATE attempts SET lease_expires_ms = ?3, resume_step = COALESCE(?4, resume_step)
                 WHERE run_id = ?1 AND attempt = ?2 AND outcome = 'active'",
                params![run_id, attempt as i64, report.lease_expires_ms, report.resumed_from.map(|s| s as i64)],
            )?;
            one_row(n, || StoreError::StaleAttempt { run_id: run_id.into(), attempt })?;
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO progress (run_id, {PROGRESS_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))?;
            for p in &report.progress {
                stmt.execute(params![
                    run_id,
                    attempt as i64,
                    p.step as i64,
                    p.total_steps as i64,
                    p.loss,
                    p.lr,
                    p.grad_norm,
                    p.tokens_seen as i64,
                    p.tokens_per_second,
                    p.mfu,
                    p.elapsed_seconds,
                    p.at_ms,
                    p.micro_batch.map(|m| m as i64)
                ])?;
            }
            for c in &report.checkpoints {
                Self::put_checkpoint(tx, run_id, c)?;
            }
            Ok(())
        })
    }

    fn renew_lease(&self, run_id: &str, attempt: u64, lease_expires_ms: i64) -> Result<()> {
        self.with(|tx| {
            let n = tx.execute(
                "UPDATE attempts SET lease_expires_ms = ?3 WHERE run_id = ?1 AND attempt = ?2 AND outcome = 'active'",
                params![run_id, attempt as i64, lease_expires_ms],
            )?;
            one_row(n, || StoreError::StaleAttempt { run_id: run_id.into(), attempt })
        })
    }

    fn block_attempt(&self, run_id: &str, attempt: u64, message: &str) -> Result<Option<EventRow>> {
        self.with(|tx| {
            let state = Self::run_now(tx, run_id)?.state;
            if state != RunState::Launching || !Self::is_live(tx, run_id, attempt)? {
                return Ok(None);
            }
            let change = Change { attempt: Some(attempt), message: message.into(), ..Change::default() };
            self.do_transition(tx, run_id, RunState::Blocked, &change).map(Some)
        })
    }

    fn place_attempt(&self, run_id: &str, attempt: u64, lease_expires_ms: i64) -> Result<Option<EventRow>> {
        self.with(|tx| {
            let state = Self::run_now(tx, run_id)?.state;
            if state != RunState::Blocked || !Self::is_live(tx, run_id, attempt)? {
                return Ok(None);
            }
            let n = tx.execute(
                "UPDATE attempts SET lease_expires_ms = ?3 WHERE run_id = ?1 AND attempt = ?2 AND outcome = 'active'",
                params![run_id, attempt as i64, lease_expires_ms],
            )?;
            one_row(n, || StoreError::StaleAttempt { run_id: run_id.into(), attempt })?;
            let change = Change { attempt: Some(attempt), message: "placed".into(), ..Change::default() };
            self.do_transition(tx, run_id, RunState::Launching, &change).map(Some)
        })
    }

    fn end_attempt(&self, run_id: &str, attempt: u64, ending: &Ending) -> Result<EventRow> {
        self.with(|tx| self.end_in(tx, run_id, attempt, ending))
    }

    fn expire_lease(&self, run_id: &str, attempt: u64, now_ms: i64, retries: Retries) -> Result<Option<EventRow>> {
        self.with(|tx| {
            let state = Self::run_now(tx, run_id)?.state;
            let lease: Option<i64> = tx
                .query_row(
                    "SELECT lease_expires_ms FROM attempts WHERE run_id = ?1 AND attempt = ?2 AND outcome = 'active'",
                    params![run_id, attempt as i64],
                    |r| r.get(0),
                )
                .optional()?;
            match lease {
                Some(l) if l < now_ms && state != RunState::Blocked => {
                    let secs = (now_ms - l).max(0) / 1000;
                    let message = format!("no report from the worker: lease expired {secs} s ago");
                    let ending = Ending::Failed { class: FailureClass::NodeLost, message, retries };
                    self.end_in(tx, run_id, attempt, &ending).map(Some)
                }
                _ => Ok(None),
            }
        })
    }

    fn cancel_run(&self, run_id: &str) -> Result<Option<Cancelled>> {
        self.with(|tx| {
            let RunNow { state, attempts, .. } = Self::run_now(tx, run_id)?;
            if state.is_terminal() {
                return Ok(None);
            }
            let live = (attempts > 0 && Self::is_live(tx, run_id, attempts)?).then_some(attempts);
            if let Some(a) = live {
                self.close_attempt(tx, run_id, a, AttemptOutcome::Cancelled, None, "cancelled")?;
            }
            let change = Change { attempt: live, message: "cancelled".into(), ..Change::default() };
            let event = self.do_transition(tx, run_id, RunState::Cancelled, &change)?;
            Ok(Some(Cancelled { event, live_attempt: live }))
        })
    }

    fn stop_checkpoint(&self, run_id: &str, attempt: u64, checkpoint: &CheckpointRow) -> Result<bool> {
        self.with(|tx| {
            let now = Self::run_now(tx, run_id)?;
            let outcome: Option<String> = tx
                .query_row(
                    "SELECT outcome FROM attempts WHERE run_id = ?1 AND attempt = ?2",
                    params![run_id, attempt as i64],
                    |r| r.get(0),
                )
                .optional()?;
            if now.state != RunState::Cancelled
                || now.attempts != attempt
                || outcome.as_deref() != Some(AttemptOutcome::Cancelled.as_str())
            {
                return Ok(false);
            }
            Self::put_checkpoint(tx, run_id, &CheckpointRow { attempt, ..checkpoint.clone() })?;
            Ok(true)
        })
    }

    fn resume_run(&self, run_id: &str, include_diverged: bool) -> Result<Option<EventRow>> {
        self.with(|tx| {
            let run = Self::run_now(tx, run_id)?;
            let eligible = match run.state {
                RunState::Failed => include_diverged || run.failure_class != Some(FailureClass::Diverged),
                RunState::Cancelled => true,
                _ => false,
            };
            if !eligible {
                return Ok(None);
            }
            let change = Change { message: "resumed".into(), reset_retries: true, not_before_ms: Some(0), ..Change::default() };
            self.do_transition(tx, run_id, RunState::Queued, &change).map(Some)
        })
    }

    fn progress(&self, run_id: &str) -> Result<Vec<ProgressPoint>> {
        self.with(|tx| {
            let mut stmt =
                tx.prepare_cached(&format!("SELECT {PROGRESS_COLS} FROM progress WHERE run_id = ?1 ORDER BY attempt, step"))?;
            Ok(stmt.query_map([run_id], progress_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn checkpoints(&self, run_id: &str) -> Result<Vec<CheckpointRow>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT step, attempt, path, tokens_seen, at_ms FROM checkpoints WHERE run_id = ?1 ORDER BY step",
            )?;
            Ok(stmt.query_map([run_id], checkpoint_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn latest_checkpoint(&self, run_id: &str) -> Result<Option<CheckpointRow>> {
        self.with(|tx| {
            Ok(tx
                .query_row(
                    "SELECT step, attempt, path, tokens_seen, at_ms FROM checkpoints WHERE run_id = ?1 ORDER BY step DESC LIMIT 1",
                    [run_id],
                    checkpoint_row,
                )
                .optional()?)
        })
    }

    fn evals(&self, run_id: &str) -> Result<Vec<EvalRow>> {
        self.with(|tx| {
            // Per distribution, the text result on the latest evaluated checkpoint.
            let mut stmt = tx.prepare_cached(
                "SELECT x.subset, x.metric, x.value FROM eval_results x JOIN eval_jobs e ON e.run_id = x.run_id
                 JOIN runs j ON j.run_id = e.run_id
                 WHERE e.parent_run = ?1 AND e.family = 'text' AND j.state = 'succeeded'
                 ORDER BY x.subset, e.step DESC, e.task",
            )?;
            let rows = stmt
                .query_map([run_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, f64>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out: Vec<EvalRow> = Vec::new();
            let mut seen: Vec<(String, String)> = Vec::new();
            for (subset, m, v) in rows {
                if seen.iter().any(|(s, k)| *s == subset && *k == m) {
                    continue; // an older checkpoint's value
                }
                seen.push((subset.clone(), m.clone()));
                if out.last().is_none_or(|e| e.distribution != subset) {
                    out.push(EvalRow { distribution: subset, loss: f64::NAN, bits_per_byte: f64::NAN, tokens: 0, bytes: 0 });
                }
                let e = out.last_mut().expect("pushed");
                match m.as_str() {
                    metric::LOSS => e.loss = v,
                    metric::BPB => e.bits_per_byte = v,
                    metric::TOKENS => e.tokens = v as u64,
                    metric::BYTES => e.bytes = v.round() as u64,
                    _ => {}
                }
            }
            Ok(out.into_iter().filter(|e| e.loss.is_finite() && e.bits_per_byte.is_finite()).collect())
        })
    }

    fn eval_results(&self, job_id: &str) -> Result<Vec<EvalMetric>> {
        self.with(|tx| {
            let mut stmt =
                tx.prepare_cached("SELECT subset, metric, value FROM eval_results WHERE run_id = ?1 ORDER BY subset, metric")?;
            let rows = stmt.query_map([job_id], |r| Ok(EvalMetric { subset: r.get(0)?, metric: r.get(1)?, value: r.get(2)? }))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn eval_items(&self, job_id: &str) -> Result<Vec<ItemScore>> {
        self.with(|tx| {
            let mut stmt =
                tx.prepare_cached("SELECT item, subset, gold, ll, chars, bytes FROM eval_items WHERE run_id = ?1 ORDER BY item")?;
            let rows = stmt.query_map([job_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (item, subset, gold, ll, chars, bytes) = row?;
                let bad = |e: serde_json::Error| StoreError::Corrupt(format!("eval_items of {job_id}, item {item}: {e}"));
                out.push(ItemScore {
                    item: item as u64,
                    subset,
                    gold: gold as u32,
                    ll: serde_json::from_str(&ll).map_err(bad)?,
                    chars: serde_json::from_str(&chars).map_err(bad)?,
                    bytes: serde_json::from_str(&bytes).map_err(bad)?,
                });
            }
            Ok(out)
        })
    }

    fn eval_steps(&self, run_id: &str) -> Result<Vec<u64>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached("SELECT DISTINCT step FROM eval_jobs WHERE parent_run = ?1 ORDER BY step")?;
            let rows = stmt.query_map([run_id], |r| Ok(r.get::<_, i64>(0)? as u64))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn events(&self, run_id: &str) -> Result<Vec<EventRow>> {
        self.events_filtered("run_id = ?1", &[&run_id])
    }

    fn events_since(&self, after: i64) -> Result<Vec<EventRow>> {
        self.events_filtered("id > ?1", &[&after])
    }
}
