-- bench/setup.sql
--    The same table shape for every variant; each variant differs only in
--    its AFTER ROW trigger.  Envelopes and payloads are ~300 bytes.

CREATE EXTENSION IF NOT EXISTS state_hub_events;

CREATE TABLE t_plain  (id bigserial PRIMARY KEY, repo_id int, slug text, payload text);
CREATE TABLE t_notify (LIKE t_plain INCLUDING ALL);
CREATE TABLE t_outbox (LIKE t_plain INCLUDING ALL);
CREATE TABLE t_emit   (LIKE t_plain INCLUDING ALL);

-- 2. PostgreSQL's own transactional notification
CREATE FUNCTION notify_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('state_hub', json_build_object(
        'id', gen_random_uuid(), 'type', 'org.statehub.bench.row', 'version', '1.0',
        'timestamp', now(), 'publisher', 'state-hub', 'attributes', to_jsonb(NEW))::text);
    RETURN NULL;
END $$;
CREATE TRIGGER notify_row AFTER INSERT ON t_notify FOR EACH ROW EXECUTE FUNCTION notify_row();

-- 3. the hand-written transactional outbox
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    subject    text NOT NULL,
    envelope   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION outbox_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (subject, envelope) VALUES ('org.statehub.bench.row', jsonb_build_object(
        'id', gen_random_uuid(), 'type', 'org.statehub.bench.row', 'version', '1.0',
        'timestamp', now(), 'publisher', 'state-hub', 'attributes', to_jsonb(NEW)));
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_row AFTER INSERT ON t_outbox FOR EACH ROW EXECUTE FUNCTION outbox_row();

-- 4. this extension, immediate mode (wait_for_ack per session: PGOPTIONS)
CREATE TRIGGER emit_row AFTER INSERT ON t_emit FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.bench.row');

-- lock hold: every transaction updates the same row
CREATE TABLE hot_plain (id int PRIMARY KEY, n bigint);
CREATE TABLE hot_emit  (id int PRIMARY KEY, n bigint);
INSERT INTO hot_plain VALUES (1, 0);
INSERT INTO hot_emit VALUES (1, 0);
CREATE TRIGGER emit_hot AFTER UPDATE ON hot_emit FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.statehub.bench.hot', 'id', 'n');
