-- Key lifecycle (issue 22, SPEC "Key lifecycle"): who holds a claim, how often it was
-- renewed and replayed, when a record was created, and tombstones. The columns are added
-- with defaults so rows written before this migration read back as the records they were:
-- no holder, no renewals, no replays, no tombstone.
--
-- created_at is unknown for such rows: they read back as created at 0 (the epoch), so an
-- operator's age filter counts them as older than any age, which they are (they predate
-- the upgrade). A record claimed after this migration stores its real creation time.
ALTER TABLE idem_records ADD COLUMN created_at        INTEGER NOT NULL DEFAULT 0;
ALTER TABLE idem_records ADD COLUMN holder_request_id TEXT;                         -- in flight: the holder's request id, if known
ALTER TABLE idem_records ADD COLUMN holder_trace_id   TEXT;                         -- in flight: the holder's trace id, if known
ALTER TABLE idem_records ADD COLUMN renewals          INTEGER NOT NULL DEFAULT 0;   -- in flight: renewals of the claim; else 0
ALTER TABLE idem_records ADD COLUMN replays           INTEGER NOT NULL DEFAULT 0;   -- completed: replays counted; else 0
ALTER TABLE idem_records ADD COLUMN tombstone_until   INTEGER;                      -- completed: when its tombstone ends, if it leaves one

-- state gains 'tombstone' (the table has no CHECK on state, so no rebuild is needed): a
-- record past its retention that keeps only its id, fingerprint and fence until
-- expires_at, with lease_expires_at, status, headers and body NULL.

-- Purging now orders by Record::due_at: a completed record that leaves a tombstone is due
-- at the end of its retention (to shrink), not when it becomes forgettable. For every row
-- written before this migration (none has a tombstone) the two times are equal, so the
-- column keeps its values and only changes its name.
ALTER TABLE idem_records RENAME COLUMN forgettable_at TO due_at;
DROP INDEX IF EXISTS idem_records_by_forgettable_at;
CREATE INDEX idem_records_by_due_at ON idem_records (due_at, principal, idem_key);
