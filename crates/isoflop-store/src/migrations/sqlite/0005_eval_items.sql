-- Per-item results of multiple-choice evaluation jobs: the log-likelihood of each choice and
-- the choices' lengths, from which every metric is computed again (so that intervals can
-- resample questions as well as runs). JSON arrays, one element per choice.
CREATE TABLE eval_items (
    run_id   TEXT NOT NULL REFERENCES runs (run_id),
    item     INTEGER NOT NULL,
    subset   TEXT NOT NULL,
    gold     INTEGER NOT NULL,
    ll       TEXT NOT NULL,
    chars    TEXT NOT NULL,
    bytes    TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    PRIMARY KEY (run_id, item)
) WITHOUT ROWID;
