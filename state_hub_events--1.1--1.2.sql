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
