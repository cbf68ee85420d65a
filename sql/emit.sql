--
-- emit(): misuse is refused at CREATE TRIGGER (event trigger), by
-- check_triggers(), and at the call; events as pending() sees them.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS state_hub_events;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE repos (repo_id int PRIMARY KEY, repo_slug text, stars numeric, tags text[], meta jsonb);

-- refused when the trigger is created
CREATE TRIGGER t AFTER INSERT ON repos FOR EACH STATEMENT
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.registered');
CREATE TRIGGER t BEFORE INSERT ON repos FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.registered');
CREATE TRIGGER t AFTER INSERT ON repos FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit();
CREATE TRIGGER t AFTER INSERT ON repos FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.registered', 'no_such_column');
CREATE TRIGGER t AFTER INSERT ON repos FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.registered', 'repo_id:');
CREATE TRIGGER t AFTER INSERT ON repos FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.*.registered');
CREATE TRIGGER t AFTER INSERT ON repos FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('elsewhere.repo.registered');

-- a sound trigger
CREATE TRIGGER repo_registered AFTER INSERT ON repos FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.registered', 'repo_id:id', 'repo_slug:slug', 'stars', 'tags', 'meta');
CREATE TRIGGER repo_removed AFTER DELETE ON repos FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.repo.removed');
SELECT state_hub_events.check_triggers('repos');

-- a column dropped after the trigger was created: check_triggers and the write say so
CREATE TABLE gone (id int, extra text);
CREATE TRIGGER gone_t AFTER INSERT ON gone FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.gone.added', 'id', 'extra');
ALTER TABLE gone DROP COLUMN extra;
SELECT state_hub_events.check_triggers('gone');
INSERT INTO gone VALUES (1);
-- check_triggers() examines only the named table's triggers
SELECT state_hub_events.check_triggers('repos');

-- called directly
SELECT state_hub_events.emit();

BEGIN;
INSERT INTO repos VALUES (1, 'one', 1.50, '{a,b}', '{"x": [1, null]}'), (2, 'two', NULL, NULL, NULL);
DELETE FROM repos WHERE repo_id = 2;
SELECT subject, attributes FROM state_hub_events.pending();
ROLLBACK;

-- TRUNCATE emits nothing
BEGIN;
INSERT INTO repos VALUES (3, 'three');
TRUNCATE repos;
SELECT count(*) FROM state_hub_events.pending();
ROLLBACK;

-- deferred constraint triggers fire at COMMIT and count: seen through a
-- deferred trigger that records pending() at that moment
CREATE TABLE audit (n bigint);
CREATE FUNCTION record_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit SELECT count(*) FROM state_hub_events.pending();
    RETURN NULL;
END $$;
CREATE TABLE deferred_t (id int);
CREATE CONSTRAINT TRIGGER d_emit AFTER INSERT ON deferred_t DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION state_hub_events.emit('org.statehub.deferred.added', 'id');
CREATE CONSTRAINT TRIGGER d_record AFTER INSERT ON deferred_t DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION record_pending();
BEGIN;
INSERT INTO deferred_t VALUES (1);
SELECT count(*) AS before_commit FROM state_hub_events.pending();
COMMIT;
SELECT n AS pending_when_deferred_triggers_ran FROM audit;
