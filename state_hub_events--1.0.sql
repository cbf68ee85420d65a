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

-- Application roles can neither publish nor attach emit() to their tables.
REVOKE EXECUTE ON FUNCTION publish(text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION emit() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ping() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION stats_reset() FROM PUBLIC;
