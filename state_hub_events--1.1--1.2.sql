/* state_hub_events--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION state_hub_events UPDATE TO '1.2'" to load this file. \quit

-- 1.2, privileges: nothing the extension shows may let a role read what it
-- could not read otherwise.

-- pending() shows the events of the current transaction, and emit() builds
-- them from row copies: a role that may only DELETE from a table would read
-- the deleted rows' columns.  Grant it to the roles that publish.
REVOKE EXECUTE ON FUNCTION pending() FROM PUBLIC;

-- The counters, the backlog and the worker's status carry the last error
-- (server error text) and, when preloaded, every session's activity: they
-- are for monitoring roles.  The schema is not usable by PUBLIC, so
-- pg_monitor also gets USAGE on it.
REVOKE EXECUTE ON FUNCTION stats() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION backlog() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION worker_status() FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO pg_monitor;
GRANT EXECUTE ON FUNCTION stats() TO pg_monitor;
GRANT EXECUTE ON FUNCTION backlog() TO pg_monitor;
GRANT EXECUTE ON FUNCTION worker_status() TO pg_monitor;

-- stats() reads this backend's own counters when the library is not
-- preloaded; a parallel worker would report its own instead.
ALTER FUNCTION stats() PARALLEL RESTRICTED;

-- backlog() reads clock_timestamp(): not STABLE.
ALTER FUNCTION backlog() VOLATILE;

-- _check_trigger(oid, oid) stays executable by PUBLIC: the event trigger
-- runs it as whoever creates a trigger, and check_triggers() as its caller.
-- The library now refuses to open a table the caller holds neither SELECT
-- nor TRIGGER on.  Its cost makes the planner test check_triggers()'s
-- "tgrelid = rel" first: at cost 1 it ran on every trigger of the database
-- and failed on another table's broken (or unreadable) trigger.
ALTER FUNCTION _check_trigger(oid, oid) COST 1000;

-- 1.2, durable delivery: the dead-letter table.  An event the stream refuses
-- for good (over the stream's max_msg_size or the server's max payload,
-- captured by another stream, no permission to publish its subject) moves
-- here from the outbox, in the transaction that deletes it there, and the
-- events behind it go on.  Not dumped by pg_dump, like the outbox.
CREATE TABLE rejected (
    seq         bigint PRIMARY KEY,
    id          uuid NOT NULL,
    subject     text NOT NULL,
    envelope    text NOT NULL,
    enqueued_at timestamptz NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    error_code  integer,
    error       text NOT NULL
);

COMMENT ON TABLE rejected IS
'durable mode: events the stream refused for good, with the refusal; requeue_rejected() puts them back into the outbox';
COMMENT ON COLUMN rejected.seq IS
'the event''s sequence value in the outbox when it was refused';
COMMENT ON COLUMN rejected.error_code IS
'JetStream''s error code (10054: over max_msg_size, 10060: captured by another stream); NULL when the refusal had none (the server''s max payload, no permission)';
COMMENT ON COLUMN rejected.error IS
'the refusal, as the worker logged it';

REVOKE ALL ON TABLE rejected FROM PUBLIC;

-- Put rejected events back into the outbox (all of them, or those with the
-- given ids), in the order they had, with new sequence values: they are
-- published after every event already waiting.
CREATE FUNCTION requeue_rejected(ids uuid[] DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH moved AS (
        DELETE FROM state_hub_events.rejected r
         WHERE ids IS NULL OR r.id = ANY (ids)
        RETURNING r.seq, r.id, r.subject, r.envelope, r.enqueued_at),
    requeued AS (
        INSERT INTO state_hub_events.outbox (seq, id, subject, envelope, enqueued_at)
        SELECT pg_catalog.nextval('state_hub_events.outbox_seq'::pg_catalog.regclass),
               m.id, m.subject, m.envelope, m.enqueued_at
          FROM (SELECT * FROM moved ORDER BY moved.seq) m
        RETURNING 1)
    SELECT pg_catalog.count(*) FROM requeued;
END;

COMMENT ON FUNCTION requeue_rejected(uuid[]) IS
'durable mode: move rejected events (all, or those with the given ids) back into the outbox with new sequence values, after the events waiting there; returns how many';

REVOKE EXECUTE ON FUNCTION requeue_rejected(uuid[]) FROM PUBLIC;

-- stats() gains rejected: events the worker moved to the dead-letter table,
-- and publisher_batches / publisher_events: the groups the publisher sent
-- (one write and one wait for acknowledgements each) and the events in
-- them (the library fills the columns the function has).  stats() and
-- backlog() are created again, with the labels and privileges given above.
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
    OUT publisher_batches bigint,
    OUT publisher_events bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'she_stats'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION stats() IS
'publishing counters: cluster-wide when the library is preloaded, else this backend''s (see scope)';

REVOKE EXECUTE ON FUNCTION stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stats() TO pg_monitor;

-- backlog() gains rejected: how many events the dead-letter table holds.
DROP FUNCTION backlog();

CREATE FUNCTION backlog(
    OUT events bigint,
    OUT bytes bigint,
    OUT oldest_age interval,
    OUT worker_pid integer,
    OUT last_published_at timestamptz,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT rejected bigint)
RETURNS record
LANGUAGE sql VOLATILE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT o.events, o.bytes, o.oldest_age,
           w.worker_pid, w.last_published_at, w.last_error, w.last_error_at,
           (SELECT pg_catalog.count(*) FROM state_hub_events.rejected)
      FROM (SELECT pg_catalog.count(*) AS events,
                   coalesce(pg_catalog.sum(pg_catalog.octet_length(envelope)), 0)::bigint AS bytes,
                   pg_catalog.clock_timestamp() - pg_catalog.min(enqueued_at) AS oldest_age
              FROM state_hub_events.outbox) o,
           state_hub_events.worker_status() w;
END;

COMMENT ON FUNCTION backlog() IS
'durable mode: what the outbox holds (events, bytes, age of the oldest), the worker''s last error, and how many events wait in the dead-letter table (rejected)';

REVOKE EXECUTE ON FUNCTION backlog() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION backlog() TO pg_monitor;

-- the drop guard covers the dead-letter table too
COMMENT ON FUNCTION _guard_drop() IS
'internal: event trigger that loads the library, whose hook refuses to drop a non-empty outbox or dead-letter table';
