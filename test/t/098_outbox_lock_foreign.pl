# 098_outbox_lock_foreign.pl
#    053's lock queue through CREATE FOREIGN TABLE: "CREATE FOREIGN TABLE
#    ... PARTITION OF state_hub_events.outbox ... SERVER s" locks the outbox
#    ACCESS EXCLUSIVE before any check (the server need not even exist), as
#    CREATE TABLE ... PARTITION OF does, but it is a statement of its own
#    kind that the guard did not look at.  A role with USAGE on the schema
#    (a member of pg_monitor) queued it behind a prepared transaction that
#    holds the outbox's ROW EXCLUSIVE lock, and every durable commit waited
#    behind the request.  Now refused before the lock, like CREATE TABLE.
#    So is ALTER TABLE ... DETACH PARTITION ... FINALIZE (its own subcommand,
#    which 053's DETACH did not cover), on a partitioned table of her own.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('outbox_lock_foreign', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
max_prepared_transactions = 2
});

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN IN ROLE pg_monitor;
CREATE SCHEMA m AUTHORIZATION mallory;
CREATE TABLE m.pt (seq bigint) PARTITION BY RANGE (seq);
ALTER TABLE m.pt OWNER TO mallory;
CREATE TABLE public.items (id int);
CREATE TRIGGER items_new AFTER INSERT ON public.items FOR EACH ROW
    EXECUTE FUNCTION state_hub_events.emit('org.t.items.new');
GRANT INSERT ON public.items TO mallory;
});
# mallory's prepared transaction holds ROW EXCLUSIVE on the outbox
$node->safe_psql('postgres', q{
BEGIN;
INSERT INTO public.items VALUES (1);
PREPARE TRANSACTION 'hold';
}, extra_params => [ '-U', 'mallory' ]);

for my $sql (
    'CREATE FOREIGN TABLE m.fpart PARTITION OF state_hub_events.outbox FOR VALUES IN (1) SERVER nosuch',
    'SET search_path = state_hub_events; CREATE FOREIGN TABLE m.fpart PARTITION OF outbox FOR VALUES IN (1) SERVER nosuch',
    'CREATE FOREIGN TABLE m.fpart PARTITION OF state_hub_events.rejected FOR VALUES IN (1) SERVER nosuch',
    'ALTER TABLE m.pt DETACH PARTITION state_hub_events.outbox FINALIZE')
{
    my ($ret, $out, $err) = $node->psql('postgres', "SET lock_timeout = '50ms'; $sql",
        extra_params => [ '-U', 'mallory' ]);
    like($err, qr/permission denied for table (outbox|rejected)/, "refused before the lock: $sql");
}

# a durable commit goes on meanwhile; the superuser's own command is not refused
# by the guard (PostgreSQL refuses it: the outbox is not partitioned)
is($node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.victim') IS NOT NULL}), 't',
    'a durable commit goes on');
$node->safe_psql('postgres', q{COMMIT PREPARED 'hold'});
my ($ret, $out, $err) = $node->psql('postgres',
    'CREATE FOREIGN TABLE m.fpart PARTITION OF state_hub_events.outbox FOR VALUES IN (1) SERVER nosuch');
unlike($err, qr/permission denied/, 'the superuser passes the guard');
my @msgs = wait_for_messages($nats, 2, 'ACTIVITY_EVENTS');
is(scalar @msgs, 2, 'both events were published');

$node->stop;
$nats->stop;
done_testing();
