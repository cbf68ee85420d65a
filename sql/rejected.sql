--
-- The dead-letter table and requeue_rejected(): rejected events go back
-- into the outbox in the order they had, with new sequence values after
-- the events waiting there; PUBLIC can neither read the table nor requeue.
--
-- (in a database of its own: no worker drains this outbox)
CREATE DATABASE she_rejected;
\c she_rejected
\set SHOW_CONTEXT never
CREATE EXTENSION state_hub_events;

-- five events in the outbox; the stream refuses the 2nd and the 4th for
-- good: the worker moves them to the dead-letter table with the error
INSERT INTO state_hub_events.outbox (seq, id, subject, envelope)
SELECT nextval('state_hub_events.outbox_seq'),
       ('00000000-0000-4000-8000-00000000000' || i)::uuid, 'org.t.r' || i, '{"i":' || i || '}'
  FROM generate_series(1, 5) i;
WITH moved AS (DELETE FROM state_hub_events.outbox WHERE seq IN (2, 4) RETURNING *)
INSERT INTO state_hub_events.rejected (seq, id, subject, envelope, enqueued_at, error_code, error)
SELECT seq, id, subject, envelope, enqueued_at, 10054,
       'JetStream refused a message: message size exceeds maximum allowed (error code 10054)'
  FROM moved;
SELECT events, rejected FROM state_hub_events.backlog();
SELECT seq, subject, error_code, rejected_at <= clock_timestamp() AS rejected_at
  FROM state_hub_events.rejected ORDER BY seq;

-- one by id: it gets a new sequence value, after the events waiting
SELECT state_hub_events.requeue_rejected(ARRAY['00000000-0000-4000-8000-000000000004'::uuid]);
SELECT seq, subject FROM state_hub_events.outbox ORDER BY seq;
SELECT seq, subject FROM state_hub_events.rejected ORDER BY seq;

-- ids that are not there, an empty array: nothing moves
SELECT state_hub_events.requeue_rejected(ARRAY[gen_random_uuid()]);
SELECT state_hub_events.requeue_rejected('{}');

-- all of them (NULL, the default), in the order they had
WITH moved AS (DELETE FROM state_hub_events.outbox WHERE seq IN (1, 3) RETURNING *)
INSERT INTO state_hub_events.rejected (seq, id, subject, envelope, enqueued_at, error)
SELECT seq, id, subject, envelope, enqueued_at, 'Permissions Violation for Publish to "' || subject || '"'
  FROM moved;
SELECT seq, subject, error_code FROM state_hub_events.rejected ORDER BY seq;
SELECT state_hub_events.requeue_rejected();
SELECT seq, subject FROM state_hub_events.outbox ORDER BY seq;
SELECT events, rejected FROM state_hub_events.backlog();
-- the envelope and the time it was first enqueued come back unchanged
SELECT count(*) FROM state_hub_events.outbox
 WHERE envelope <> '{"i":' || substr(subject, 8) || '}';

-- privileges: like the outbox's, even for a role that may use the schema
CREATE ROLE she_rejected_app;
GRANT USAGE ON SCHEMA state_hub_events TO she_rejected_app;
SET ROLE she_rejected_app;
SELECT count(*) FROM state_hub_events.rejected;
SELECT state_hub_events.requeue_rejected();
RESET ROLE;
SELECT has_table_privilege('she_rejected_app', 'state_hub_events.rejected', 'SELECT') AS can_read,
       has_function_privilege('she_rejected_app', 'state_hub_events.requeue_rejected(uuid[])', 'EXECUTE') AS can_requeue;

-- stats() counts the events the worker moved (none here: no worker)
SELECT rejected FROM state_hub_events.stats();

-- a non-empty dead-letter table is not dropped with the extension
TRUNCATE state_hub_events.outbox;
INSERT INTO state_hub_events.rejected (seq, id, subject, envelope, enqueued_at, error)
VALUES (100, gen_random_uuid(), 'org.t.big', '{}', now(), 'too large');
DROP EXTENSION state_hub_events;
DROP SCHEMA state_hub_events CASCADE;
TRUNCATE state_hub_events.rejected;
REVOKE USAGE ON SCHEMA state_hub_events FROM she_rejected_app;
DROP EXTENSION state_hub_events;

\c contrib_regression
DROP DATABASE she_rejected;
DROP ROLE she_rejected_app;
