//! The SQLite backend: one file, WAL journal, foreign keys on, migrations by `user_version`.

use crate::*;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use std::path::Path;
use std::sync::Mutex;

/// Migrations in order; `PRAGMA user_version` holds how many have been applied.
const MIGRATIONS: &[&str] =
    &[include_str!("migrations/sqlite/0001_init.sql"), include_str!("migrations/sqlite/0002_progress_micro_batch.sql")];

/// The embedded store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
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

const RUN_COLS: &str = "r.run_id, sr.name, sr.corpus, sr.budget, r.config_json, r.state, r.failure_class, r.message, \
     r.attempts, r.retries_used, r.not_before_ms, r.updated_ms";
const PROGRESS_COLS: &str =
    "attempt, step, total_steps, loss, lr, grad_norm, tokens_seen, tokens_per_second, mfu, elapsed_seconds, at_ms, micro_batch";
const ATTEMPT_COLS: &str = "run_id, attempt, token_hash, outcome, failure_class, message, executor_ref, resume_step, \
     lease_expires_ms, started_ms, ended_ms";

fn run_row(r: &Row<'_>) -> rusqlite::Result<(RunRow, String, Option<String>)> {
    Ok((
        RunRow {
            run_id: r.get(0)?,
            name: r.get(1)?,
            corpus: r.get(2)?,
            budget: r.get(3)?,
            config_json: r.get(4)?,
            state: RunState::Planned,
            failure_class: None,
            message: r.get(7)?,
            attempts: r.get::<_, i64>(8)? as u64,
            retries_used: r.get::<_, i64>(9)? as u64,
            not_before_ms: r.get(10)?,
            updated_ms: r.get(11)?,
            progress: None,
        },
        r.get(5)?,
        r.get(6)?,
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
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn current_state(tx: &Transaction<'_>, run_id: &str) -> Result<RunState> {
        let s: Option<String> = tx.query_row("SELECT state FROM runs WHERE run_id = ?1", [run_id], |r| r.get(0)).optional()?;
        state_of(s.ok_or_else(|| StoreError::NotFound { what: "run", key: run_id.into() })?)
    }

    fn do_transition(tx: &Transaction<'_>, run_id: &str, to: RunState, c: &Change) -> Result<RunState> {
        let from = Self::current_state(tx, run_id)?;
        from.transition(to).map_err(|source| StoreError::Transition { run_id: run_id.into(), source })?;
        let now = now_ms();
        let class = c.failure_class.map(|f| f.as_str());
        tx.execute(
            "UPDATE runs SET state = ?2, failure_class = ?3, message = ?4, updated_ms = ?5,
                 not_before_ms = COALESCE(?6, not_before_ms),
                 retries_used = CASE WHEN ?8 THEN 0 ELSE retries_used + ?7 END
             WHERE run_id = ?1",
            params![run_id, to.as_str(), class, c.message, now, c.not_before_ms, c.spend_retry as i64, c.reset_retries],
        )?;
        tx.execute(
            "INSERT INTO events (run_id, attempt, at_ms, from_state, to_state, failure_class, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![run_id, c.attempt.map(|a| a as i64), now, from.as_str(), to.as_str(), class, c.message],
        )?;
        Ok(from)
    }

    fn runs_where(tx: &Transaction<'_>, filter: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs r
             JOIN sweep_runs sr ON sr.rowid = (SELECT rowid FROM sweep_runs WHERE run_id = r.run_id {scope} LIMIT 1)
             WHERE {filter} ORDER BY sr.sweep, sr.ordinal",
            scope = if filter.contains("sr.sweep") { "AND sweep = ?1" } else { "" },
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, run_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
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
}

impl Store for SqliteStore {
    fn submit_sweep(&self, sweep: &NewSweep, runs: &[NewRun]) -> Result<SubmitResult> {
        self.with(|tx| {
            let existing: Option<String> =
                tx.query_row("SELECT spec_yaml FROM sweeps WHERE name = ?1", [&sweep.name], |r| r.get(0)).optional()?;
            let existed = match existing {
                Some(spec) if spec == sweep.spec_yaml => true,
                Some(_) => return Err(StoreError::SweepConflict { sweep: sweep.name.clone() }),
                None => {
                    tx.execute(
                        "INSERT INTO sweeps (name, spec_yaml, spec_path, created_ms) VALUES (?1, ?2, ?3, ?4)",
                        params![sweep.name, sweep.spec_yaml, sweep.spec_path, now_ms()],
                    )?;
                    false
                }
            };
            let mut reused = 0;
            for (i, run) in runs.iter().enumerate() {
                let known: bool =
                    tx.query_row("SELECT COUNT(*) FROM runs WHERE run_id = ?1", [&run.run_id], |r| r.get::<_, i64>(0))? > 0;
                if known {
                    reused += 1;
                } else {
                    let now = now_ms();
                    tx.execute(
                        "INSERT INTO runs (run_id, config_json, state, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
                        params![run.run_id, run.config_json, RunState::Planned.as_str(), now],
                    )?;
                    Self::do_transition(tx, &run.run_id, RunState::Queued, &Change::default())?;
                }
                tx.execute(
                    "INSERT OR IGNORE INTO sweep_runs (sweep, run_id, ordinal, name, corpus, budget)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![sweep.name, run.run_id, i as i64, run.name, run.corpus, run.budget],
                )?;
            }
            Ok(SubmitResult { runs: runs.len(), reused, existed })
        })
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
                tx.prepare("SELECT name, spec_yaml, spec_path, created_ms FROM sweeps ORDER BY created_ms DESC, name")?;
            let rows = stmt.query_map([], |r| {
                Ok(SweepRow { name: r.get(0)?, spec_yaml: r.get(1)?, spec_path: r.get(2)?, created_ms: r.get(3)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn sweep_runs(&self, sweep: &str) -> Result<Vec<RunRow>> {
        self.with(|tx| Self::runs_where(tx, "sr.sweep = ?1", &[&sweep]))
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRow>> {
        self.with(|tx| Ok(Self::runs_where(tx, "r.run_id = ?1", &[&run_id])?.into_iter().next()))
    }

    fn runs_in_state(&self, state: RunState, ready_at_ms: Option<i64>) -> Result<Vec<RunRow>> {
        self.with(|tx| match ready_at_ms {
            Some(t) => Self::runs_where(tx, "r.state = ?1 AND r.not_before_ms <= ?2", &[&state.as_str(), &t]),
            None => Self::runs_where(tx, "r.state = ?1", &[&state.as_str()]),
        })
    }

    fn transition(&self, run_id: &str, to: RunState, change: &Change) -> Result<RunState> {
        self.with(|tx| Self::do_transition(tx, run_id, to, change))
    }

    fn start_attempt(&self, run_id: &str, token_hash: &str, lease_expires_ms: i64) -> Result<AttemptRow> {
        self.with(|tx| {
            let attempt: i64 = tx
                .query_row("SELECT attempts + 1 FROM runs WHERE run_id = ?1", [run_id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::NotFound { what: "run", key: run_id.into() })?;
            Self::do_transition(tx, run_id, RunState::Launching, &Change { attempt: Some(attempt as u64), ..Change::default() })?;
            let now = now_ms();
            tx.execute("UPDATE runs SET attempts = ?2 WHERE run_id = ?1", params![run_id, attempt])?;
            tx.execute(
                "INSERT INTO attempts (run_id, attempt, token_hash, lease_expires_ms, started_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, attempt, token_hash, lease_expires_ms, now],
            )?;
            Ok(AttemptRow {
                run_id: run_id.into(),
                attempt: attempt as u64,
                token_hash: token_hash.into(),
                outcome: AttemptOutcome::Active,
                failure_class: None,
                message: String::new(),
                executor_ref: String::new(),
                resume_step: 0,
                lease_expires_ms,
                started_ms: now,
                ended_ms: None,
            })
        })
    }

    fn set_executor_ref(&self, run_id: &str, attempt: u64, executor_ref: &str) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "UPDATE attempts SET executor_ref = ?3 WHERE run_id = ?1 AND attempt = ?2",
                params![run_id, attempt as i64, executor_ref],
            )?;
            Ok(())
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

    fn active_attempts(&self) -> Result<Vec<AttemptRow>> {
        self.with(|tx| {
            let mut stmt =
                tx.prepare(&format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE outcome = 'active' ORDER BY started_ms"))?;
            let rows = stmt.query_map([], attempt_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(finish_attempt_row).collect()
        })
    }

    fn attach(&self, run_id: &str, attempt: u64, resume_step: u64, lease_expires_ms: i64) -> Result<()> {
        self.with(|tx| {
            let n = tx.execute(
                "UPDATE attempts SET resume_step = ?3, lease_expires_ms = ?4
                 WHERE run_id = ?1 AND attempt = ?2 AND outcome = 'active'",
                params![run_id, attempt as i64, resume_step as i64, lease_expires_ms],
            )?;
            if n == 0 {
                return Err(StoreError::StaleAttempt { run_id: run_id.into(), attempt });
            }
            let message = if resume_step > 0 { format!("resuming from step {resume_step}") } else { String::new() };
            Self::do_transition(tx, run_id, RunState::Running, &Change { attempt: Some(attempt), message, ..Change::default() })?;
            Ok(())
        })
    }

    fn set_resume_step(&self, run_id: &str, attempt: u64, step: u64) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "UPDATE attempts SET resume_step = ?3 WHERE run_id = ?1 AND attempt = ?2",
                params![run_id, attempt as i64, step as i64],
            )?;
            Ok(())
        })
    }

    fn renew_lease(&self, run_id: &str, attempt: u64, lease_expires_ms: i64) -> Result<()> {
        self.with(|tx| {
            let n = tx.execute(
                "UPDATE attempts SET lease_expires_ms = ?3 WHERE run_id = ?1 AND attempt = ?2 AND outcome = 'active'",
                params![run_id, attempt as i64, lease_expires_ms],
            )?;
            if n == 0 {
                return Err(StoreError::StaleAttempt { run_id: run_id.into(), attempt });
            }
            Ok(())
        })
    }

    fn end_attempt(&self, run_id: &str, attempt: u64, end: &AttemptEnd, to: RunState) -> Result<()> {
        self.with(|tx| {
            let n = tx.execute(
                "UPDATE attempts SET outcome = ?3, failure_class = ?4, message = ?5, ended_ms = ?6
                 WHERE run_id = ?1 AND attempt = ?2 AND outcome = 'active'",
                params![
                    run_id,
                    attempt as i64,
                    end.outcome.as_str(),
                    end.failure_class.map(|c| c.as_str()),
                    end.message,
                    now_ms()
                ],
            )?;
            if n == 0 {
                return Err(StoreError::StaleAttempt { run_id: run_id.into(), attempt });
            }
            let change = Change {
                attempt: Some(attempt),
                failure_class: end.failure_class,
                message: end.message.clone(),
                not_before_ms: end.not_before_ms,
                spend_retry: end.spend_retry,
                reset_retries: false,
            };
            Self::do_transition(tx, run_id, to, &change)?;
            Ok(())
        })
    }

    fn add_progress(&self, run_id: &str, attempt: u64, points: &[ProgressPoint]) -> Result<()> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO progress (run_id, {PROGRESS_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))?;
            for p in points {
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
            Ok(())
        })
    }

    fn progress(&self, run_id: &str) -> Result<Vec<ProgressPoint>> {
        self.with(|tx| {
            let mut stmt =
                tx.prepare_cached(&format!("SELECT {PROGRESS_COLS} FROM progress WHERE run_id = ?1 ORDER BY attempt, step"))?;
            Ok(stmt.query_map([run_id], progress_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn add_checkpoint(&self, run_id: &str, attempt: u64, c: &CheckpointRow) -> Result<()> {
        self.with(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO checkpoints (run_id, step, attempt, path, tokens_seen, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run_id, c.step as i64, attempt as i64, c.path, c.tokens_seen as i64, c.at_ms],
            )?;
            Ok(())
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

    fn put_evals(&self, run_id: &str, attempt: u64, evals: &[EvalRow]) -> Result<()> {
        self.with(|tx| {
            let now = now_ms();
            for e in evals {
                tx.execute(
                    "INSERT OR REPLACE INTO evals (run_id, distribution, attempt, loss, bits_per_byte, tokens, bytes, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        run_id,
                        e.distribution,
                        attempt as i64,
                        e.loss,
                        e.bits_per_byte,
                        e.tokens as i64,
                        e.bytes as i64,
                        now
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn evals(&self, run_id: &str) -> Result<Vec<EvalRow>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT distribution, loss, bits_per_byte, tokens, bytes FROM evals WHERE run_id = ?1 ORDER BY distribution",
            )?;
            let rows = stmt.query_map([run_id], |r| {
                Ok(EvalRow {
                    distribution: r.get(0)?,
                    loss: r.get(1)?,
                    bits_per_byte: r.get(2)?,
                    tokens: r.get::<_, i64>(3)? as u64,
                    bytes: r.get::<_, i64>(4)? as u64,
                })
            })?;
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

impl SqliteStore {
    fn events_filtered(&self, filter: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<EventRow>> {
        self.with(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT id, run_id, attempt, at_ms, from_state, to_state, failure_class, message FROM events
                 WHERE {filter} ORDER BY id"
            ))?;
            let rows = stmt
                .query_map(args, |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, String>(7)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, run_id, attempt, at_ms, from, to, class, message)| {
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
                })
                .collect()
        })
    }
}
