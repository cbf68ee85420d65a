/* state_hub_events--1.2--1.3.sql */

\echo Use "ALTER EXTENSION state_hub_events UPDATE TO '1.3'" to load this file. \quit

-- ======================================================================
-- 1.3, transactions as units (headers and atomic batches)
-- ======================================================================

-- Durable mode: each outbox row records its transaction, so the worker can
-- send the Statehub-Txn-* headers: the full transaction id, the commit key
-- (one value of outbox_seq taken at pre-commit, before the events' own), the
-- event's 1-based index and the transaction's event count.  Rows written
-- before 1.3 have NULLs and go without those headers.
ALTER TABLE outbox
    ADD COLUMN txn_id bigint,
    ADD COLUMN txn_key bigint,
    ADD COLUMN txn_index integer,
    ADD COLUMN txn_count integer;

COMMENT ON COLUMN outbox.txn_id IS
'the transaction id (pg_current_xact_id()) that published the event; NULL for rows written before 1.3';
COMMENT ON COLUMN outbox.txn_key IS
'the commit key of the event''s transaction: a value of outbox_seq taken at its pre-commit';
COMMENT ON COLUMN outbox.txn_index IS
'the event''s 1-based position in its transaction';
COMMENT ON COLUMN outbox.txn_count IS
'the number of events the transaction committed';

-- stats() gains atomic_batches (atomic batches the server committed) and
-- atomic_splits (transactions published as several atomic batches); it is
-- created again with the labels and privileges of 1.2.
DROP FUNCTION stats();

CREATE FUNCTION stats(
    OUT scope text,
    OUT buffered bigint,
    OUT published bigint,
    OUT duplicates bigint,
    OUT failed bigint,
    OUT unconfirmed bigint,
    OUT dropped bigint,
    OUT commits bigint,
    OUT commit_publish_p50_ms float8,
    OUT commit_publish_p99_ms float8,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT rejected bigint,
    OUT atomic_batches bigint,
    OUT atomic_splits bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'she_stats'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION stats() IS
'publishing counters: cluster-wide when the library is preloaded, else this backend''s (see scope)';

REVOKE EXECUTE ON FUNCTION stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stats() TO pg_monitor;

-- ======================================================================
-- end of 1.3, transactions as units
-- ======================================================================
