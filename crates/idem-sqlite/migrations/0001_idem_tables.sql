-- idem's tables. Every name starts with `idem_`, so they live beside an application's own
-- tables in the same file without colliding. Times are unix milliseconds.

-- One row per record id (principal, key).
CREATE TABLE IF NOT EXISTS idem_records (
    principal        TEXT    NOT NULL,  -- '' is the anonymous principal
    idem_key         TEXT    NOT NULL,  -- the key's characters (not its header spelling)
    fingerprint      BLOB    NOT NULL,  -- 32 bytes of SHA-256
    fence            INTEGER NOT NULL,  -- the claim that made the record what it is
    state            TEXT    NOT NULL,  -- 'in_flight' or 'completed'
    lease_expires_at INTEGER,           -- in flight: when the claim lapses; completed: NULL
    expires_at       INTEGER NOT NULL,  -- end of retention
    forgettable_at   INTEGER NOT NULL,  -- Record::forgettable_at, what purging orders by
    status           INTEGER,           -- completed: the HTTP status; in flight: NULL
    headers          BLOB,              -- completed: the header encoding in the crate docs
    body             BLOB,              -- completed: the body bytes
    stored_bytes     INTEGER NOT NULL,  -- what this row counts against the size limit
    PRIMARY KEY (principal, idem_key)
) STRICT;

-- Purging walks expired records in order and stops after a batch, without scanning.
CREATE INDEX IF NOT EXISTS idem_records_by_forgettable_at
    ON idem_records (forgettable_at, principal, idem_key);

-- The store-wide fence counter: one row that only grows.
CREATE TABLE IF NOT EXISTS idem_fence (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    next_fence INTEGER NOT NULL CHECK (next_fence >= 1)
) STRICT;
INSERT OR IGNORE INTO idem_fence (id, next_fence) VALUES (1, 1);

-- What the store holds, for its size limits: kept in step with idem_records in the same
-- transactions, so a claim checks the limits without counting rows.
CREATE TABLE IF NOT EXISTS idem_usage (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    records      INTEGER NOT NULL CHECK (records >= 0),
    stored_bytes INTEGER NOT NULL CHECK (stored_bytes >= 0)
) STRICT;
INSERT OR IGNORE INTO idem_usage (id, records, stored_bytes) VALUES (1, 0, 0);
