--
-- Extension lifecycle: ALTER EXTENSION UPDATE from 1.0 gives what a fresh
-- install gives; DROP EXTENSION is refused while the outbox holds events.
--
-- (in a database of its own: the other tests' triggers depend on emit())
CREATE DATABASE she_lifecycle;
\c she_lifecycle
\set SHOW_CONTEXT never

-- the member objects of the installed version, described (PostgreSQL 17
-- also records a table's row type and its array type as members: they are
-- left out, so that every version lists the same)
CREATE TEMP VIEW members AS
SELECT pg_describe_object(classid, objid, objsubid) AS member
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'state_hub_events')
   AND deptype = 'e'
   AND NOT (classid = 'pg_type'::regclass
            AND objid IN (SELECT oid FROM pg_type WHERE typrelid <> 0
                          UNION ALL
                          SELECT typarray FROM pg_type WHERE typrelid <> 0));

CREATE EXTENSION state_hub_events;
SELECT extversion FROM pg_extension WHERE extname = 'state_hub_events';
CREATE TEMP TABLE fresh AS SELECT member FROM members;
DROP EXTENSION state_hub_events;

CREATE EXTENSION state_hub_events VERSION '1.0';
-- an outbox row survives the update
INSERT INTO state_hub_events.outbox (seq, id, subject, envelope)
VALUES (nextval('state_hub_events.outbox_seq'), gen_random_uuid(), 'org.t.kept', '{}');
ALTER EXTENSION state_hub_events UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'state_hub_events';
-- updated and fresh have the same members
(SELECT member FROM members EXCEPT SELECT member FROM fresh)
UNION ALL
(SELECT member FROM fresh EXCEPT SELECT member FROM members);
SELECT count(*) AS members FROM members;
SELECT subject FROM state_hub_events.outbox;

-- the outbox holds an event: dropping it any way is refused
DROP EXTENSION state_hub_events;
DROP SCHEMA state_hub_events CASCADE;
-- also in a session that has not loaded the library
\c she_lifecycle
DROP EXTENSION state_hub_events;
SELECT count(*) FROM state_hub_events.outbox;

-- discarding on purpose, then dropping works
TRUNCATE state_hub_events.outbox;
DROP EXTENSION state_hub_events;
SELECT count(*) FROM pg_extension WHERE extname = 'state_hub_events';

\c contrib_regression
DROP DATABASE she_lifecycle;
