/* state_hub_events--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION state_hub_events" to load this file. \quit

CREATE FUNCTION publish(subject text, attributes jsonb DEFAULT '{}')
RETURNS uuid
AS 'MODULE_PATHNAME', 'she_publish'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION publish(text, jsonb) IS
'buffer one event in the current transaction; it is published to JetStream when the transaction commits';

CREATE FUNCTION emit()
RETURNS trigger
AS 'MODULE_PATHNAME', 'she_emit'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION emit() IS
'AFTER ... FOR EACH ROW trigger: emit(subject [, column[:attribute] ...]) buffers one event per written row';

CREATE FUNCTION pending(OUT id uuid, OUT subject text, OUT attributes jsonb)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'she_pending'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION pending() IS
'the events the current transaction would publish at COMMIT, in publish order';

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
    OUT last_error_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'she_stats'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION stats() IS
'publishing counters: cluster-wide when the library is preloaded, else this backend''s (see scope)';

CREATE FUNCTION stats_reset()
RETURNS void
AS 'MODULE_PATHNAME', 'she_stats_reset'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION stats_reset() IS
'zero the counters of stats() (cluster-wide when preloaded)';

CREATE FUNCTION ping()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'she_ping_sql'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION ping() IS
'connect to NATS with the current settings and report the server''s and the stream''s facts, or raise an error saying why not';

CREATE FUNCTION _check_trigger(trigger_oid oid, emit_oid oid)
RETURNS boolean
AS 'MODULE_PATHNAME', 'she_check_trigger'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION _check_trigger(oid, oid) IS
'internal: validate one trigger that calls emit()';

CREATE FUNCTION check_triggers(rel regclass)
RETURNS integer
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT count(*)::integer
      FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = rel
       AND state_hub_events._check_trigger(t.oid, 'state_hub_events.emit()'::pg_catalog.regprocedure);
END;

COMMENT ON FUNCTION check_triggers(regclass) IS
'validate every emit() trigger of a table (timing, subject, columns); returns how many there are, or raises an error naming the problem';

-- Check emit() triggers when they are created, not at the first write.
CREATE FUNCTION _check_new_triggers()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd record;
BEGIN
    FOR cmd IN SELECT objid FROM pg_catalog.pg_event_trigger_ddl_commands()
                WHERE object_type = 'trigger'
    LOOP
        PERFORM state_hub_events._check_trigger(cmd.objid,
                    'state_hub_events.emit()'::pg_catalog.regprocedure);
    END LOOP;
END
$$;

COMMENT ON FUNCTION _check_new_triggers() IS
'internal: event trigger that validates emit() triggers at CREATE TRIGGER';

CREATE EVENT TRIGGER state_hub_events_check_triggers
    ON ddl_command_end
    WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION _check_new_triggers();

-- Durable delivery: the outbox the worker drains (not dumped by pg_dump:
-- a backlog belongs to this cluster's NATS, not to a restore).
CREATE SEQUENCE outbox_seq;

CREATE TABLE outbox (
    seq         bigint PRIMARY KEY,
    id          uuid NOT NULL,
    subject     text NOT NULL,
    envelope    text NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);

COMMENT ON TABLE outbox IS
'durable mode: committed events not yet acknowledged by JetStream, in sequence order';

REVOKE ALL ON TABLE outbox FROM PUBLIC;
REVOKE ALL ON SEQUENCE outbox_seq FROM PUBLIC;

CREATE FUNCTION worker_status(
    OUT worker_pid integer,
    OUT backlog_events bigint,
    OUT last_published_at timestamptz,
    OUT last_error text,
    OUT last_error_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'she_worker_status'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION worker_status() IS
'internal: the durable worker''s shared status';

CREATE FUNCTION backlog(
    OUT events bigint,
    OUT bytes bigint,
    OUT oldest_age interval,
    OUT worker_pid integer,
    OUT last_published_at timestamptz,
    OUT last_error text,
    OUT last_error_at timestamptz)
RETURNS record
LANGUAGE sql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT o.events, o.bytes, o.oldest_age,
           w.worker_pid, w.last_published_at, w.last_error, w.last_error_at
      FROM (SELECT count(*) AS events,
                   coalesce(sum(octet_length(envelope)), 0)::bigint AS bytes,
                   clock_timestamp() - min(enqueued_at) AS oldest_age
              FROM state_hub_events.outbox) o,
           state_hub_events.worker_status() w;
END;

COMMENT ON FUNCTION backlog() IS
'durable mode: what the outbox holds (events, bytes, age of the oldest) and the worker''s last error';

-- Application roles can neither publish nor attach emit() to their tables.
REVOKE EXECUTE ON FUNCTION publish(text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION emit() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ping() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION stats_reset() FROM PUBLIC;
