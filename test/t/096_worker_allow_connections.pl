# 096_worker_allow_connections.pl
#    The database's owner (not a superuser) may ALTER DATABASE ... WITH
#    ALLOW_CONNECTIONS false.  Sessions already connected go on committing
#    durable events into the outbox, but the durable worker, which connects
#    anew at every start (a server restart, a crash, its own restart after
#    an error), was refused ("database ... is not currently accepting
#    connections") and retried every few seconds: delivery stopped for as
#    long as the owner liked, as with the settings 036 pins.  The worker
#    connects like autovacuum does, whatever the database allows; new
#    sessions are still refused.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('worker_allowconn', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.retry_interval = '100ms'
});

$node->safe_psql('postgres', q{
CREATE ROLE dbowner LOGIN;
ALTER DATABASE postgres OWNER TO dbowner;
});
$node->safe_psql('postgres', "SELECT state_hub_events.publish('org.t.ac', '{\"n\": $_}')") for 1 .. 3;
my @msgs = wait_for_messages($nats, 3, 'ACTIVITY_EVENTS');
is(scalar(@msgs), 3, 'the worker publishes while the database accepts connections');

# three more wait in the outbox while NATS is down; then the owner closes
# the database to new connections
$nats->stop;
$node->safe_psql('postgres', "SELECT state_hub_events.publish('org.t.ac', '{\"n\": $_}')") for 4 .. 6;
$node->safe_psql('template1', q{
SET ROLE dbowner;
ALTER DATABASE postgres WITH ALLOW_CONNECTIONS false;
});
is($node->safe_psql('template1', q{
SELECT datallowconn FROM pg_database WHERE datname = 'postgres'}), 'f',
    'a database owner that is no superuser closed the database to new connections');

# the worker starts again (here with the server) and must get in
my $log_offset = -s $node->logfile;
$node->restart;
$nats->start;
@msgs = wait_for_messages($nats, 6, 'ACTIVITY_EVENTS', timeout => 60);
is_deeply([ map { $_->{body}{attributes}{n} } @msgs ], [ 1 .. 6 ],
    'the restarted worker published the outbox, in order');
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/database "postgres" is not currently accepting connections/,
    'the worker was never refused');

# new sessions are still refused: the setting keeps its meaning for them
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT 1');
isnt($ret, 0, 'a new session is still refused');
like($err, qr/not currently accepting connections/, '... with PostgreSQL\'s own error');

$node->safe_psql('template1', 'ALTER DATABASE postgres WITH ALLOW_CONNECTIONS true');
$node->stop;
$nats->stop;
done_testing();
