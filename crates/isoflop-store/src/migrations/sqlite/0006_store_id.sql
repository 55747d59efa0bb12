-- What the store is: a random identity, made once. Runs added from now on keep their
-- checkpoints and logs under `ARTIFACTS/STORE_ID/RUN_ID`, so a new store over an old
-- artifacts directory never adopts another store's checkpoint nor appends to its logs
-- (runs stored before this migration keep their `ARTIFACTS/RUN_ID` directories).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(8))));
