# 053_outbox_lock_queue.pl
#    Some commands lock the table they name before they check privileges:
#    CREATE TRIGGER, a foreign key's REFERENCES, CREATE RULE, PARTITION OF,
#    ATTACH PARTITION.  On state_hub_events.outbox, a role with USAGE on
#    the schema could queue such a lock request behind a prepared
#    transaction that holds the outbox's ROW EXCLUSIVE lock (its durable
#    events), and every durable commit of the database would wait behind
#    the request until COMMIT PREPARED.  The extension refuses those
#    commands before the lock: here each fails at once with "permission
#    denied", not with a lock timeout.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('outbox_lock_queue', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
max_prepared_transactions = 2
});

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
GRANT USAGE ON SCHEMA state_hub_events TO mallory;
CREATE SCHEMA m AUTHORIZATION mallory;
CREATE TABLE public.items (id int);
CREATE TRIGGER items_new AFTER INSERT ON public.items FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.items.new');
GRANT INSERT ON public.items TO mallory;
CREATE TABLE m.pt (seq bigint) PARTITION BY LIST (seq);
ALTER TABLE m.pt OWNER TO mallory;
});
# mallory's prepared transaction holds ROW EXCLUSIVE on the outbox
$node->safe_psql('postgres', q{
BEGIN;
INSERT INTO public.items VALUES (1);
PREPARE TRANSACTION 'hold';
}, extra_params => [ '-U', 'mallory' ]);

for my $sql (
    'CREATE TRIGGER x AFTER INSERT ON state_hub_events.outbox FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()',
    'CREATE RULE r AS ON INSERT TO state_hub_events.outbox DO NOTHING',
    'SET search_path = state_hub_events; CREATE RULE r AS ON INSERT TO outbox DO NOTHING',
    'CREATE TEMP TABLE fk (s bigint REFERENCES state_hub_events.outbox (seq))',
    'CREATE TABLE m.fk (s bigint, FOREIGN KEY (s) REFERENCES state_hub_events.outbox (seq))',
    'CREATE TABLE m.fk2 (s bigint); ALTER TABLE m.fk2 ADD FOREIGN KEY (s) REFERENCES state_hub_events.outbox (seq)',
    'CREATE TABLE m.fk3 (s bigint); ALTER TABLE m.fk3 ADD COLUMN t bigint REFERENCES state_hub_events.outbox',
    'CREATE TABLE m.part PARTITION OF state_hub_events.outbox FOR VALUES IN (1)',
    'ALTER TABLE m.pt ATTACH PARTITION state_hub_events.outbox FOR VALUES IN (1)')
{
    my ($ret, $out, $err) = $node->psql('postgres', "SET lock_timeout = '50ms'; $sql",
        extra_params => [ '-U', 'mallory' ]);
    like($err, qr/permission denied for table outbox/, "refused before the lock: $sql");
}

# durable commits go on, and the owner still may
is($node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.victim') IS NOT NULL}), 't',
    'a durable commit goes on');
$node->safe_psql('postgres', q{COMMIT PREPARED 'hold'});
$node->safe_psql('postgres', q{
CREATE TRIGGER x AFTER INSERT ON state_hub_events.outbox FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
DROP TRIGGER x ON state_hub_events.outbox;
});
pass('the superuser may still create a trigger on the outbox');
my @msgs = wait_for_messages($nats, 2, 'ACTIVITY_EVENTS');
is(scalar @msgs, 2, 'both events were published');

$node->stop;
$nats->stop;
done_testing();
