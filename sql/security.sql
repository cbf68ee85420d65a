--
-- Application roles can neither publish, nor ping, nor attach emit() to a
-- table of their own; triggers created by the schema owner still fire for
-- them; settings are superuser-only and secrets invisible.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS state_hub_events;
DROP ROLE IF EXISTS she_app;
DROP ROLE IF EXISTS she_owner;
RESET client_min_messages;
\set VERBOSITY terse

SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'state_hub_events' ORDER BY 1;

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
SELECT subject, attributes FROM state_hub_events.pending();
COMMIT;
DROP TABLE app.mine;
RESET ROLE;

-- secrets are hidden from SHOW ALL and pg_settings for non-superusers
SET state_hub_events.token = 's3cret';
SET ROLE she_app;
SELECT count(*) FROM pg_settings WHERE name IN ('state_hub_events.token', 'state_hub_events.password');
RESET ROLE;
RESET state_hub_events.token;

DROP SCHEMA hub CASCADE;
DROP SCHEMA app;
REVOKE ALL ON SCHEMA state_hub_events FROM she_owner, she_app;
REVOKE ALL ON FUNCTION state_hub_events.publish(text, jsonb) FROM she_owner;
REVOKE ALL ON FUNCTION state_hub_events.emit() FROM she_owner;
DROP ROLE she_app;
DROP ROLE she_owner;
