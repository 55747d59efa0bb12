-- isoflop store on PostgreSQL, version 1: the SQLite schema at its version 6 (see
-- ../sqlite/ for what each table holds), in PostgreSQL's types. Text is compared byte by
-- byte (COLLATE "C") as SQLite does, so that every listing has the same order on both.
-- `rowid` is the insertion order SQLite keeps by itself: the first sweep to hold a run owns
-- it, and sweeps submitted in the same millisecond list the later one first.
CREATE TABLE sweeps (
    rowid       BIGSERIAL NOT NULL UNIQUE,
    name        TEXT COLLATE "C" PRIMARY KEY,
    spec_yaml   TEXT NOT NULL,
    spec_path   TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);

CREATE TABLE runs (
    run_id          TEXT COLLATE "C" PRIMARY KEY,
    config_json     TEXT NOT NULL,
    state           TEXT COLLATE "C" NOT NULL,
    failure_class   TEXT COLLATE "C",
    message         TEXT NOT NULL DEFAULT '',
    attempts        BIGINT NOT NULL DEFAULT 0,
    retries_used    BIGINT NOT NULL DEFAULT 0,
    not_before_ms   BIGINT NOT NULL DEFAULT 0,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    artifacts_key   TEXT
);
CREATE INDEX runs_state ON runs (state);

CREATE TABLE sweep_runs (
    rowid    BIGSERIAL NOT NULL UNIQUE,
    sweep    TEXT COLLATE "C" NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    run_id   TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
    ordinal  BIGINT NOT NULL,
    name     TEXT COLLATE "C" NOT NULL,
    corpus   TEXT COLLATE "C" NOT NULL,
    budget   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sweep, run_id)
);
CREATE INDEX sweep_runs_run ON sweep_runs (run_id, rowid);
CREATE INDEX sweep_runs_name ON sweep_runs (name);

CREATE TABLE attempts (
    run_id            TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
    attempt           BIGINT NOT NULL,
    token_hash        TEXT NOT NULL,
    outcome           TEXT COLLATE "C" NOT NULL DEFAULT 'active',
    failure_class     TEXT COLLATE "C",
    message           TEXT NOT NULL DEFAULT '',
    executor_ref      TEXT NOT NULL DEFAULT '',
    resume_step       BIGINT NOT NULL DEFAULT 0,
    lease_expires_ms  BIGINT NOT NULL,
    started_ms        BIGINT NOT NULL,
    ended_ms          BIGINT,
    PRIMARY KEY (run_id, attempt)
);
CREATE INDEX attempts_active ON attempts (outcome) WHERE outcome = 'active';

CREATE TABLE events (
    id             BIGSERIAL PRIMARY KEY,
    run_id         TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
    attempt        BIGINT,
    at_ms          BIGINT NOT NULL,
    from_state     TEXT COLLATE "C" NOT NULL,
    to_state       TEXT COLLATE "C" NOT NULL,
    failure_class  TEXT COLLATE "C",
    message        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_run ON events (run_id, id);

CREATE TABLE progress (
    run_id             TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
    attempt            BIGINT NOT NULL,
    step               BIGINT NOT NULL,
    total_steps        BIGINT NOT NULL,
    loss               DOUBLE PRECISION NOT NULL,
    lr                 DOUBLE PRECISION NOT NULL,
    grad_norm          DOUBLE PRECISION NOT NULL,
    tokens_seen        BIGINT NOT NULL,
    tokens_per_second  DOUBLE PRECISION NOT NULL,
    mfu                DOUBLE PRECISION NOT NULL,
    elapsed_seconds    DOUBLE PRECISION NOT NULL,
    at_ms              BIGINT NOT NULL,
    micro_batch        BIGINT,
    PRIMARY KEY (run_id, attempt, step)
);

CREATE TABLE checkpoints (
    run_id       TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
    step         BIGINT NOT NULL,
    attempt      BIGINT NOT NULL,
    path         TEXT NOT NULL,
    tokens_seen  BIGINT NOT NULL,
    at_ms        BIGINT NOT NULL,
    PRIMARY KEY (run_id, step)
);

-- Held-out results of release 0.1.0's runs (SQLite migration 4 moved them to eval_results);
-- kept so that `isoflop store copy` carries every table.
CREATE TABLE evals (
    run_id         TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
    distribution   TEXT COLLATE "C" NOT NULL,
    attempt        BIGINT NOT NULL,
    loss           DOUBLE PRECISION NOT NULL,
    bits_per_byte  DOUBLE PRECISION NOT NULL,
    tokens         BIGINT NOT NULL,
    bytes          BIGINT NOT NULL,
    at_ms          BIGINT NOT NULL,
    PRIMARY KEY (run_id, distribution)
);

CREATE TABLE eval_jobs (
    run_id      TEXT COLLATE "C" PRIMARY KEY REFERENCES runs (run_id),
    parent_run  TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
    step        BIGINT NOT NULL,
    task        TEXT COLLATE "C" NOT NULL,
    family      TEXT COLLATE "C" NOT NULL
);
CREATE INDEX eval_jobs_parent ON eval_jobs (parent_run, step);

CREATE TABLE eval_results (
    run_id   TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
    subset   TEXT COLLATE "C" NOT NULL,
    metric   TEXT COLLATE "C" NOT NULL,
    value    DOUBLE PRECISION NOT NULL,
    attempt  BIGINT NOT NULL,
    at_ms    BIGINT NOT NULL,
    PRIMARY KEY (run_id, subset, metric)
);

CREATE TABLE eval_items (
    run_id   TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
    item     BIGINT NOT NULL,
    subset   TEXT COLLATE "C" NOT NULL,
    gold     BIGINT NOT NULL,
    ll       TEXT NOT NULL,
    chars    TEXT NOT NULL,
    bytes    TEXT NOT NULL,
    attempt  BIGINT NOT NULL,
    PRIMARY KEY (run_id, item)
);

CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('store_id', substr(md5(random()::text || clock_timestamp()::text), 1, 16));
