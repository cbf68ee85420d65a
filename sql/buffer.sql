--
-- The transaction buffer as pending() sees it: order, savepoints, PL/pgSQL
-- exception blocks, COMMIT AND CHAIN, procedures that commit.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS state_hub_events;
RESET client_min_messages;

-- nothing outside a transaction
SELECT count(*) FROM state_hub_events.pending();

BEGIN;
SELECT state_hub_events.publish('org.t.one', '{"n": 1}') IS NOT NULL AS ok;
SELECT state_hub_events.publish('org.t.two', '{"n": 2}') IS NOT NULL AS ok;
SELECT subject, attributes FROM state_hub_events.pending();
-- the id pending() shows is the id publish() returned
SELECT (SELECT id FROM state_hub_events.pending() WHERE subject = 'org.t.three') = u AS same_id
  FROM (SELECT state_hub_events.publish('org.t.three') AS u) s;
ROLLBACK;
SELECT count(*) FROM state_hub_events.pending();

-- savepoints: a rolled-back one drops exactly its events, a released one keeps them
BEGIN;
SELECT state_hub_events.publish('org.t.a') IS NOT NULL AS ok;
SAVEPOINT s1;
SELECT state_hub_events.publish('org.t.b') IS NOT NULL AS ok;
SAVEPOINT s2;
SELECT state_hub_events.publish('org.t.c') IS NOT NULL AS ok;
ROLLBACK TO s2;
SELECT state_hub_events.publish('org.t.d') IS NOT NULL AS ok;
RELEASE s1;
SAVEPOINT s3;
SELECT state_hub_events.publish('org.t.e') IS NOT NULL AS ok;
ROLLBACK TO s3;
SELECT state_hub_events.publish('org.t.f') IS NOT NULL AS ok;
SELECT subject FROM state_hub_events.pending();
ROLLBACK;

-- an error inside a savepoint, then recovery
BEGIN;
SELECT state_hub_events.publish('org.t.kept') IS NOT NULL AS ok;
SAVEPOINT s;
SELECT state_hub_events.publish('org.t.lost') IS NOT NULL AS ok;
SELECT 1/0;
ROLLBACK TO s;
SELECT subject FROM state_hub_events.pending();
ROLLBACK;

-- PL/pgSQL EXCEPTION blocks
CREATE FUNCTION exc_test() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM state_hub_events.publish('org.t.before');
    BEGIN
        PERFORM state_hub_events.publish('org.t.inside_failed');
        RAISE EXCEPTION 'boom';
    EXCEPTION WHEN OTHERS THEN
        PERFORM state_hub_events.publish('org.t.handler');
    END;
    BEGIN
        PERFORM state_hub_events.publish('org.t.inside_ok');
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    FOR i IN 1..3 LOOP
        BEGIN
            PERFORM state_hub_events.publish('org.t.loop' || i);
            IF i = 2 THEN RAISE EXCEPTION 'skip'; END IF;
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END LOOP;
END $$;
BEGIN;
SELECT exc_test();
SELECT subject FROM state_hub_events.pending();
ROLLBACK;

-- COMMIT AND CHAIN: the chained transaction starts empty
BEGIN;
SELECT state_hub_events.publish('org.t.first') IS NOT NULL AS ok;
COMMIT AND CHAIN;
SELECT count(*) FROM state_hub_events.pending();
SELECT state_hub_events.publish('org.t.second') IS NOT NULL AS ok;
SELECT subject FROM state_hub_events.pending();
ROLLBACK AND CHAIN;
SELECT count(*) FROM state_hub_events.pending();
COMMIT;

-- a procedure that commits and rolls back inside
CREATE TABLE seen (step int, n bigint);
CREATE PROCEDURE proc_test() LANGUAGE plpgsql AS $$
BEGIN
    PERFORM state_hub_events.publish('org.t.p1');
    INSERT INTO seen SELECT 1, count(*) FROM state_hub_events.pending();
    COMMIT;
    INSERT INTO seen SELECT 2, count(*) FROM state_hub_events.pending();
    PERFORM state_hub_events.publish('org.t.p2');
    PERFORM state_hub_events.publish('org.t.p3');
    ROLLBACK;
    INSERT INTO seen SELECT 3, count(*) FROM state_hub_events.pending();
    PERFORM state_hub_events.publish('org.t.p4');
    INSERT INTO seen SELECT 4, count(*) FROM state_hub_events.pending();
END $$;
CALL proc_test();
-- step 2's row was rolled back together with p2 and p3
SELECT * FROM seen ORDER BY step;

-- stats() counts what was buffered (cluster-wide: the library is preloaded)
SELECT scope, buffered > 0 AS buffered, published, failed, unconfirmed FROM state_hub_events.stats();
-- ... also when parallel query is forced: stats() runs in the leader, never
-- in a worker that would report its own (zero) counters
-- (force_parallel_mode is called debug_parallel_query since PostgreSQL 16)
SELECT CASE WHEN current_setting('server_version_num')::int >= 160000
            THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END AS parallel_guc \gset
SET :parallel_guc = on;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SELECT scope, buffered > 0 AS buffered FROM state_hub_events.stats();
RESET :parallel_guc;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
