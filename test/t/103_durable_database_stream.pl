# 103_durable_database_stream.pl
#    Durable mode: the worker reads a database's or every role's settings
#    (ALTER DATABASE ... SET, ALTER ROLE ALL ... SET) only when it starts.
#    A stream set there after the worker started is one the worker never
#    sees: publish() must refuse it (22023) as it refuses SET and ALTER
#    ROLE ... SET, not store the event for the worker's stream silently.
#
# Copyright (c) 2026, state_hub_events contributors

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('durable_database_stream', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.retry_interval = '1s'
});
ok(wait_until('the worker', 60, sub {
    $node->safe_psql('postgres', 'SELECT worker_pid IS NOT NULL FROM state_hub_events.worker_status()') eq 't' }),
    'the worker runs');
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.d.first')});
is($nats->wait_for_count(1, subject => 'org.d.first'), 1, 'the first event is published');

for my $how ('ALTER DATABASE postgres', 'ALTER ROLE ALL')
{
    $node->safe_psql('postgres', "$how SET state_hub_events.stream = 'DBSTREAM'");
    my ($ret, $out, $err) = $node->psql('postgres', q{
SHOW state_hub_events.stream;
SELECT state_hub_events.publish('org.d.x')}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
    like($out, qr/DBSTREAM/, "$how: the session's stream is DBSTREAM");
    like($err, qr/ERROR:  22023: cannot publish durably to stream "DBSTREAM"/,
        "$how: a stream the worker never read is refused at the call");
    $node->safe_psql('postgres', "$how RESET state_hub_events.stream");
}
# a session's own value ended (RESET, SET LOCAL's transaction, a
# function's SET clause): the configuration's value and source again
my ($ret, $out, $err) = $node->psql('postgres', q{
SET state_hub_events.stream = 'OTHER';
RESET state_hub_events.stream;
SELECT state_hub_events.publish('org.d.reset');
BEGIN; SET LOCAL state_hub_events.stream = 'OTHER'; COMMIT;
SELECT state_hub_events.publish('org.d.local');
CREATE FUNCTION pub_other() RETURNS void LANGUAGE sql
  SET state_hub_events.stream = 'OTHER' AS $$ SELECT 1 $$;
SELECT pub_other();
SELECT state_hub_events.publish('org.d.func');}, on_error_stop => 1);
is($err, '', 'RESET, SET LOCAL and a function\'s SET clause leave no refusal behind');
is($nats->wait_for_count(3, subject => 'org.d.>'), 4, 'and the three events (and the first) are published');
# the worker took its stream from the database's settings at its start;
# they are reset later: a session's configuration value is not the
# worker's, and is refused
sub restart_worker
{
    my $old = $node->safe_psql('postgres', 'SELECT worker_pid FROM state_hub_events.worker_status()');
    $node->safe_psql('postgres', "SELECT pg_terminate_backend($old)");
    return wait_until('a new worker', 60, sub {
        my $p = $node->safe_psql('postgres', 'SELECT worker_pid FROM state_hub_events.worker_status()');
        $p ne '' && $p ne $old });
}
$node->safe_psql('postgres', q{ALTER DATABASE postgres SET state_hub_events.stream = 'DBW'});
ok(restart_worker(), 'the worker starts again with the database\'s stream');
$node->safe_psql('postgres', q{ALTER DATABASE postgres RESET state_hub_events.stream});
($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('org.d.dbw')});
like($err, qr/cannot publish durably to stream "ACTIVITY_EVENTS"/,
    'the configuration\'s stream is refused while the worker publishes to the database\'s');
ok(restart_worker(), 'the worker starts again with the configuration\'s stream');
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.d.after')});
is($nats->wait_for_count(1, subject => 'org.d.after'), 1, 'the worker\'s stream goes on');
is($nats->count('ACTIVITY_EVENTS', subject => 'org.d.x'), 0,
    'no refused event reached the worker\'s stream');

$node->stop;
$nats->stop;
done_testing();
