--
-- Settings: names, defaults, contexts; bad values refused by check hooks.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS state_hub_events;
RESET client_min_messages;
LOAD 'state_hub_events';
\set VERBOSITY default

SELECT name, setting, unit, context, vartype FROM pg_settings
 WHERE name LIKE 'state_hub_events.%' ORDER BY name;

SET state_hub_events.stream = 'bad.name';
SET state_hub_events.stream = '';
SET state_hub_events.stream = 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx';
SET state_hub_events.stream_subjects = 'org..x';
SET state_hub_events.stream_subjects = 'org.>.x';
SET state_hub_events.stream_subjects = '';
-- the publisher's queue stores stream_subjects in 16 bits: at most 4096 bytes
SELECT length(set_config('state_hub_events.stream_subjects', 'org.>,' || repeat('a', 4090), false));
CREATE FUNCTION pg_temp.try_subjects(v text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    PERFORM set_config('state_hub_events.stream_subjects', v, false);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || d;
END $$;
SELECT pg_temp.try_subjects('org.>,' || repeat('a', 4091));
SELECT pg_temp.try_subjects(repeat('a.', 40000) || '>');
SELECT length(current_setting('state_hub_events.stream_subjects'));
RESET state_hub_events.stream_subjects;
SET state_hub_events.publisher = '';
-- the connection settings are the publisher's: server-wide, set at reload
SET state_hub_events.nats_url = 'nats://a:4222';
ALTER SYSTEM SET state_hub_events.nats_url = 'nats://a:4222, nats://b:4222';
ALTER SYSTEM SET state_hub_events.nats_url = 'nats://a:4222,,nats://b:4222';
-- a password holding ',' would split the list (and show its pieces): refused
ALTER SYSTEM SET state_hub_events.nats_url = 'nats://u:p,q@h:4222';
ALTER SYSTEM SET state_hub_events.nats_url = 'nats://h:x';
-- a refused URL is quoted with its credentials masked, never as given
ALTER SYSTEM SET state_hub_events.nats_url = 'nats://u:secret@bad host';
ALTER SYSTEM SET state_hub_events.nats_url = 'nats://u:secret@h:notaport';
SET state_hub_events.delivery = 'sometimes';
SET state_hub_events.no_such_setting = 1;
-- good values
ALTER SYSTEM SET state_hub_events.nats_url = 'nats://a:4222,nats://b:4222';
ALTER SYSTEM SET state_hub_events.nats_url = 'Tk4@Tk9@127.0.0.1:1,tls://Uq7:a@b:c@[::1]:2,localhost,nats://h_1.example/';
ALTER SYSTEM RESET state_hub_events.nats_url;
SET state_hub_events.stream_subjects = 'org.>,activity.*.created';
SET state_hub_events.publish_timeout = '250ms';
SHOW state_hub_events.publish_timeout;
