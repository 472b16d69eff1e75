-- Key lifecycle (SPEC "Key lifecycle"; issue 22): what a record now keeps besides 0001's
-- columns, the purge order by Record::due_at, and bytewise order of record ids for listing.
-- Every column added has a value for the rows already there, so a record written before
-- this migration reads back (and replays) after it.

-- The primary key's rebuild and the state constraint's check read the whole table: on a
-- big table they outlast the session's statement_timeout (5 s by default), so this
-- migration lifts it for its own transaction. The schema lock timeout still holds, so the
-- migration never queues behind the store's business; once it has its locks, the store
-- waits for it (crate docs, "Schema": upgrading).
SET LOCAL statement_timeout = 0;

-- When the claim that made the record was taken (unix ms): what an operator's listing
-- filters by age. Rows written before this migration did not keep it; they read back as
-- created at 0 (1970-01-01T00:00:00Z), "before the upgrade, time unknown", so an age
-- filter counts them as old rather than guessing. The default serves only those rows:
-- it is dropped at once (they keep it), so a write that forgets the column fails.
ALTER TABLE idem_records
    ADD COLUMN created_at        BIGINT  NOT NULL DEFAULT 0,
    -- In flight: who holds the claim (idem_core::Holder), each at most 128 visible ASCII
    -- bytes; NULL when the holder sent none, and for every other state.
    ADD COLUMN holder_request_id TEXT    NULL,
    ADD COLUMN holder_trace_id   TEXT    NULL,
    -- In flight: how many renewals extended the lease; 0 for every other state.
    ADD COLUMN renewals          INTEGER NOT NULL DEFAULT 0 CHECK (renewals >= 0),
    -- Completed: replays counted (best effort); 0 for every other state.
    ADD COLUMN replays           BIGINT  NOT NULL DEFAULT 0 CHECK (replays >= 0),
    -- Completed: when the tombstone left after retention ends; NULL if it leaves none.
    ADD COLUMN tombstone_until   BIGINT  NULL;
ALTER TABLE idem_records ALTER COLUMN created_at DROP DEFAULT;

-- `state` takes a third value, 'tombstone' (response dropped, kept until expires_at).
-- 0001 put no CHECK on it; this one names the three states a row may hold.
ALTER TABLE idem_records
    ADD CONSTRAINT idem_records_state CHECK (state IN ('in_flight', 'completed', 'tombstone'));

-- Purging orders by Record::due_at: when a purge must next visit the record, to forget it
-- or to shrink a completed record to its tombstone. For every row 0001 could hold (no
-- tombstones) that is exactly Record::forgettable_at, so the column is renamed in place.
ALTER TABLE idem_records RENAME COLUMN forgettable_at TO due_at;
ALTER INDEX idem_records_by_forgettable_at RENAME TO idem_records_by_due_at;

-- Record ids in bytewise order ("C" collation), as Rust orders strings: an operator's
-- listing pages through the primary key in (principal, idem_key) order, so its index
-- serves the listing. Equality (every lookup) is unchanged; the primary key is rebuilt.
ALTER TABLE idem_records
    ALTER COLUMN principal TYPE TEXT COLLATE "C",
    ALTER COLUMN idem_key  TYPE TEXT COLLATE "C";
