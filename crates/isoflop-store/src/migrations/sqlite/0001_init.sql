-- isoflop store, version 1.
CREATE TABLE sweeps (
    name        TEXT PRIMARY KEY,
    spec_yaml   TEXT NOT NULL,
    spec_path   TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);

-- A run is identified by the content hash of its configuration; sweeps share runs.
CREATE TABLE runs (
    run_id          TEXT PRIMARY KEY,
    config_json     TEXT NOT NULL,
    state           TEXT NOT NULL,
    failure_class   TEXT,
    message         TEXT NOT NULL DEFAULT '',
    attempts        INTEGER NOT NULL DEFAULT 0,
    retries_used    INTEGER NOT NULL DEFAULT 0,
    not_before_ms   INTEGER NOT NULL DEFAULT 0,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);
CREATE INDEX runs_state ON runs (state);

CREATE TABLE sweep_runs (
    sweep    TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    run_id   TEXT NOT NULL REFERENCES runs (run_id),
    ordinal  INTEGER NOT NULL,
    name     TEXT NOT NULL,
    corpus   TEXT NOT NULL,
    budget   REAL NOT NULL,
    PRIMARY KEY (sweep, run_id)
);
CREATE INDEX sweep_runs_run ON sweep_runs (run_id);

CREATE TABLE attempts (
    run_id            TEXT NOT NULL REFERENCES runs (run_id),
    attempt           INTEGER NOT NULL,
    token_hash        TEXT NOT NULL,
    outcome           TEXT NOT NULL DEFAULT 'active',
    failure_class     TEXT,
    message           TEXT NOT NULL DEFAULT '',
    executor_ref      TEXT NOT NULL DEFAULT '',
    resume_step       INTEGER NOT NULL DEFAULT 0,
    lease_expires_ms  INTEGER NOT NULL,
    started_ms        INTEGER NOT NULL,
    ended_ms          INTEGER,
    PRIMARY KEY (run_id, attempt)
);

-- Every state transition of every run.
CREATE TABLE events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         TEXT NOT NULL REFERENCES runs (run_id),
    attempt        INTEGER,
    at_ms          INTEGER NOT NULL,
    from_state     TEXT NOT NULL,
    to_state       TEXT NOT NULL,
    failure_class  TEXT,
    message        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_run ON events (run_id, id);

CREATE TABLE progress (
    run_id             TEXT NOT NULL REFERENCES runs (run_id),
    attempt            INTEGER NOT NULL,
    step               INTEGER NOT NULL,
    total_steps        INTEGER NOT NULL,
    loss               REAL NOT NULL,
    lr                 REAL NOT NULL,
    grad_norm          REAL NOT NULL,
    tokens_seen        INTEGER NOT NULL,
    tokens_per_second  REAL NOT NULL,
    mfu                REAL NOT NULL,
    elapsed_seconds    REAL NOT NULL,
    at_ms              INTEGER NOT NULL,
    PRIMARY KEY (run_id, attempt, step)
);

CREATE TABLE checkpoints (
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    step         INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    path         TEXT NOT NULL,
    tokens_seen  INTEGER NOT NULL,
    at_ms        INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
);

CREATE TABLE evals (
    run_id         TEXT NOT NULL REFERENCES runs (run_id),
    distribution   TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    loss           REAL NOT NULL,
    bits_per_byte  REAL NOT NULL,
    tokens         INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    at_ms          INTEGER NOT NULL,
    PRIMARY KEY (run_id, distribution)
);
