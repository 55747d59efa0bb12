//! The store's verbs, written once over [`Backend`]: SQLite ([`crate::SqliteStore`]) and
//! PostgreSQL ([`crate::PgStore`]) are the same code on two databases.

use crate::sql::{Backend, Row, ToValue, Tx, Value, args};
use crate::*;
use isoflop_core::choice::ItemScore;
use isoflop_core::eval::metric;
use isoflop_core::{Clock, EvalMetric, SystemClock, after_failure};
use std::collections::HashSet;
use std::sync::Arc;

/// The store on a database `B`.
pub struct SqlStore<B> {
    pub(crate) db: B,
    clock: Arc<dyn Clock>,
}

impl<B> std::fmt::Debug for SqlStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqlStore<{}>", std::any::type_name::<B>().rsplit("::").next().unwrap_or("?"))
    }
}

impl<B: Backend> SqlStore<B> {
    pub(crate) fn on(db: B) -> Self {
        Self { db, clock: Arc::new(SystemClock) }
    }

    /// The same store reading time from `clock` (event times, back-off deadlines, ...).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn write<T>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        self.db.transact(true, &mut f)
    }

    fn read<T>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        self.db.transact(false, &mut f)
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
    /// Runs in a state, seen from their owners.
    State(RunState),
    /// Queued runs ready by a time (at most so many), seen from their owners.
    Launchable(i64, usize),
    /// Runs named by a user's key: id prefix or any sweep's name for it.
    Key(&'a str),
}

const RUN_COLS: &str = "r.run_id, sr.sweep, sr.name, sr.corpus, sr.budget, r.config_json, r.state, r.failure_class, \
     r.message, r.attempts, r.retries_used, r.not_before_ms, r.updated_ms, COALESCE(r.artifacts_key, r.run_id), \
     e.parent_run, e.step, e.task, e.family";
/// Columns of [`RUN_COLS`]; the run's newest progress point follows them.
const RUN_NCOLS: usize = 18;
const PROGRESS_COLS: &str =
    "attempt, step, total_steps, loss, lr, grad_norm, tokens_seen, tokens_per_second, mfu, elapsed_seconds, at_ms, micro_batch";
const ATTEMPT_COLS: &str = "run_id, attempt, token_hash, outcome, failure_class, message, executor_ref, resume_step, \
     lease_expires_ms, started_ms, ended_ms";
const EVENT_COLS: &str = "id, run_id, attempt, at_ms, from_state, to_state, failure_class, message";
const CHECKPOINT_COLS: &str = "step, attempt, path, tokens_seen, at_ms";
/// The attempt `?2` of run `?1` is live: active, and the run's newest (its fencing token).
const LIVE: &str =
    "run_id = ?1 AND attempt = ?2 AND outcome = 'active' AND attempt = (SELECT attempts FROM runs WHERE run_id = ?1)";

fn run_row(r: &Row) -> Result<RunRow> {
    Ok(RunRow {
        run_id: r.get(0)?,
        sweep: r.get(1)?,
        name: r.get(2)?,
        corpus: r.get(3)?,
        budget: r.get(4)?,
        config_json: r.get(5)?,
        state: state_of(r.get(6)?)?,
        failure_class: class_of(r.get(7)?)?,
        message: r.get(8)?,
        attempts: r.get(9)?,
        retries_used: r.get(10)?,
        not_before_ms: r.get(11)?,
        updated_ms: r.get(12)?,
        progress: match r.get::<Option<i64>>(RUN_NCOLS)? {
            Some(_) => Some(progress_row(r, RUN_NCOLS)?),
            None => None,
        },
        artifacts_key: r.get(13)?,
        eval: match r.get::<Option<String>>(14)? {
            Some(parent) => Some(EvalOf { parent, step: r.get(15)?, task: r.get(16)?, family: r.get(17)? }),
            None => None,
        },
    })
}

/// A progress point from the [`PROGRESS_COLS`] starting at column `at`.
fn progress_row(r: &Row, at: usize) -> Result<ProgressPoint> {
    Ok(ProgressPoint {
        attempt: r.get(at)?,
        step: r.get(at + 1)?,
        total_steps: r.get(at + 2)?,
        loss: r.get(at + 3)?,
        lr: r.get(at + 4)?,
        grad_norm: r.get(at + 5)?,
        tokens_seen: r.get(at + 6)?,
        tokens_per_second: r.get(at + 7)?,
        mfu: r.get(at + 8)?,
        elapsed_seconds: r.get(at + 9)?,
        at_ms: r.get(at + 10)?,
        micro_batch: r.get(at + 11)?,
    })
}

fn checkpoint_row(r: &Row) -> Result<CheckpointRow> {
    Ok(CheckpointRow { step: r.get(0)?, attempt: r.get(1)?, path: r.get(2)?, tokens_seen: r.get(3)?, at_ms: r.get(4)? })
}

fn attempt_row(r: &Row) -> Result<AttemptRow> {
    let outcome: String = r.get(3)?;
    Ok(AttemptRow {
        run_id: r.get(0)?,
        attempt: r.get(1)?,
        token_hash: r.get(2)?,
        outcome: AttemptOutcome::parse(&outcome).ok_or_else(|| StoreError::Corrupt(format!("attempt outcome `{outcome}`")))?,
        failure_class: class_of(r.get(4)?)?,
        message: r.get(5)?,
        executor_ref: r.get(6)?,
        resume_step: r.get(7)?,
        lease_expires_ms: r.get(8)?,
        started_ms: r.get(9)?,
        ended_ms: r.get(10)?,
    })
}

fn event_row(r: &Row) -> Result<EventRow> {
    Ok(EventRow {
        id: r.get(0)?,
        run_id: r.get(1)?,
        attempt: r.get(2)?,
        at_ms: r.get(3)?,
        from: state_of(r.get(4)?)?,
        to: state_of(r.get(5)?)?,
        failure_class: class_of(r.get(6)?)?,
        message: r.get(7)?,
    })
}

fn sweep_row(r: &Row) -> Result<SweepRow> {
    Ok(SweepRow { name: r.get(0)?, spec_yaml: r.get(1)?, spec_path: r.get(2)?, created_ms: r.get(3)? })
}

/// A training run's text results (subset, metric, value; newest checkpoint first within a
/// subset) as one row per distribution, each from its latest evaluated checkpoint.
fn fold_evals(found: Vec<(String, String, f64)>) -> Vec<EvalRow> {
    let mut out: Vec<EvalRow> = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for (subset, m, v) in found {
        if !seen.insert((subset.clone(), m.clone())) {
            continue; // an older checkpoint's value
        }
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
    out.into_iter().filter(|e| e.loss.is_finite() && e.bits_per_byte.is_finite()).collect()
}

/// The run ids of a sweep, for `IN (...)`.
const SWEEP_JOBS: &str = "SELECT run_id FROM sweep_runs WHERE sweep = ?1";

fn rows<T>(rows: Vec<Row>, f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

/// A run's row as a lifecycle verb reads it in its transaction.
struct RunNow {
    state: RunState,
    failure_class: Option<FailureClass>,
    retries_used: u64,
    attempts: u64,
}

/// An update that must touch exactly one row; zero rows means `missing`.
/// The most rows one multi-row statement carries (a power of two; 7 columns of 128 rows stay
/// under SQLite's oldest limit of 999 parameters).
const MAX_CHUNK: usize = 128;

/// `0..n` in consecutive ranges whose lengths are powers of two of at most [`MAX_CHUNK`]: a
/// backend that prepares each statement's text (PostgreSQL's connections keep theirs) then
/// sees at most 8 texts of a statement, whatever the row counts.
fn chunks(n: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < n {
        let len = MAX_CHUNK.min(1 << (n - at).ilog2());
        out.push(at..at + len);
        at += len;
    }
    out
}

/// `(?a, ?a+1, ...)` groups: `rows` groups of `width` placeholders numbered from `from`; a
/// `width` of 0 is one flat list of `rows` placeholders.
fn placeholders(from: usize, rows: usize, width: usize) -> String {
    if width == 0 {
        return (from..from + rows).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    }
    (0..rows).map(|r| format!("({})", placeholders(from + r * width, width, 0))).collect::<Vec<_>>().join(", ")
}

/// Inserts `rows` (equally wide) as `{head} VALUES (...), (...) {tail}` statements of
/// [`chunks`] of rows.
fn insert_many(tx: &mut dyn Tx, head: &str, tail: &str, rows: impl Iterator<Item = Vec<Value>>) -> Result<()> {
    let rows: Vec<Vec<Value>> = rows.collect();
    let Some(width) = rows.first().map(Vec::len) else { return Ok(()) };
    for chunk in chunks(rows.len()) {
        let sql = format!("{head} VALUES {} {tail}", placeholders(1, chunk.len(), width));
        let args: Vec<Value> = rows[chunk].iter().flatten().cloned().collect();
        tx.execute(&sql, &args)?;
    }
    Ok(())
}

fn one_row(n: usize, missing: impl FnOnce() -> StoreError) -> Result<()> {
    match n {
        1 => Ok(()),
        0 => Err(missing()),
        n => Err(StoreError::Corrupt(format!("an update meant for one row touched {n}"))),
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("numbers serialise")
}

impl<B: Backend> SqlStore<B> {
    /// What a verb decides from: the run's state, failure class, retries used and attempts.
    fn run_now(tx: &mut dyn Tx, run_id: &str) -> Result<RunNow> {
        let row = tx
            .query_opt("SELECT state, failure_class, retries_used, attempts FROM runs WHERE run_id = ?1", args![run_id])?
            .ok_or_else(|| StoreError::NotFound { what: "run", key: run_id.into() })?;
        Ok(RunNow {
            state: state_of(row.get(0)?)?,
            failure_class: class_of(row.get(1)?)?,
            retries_used: row.get(2)?,
            attempts: row.get(3)?,
        })
    }

    /// Whether `attempt` is the run's current attempt and still active.
    fn is_live(tx: &mut dyn Tx, run_id: &str, attempt: u64) -> Result<bool> {
        Ok(tx.query_opt(&format!("SELECT 1 FROM attempts WHERE {LIVE}"), args![run_id, attempt])?.is_some())
    }

    fn do_transition(&self, tx: &mut dyn Tx, run_id: &str, to: RunState, c: &Change) -> Result<EventRow> {
        let from = Self::run_now(tx, run_id)?.state;
        from.transition(to).map_err(|source| StoreError::Transition { run_id: run_id.into(), source })?;
        let now = self.now();
        let class = c.failure_class.map(|f| f.as_str());
        let n = tx.execute(
            "UPDATE runs SET state = ?2, failure_class = ?3, message = ?4, updated_ms = ?5,
                 not_before_ms = COALESCE(?6, not_before_ms),
                 retries_used = CASE WHEN ?8 THEN 0 ELSE retries_used + ?7 END
             WHERE run_id = ?1",
            args![run_id, to.as_str(), class, c.message, now, c.not_before_ms, c.spend_retry as i64, c.reset_retries],
        )?;
        one_row(n, || StoreError::NotFound { what: "run", key: run_id.into() })?;
        tx.order_events()?;
        let id = tx.scalar(
            "INSERT INTO events (run_id, attempt, at_ms, from_state, to_state, failure_class, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
            args![run_id, c.attempt, now, from.as_str(), to.as_str(), class, c.message],
        )?;
        Ok(EventRow {
            id,
            run_id: run_id.into(),
            attempt: c.attempt,
            at_ms: now,
            from,
            to,
            failure_class: c.failure_class,
            message: c.message.clone(),
        })
    }

    /// Records a note event: something that happened to a run without changing its state
    /// (`from == to`, the run's current state; no state-machine edge).
    fn note(&self, tx: &mut dyn Tx, run_id: &str, attempt: Option<u64>, message: &str) -> Result<EventRow> {
        let state = Self::run_now(tx, run_id)?.state;
        let now = self.now();
        tx.order_events()?;
        let id = tx.scalar(
            "INSERT INTO events (run_id, attempt, at_ms, from_state, to_state, failure_class, message)
             VALUES (?1, ?2, ?3, ?4, ?4, NULL, ?5) RETURNING id",
            args![run_id, attempt, now, state.as_str(), message],
        )?;
        Ok(EventRow {
            id,
            run_id: run_id.into(),
            attempt,
            at_ms: now,
            from: state,
            to: state,
            failure_class: None,
            message: message.into(),
        })
    }

    /// Marks an active attempt ended; [`StoreError::StaleAttempt`] when it is not active.
    fn close_attempt(
        &self,
        tx: &mut dyn Tx,
        run_id: &str,
        attempt: u64,
        outcome: AttemptOutcome,
        class: Option<FailureClass>,
        message: &str,
    ) -> Result<()> {
        let n = tx.execute(
            &format!("UPDATE attempts SET outcome = ?3, failure_class = ?4, message = ?5, ended_ms = ?6 WHERE {LIVE}"),
            args![run_id, attempt, outcome.as_str(), class.map(|c| c.as_str()), message, self.now()],
        )?;
        one_row(n, || StoreError::StaleAttempt { run_id: run_id.into(), attempt })
    }

    /// Records a checkpoint; a row for the same step keeps its tokens count when the new one
    /// does not say (0).
    fn put_checkpoint(tx: &mut dyn Tx, run_id: &str, c: &CheckpointRow) -> Result<()> {
        tx.execute(
            "INSERT INTO checkpoints (run_id, step, attempt, path, tokens_seen, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (run_id, step) DO UPDATE SET attempt = excluded.attempt, path = excluded.path,
                 at_ms = excluded.at_ms,
                 tokens_seen = CASE WHEN excluded.tokens_seen > 0 THEN excluded.tokens_seen ELSE checkpoints.tokens_seen END",
            args![run_id, c.step, c.attempt, c.path, c.tokens_seen, c.at_ms],
        )?;
        Ok(())
    }

    /// A job this submission plans that the store knows already. Its configuration becomes
    /// the submitter's: the identity is the same (the data's digests), but the files may lie
    /// elsewhere for this sweep, and the next attempt reads them from there. A job that joins
    /// the sweep now, having failed (not diverged) or been cancelled in another, is queued
    /// again with a fresh retry budget: this sweep never tried it.
    fn join_known(&self, tx: &mut dyn Tx, sweep: &str, run: &NewRun, out: &mut SubmitResult) -> Result<()> {
        tx.execute(
            "UPDATE runs SET config_json = ?2 WHERE run_id = ?1 AND config_json <> ?2",
            args![run.run_id, run.config_json],
        )?;
        let member: i64 =
            tx.scalar("SELECT COUNT(*) FROM sweep_runs WHERE sweep = ?1 AND run_id = ?2", args![sweep, run.run_id])?;
        if member > 0 {
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

    fn end_in(&self, tx: &mut dyn Tx, run_id: &str, attempt: u64, ending: &Ending) -> Result<EventRow> {
        let retries_used = Self::run_now(tx, run_id)?.retries_used;
        let now = self.now();
        let (outcome, to, change) = match ending {
            Ending::Succeeded { results, items, message } => {
                for m in results {
                    tx.execute(
                        "INSERT INTO eval_results (run_id, subset, metric, value, attempt, at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (run_id, subset, metric) DO UPDATE SET value = excluded.value,
                             attempt = excluded.attempt, at_ms = excluded.at_ms",
                        args![run_id, m.subset, m.metric, m.value, attempt, now],
                    )?;
                }
                for it in items {
                    tx.execute(
                        "INSERT INTO eval_items (run_id, item, subset, gold, ll, chars, bytes, attempt)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (run_id, item) DO UPDATE SET subset = excluded.subset, gold = excluded.gold,
                             ll = excluded.ll, chars = excluded.chars, bytes = excluded.bytes, attempt = excluded.attempt",
                        args![run_id, it.item, it.subset, it.gold, json(&it.ll), json(&it.chars), json(&it.bytes), attempt],
                    )?;
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

    /// Runs with their newest progress point, in one query.
    fn runs_where(tx: &mut dyn Tx, scope: RunScope<'_>) -> Result<Vec<RunRow>> {
        // The sweep a run is seen from: the asked sweep, or its owner (the first sweep_runs row).
        let owner = "sr.rowid = (SELECT rowid FROM sweep_runs WHERE run_id = r.run_id ORDER BY rowid LIMIT 1)";
        let (join, filter, args): (&str, &str, Vec<Value>) = match scope {
            RunScope::Sweep(s) => ("sr.run_id = r.run_id AND sr.sweep = ?1", "1 = 1", args![s].to_vec()),
            RunScope::Run(id) => (owner, "r.run_id = ?1", args![id].to_vec()),
            RunScope::State(state) => (owner, "r.state = ?1", args![state.as_str()].to_vec()),
            RunScope::Launchable(t, n) => (
                owner,
                // An evaluation job is ready once its checkpoint is recorded.
                "r.state = ?1 AND r.not_before_ms <= ?2 AND (e.run_id IS NULL OR EXISTS
                     (SELECT 1 FROM checkpoints c WHERE c.run_id = e.parent_run AND c.step = e.step))",
                args![RunState::Queued.as_str(), t, n.min(i64::MAX as usize) as u64].to_vec(),
            ),
            RunScope::Key(key) => (
                owner,
                "(substr(r.run_id, 1, length(CAST(?1 AS TEXT))) = CAST(?1 AS TEXT)
                  OR r.run_id IN (SELECT run_id FROM sweep_runs WHERE name = ?1))",
                args![key].to_vec(),
            ),
        };
        let progress = PROGRESS_COLS.split(", ").map(|c| format!("p.{c}")).collect::<Vec<_>>().join(", ");
        let limit = if matches!(scope, RunScope::Launchable(..)) { " LIMIT ?3" } else { "" };
        let sql = format!(
            "SELECT {RUN_COLS}, {progress} FROM runs r JOIN sweep_runs sr ON {join}
             LEFT JOIN eval_jobs e ON e.run_id = r.run_id
             LEFT JOIN progress p ON p.run_id = r.run_id AND (p.attempt, p.step) =
                 (SELECT attempt, step FROM progress WHERE run_id = r.run_id ORDER BY attempt DESC, step DESC LIMIT 1)
             WHERE {filter} ORDER BY sr.sweep, sr.ordinal{limit}"
        );
        rows(tx.query(&sql, &args)?, run_row)
    }

    fn attempts_where(&self, filter: &str, args: &[Value]) -> Result<Vec<AttemptRow>> {
        self.read(|tx| rows(tx.query(&format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE {filter}"), args)?, attempt_row))
    }

    fn events_filtered(&self, filter: &str, args: &[Value]) -> Result<Vec<EventRow>> {
        self.read(|tx| rows(tx.query(&format!("SELECT {EVENT_COLS} FROM events WHERE {filter} ORDER BY id"), args)?, event_row))
    }

    fn submit_in(&self, tx: &mut dyn Tx, sweep: &NewSweep, runs: &[NewRun]) -> Result<SubmitResult> {
        let existing = tx.query_opt("SELECT spec_yaml FROM sweeps WHERE name = ?1", args![sweep.name])?;
        let (existed, updated) = match existing.map(|r| r.get::<String>(0)).transpose()? {
            Some(spec) if spec == sweep.spec_yaml => {
                // The same spec from another place (a moved or copied directory): its
                // relative paths now resolve from where it was submitted.
                if !sweep.spec_path.is_empty() {
                    tx.execute(
                        "UPDATE sweeps SET spec_path = ?2 WHERE name = ?1 AND spec_path <> ?2",
                        args![sweep.name, sweep.spec_path],
                    )?;
                }
                (true, false)
            }
            Some(_) => {
                // Another spec under this name: allowed when it trains every stored run
                // (and perhaps more: the sweep grows).
                let stored = tx.query(
                    "SELECT sr.run_id, sr.name FROM sweep_runs sr WHERE sr.sweep = ?1
                     AND NOT EXISTS (SELECT 1 FROM eval_jobs e WHERE e.run_id = sr.run_id) ORDER BY sr.ordinal",
                    args![sweep.name],
                )?;
                let stored = rows(stored, |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)))?;
                let planned: HashSet<&str> = runs.iter().filter(|r| r.eval.is_none()).map(|r| r.run_id.as_str()).collect();
                let missing: Vec<&(String, String)> = stored.iter().filter(|(id, _)| !planned.contains(id.as_str())).collect();
                if let Some((id, name)) = missing.first() {
                    return Err(StoreError::SweepConflict {
                        sweep: sweep.name.clone(),
                        missing: missing.len(),
                        example: format!("{name} ({id})"),
                    });
                }
                tx.execute(
                    "UPDATE sweeps SET spec_yaml = ?2, spec_path = ?3 WHERE name = ?1",
                    args![sweep.name, sweep.spec_yaml, sweep.spec_path],
                )?;
                (false, true)
            }
            None => {
                tx.execute(
                    "INSERT INTO sweeps (name, spec_yaml, spec_path, created_ms) VALUES (?1, ?2, ?3, ?4)",
                    args![sweep.name, sweep.spec_yaml, sweep.spec_path, self.now()],
                )?;
                (false, false)
            }
        };
        let mut out = SubmitResult { runs: 0, reused: 0, evals: 0, evals_reused: 0, existed, updated, requeued: 0, succeeded: 0 };
        // Ordinals continue after what the sweep holds, so added jobs list last.
        let base: i64 = tx.scalar("SELECT COALESCE(MAX(ordinal) + 1, 0) FROM sweep_runs WHERE sweep = ?1", args![sweep.name])?;
        // A sweep of 10,000 runs is a few dozen statements, not one per row per table (issue
        // 13: 7.2 s of round trips on PostgreSQL): which runs the store knows, in chunks; the
        // new ones inserted already queued with their planned -> queued events; then the known
        // ones joined one by one; then the sweep's membership rows.
        let ids: Vec<Value> = runs.iter().map(|r| Value::Text(r.run_id.clone())).collect();
        let mut known: HashSet<String> = HashSet::new();
        for chunk in chunks(ids.len()) {
            let sql = format!("SELECT run_id FROM runs WHERE run_id IN ({})", placeholders(1, chunk.len(), 0));
            known.extend(rows(tx.query(&sql, &ids[chunk])?, |r| r.get::<String>(0))?);
        }
        let mut fresh: Vec<&NewRun> = Vec::new();
        let mut joining: Vec<&NewRun> = Vec::new();
        let mut first: HashSet<&str> = HashSet::new();
        for run in runs {
            let k = known.contains(&run.run_id) || !first.insert(run.run_id.as_str());
            match (&run.eval, k) {
                (None, k) => {
                    out.runs += 1;
                    out.reused += k as usize;
                }
                (Some(_), k) => {
                    out.evals += 1;
                    out.evals_reused += k as usize;
                }
            }
            if k { joining.push(run) } else { fresh.push(run) }
        }
        if !fresh.is_empty() {
            // What `do_transition` would record, for every new run at once.
            RunState::Planned
                .transition(RunState::Queued)
                .map_err(|source| StoreError::Transition { run_id: fresh[0].run_id.clone(), source })?;
            let now = self.now();
            // Their files live under this store's directory of the artifacts.
            let store_id: String = tx.scalar("SELECT value FROM meta WHERE key = 'store_id'", &[])?;
            let queued = RunState::Queued.as_str();
            insert_many(
                tx,
                "INSERT INTO runs (run_id, config_json, state, message, created_ms, updated_ms, artifacts_key)",
                "",
                fresh.iter().map(|r| {
                    vec![
                        r.run_id.to_value(),
                        r.config_json.to_value(),
                        queued.to_value(),
                        "".to_value(),
                        now.to_value(),
                        now.to_value(),
                        format!("{store_id}/{}", r.run_id).to_value(),
                    ]
                }),
            )?;
            insert_many(
                tx,
                "INSERT INTO eval_jobs (run_id, parent_run, step, task, family)",
                "",
                fresh.iter().filter_map(|r| r.eval.as_ref().map(|e| (r, e))).map(|(r, e)| {
                    vec![r.run_id.to_value(), e.parent.to_value(), e.step.to_value(), e.task.to_value(), e.family.to_value()]
                }),
            )?;
            tx.order_events()?;
            insert_many(
                tx,
                "INSERT INTO events (run_id, attempt, at_ms, from_state, to_state, failure_class, message)",
                "",
                fresh.iter().map(|r| {
                    vec![
                        r.run_id.to_value(),
                        Value::Null,
                        now.to_value(),
                        RunState::Planned.as_str().to_value(),
                        queued.to_value(),
                        Value::Null,
                        "".to_value(),
                    ]
                }),
            )?;
        }
        for run in joining {
            self.join_known(tx, &sweep.name, run, &mut out)?;
        }
        insert_many(
            tx,
            "INSERT INTO sweep_runs (sweep, run_id, ordinal, name, corpus, budget)",
            "ON CONFLICT DO NOTHING",
            runs.iter().enumerate().map(|(i, r)| {
                vec![
                    sweep.name.to_value(),
                    r.run_id.to_value(),
                    (base + i as i64).to_value(),
                    r.name.to_value(),
                    r.corpus.to_value(),
                    r.budget.to_value(),
                ]
            }),
        )?;
        out.succeeded = tx.scalar::<i64>(
            "SELECT COUNT(*) FROM sweep_runs sr JOIN runs r ON r.run_id = sr.run_id WHERE sr.sweep = ?1 AND r.state = ?2
             AND NOT EXISTS (SELECT 1 FROM eval_jobs e WHERE e.run_id = sr.run_id)",
            args![sweep.name, RunState::Succeeded.as_str()],
        )? as usize;
        Ok(out)
    }

    fn delete_in(tx: &mut dyn Tx, name: &str, dry_run: bool) -> Result<Deleted> {
        if tx.scalar::<i64>("SELECT COUNT(*) FROM sweeps WHERE name = ?1", args![name])? == 0 {
            return Err(StoreError::NotFound { what: "sweep", key: name.into() });
        }
        let runs = Self::runs_where(tx, RunScope::Sweep(name))?;
        let mut shared: HashSet<String> = HashSet::new();
        for r in &runs {
            if tx.scalar::<i64>("SELECT COUNT(*) FROM sweep_runs WHERE run_id = ?1 AND sweep <> ?2", args![r.run_id, name])? > 0 {
                shared.insert(r.run_id.clone());
            }
        }
        // A run a kept evaluation job scores stays too.
        let mine: HashSet<&str> = runs.iter().map(|r| r.run_id.as_str()).filter(|id| !shared.contains(*id)).collect();
        let mut keep = Vec::new();
        for r in runs.iter().filter(|r| r.is_training() && mine.contains(r.run_id.as_str())) {
            let jobs =
                rows(tx.query("SELECT run_id FROM eval_jobs WHERE parent_run = ?1", args![r.run_id])?, |x| x.get::<String>(0))?;
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
                tx.execute(&format!("DELETE FROM {table} WHERE run_id = ?1"), args![r.run_id])?;
            }
            tx.execute("DELETE FROM runs WHERE run_id = ?1", args![r.run_id])?;
        }
        tx.execute("DELETE FROM sweep_runs WHERE sweep = ?1", args![name])?;
        tx.execute("DELETE FROM sweeps WHERE name = ?1", args![name])?;
        Ok(out)
    }

    /// The newest attempt's lease, if it is still active.
    fn active_lease(tx: &mut dyn Tx, run_id: &str, attempt: u64) -> Result<Option<i64>> {
        tx.query_opt(&format!("SELECT lease_expires_ms FROM attempts WHERE {LIVE}"), args![run_id, attempt])?
            .map(|r| r.get(0))
            .transpose()
    }
}

impl<B: Backend> Store for SqlStore<B> {
    fn submit_sweep(&self, sweep: &NewSweep, runs: &[NewRun]) -> Result<SubmitResult> {
        self.write(|tx| self.submit_in(tx, sweep, runs))
    }

    fn delete_sweep(&self, name: &str, dry_run: bool) -> Result<Deleted> {
        if dry_run { self.read(|tx| Self::delete_in(tx, name, true)) } else { self.write(|tx| Self::delete_in(tx, name, false)) }
    }

    fn store_id(&self) -> Result<String> {
        self.read(|tx| tx.scalar("SELECT value FROM meta WHERE key = 'store_id'", &[]))
    }

    fn sweep(&self, name: &str) -> Result<Option<SweepRow>> {
        self.read(|tx| {
            tx.query_opt("SELECT name, spec_yaml, spec_path, created_ms FROM sweeps WHERE name = ?1", args![name])?
                .map(|r| sweep_row(&r))
                .transpose()
        })
    }

    fn sweeps(&self) -> Result<Vec<SweepRow>> {
        self.read(|tx| {
            let found =
                tx.query("SELECT name, spec_yaml, spec_path, created_ms FROM sweeps ORDER BY created_ms DESC, rowid DESC", &[])?;
            rows(found, sweep_row)
        })
    }

    fn sweep_runs(&self, sweep: &str) -> Result<Vec<RunRow>> {
        self.read(|tx| Self::runs_where(tx, RunScope::Sweep(sweep)))
    }

    fn sweep_members(&self, sweep: &str) -> Result<Vec<SweepMember>> {
        self.read(|tx| {
            let found = tx.query(
                "SELECT sr.run_id, r.state, CASE WHEN e.run_id IS NULL THEN 1 ELSE 0 END FROM sweep_runs sr
                 JOIN runs r ON r.run_id = sr.run_id LEFT JOIN eval_jobs e ON e.run_id = sr.run_id
                 WHERE sr.sweep = ?1 ORDER BY sr.ordinal",
                args![sweep],
            )?;
            rows(found, |r| Ok(SweepMember { run_id: r.get(0)?, state: state_of(r.get(1)?)?, training: r.get::<i64>(2)? == 1 }))
        })
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRow>> {
        self.read(|tx| Ok(Self::runs_where(tx, RunScope::Run(run_id))?.into_iter().next()))
    }

    fn find_runs(&self, key: &str) -> Result<Vec<RunRow>> {
        self.read(|tx| {
            let exact = Self::runs_where(tx, RunScope::Run(key))?;
            if !exact.is_empty() {
                return Ok(exact);
            }
            Self::runs_where(tx, RunScope::Key(key))
        })
    }

    fn runs_in_state(&self, state: RunState) -> Result<Vec<RunRow>> {
        self.read(|tx| Self::runs_where(tx, RunScope::State(state)))
    }

    fn launchable(&self, now_ms: i64, limit: usize) -> Result<Vec<RunRow>> {
        self.read(|tx| Self::runs_where(tx, RunScope::Launchable(now_ms, limit)))
    }

    fn transition(&self, run_id: &str, to: RunState, change: &Change) -> Result<EventRow> {
        self.write(|tx| self.do_transition(tx, run_id, to, change))
    }

    fn start_attempt(&self, run_id: &str, token_hash: &str, lease_expires_ms: i64) -> Result<(AttemptRow, EventRow)> {
        self.write(|tx| {
            let attempt = Self::run_now(tx, run_id)?.attempts + 1;
            if let Some(live) =
                tx.query_opt("SELECT attempt FROM attempts WHERE run_id = ?1 AND outcome = 'active'", args![run_id])?
            {
                return Err(StoreError::AttemptLive { run_id: run_id.into(), attempt: live.get(0)? });
            }
            let event =
                self.do_transition(tx, run_id, RunState::Launching, &Change { attempt: Some(attempt), ..Change::default() })?;
            let now = self.now();
            let n = tx.execute("UPDATE runs SET attempts = ?2 WHERE run_id = ?1", args![run_id, attempt])?;
            one_row(n, || StoreError::NotFound { what: "run", key: run_id.into() })?;
            tx.execute(
                "INSERT INTO attempts (run_id, attempt, token_hash, lease_expires_ms, started_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                args![run_id, attempt, token_hash, lease_expires_ms, now],
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
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE attempts SET executor_ref = ?3 WHERE run_id = ?1 AND attempt = ?2",
                args![run_id, attempt, executor_ref],
            )?;
            one_row(n, || StoreError::NotFound { what: "attempt", key: format!("{run_id}/{attempt}") })
        })
    }

    fn attempt(&self, run_id: &str, attempt: u64) -> Result<Option<AttemptRow>> {
        Ok(self.attempts_where("run_id = ?1 AND attempt = ?2", args![run_id, attempt])?.into_iter().next())
    }

    fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>> {
        self.attempts_where("run_id = ?1 ORDER BY attempt", args![run_id])
    }

    fn active_attempts(&self) -> Result<Vec<AttemptRow>> {
        self.attempts_where("outcome = 'active' ORDER BY started_ms", &[])
    }

    fn attach(&self, run_id: &str, attempt: u64, resume_step: u64, lease_expires_ms: i64) -> Result<EventRow> {
        self.write(|tx| {
            let n = tx.execute(
                &format!("UPDATE attempts SET resume_step = ?3, lease_expires_ms = ?4 WHERE {LIVE}"),
                args![run_id, attempt, resume_step, lease_expires_ms],
            )?;
            one_row(n, || StoreError::StaleAttempt { run_id: run_id.into(), attempt })?;
            let message = if resume_step > 0 { format!("resuming from step {resume_step}") } else { String::new() };
            self.do_transition(tx, run_id, RunState::Running, &Change { attempt: Some(attempt), message, ..Change::default() })
        })
    }

    fn report(&self, run_id: &str, attempt: u64, report: &Report) -> Result<Vec<EventRow>> {
        self.write(|tx| {
            let n = tx.execute(
                &format!("UPDATE attempts SET lease_expires_ms = ?3, resume_step = COALESCE(?4, resume_step) WHERE {LIVE}"),
                args![run_id, attempt, report.lease_expires_ms, report.resumed_from],
            )?;
            one_row(n, || StoreError::StaleAttempt { run_id: run_id.into(), attempt })?;
            let sql = format!(
                "INSERT INTO progress (run_id, {PROGRESS_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (run_id, attempt, step) DO UPDATE SET total_steps = excluded.total_steps, loss = excluded.loss,
                     lr = excluded.lr, grad_norm = excluded.grad_norm, tokens_seen = excluded.tokens_seen,
                     tokens_per_second = excluded.tokens_per_second, mfu = excluded.mfu,
                     elapsed_seconds = excluded.elapsed_seconds, at_ms = excluded.at_ms, micro_batch = excluded.micro_batch"
            );
            for p in &report.progress {
                tx.execute(
                    &sql,
                    args![
                        run_id,
                        attempt,
                        p.step,
                        p.total_steps,
                        p.loss,
                        p.lr,
                        p.grad_norm,
                        p.tokens_seen,
                        p.tokens_per_second,
                        p.mfu,
                        p.elapsed_seconds,
                        p.at_ms,
                        p.micro_batch
                    ],
                )?;
            }
            // Rejections first: a worker rejects what it found on disk before it trained, so
            // a checkpoint it saved since (this report's, or an earlier one of this attempt) is
            // a newer save at that step and stays. Found by the chaos drill: the first report
            // of an attempt that retrained past a truncated checkpoint while its coordinator
            // was down carried the rejection and the new save together, the save went first,
            // and the evaluation job of that step waited for a checkpoint forever.
            let mut notes = Vec::with_capacity(report.rejected.len());
            for r in &report.rejected {
                tx.execute(
                    "DELETE FROM checkpoints WHERE run_id = ?1 AND step = ?2 AND attempt < ?3",
                    args![run_id, r.step, attempt],
                )?;
                let resumed = match report.resumed_from {
                    Some(s) if s > 0 => format!("resuming from step {s}"),
                    Some(_) => "starting from scratch".to_string(),
                    None => "resuming from an older checkpoint".to_string(),
                };
                let message = format!("checkpoint at step {} set aside as damaged ({}); {resumed}", r.step, r.reason);
                notes.push(self.note(tx, run_id, Some(attempt), &message)?);
            }
            for c in &report.checkpoints {
                Self::put_checkpoint(tx, run_id, c)?;
            }
            Ok(notes)
        })
    }

    fn renew_lease(&self, run_id: &str, attempt: u64, lease_expires_ms: i64) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                &format!("UPDATE attempts SET lease_expires_ms = ?3 WHERE {LIVE}"),
                args![run_id, attempt, lease_expires_ms],
            )?;
            one_row(n, || StoreError::StaleAttempt { run_id: run_id.into(), attempt })
        })
    }

    fn block_attempt(&self, run_id: &str, attempt: u64, message: &str) -> Result<Option<EventRow>> {
        self.write(|tx| {
            let state = Self::run_now(tx, run_id)?.state;
            if state != RunState::Launching || !Self::is_live(tx, run_id, attempt)? {
                return Ok(None);
            }
            let change = Change { attempt: Some(attempt), message: message.into(), ..Change::default() };
            self.do_transition(tx, run_id, RunState::Blocked, &change).map(Some)
        })
    }

    fn place_attempt(&self, run_id: &str, attempt: u64, lease_expires_ms: i64) -> Result<Option<EventRow>> {
        self.write(|tx| {
            let state = Self::run_now(tx, run_id)?.state;
            if state != RunState::Blocked || !Self::is_live(tx, run_id, attempt)? {
                return Ok(None);
            }
            let n = tx.execute(
                &format!("UPDATE attempts SET lease_expires_ms = ?3 WHERE {LIVE}"),
                args![run_id, attempt, lease_expires_ms],
            )?;
            one_row(n, || StoreError::StaleAttempt { run_id: run_id.into(), attempt })?;
            let change = Change { attempt: Some(attempt), message: "placed".into(), ..Change::default() };
            self.do_transition(tx, run_id, RunState::Launching, &change).map(Some)
        })
    }

    fn end_attempt(&self, run_id: &str, attempt: u64, ending: &Ending) -> Result<EventRow> {
        self.write(|tx| self.end_in(tx, run_id, attempt, ending))
    }

    fn expire_lease(&self, run_id: &str, attempt: u64, now_ms: i64, retries: Retries) -> Result<Option<EventRow>> {
        self.write(|tx| {
            let state = Self::run_now(tx, run_id)?.state;
            match Self::active_lease(tx, run_id, attempt)? {
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
        self.write(|tx| {
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
        self.write(|tx| {
            let now = Self::run_now(tx, run_id)?;
            let outcome = tx
                .query_opt("SELECT outcome FROM attempts WHERE run_id = ?1 AND attempt = ?2", args![run_id, attempt])?
                .map(|r| r.get::<String>(0))
                .transpose()?;
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
        self.write(|tx| {
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
        self.read(|tx| {
            let found = tx.query(
                &format!("SELECT {PROGRESS_COLS} FROM progress WHERE run_id = ?1 ORDER BY attempt, step"),
                args![run_id],
            )?;
            rows(found, |r| progress_row(r, 0))
        })
    }

    fn sweep_progress(&self, sweep: &str) -> Result<std::collections::HashMap<String, Vec<ProgressPoint>>> {
        self.read(|tx| {
            let cols = PROGRESS_COLS.split(", ").map(|c| format!("p.{c}")).collect::<Vec<_>>().join(", ");
            let found = tx.query(
                &format!(
                    "SELECT p.run_id, {cols} FROM progress p JOIN sweep_runs sr ON sr.run_id = p.run_id
                     WHERE sr.sweep = ?1 ORDER BY p.run_id, p.attempt, p.step"
                ),
                args![sweep],
            )?;
            let mut out: std::collections::HashMap<String, Vec<ProgressPoint>> = std::collections::HashMap::new();
            for (id, p) in rows(found, |r| Ok((r.get::<String>(0)?, progress_row(r, 1)?)))? {
                out.entry(id).or_default().push(p);
            }
            Ok(out)
        })
    }

    fn checkpoints(&self, run_id: &str) -> Result<Vec<CheckpointRow>> {
        self.read(|tx| {
            let found =
                tx.query(&format!("SELECT {CHECKPOINT_COLS} FROM checkpoints WHERE run_id = ?1 ORDER BY step"), args![run_id])?;
            rows(found, checkpoint_row)
        })
    }

    fn latest_checkpoint(&self, run_id: &str) -> Result<Option<CheckpointRow>> {
        self.read(|tx| {
            tx.query_opt(
                &format!("SELECT {CHECKPOINT_COLS} FROM checkpoints WHERE run_id = ?1 ORDER BY step DESC LIMIT 1"),
                args![run_id],
            )?
            .map(|r| checkpoint_row(&r))
            .transpose()
        })
    }

    fn evals(&self, run_id: &str) -> Result<Vec<EvalRow>> {
        let found = self.read(|tx| {
            // Per distribution, the text result on the latest evaluated checkpoint.
            let found = tx.query(
                "SELECT x.subset, x.metric, x.value FROM eval_results x JOIN eval_jobs e ON e.run_id = x.run_id
                 JOIN runs j ON j.run_id = e.run_id
                 WHERE e.parent_run = ?1 AND e.family = 'text' AND j.state = 'succeeded'
                 ORDER BY x.subset, e.step DESC, e.task",
                args![run_id],
            )?;
            rows(found, |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<f64>(2)?)))
        })?;
        Ok(fold_evals(found))
    }

    fn sweep_details(&self, sweep: &str) -> Result<std::collections::HashMap<String, JobDetails>> {
        let (attempts, texts, metrics) = self.read(|tx| {
            let attempts = rows(
                tx.query(
                    &format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE run_id IN ({SWEEP_JOBS}) ORDER BY run_id, attempt"),
                    args![sweep],
                )?,
                attempt_row,
            )?;
            let texts = tx.query(
                &format!(
                    "SELECT e.parent_run, x.subset, x.metric, x.value FROM eval_results x JOIN eval_jobs e ON e.run_id = x.run_id
                     JOIN runs j ON j.run_id = e.run_id
                     WHERE e.parent_run IN ({SWEEP_JOBS}) AND e.family = 'text' AND j.state = 'succeeded'
                     ORDER BY e.parent_run, x.subset, e.step DESC, e.task"
                ),
                args![sweep],
            )?;
            let texts = rows(texts, |r| Ok((r.get::<String>(0)?, (r.get::<String>(1)?, r.get::<String>(2)?, r.get::<f64>(3)?))))?;
            let metrics = tx.query(
                &format!(
                    "SELECT x.run_id, x.subset, x.metric, x.value FROM eval_results x JOIN eval_jobs e ON e.run_id = x.run_id
                     WHERE x.run_id IN ({SWEEP_JOBS}) ORDER BY x.run_id, x.subset, x.metric"
                ),
                args![sweep],
            )?;
            let metrics = rows(metrics, |r| {
                Ok((r.get::<String>(0)?, EvalMetric { subset: r.get(1)?, metric: r.get(2)?, value: r.get(3)? }))
            })?;
            Ok((attempts, texts, metrics))
        })?;
        let mut out: std::collections::HashMap<String, JobDetails> = std::collections::HashMap::new();
        for a in attempts {
            out.entry(a.run_id.clone()).or_default().attempts.push(a);
        }
        let mut by_run: std::collections::BTreeMap<String, Vec<(String, String, f64)>> = std::collections::BTreeMap::new();
        for (run, t) in texts {
            by_run.entry(run).or_default().push(t);
        }
        for (run, found) in by_run {
            let evals = fold_evals(found);
            if !evals.is_empty() {
                out.entry(run).or_default().evals = evals;
            }
        }
        for (job, m) in metrics {
            out.entry(job).or_default().metrics.push(m);
        }
        Ok(out)
    }

    fn eval_results(&self, job_id: &str) -> Result<Vec<EvalMetric>> {
        self.read(|tx| {
            let found = tx.query(
                "SELECT subset, metric, value FROM eval_results WHERE run_id = ?1 ORDER BY subset, metric",
                args![job_id],
            )?;
            rows(found, |r| Ok(EvalMetric { subset: r.get(0)?, metric: r.get(1)?, value: r.get(2)? }))
        })
    }

    fn eval_items(&self, job_id: &str) -> Result<Vec<ItemScore>> {
        let found = self.read(|tx| {
            tx.query("SELECT item, subset, gold, ll, chars, bytes FROM eval_items WHERE run_id = ?1 ORDER BY item", args![job_id])
        })?;
        rows(found, |r| {
            let item: u64 = r.get(0)?;
            fn parse<T: serde::de::DeserializeOwned>(r: &Row, i: usize, job_id: &str, item: u64) -> Result<Vec<T>> {
                serde_json::from_str(&r.get::<String>(i)?)
                    .map_err(|e| StoreError::Corrupt(format!("eval_items of {job_id}, item {item}: {e}")))
            }
            Ok(ItemScore {
                item,
                subset: r.get(1)?,
                gold: r.get::<u64>(2)? as u32,
                ll: parse(r, 3, job_id, item)?,
                chars: parse(r, 4, job_id, item)?,
                bytes: parse(r, 5, job_id, item)?,
            })
        })
    }

    fn eval_steps(&self, run_id: &str) -> Result<Vec<u64>> {
        self.read(|tx| {
            rows(tx.query("SELECT DISTINCT step FROM eval_jobs WHERE parent_run = ?1 ORDER BY step", args![run_id])?, |r| {
                r.get(0)
            })
        })
    }

    fn events(&self, run_id: &str) -> Result<Vec<EventRow>> {
        self.events_filtered("run_id = ?1", args![run_id])
    }

    fn events_since(&self, after: i64) -> Result<Vec<EventRow>> {
        self.events_filtered("id > ?1", args![after])
    }
}
