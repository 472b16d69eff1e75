-- idem's tables, created in the store's schema (the migrating connection's search_path).
-- Every name starts with `idem_`, so they live beside an application's own tables without
-- colliding. Times are unix milliseconds.

-- One row per record id (principal, key).
CREATE TABLE idem_records (
    principal        TEXT    NOT NULL,  -- '' is the anonymous principal
    idem_key         TEXT    NOT NULL,  -- the key's characters (not its header spelling)
    fingerprint      BYTEA   NOT NULL,  -- 32 bytes of SHA-256
    fence            BIGINT  NOT NULL,  -- the claim that made the record what it is
    state            TEXT    NOT NULL,  -- 'in_flight' or 'completed'
    lease_expires_at BIGINT,            -- in flight: when the claim lapses; completed: NULL
    expires_at       BIGINT  NOT NULL,  -- end of retention
    forgettable_at   BIGINT  NOT NULL,  -- Record::forgettable_at, what purging orders by
    status           INTEGER,           -- completed: the HTTP status; in flight: NULL
    headers          BYTEA,             -- completed: the header encoding in the crate docs
    body             BYTEA,             -- completed: the body bytes
    stored_bytes     BIGINT  NOT NULL,  -- what this row counts against the size limits
    PRIMARY KEY (principal, idem_key)
);

-- Purging walks expired records in order (ties by fence) and stops after a batch.
CREATE INDEX idem_records_by_forgettable_at ON idem_records (forgettable_at, fence);

-- The store-wide fence counter. A sequence, not a row: drawing from it takes no lock that
-- is held until commit, so claims on different record ids commit in parallel. It only
-- grows; a drawn value that no claim uses is a gap, and fences need only grow.
CREATE SEQUENCE idem_fence_seq AS BIGINT MINVALUE 1 START WITH 1 NO CYCLE;

-- What the store holds, for its size limits, in 64 shards: a step adds its usage delta to
-- the shard of its record id (crate docs: "Usage shards"), so steps on different record ids
-- rarely wait for each other's row lock. The totals are the sums over the shards.
CREATE TABLE idem_usage (
    shard        INTEGER PRIMARY KEY CHECK (shard >= 0 AND shard < 64),
    records      BIGINT  NOT NULL CHECK (records >= 0),
    stored_bytes BIGINT  NOT NULL CHECK (stored_bytes >= 0)
);
INSERT INTO idem_usage (shard, records, stored_bytes) SELECT g, 0, 0 FROM generate_series(0, 63) AS g;
