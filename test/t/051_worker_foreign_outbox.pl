# 051_worker_foreign_outbox.pl
#    The durable worker runs as a superuser and reads and deletes
#    state_hub_events.outbox by name.  In a database where the extension is
#    not installed (not yet, or dropped), the database's owner (not a
#    superuser) may create a schema and a table of that name, with a
#    trigger: the worker must never touch a table that is not the
#    extension's, or the trigger runs with the worker's rights (and the
#    table's rows go out as events).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('worker_foreign_outbox', $nats, conf => q{
state_hub_events.database = 'hub'
state_hub_events.delivery = 'durable'
state_hub_events.retry_interval = '100ms'
});

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
CREATE DATABASE hub OWNER mallory;
});
$node->restart;

# mallory, owner of hub, sets a trap where the extension's outbox would be
$node->safe_psql('hub', q{
CREATE SCHEMA state_hub_events;
CREATE TABLE state_hub_events.outbox (seq bigint, id uuid, subject text,
    envelope text, enqueued_at timestamptz DEFAULT now(), txn_id bigint,
    txn_key bigint, txn_index int, txn_count int);
CREATE TABLE state_hub_events.rejected (seq bigint, id uuid, subject text,
    envelope text, enqueued_at timestamptz, rejected_at timestamptz,
    error_code int, error text);
CREATE FUNCTION public.trap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER trap BEFORE DELETE ON state_hub_events.outbox
    FOR EACH ROW EXECUTE FUNCTION public.trap();
INSERT INTO state_hub_events.outbox (seq, id, subject, envelope)
VALUES (1, '6f1c7c0e-1b7e-4a59-9d0e-6b3c1d0f2a11', 'org.t.forged',
        '{"id":"6f1c7c0e-1b7e-4a59-9d0e-6b3c1d0f2a11","type":"org.t.forged"}');
}, extra_params => [ '-U', 'mallory' ]);

# three reads of the worker after that: each ends with its state going idle
my %idle;
ok(wait_until('three reads of the worker', 60, sub {
    my $t = $node->safe_psql('postgres', q{
        SELECT state_change FROM pg_stat_activity
         WHERE backend_type = 'state_hub_events worker' AND state = 'idle'});
    $idle{$t} = 1 if $t ne '';
    return keys %idle >= 3;
}), 'the worker read hub three times');

is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
    'f', "the worker did not run the trap's trigger: mallory is no superuser");
is($node->safe_psql('hub', 'SELECT count(*) FROM state_hub_events.outbox'), '1',
    'the row is still there');
my $info = eval { $nats->stream_info('ACTIVITY_EVENTS') };
is($info ? $info->{state}{messages} : 0, 0, 'and nothing was published');

$node->stop;
$nats->stop;
done_testing();
