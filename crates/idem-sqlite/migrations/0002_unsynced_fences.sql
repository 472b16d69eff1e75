-- Deferred claim sync (SqliteOptions::claim_sync): how many fences may have been issued
-- since the last synced commit. The writer syncs when it grows past a bound, and a store
-- that defers claim syncs skips the fence counter past that bound when it opens, so a
-- fence lost in a crash is never issued again.
ALTER TABLE idem_fence ADD COLUMN unsynced_fences INTEGER NOT NULL DEFAULT 0 CHECK (unsynced_fences >= 0);
