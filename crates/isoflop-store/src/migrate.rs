//! Migrations that SQL alone cannot do.
//!
//! **Migration 4: evaluation leaves the run's identity.** Stores of release 0.1.0 hold runs
//! whose configuration (and so whose id) includes the held-out distributions they were scored
//! on (`data.evals`, `data.eval_tokens`). From release 0.2 those are an evaluation job's. For
//! every such run this migration, in one transaction:
//!
//! 1. strips the two fields and re-keys the run to the id of what is left, in every table
//!    (attempts, events, progress, checkpoints, the old eval rows, sweep memberships), keeping
//!    its files where they are (`artifacts_key` = the old id);
//! 2. creates the evaluation job the new planner plans for it (task `heldout` on the final
//!    checkpoint, with the same distributions and token count), `succeeded` with the run's
//!    stored results when it has them, else `queued`, a member of every sweep the run is in.
//!
//! Nothing is retrained: resubmitting the sweep plans the same run and job ids. Two old runs
//! that differ only in their eval settings become one run: the first in (succeeded, most
//! attempts, oldest) order keeps the id and its history; the other's sweep memberships move to
//! it, and its own rows stay stored under its old id, held by no sweep.

use crate::Result;
use isoflop_core::eval::{EvalJobConfig, EvalTask, HELDOUT_TASK, TaskKind, TextTask, metric};
use isoflop_core::{EvalRef, RunConfig, RunState};
use rusqlite::{OptionalExtension, Transaction, params};

/// Tables whose `run_id` column refers to a run.
const RUN_TABLES: &[&str] = &["sweep_runs", "attempts", "events", "progress", "checkpoints", "evals"];

pub(crate) fn evals_leave_run_identity(tx: &Transaction<'_>, now: i64) -> Result<()> {
    tx.execute_batch("PRAGMA defer_foreign_keys = ON")?;
    let old: Vec<(String, String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT run_id, config_json, state FROM runs
             ORDER BY (state = 'succeeded') DESC, attempts DESC, created_ms, run_id",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?
    };
    for (old_id, json, state) in old {
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&json) else { continue };
        let Some(data) = value.get_mut("data").and_then(|d| d.as_object_mut()) else { continue };
        let (Some(evals), Some(tokens)) = (data.remove("evals"), data.remove("eval_tokens")) else { continue };
        let (Ok(config), Ok(evals), Some(tokens)) =
            (serde_json::from_value::<RunConfig>(value), serde_json::from_value::<Vec<EvalRef>>(evals), tokens.as_u64())
        else {
            continue;
        };
        let new_id = config.run_id().0;
        let new_json = serde_json::to_string(&config).expect("RunConfig serialises");
        let taken: bool = tx.query_row("SELECT COUNT(*) FROM runs WHERE run_id = ?1", [&new_id], |r| r.get::<_, i64>(0))? > 0;
        if taken && new_id != old_id {
            tx.execute(
                "INSERT OR IGNORE INTO sweep_runs (sweep, run_id, ordinal, name, corpus, budget)
                 SELECT sweep, ?2, ordinal, name, corpus, budget FROM sweep_runs WHERE run_id = ?1",
                params![old_id, new_id],
            )?;
            tx.execute("DELETE FROM sweep_runs WHERE run_id = ?1", [&old_id])?;
            tx.execute("UPDATE runs SET config_json = ?2 WHERE run_id = ?1", params![old_id, new_json])?;
            continue;
        }
        tx.execute(
            "UPDATE runs SET run_id = ?2, config_json = ?3, artifacts_key = ?1 WHERE run_id = ?1",
            params![old_id, new_id, new_json],
        )?;
        for table in RUN_TABLES {
            tx.execute(&format!("UPDATE {table} SET run_id = ?2 WHERE run_id = ?1"), params![old_id, new_id])?;
        }
        if evals.is_empty() {
            continue;
        }
        let job = EvalJobConfig {
            run: config.run_id(),
            step: config.recipe.steps,
            task: EvalTask {
                name: HELDOUT_TASK.into(),
                kind: TaskKind::Text(TextTask { distributions: evals, tokens, skip_tokens: 0 }),
            },
        };
        let job_id = job.job_id().0;
        let exists: Option<i64> = tx.query_row("SELECT 1 FROM runs WHERE run_id = ?1", [&job_id], |r| r.get(0)).optional()?;
        if exists.is_none() {
            let results: Vec<(String, i64, f64, f64, i64, i64, i64)> = {
                let mut stmt = tx.prepare(
                    "SELECT distribution, attempt, loss, bits_per_byte, tokens, bytes, at_ms FROM evals WHERE run_id = ?1",
                )?;
                stmt.query_map([&new_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let done = state == RunState::Succeeded.as_str() && !results.is_empty();
            let to = if done { RunState::Succeeded } else { RunState::Queued };
            let message = if done { "scored by the training attempt (store migration 4)" } else { "" };
            tx.execute(
                "INSERT INTO runs (run_id, config_json, state, message, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![job_id, serde_json::to_string(&job).expect("EvalJobConfig serialises"), to.as_str(), message, now],
            )?;
            tx.execute(
                "INSERT INTO eval_jobs (run_id, parent_run, step, task, family) VALUES (?1, ?2, ?3, ?4, 'text')",
                params![job_id, new_id, job.step as i64, HELDOUT_TASK],
            )?;
            tx.execute(
                "INSERT INTO events (run_id, attempt, at_ms, from_state, to_state, message) VALUES (?1, NULL, ?2, 'planned', ?3, ?4)",
                params![job_id, now, to.as_str(), message],
            )?;
            for (subset, attempt, loss, bpb, tokens, bytes, at_ms) in results {
                for (m, v) in
                    [(metric::LOSS, loss), (metric::BPB, bpb), (metric::TOKENS, tokens as f64), (metric::BYTES, bytes as f64)]
                {
                    tx.execute(
                        "INSERT INTO eval_results (run_id, subset, metric, value, attempt, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![job_id, subset, m, v, attempt, at_ms],
                    )?;
                }
            }
        }
        // A member of each of the run's sweeps, listed after that sweep's training runs.
        tx.execute(
            "INSERT OR IGNORE INTO sweep_runs (sweep, run_id, ordinal, name, corpus, budget)
             SELECT sr.sweep, ?2, sr.ordinal + (SELECT COUNT(*) FROM sweep_runs o WHERE o.sweep = sr.sweep),
                    sr.name || '/' || ?3, sr.corpus, sr.budget
             FROM sweep_runs sr WHERE sr.run_id = ?1",
            params![new_id, job_id, HELDOUT_TASK],
        )?;
    }
    Ok(())
}
