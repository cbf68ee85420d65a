--
-- Bad input is refused at the call, with an errcode and a clear message.
--
CREATE EXTENSION state_hub_events;
\set SHOW_CONTEXT never

-- try(query): the SQLSTATE and message a query fails with, or 'ok'
CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- subjects
SELECT try($q$SELECT state_hub_events.publish(NULL)$q$);
SELECT try($q$SELECT state_hub_events.publish('')$q$);
SELECT try($q$SELECT state_hub_events.publish('org..x')$q$);
SELECT try($q$SELECT state_hub_events.publish('org.x.')$q$);
SELECT try($q$SELECT state_hub_events.publish('.org.x')$q$);
SELECT try($q$SELECT state_hub_events.publish('org.statehub repo')$q$);
SELECT try($q$SELECT state_hub_events.publish(E'org.statehub.\trepo')$q$);
SELECT try($q$SELECT state_hub_events.publish(E'org.statehub.\x01')$q$);
-- Unicode whitespace and control characters too (given as UTF-8 bytes, so
-- the test reads the same in any database encoding): NBSP, NEL (a C1
-- control), U+2028, U+2029, U+3000, U+200A, U+1680, U+0080; other non-ASCII
-- characters are fine
SELECT s, try(format('SELECT state_hub_events.publish(%L)', convert_from(s::bytea, 'UTF8')))
  FROM unnest(ARRAY['\x6f72672e78c2a079', '\x6f72672e78c28579', '\x6f72672ee280a8',
                    '\x6f72672ee280a9', '\x6f72672ee3808078', '\x6f72672e78e2808a',
                    '\x6f72672ee19a80', '\x6f72672ec280']) AS s;
SELECT try(format('SELECT state_hub_events.publish(%L)', convert_from('\x6f72672e6361c3a92e78'::bytea, 'UTF8')));
-- the detail names the character and its position
SELECT state_hub_events.publish(convert_from('\x6f72672e78c2a079'::bytea, 'UTF8'));
SELECT try($q$SELECT state_hub_events.publish('org.statehub.*')$q$);
SELECT try($q$SELECT state_hub_events.publish('org.>')$q$);
SELECT try($q$SELECT state_hub_events.publish('org.a*b')$q$);
SELECT try($q$SELECT state_hub_events.publish('org.' || repeat('x', 300))$q$);
SELECT try($q$SELECT state_hub_events.publish('activity.task.created')$q$);
SELECT try($q$SELECT state_hub_events.publish('org')$q$);
-- NATS's own subjects are refused even when the stream's subjects would
-- cover them: "$JS.API.STREAM.PURGE.<stream>" with the envelope as its
-- body purged the stream with the publisher's credentials
BEGIN;
SET LOCAL state_hub_events.stream_subjects = '>';
SELECT try($q$SELECT state_hub_events.publish('$JS.API.STREAM.PURGE.ACTIVITY_EVENTS')$q$);
SELECT try($q$SELECT state_hub_events.publish('$JS.ACK.S.C.1.1.1.1.0')$q$);
SELECT try($q$SELECT state_hub_events.publish('$SYS.REQ.SERVER.PING')$q$);
SELECT try($q$SELECT state_hub_events.publish('$KV.b.k')$q$);
SELECT try($q$SELECT state_hub_events.publish('_INBOX.abc.1')$q$);
-- the server's reply prefixes for service imports and gateways: a reply
-- forged there reaches the requester as _INBOX would
SELECT try($q$SELECT state_hub_events.publish('_R_.abc.1')$q$);
SELECT try($q$SELECT state_hub_events.publish('_GR_.abcdef.ghijkl._INBOX.x')$q$);
CREATE TABLE reserved_t (id int);
SELECT try($q$CREATE TRIGGER reserved_t_ins AFTER INSERT ON reserved_t FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('$JS.API.STREAM.PURGE.ACTIVITY_EVENTS')$q$);
SELECT try($q$SELECT state_hub_events._backfill_check('_INBOX.x', NULL, 10)$q$);
-- a "$" or "_INBOX" later in the subject is an ordinary token
SELECT state_hub_events.publish('_INBOX') IS NOT NULL AS ok;
SELECT state_hub_events.publish('org.$JS.API._INBOX') IS NOT NULL AS ok;
-- subjects are case-sensitive, and only the whole first token counts
SELECT state_hub_events.publish('_r_.x') IS NOT NULL AS ok;
SELECT state_hub_events.publish('_R_') IS NOT NULL AS ok;
SELECT state_hub_events.publish('_R_x.y') IS NOT NULL AS ok;
SELECT state_hub_events.publish('org._R_.x') IS NOT NULL AS ok;
ROLLBACK;

-- attributes must be an object
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y', '[1,2]')$q$);
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y', '"text"')$q$);
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y', '42')$q$);
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y', 'null')$q$);

-- size
SET state_hub_events.max_event_bytes = 1000;
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y', jsonb_build_object('blob', repeat('x', 1000)))$q$);
RESET state_hub_events.max_event_bytes;

-- too many events in one transaction
SET state_hub_events.max_events_per_transaction = 3;
BEGIN;
SELECT count(state_hub_events.publish('org.statehub.x.y')) FROM generate_series(1, 3);
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.four')$q$);
ROLLBACK;
RESET state_hub_events.max_events_per_transaction;
-- the limit holds exactly where the buffer grows (16 events, then doubling
-- capped at the limit); raised in the middle of a transaction, it grows again
SET state_hub_events.max_events_per_transaction = 20;
BEGIN;
SELECT count(state_hub_events.publish('org.statehub.x.y')) FROM generate_series(1, 20);
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y')$q$);
SET LOCAL state_hub_events.max_events_per_transaction = 33;
SELECT count(state_hub_events.publish('org.statehub.x.y')) FROM generate_series(1, 13);
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y')$q$);
SELECT count(*) FROM state_hub_events.pending();
ROLLBACK;
RESET state_hub_events.max_events_per_transaction;

-- too many bytes in one transaction: the event that would pass
-- max_transaction_bytes is refused, those before it stay; a rolled-back
-- savepoint gives its bytes back
SET state_hub_events.max_transaction_bytes = '1MB';
BEGIN;
SELECT count(state_hub_events.publish('org.statehub.x.big', jsonb_build_object('blob', repeat('x', 300000))))
  FROM generate_series(1, 3);
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.big', jsonb_build_object('blob', repeat('x', 300000)))$q$);
SELECT count(*) FROM state_hub_events.pending();
SAVEPOINT s;
SELECT state_hub_events.publish('org.statehub.x.big', jsonb_build_object('blob', repeat('x', 100000))) IS NOT NULL AS ok;
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.big', jsonb_build_object('blob', repeat('x', 100000)))$q$);
ROLLBACK TO SAVEPOINT s;
SELECT state_hub_events.publish('org.statehub.x.big', jsonb_build_object('blob', repeat('x', 100000))) IS NOT NULL AS ok;
SELECT count(*) FROM state_hub_events.pending();
ROLLBACK;
RESET state_hub_events.max_transaction_bytes;

-- valid subjects pass; the stream's subjects decide what is covered
BEGIN;
SET LOCAL state_hub_events.stream_subjects = 'org.statehub.*.registered,activity.>';
SELECT state_hub_events.publish('org.statehub.repo.registered') IS NOT NULL AS ok;
SELECT state_hub_events.publish('activity.task.created') IS NOT NULL AS ok;
SELECT try($q$SELECT state_hub_events.publish('org.statehub.repo.completed')$q$);
ROLLBACK;

-- ... as of the transaction's first event, which fixes the stream's subjects:
-- each later event is checked against them, not against a newer setting
CREATE TABLE subj_t (id int);
CREATE TRIGGER subj_t_ins AFTER INSERT ON subj_t FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.t.added');
BEGIN;
SELECT state_hub_events.publish('org.statehub.repo.registered', '{"repo_id": 1}') IS NOT NULL AS ok;
SELECT state_hub_events.publish('org.a') IS NOT NULL AS ok;
SET LOCAL state_hub_events.stream_subjects = 'activity.>';
SELECT try($q$SELECT state_hub_events.publish('org.statehub.repo.completed')$q$);
SELECT try($q$INSERT INTO subj_t VALUES (1)$q$);
SELECT try($q$SELECT state_hub_events.publish('activity.task.created')$q$);
SELECT subject FROM state_hub_events.pending();
SELECT state_hub_events.publish('activity.task.created');
ROLLBACK;
-- ... by the first event still buffered: with none left, the setting of now
CREATE FUNCTION publish_under_org(subject text) RETURNS boolean LANGUAGE sql
    SET state_hub_events.stream_subjects = 'org.>'
    AS $$ SELECT state_hub_events.publish(subject) IS NOT NULL $$;
BEGIN;
SET LOCAL state_hub_events.stream_subjects = 'activity.>';
SAVEPOINT s;
SELECT publish_under_org('org.a') AS ok;
SELECT try($q$SELECT state_hub_events.publish('activity.task.created')$q$);
ROLLBACK TO s;
SELECT try($q$SELECT state_hub_events.publish('activity.task.created')$q$);
SELECT try($q$SELECT state_hub_events.publish('org.b')$q$);
SELECT subject FROM state_hub_events.pending();
ROLLBACK;
DROP FUNCTION publish_under_org(text);
DROP TABLE subj_t;

-- ... and the event-size limit of the queue (queue_size less a record's
-- room) does not move with a stream_subjects set later in the transaction
CREATE FUNCTION largest_blob() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    lo integer := 1000;
    hi integer := 16 * 1024 * 1024;
    mid integer;
BEGIN
    WHILE lo < hi LOOP
        mid := (lo + hi + 1) / 2;
        BEGIN
            PERFORM state_hub_events.publish('org.b', jsonb_build_object('blob', repeat('x', mid)));
            lo := mid;
            RAISE EXCEPTION 'undo' USING ERRCODE = 'P0001';
        EXCEPTION
            WHEN SQLSTATE 'P0001' THEN NULL;
            WHEN invalid_parameter_value OR program_limit_exceeded THEN hi := mid - 1;
        END;
    END LOOP;
    RETURN lo;
END $$;
SET state_hub_events.max_event_bytes = '64MB';
BEGIN;
SELECT state_hub_events.publish('org.a') IS NOT NULL AS ok;
SELECT largest_blob() AS blob_limit \gset
SELECT :blob_limit < 8 * 1024 * 1024 AS queue_limit_binds;
SELECT length(set_config('state_hub_events.stream_subjects', 'org.>,' || repeat('a', 4090), true));
SELECT largest_blob() = :blob_limit AS same_limit;
SELECT count(*) FROM state_hub_events.pending();
ROLLBACK;
RESET state_hub_events.max_event_bytes;
DROP FUNCTION largest_blob();

-- the destination is fixed by the first event of a transaction
BEGIN;
SELECT state_hub_events.publish('org.statehub.x.y') IS NOT NULL AS ok;
SET LOCAL state_hub_events.stream = 'OTHER';
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y')$q$);
ROLLBACK;

-- ... by the first event still buffered: rolling back every event releases it
BEGIN;
SAVEPOINT s;
SET LOCAL state_hub_events.stream = 'OTHER';
SELECT state_hub_events.publish('org.statehub.x.other') IS NOT NULL AS ok;
ROLLBACK TO s;
SELECT state_hub_events.publish('org.statehub.x.default') IS NOT NULL AS ok;
SELECT subject FROM state_hub_events.pending();
ROLLBACK;
-- the next first event fixes it afresh, here to OTHER
BEGIN;
SAVEPOINT s;
SELECT state_hub_events.publish('org.statehub.x.default') IS NOT NULL AS ok;
ROLLBACK TO s;
SET LOCAL state_hub_events.stream = 'OTHER';
SELECT state_hub_events.publish('org.statehub.x.other') IS NOT NULL AS ok;
SET LOCAL state_hub_events.stream = 'ACTIVITY_EVENTS';
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.default')$q$);
ROLLBACK;
-- a savepoint rolled back while an earlier event remains: that event's
-- destination stays (it was fixed before the savepoint)
BEGIN;
SELECT state_hub_events.publish('org.statehub.x.first') IS NOT NULL AS ok;
SAVEPOINT s;
SELECT state_hub_events.publish('org.statehub.x.second') IS NOT NULL AS ok;
ROLLBACK TO s;
SET LOCAL state_hub_events.stream = 'OTHER';
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.third')$q$);
SELECT subject FROM state_hub_events.pending();
ROLLBACK;
-- the same through a PL/pgSQL exception block
BEGIN;
DO $$
BEGIN
    BEGIN
        PERFORM set_config('state_hub_events.stream', 'OTHER', true);
        PERFORM state_hub_events.publish('org.statehub.x.other');
        RAISE EXCEPTION 'undo';
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    PERFORM state_hub_events.publish('org.statehub.x.default');
END $$;
SELECT subject FROM state_hub_events.pending();
ROLLBACK;

-- a parallel worker cannot publish (publish() is PARALLEL UNSAFE; a wrapper
-- that lies about it still gets a clear error)
CREATE FUNCTION pub_in_worker() RETURNS uuid LANGUAGE plpgsql PARALLEL SAFE AS $$
BEGIN
    RETURN state_hub_events.publish('org.statehub.x.y');
END $$;
-- (force_parallel_mode is called debug_parallel_query since PostgreSQL 16)
SELECT CASE WHEN current_setting('server_version_num')::int >= 160000
            THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END AS parallel_guc \gset
SET :parallel_guc = on;
SELECT pub_in_worker();
RESET :parallel_guc;
DROP FUNCTION pub_in_worker();

-- durable delivery serves only the database named by state_hub_events.database (none here)
SET state_hub_events.delivery = 'durable';
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y')$q$);
RESET state_hub_events.delivery;

-- durable events are written to the outbox at COMMIT: a read-only
-- transaction is refused at the call (before anything else is checked)
SET state_hub_events.delivery = 'durable';
BEGIN READ ONLY;
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y')$q$);
ROLLBACK;
SET default_transaction_read_only = on;
SELECT try($q$SELECT state_hub_events.publish('org.statehub.x.y')$q$);
RESET default_transaction_read_only;
RESET state_hub_events.delivery;
-- immediate delivery writes nothing: a read-only transaction may publish
BEGIN READ ONLY;
SELECT state_hub_events.publish('org.statehub.x.y') IS NOT NULL AS ok;
SELECT count(*) FROM state_hub_events.pending();
COMMIT;

-- PREPARE TRANSACTION with buffered events is refused, as NOTIFY does
BEGIN;
SELECT state_hub_events.publish('org.statehub.x.y') IS NOT NULL AS ok;
PREPARE TRANSACTION 'she';
-- without events PREPARE is not our business (max_prepared_transactions = 0 here)
DROP FUNCTION try(text);
