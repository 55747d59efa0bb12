-- Evaluation jobs. An evaluation job is a row of `runs` (the same states, attempts, events,
-- leases, retries and executors as training); this table says what it scores: a task on the
-- checkpoint at `step` of the training run `parent_run`.
CREATE TABLE eval_jobs (
    run_id      TEXT PRIMARY KEY REFERENCES runs (run_id),
    parent_run  TEXT NOT NULL REFERENCES runs (run_id),
    step        INTEGER NOT NULL,
    task        TEXT NOT NULL,
    family      TEXT NOT NULL
);
CREATE INDEX eval_jobs_parent ON eval_jobs (parent_run, step);

-- Results of evaluation jobs: one value per subset (a distribution, a subject, a group) and
-- metric.
CREATE TABLE eval_results (
    run_id   TEXT NOT NULL REFERENCES runs (run_id),
    subset   TEXT NOT NULL,
    metric   TEXT NOT NULL,
    value    REAL NOT NULL,
    attempt  INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    PRIMARY KEY (run_id, subset, metric)
);

-- The directory of a run's checkpoints and logs under the artifacts root, when it is not the
-- run id (a run re-keyed by migration 4 keeps its files where they are).
ALTER TABLE runs ADD COLUMN artifacts_key TEXT;
