--
-- Application roles can neither publish, nor ping, nor attach emit() to a
-- table of their own; triggers created by the schema owner still fire for
-- them; settings are superuser-only and secrets invisible.  Nothing the
-- extension shows lets a role read what it could not read otherwise: the
-- buffered row copies (pending()), other tables' definitions
-- (_check_trigger()), the server URL, the counters and the backlog.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS state_hub_events;
DROP ROLE IF EXISTS she_app;
DROP ROLE IF EXISTS she_owner;
DROP ROLE IF EXISTS she_trigger;
DROP ROLE IF EXISTS she_monitor;
DROP ROLE IF EXISTS she_migrator;
DROP ROLE IF EXISTS she_mallory;
RESET client_min_messages;
\set VERBOSITY terse

-- who may execute what, and each function's labels
SELECT p.proname,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,
       has_function_privilege('pg_monitor', p.oid, 'EXECUTE') AS monitor_execute,
       p.provolatile AS volatile, p.proparallel AS parallel, p.prosecdef AS secdef
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'state_hub_events' ORDER BY 1;
SELECT has_schema_privilege('public', 'state_hub_events', 'USAGE') AS public_usage,
       has_schema_privilege('pg_monitor', 'state_hub_events', 'USAGE') AS monitor_usage;

CREATE ROLE she_owner;
CREATE ROLE she_app;
GRANT USAGE ON SCHEMA state_hub_events TO she_owner, she_app;
GRANT EXECUTE ON FUNCTION state_hub_events.publish(text, jsonb) TO she_owner;
GRANT EXECUTE ON FUNCTION state_hub_events.emit() TO she_owner;

CREATE SCHEMA hub AUTHORIZATION she_owner;
CREATE SCHEMA app AUTHORIZATION she_app;
GRANT USAGE ON SCHEMA hub TO she_app;
SET ROLE she_owner;
CREATE TABLE hub.decisions (id int PRIMARY KEY, status text);
CREATE TABLE hub.repos (id int PRIMARY KEY, slug text);
CREATE TRIGGER repo_registered AFTER INSERT ON hub.repos FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.registered', 'id:repo_id', 'slug:repo_slug');
-- the SECURITY DEFINER pattern: publish() from a trigger function owned by she_owner
CREATE FUNCTION hub.decision_resolved() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.status = 'resolved' AND OLD.status IS DISTINCT FROM 'resolved' THEN
        PERFORM state_hub_events.publish('org.statehub.decision.resolved',
                                         jsonb_build_object('decision_id', NEW.id));
    END IF;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION hub.decision_resolved() FROM PUBLIC;
CREATE TRIGGER decision_resolved AFTER UPDATE ON hub.decisions FOR EACH ROW
    EXECUTE FUNCTION hub.decision_resolved();
GRANT INSERT, UPDATE, SELECT ON hub.repos, hub.decisions TO she_app;
RESET ROLE;

SET ROLE she_app;
-- cannot publish or ping directly
SELECT state_hub_events.publish('org.statehub.forged');
SELECT state_hub_events.ping();
-- cannot attach emit() to a table of its own
CREATE TABLE app.mine (id int);
CREATE TRIGGER forge AFTER INSERT ON app.mine FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.forged');
-- cannot change where events go or what they claim to be
SET state_hub_events.nats_url = 'nats://attacker:4222';
SET state_hub_events.publisher = 'someone-else';
SET state_hub_events.wait_for_ack = off;
-- secrets are invisible (insufficient_privilege; the message differs
-- between PostgreSQL versions)
\set VERBOSITY sqlstate
SHOW state_hub_events.token;
SHOW state_hub_events.password;
\set VERBOSITY terse
-- but the owner's triggers fire for it
BEGIN;
INSERT INTO hub.repos VALUES (1, 'one');
INSERT INTO hub.decisions VALUES (1, 'open');
UPDATE hub.decisions SET status = 'resolved' WHERE id = 1;
UPDATE hub.decisions SET status = 'resolved' WHERE id = 1;
-- (pending() is not its to call: look as the superuser, in its transaction)
SAVEPOINT s;
SELECT state_hub_events.pending();
ROLLBACK TO s;
RESET ROLE;
SELECT subject, attributes FROM state_hub_events.pending();
COMMIT;
SET ROLE she_app;
DROP TABLE app.mine;
RESET ROLE;

-- A role that may only DELETE from a table cannot read the deleted rows
-- through the row copies emit() buffered.
SET ROLE she_owner;
CREATE TABLE hub.accounts (id int PRIMARY KEY, password_hash text);
CREATE TRIGGER account_removed AFTER DELETE ON hub.accounts FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.account.removed');
INSERT INTO hub.accounts VALUES (1, 'hash-one'), (2, 'hash-two');
GRANT DELETE ON hub.accounts TO she_app;
RESET ROLE;
SET ROLE she_app;
SELECT * FROM hub.accounts;
BEGIN;
DELETE FROM hub.accounts;
SELECT * FROM state_hub_events.pending();
ROLLBACK;
RESET ROLE;
-- a role the DBA lets see them (here the owner, who can read the table) can
GRANT EXECUTE ON FUNCTION state_hub_events.pending() TO she_owner;
SET ROLE she_owner;
BEGIN;
DELETE FROM hub.accounts WHERE id = 1;
SELECT subject, attributes FROM state_hub_events.pending();
ROLLBACK;
RESET ROLE;

-- _check_trigger() and check_triggers() open a table only for a caller with
-- SELECT or TRIGGER on it: she_app may not probe (or lock) hub.accounts ...
SET ROLE she_app;
SELECT state_hub_events._check_trigger(t.oid, 'state_hub_events.emit()'::regprocedure)
  FROM pg_trigger t WHERE t.tgrelid = 'hub.accounts'::regclass;
SELECT state_hub_events.check_triggers('hub.accounts');
-- ... but may check a table it can read
SELECT state_hub_events.check_triggers('hub.repos');
RESET ROLE;
-- the non-superuser owner checks its tables, and CREATE TRIGGER still
-- validates its emit() triggers (the event trigger runs as the owner)
SET ROLE she_owner;
SELECT state_hub_events.check_triggers('hub.accounts');
CREATE TRIGGER account_renamed AFTER UPDATE ON hub.accounts FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.account.renamed', 'id:account_id', 'login');
RESET ROLE;
-- so does a role that holds only TRIGGER on the table (and EXECUTE on emit())
CREATE ROLE she_trigger;
GRANT USAGE ON SCHEMA hub, state_hub_events TO she_trigger;
GRANT EXECUTE ON FUNCTION state_hub_events.emit() TO she_trigger;
GRANT TRIGGER ON hub.accounts TO she_trigger;
SET ROLE she_trigger;
CREATE TRIGGER account_added AFTER INSERT ON hub.accounts FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.account.added', 'id:account_id');
SELECT state_hub_events.check_triggers('hub.accounts');
RESET ROLE;

-- The server URL and every authentication and TLS setting are
-- superuser-only: URLs may carry user:password@.  Members of
-- pg_read_all_settings may read them; nats_url, password and token only
-- masked, and never through pg_settings.  (They are sighup settings now,
-- set in postgresql.conf; 019_secrets.pl checks real values.)
-- (insufficient_privilege; the message differs between PostgreSQL versions)
SET ROLE she_app;
\set VERBOSITY sqlstate
SHOW state_hub_events.nats_url;
SELECT current_setting('state_hub_events.nats_url');
SHOW state_hub_events."user";
\set VERBOSITY terse
SELECT count(*) FROM pg_settings WHERE name IN ('state_hub_events.nats_url', 'state_hub_events.user');
-- what every role may still read holds no secret
SELECT name FROM pg_settings WHERE name LIKE 'state_hub_events.%' ORDER BY 1;
RESET ROLE;
GRANT pg_read_all_settings TO she_owner;
SET ROLE she_owner;
SHOW state_hub_events.nats_url;
SELECT count(*) FROM pg_settings WHERE name IN ('state_hub_events.nats_url', 'state_hub_events.user');
RESET ROLE;
REVOKE pg_read_all_settings FROM she_owner;

-- stats(), backlog() and worker_status() (last errors, every session's
-- activity) are for pg_monitor, not for PUBLIC
SET ROLE she_app;
SELECT scope FROM state_hub_events.stats();
SELECT events FROM state_hub_events.backlog();
SELECT worker_pid FROM state_hub_events.worker_status();
RESET ROLE;
CREATE ROLE she_monitor IN ROLE pg_monitor;
SET ROLE she_monitor;
SELECT scope, last_error FROM state_hub_events.stats();
SELECT events, bytes, last_error FROM state_hub_events.backlog();
SELECT worker_pid, last_error FROM state_hub_events.worker_status();
-- pg_monitor may neither reset the counters nor read the outbox itself
SELECT state_hub_events.stats_reset();
SELECT count(*) FROM state_hub_events.outbox;
RESET ROLE;

-- secrets are hidden from SHOW ALL and pg_settings for non-superusers
SET ROLE she_app;
SELECT count(*) FROM pg_settings WHERE name IN ('state_hub_events.token', 'state_hub_events.password');
RESET ROLE;

-- The CREATE TRIGGER event trigger runs as whoever creates a trigger: a
-- role without USAGE on state_hub_events (an application or migration role,
-- a pg_restore as the tables' owner) creates, and drops, triggers that have
-- nothing to do with emit(), and drops its schema (the drop guard's event
-- trigger runs for it too).
CREATE ROLE she_migrator;
CREATE SCHEMA mig AUTHORIZATION she_migrator;
SET ROLE she_migrator;
SELECT has_schema_privilege('state_hub_events', 'USAGE') AS has_usage;
CREATE TABLE mig.t (id int);
CREATE FUNCTION mig.tf() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
CREATE TRIGGER unrelated AFTER INSERT ON mig.t FOR EACH ROW EXECUTE FUNCTION mig.tf();
CREATE TRIGGER unrelated_stmt AFTER UPDATE ON mig.t EXECUTE FUNCTION mig.tf();
INSERT INTO mig.t VALUES (1);
-- emit() itself stays out of its reach
CREATE TRIGGER forge AFTER INSERT ON mig.t FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.forged');
DROP TRIGGER unrelated ON mig.t;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'mig.t'::regclass ORDER BY 1;
DROP OWNED BY she_migrator;
RESET ROLE;
SELECT count(*) AS left_over FROM pg_namespace WHERE nspname = 'mig';
-- emit() triggers are still validated at CREATE TRIGGER (a missing column)
SET ROLE she_trigger;
CREATE TRIGGER account_broken AFTER INSERT ON hub.accounts FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.account.broken', 'no_such_column');
RESET ROLE;

-- backfill() and backfill_batch() run in their caller's search_path (for
-- the "where" text).  A role that may create objects in a schema on that
-- path plants functions, operators and types that a superuser's backfill
-- would pick over pg_catalog's if any name were unqualified (the path puts
-- the schema before pg_catalog).  Each plant logs its use and, run by a
-- superuser, makes its author a superuser.
CREATE ROLE she_mallory;
CREATE SCHEMA plant AUTHORIZATION she_mallory;
SET ROLE she_mallory;
CREATE TABLE plant.hits (what text);
GRANT INSERT ON plant.hits TO PUBLIC;
CREATE FUNCTION plant.hit(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO plant.hits VALUES (what);
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE she_mallory SUPERUSER';
    END IF;
    RETURN true;
END $$;
CREATE FUNCTION plant.quote_literal(text[]) RETURNS text LANGUAGE sql
    AS $$ SELECT 'planted' WHERE plant.hit('quote_literal') $$;
CREATE FUNCTION plant.arrow(jsonb, text) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT $1 OPERATOR(pg_catalog.->) $2 WHERE plant.hit('->') $$;
CREATE OPERATOR plant.-> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = plant.arrow);
CREATE FUNCTION plant.arrowj(jsonb, jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT $1 WHERE plant.hit('->(jsonb)') $$;
CREATE OPERATOR plant.-> (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = plant.arrowj);
CREATE FUNCTION plant.cat(jsonb, jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT $1 OPERATOR(pg_catalog.||) $2 WHERE plant.hit('||') $$;
CREATE OPERATOR plant.|| (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = plant.cat);
CREATE FUNCTION plant.gt(int, int) RETURNS boolean LANGUAGE sql
    AS $$ SELECT $1 OPERATOR(pg_catalog.>) $2 AND plant.hit('>') $$;
CREATE OPERATOR plant.> (LEFTARG = int, RIGHTARG = int, FUNCTION = plant.gt);
CREATE FUNCTION plant.gtt(text, text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT $1 OPERATOR(pg_catalog.>) $2 AND plant.hit('>(text)') $$;
CREATE OPERATOR plant.> (LEFTARG = text, RIGHTARG = text, FUNCTION = plant.gtt);
CREATE FUNCTION plant.eq(int, int) RETURNS boolean LANGUAGE sql
    AS $$ SELECT $1 OPERATOR(pg_catalog.=) $2 AND plant.hit('=') $$;
CREATE OPERATOR plant.= (LEFTARG = int, RIGHTARG = int, FUNCTION = plant.eq);
CREATE FUNCTION plant.lt(int, int) RETURNS boolean LANGUAGE sql
    AS $$ SELECT $1 OPERATOR(pg_catalog.<) $2 AND plant.hit('<') $$;
CREATE OPERATOR plant.< (LEFTARG = int, RIGHTARG = int, FUNCTION = plant.lt);
CREATE FUNCTION plant.plus(int, int) RETURNS int LANGUAGE sql
    AS $$ SELECT $1 OPERATOR(pg_catalog.+) $2 WHERE plant.hit('+') $$;
CREATE OPERATOR plant.+ (LEFTARG = int, RIGHTARG = int, FUNCTION = plant.plus);
CREATE FUNCTION plant.plus8(bigint, int) RETURNS bigint LANGUAGE sql
    AS $$ SELECT $1 OPERATOR(pg_catalog.+) $2 WHERE plant.hit('+(bigint)') $$;
CREATE OPERATOR plant.+ (LEFTARG = bigint, RIGHTARG = int, FUNCTION = plant.plus8);
CREATE DOMAIN plant.text AS pg_catalog.text CHECK (plant.hit('text'));
CREATE DOMAIN plant.int4 AS pg_catalog.int4 CHECK (plant.hit('int4'));
-- (the plants work: her own unqualified query in that path uses them)
SET search_path = plant, pg_catalog;
SELECT '{"a": 1}'::jsonb -> 'a'::pg_catalog.text AS a, quote_literal('{x}'::pg_catalog.text[]) AS q,
       1 + 1 AS two, 'x'::text AS t;
RESET search_path;
SELECT what FROM plant.hits ORDER BY 1;
DELETE FROM plant.hits;
RESET ROLE;

CREATE TABLE hub.keyed (id int PRIMARY KEY, slug text);
CREATE TRIGGER keyed_added AFTER INSERT ON hub.keyed FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.keyed', 'id', 'slug');
CREATE TABLE hub.texted (name text PRIMARY KEY, n int);
CREATE DOMAIN hub.code AS int CHECK (VALUE > 0);
CREATE TABLE hub.coded (c hub.code PRIMARY KEY, k text);
INSERT INTO hub.keyed VALUES (1, 'a'), (2, 'b'), (3, 'c');
INSERT INTO hub.texted VALUES ('a', 1), ('b', 2), ('c', 3);
INSERT INTO hub.coded VALUES (1, 'x'), (2, 'y');
SET search_path = plant, pg_catalog;
-- the procedure (batches, NOTICEs, resuming), as a superuser
CALL state_hub_events.backfill('hub.keyed', 'org.statehub.keyed', batch_size => 2);
CALL state_hub_events.backfill('hub.keyed', 'org.statehub.keyed', batch_size => 2, "after" => '{1}');
-- the batch function: a text key, a domain key, 51 attributes (two
-- jsonb_build_object chunks), a "where" text the caller's path resolves
BEGIN;
SELECT * FROM state_hub_events.backfill_batch('hub.texted', 'org.statehub.texted', columns => '{}',
                                              "after" => '{a}');
SELECT * FROM state_hub_events.backfill_batch('hub.coded', 'org.statehub.coded', columns => '{k}',
                                              "after" => '{1}');
SELECT * FROM state_hub_events.backfill_batch('hub.keyed', 'org.statehub.wide',
           columns => (SELECT pg_catalog.array_agg('id:a' OPERATOR(pg_catalog.||) g::pg_catalog.text)
                         FROM pg_catalog.generate_series(1, 51) g),
           "after" => '{2}');
SELECT * FROM state_hub_events.backfill_batch('hub.keyed', 'org.statehub.keyed', 'slug <> ''b''');
RESET search_path;
SELECT subject, attributes->'a1' AS a1, attributes->'a51' AS a51,
       attributes - ARRAY(SELECT 'a' || g FROM generate_series(1, 51) g) AS rest
  FROM state_hub_events.pending();
COMMIT;
-- no plant ran, and she_mallory is no superuser
SELECT what FROM plant.hits ORDER BY 1;
SELECT rolsuper FROM pg_roles WHERE rolname = 'she_mallory';
-- but the "where" text is the caller's own SQL, resolved in the caller's
-- path: there plant.> is the caller's choice (README, Security)
SET search_path = plant, pg_catalog;
BEGIN;
SELECT * FROM state_hub_events.backfill_batch('hub.keyed', 'org.statehub.keyed', 'id > 2');
RESET search_path;
SELECT what FROM plant.hits ORDER BY 1;
ROLLBACK;

DROP SCHEMA plant CASCADE;
DROP SCHEMA hub CASCADE;
DROP SCHEMA app;
REVOKE ALL ON SCHEMA state_hub_events FROM she_owner, she_app, she_trigger;
REVOKE ALL ON FUNCTION state_hub_events.publish(text, jsonb) FROM she_owner;
REVOKE ALL ON FUNCTION state_hub_events.emit() FROM she_owner, she_trigger;
REVOKE ALL ON FUNCTION state_hub_events.pending() FROM she_owner;
DROP ROLE she_app;
DROP ROLE she_owner;
DROP ROLE she_trigger;
DROP ROLE she_monitor;
DROP ROLE she_migrator;
DROP ROLE she_mallory;
