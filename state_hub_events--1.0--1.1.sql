/* state_hub_events--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION state_hub_events UPDATE TO '1.1'" to load this file. \quit

-- 1.1: refuse to drop the outbox while it holds events (DROP EXTENSION,
-- DROP SCHEMA ... CASCADE, DROP OWNED).  The check is the library's
-- object-access hook; this event trigger loads the library before such a
-- command in a session that has not used the extension yet.
CREATE FUNCTION _guard_drop()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'she_guard_drop'
LANGUAGE C;

COMMENT ON FUNCTION _guard_drop() IS
'internal: event trigger that loads the library, whose hook refuses to drop a non-empty outbox';

CREATE EVENT TRIGGER state_hub_events_guard_drop
    ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION _guard_drop();
