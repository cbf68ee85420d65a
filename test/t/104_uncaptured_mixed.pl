# 104_uncaptured_mixed.pl
#    A transaction's events, some captured by the existing stream and some
#    not: exactly the uncaptured ones are refused, with the reason, and
#    the next transaction's lone refusal has its own reason (nothing of
#    the batch before leaks into it).  Durable: a transaction that drops
#    and creates the extension itself, then publishes, commits.
#
# Copyright (c) 2026, state_hub_events contributors

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
$nats->create_stream('ACTIVITY_EVENTS', 'org.a.>', 120);
my $node = she_node('uncaptured_mixed', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.retry_interval = '1s'
});

sub commit_err
{
    my ($sql) = @_;
    my ($o, $e) = ('', '');
    IPC::Run::run([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', $sql ],
        '>', \$o, '2>', \$e);
    return $e;
}

my $e = commit_err(q{SELECT state_hub_events.publish(s) FROM unnest(ARRAY['org.a.1', 'org.b.1', 'org.a.2', 'org.b.2', 'org.a.3']) s});
like($e, qr/2 of 5 events of the committed transaction were not published\nDETAIL:  no stream captures the subjects \(the stream exists but does not capture them, or has no leader\)/,
    'a mixed batch: exactly the two uncaptured events are refused, with why');
is($nats->wait_for_count(3, subject => 'org.a.>'), 3, 'the three captured ones are in the stream');
is($node->safe_psql('postgres', 'SELECT published, failed FROM state_hub_events.stats()'), '3|2',
    'stats() counts 3 published, 2 failed');

# a stream that does not exist: the old reason, no "exists" from before
$nats->delete_stream('ACTIVITY_EVENTS');
$e = commit_err(q{SET state_hub_events.create_stream = off; SELECT state_hub_events.publish('org.b.9')});
unlike($e, qr/exists but/, 'the next refusal does not inherit "exists"');
like($e, qr/not published/, 'and it is refused');
$nats->create_stream('ACTIVITY_EVENTS', 'org.>', 120);

# durable, and a transaction that creates the extension itself
$node->safe_psql('postgres', q{
ALTER SYSTEM SET state_hub_events.delivery = 'durable';
SELECT pg_reload_conf();});
ok(wait_until('the worker to start', 60, sub {
    $node->safe_psql('postgres', 'SELECT worker_pid IS NOT NULL FROM state_hub_events.backlog()') eq 't' }),
    'the durable worker runs');
$e = commit_err(q{BEGIN;
DROP EXTENSION state_hub_events; CREATE EXTENSION state_hub_events;
SELECT state_hub_events.publish('org.c.same');
COMMIT;});
is($e, '', 'a transaction that recreated the extension itself commits its event');
is($nats->wait_for_count(1, subject => 'org.c.same'), 1, 'and the event is published');

$node->stop;
$nats->stop;
done_testing();
