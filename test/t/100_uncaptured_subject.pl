# 100_uncaptured_subject.pl
#    The stream exists (create_stream on) but its subjects no longer
#    capture an event's subject (an operator narrowed them): JetStream
#    answers "no responders", creating the stream answers "already in
#    use", and the event is refused.  The COMMIT's WARNING and
#    stats().last_error must say why, for a lone event as for a batch;
#    before, a lone event's WARNING had an empty DETAIL and last_error
#    was set to ''.  Durable mode keeps such an event at the head of the
#    outbox (a clustered stream without a leader answers the same, and
#    that passes), and backlog() says why too.  Once the subjects capture
#    it again, both modes publish.
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
my $node = she_node('uncaptured', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.retry_interval = '1s'
});

# psql -c $sql; returns its stderr
sub commit_err
{
    my ($sql) = @_;
    my ($o, $e) = ('', '');
    IPC::Run::run([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', $sql ],
        '>', \$o, '2>', \$e);
    return $e;
}

my $why = qr/stream "ACTIVITY_EVENTS" exists but does not capture subject "org\.b\.x", or has no leader/;
my $e = commit_err(q{SELECT state_hub_events.publish('org.b.x')});
like($e, qr/1 of 1 events of the committed transaction were not published\nDETAIL:  no stream captures the subjects \($why\)/,
    'a lone event: the WARNING says no stream captures its subject');
is($node->safe_psql('postgres', 'SELECT failed, last_error FROM state_hub_events.stats()'),
    '1|no stream captures the subjects (stream "ACTIVITY_EVENTS" exists but does not capture subject "org.b.x", or has no leader)',
    'stats(): failed 1, last_error says why');
$e = commit_err(q{SELECT state_hub_events.publish('org.b.x') FROM generate_series(1, 3)});
like($e, qr/3 of 3 events of the committed transaction were not published\nDETAIL:  no stream captures the subjects/,
    'a batch: the WARNING says no stream captures the subjects');
$e = commit_err(q{SELECT state_hub_events.publish('org.a.x')});
is($e, '', 'a captured subject is published');
is($nats->wait_for_count(1, subject => 'org.a.x'), 1, 'and it is in the stream');
is($nats->count('ACTIVITY_EVENTS', subject => 'org.b.>'), 0, 'no refused event is in the stream');

# durable: the event stays at the head of the outbox (the stream may have
# no leader for a moment in a cluster, which answers the same), and
# backlog() says why
$node->safe_psql('postgres', q{
ALTER SYSTEM SET state_hub_events.delivery = 'durable';
SELECT pg_reload_conf();});
ok(wait_until('the worker to start', 60, sub {
    $node->safe_psql('postgres', 'SELECT worker_pid IS NOT NULL FROM state_hub_events.backlog()') eq 't' }),
    'the durable worker runs');
$e = commit_err(q{SELECT state_hub_events.publish('org.b.y')});
is($e, '', 'durable: the commit succeeds without a WARNING');
ok(wait_until('backlog() to name the refusal', 60, sub {
    $node->safe_psql('postgres', 'SELECT last_error FROM state_hub_events.backlog()')
      =~ /does not capture subject "org\.b\.y"/ }),
    'durable: backlog().last_error says no stream captures the subject');
is($node->safe_psql('postgres', 'SELECT events FROM state_hub_events.backlog()'), '1',
    'durable: the event stays in the outbox');

# the operator captures the subjects again: the event is published
$nats->delete_stream('ACTIVITY_EVENTS');
$nats->create_stream('ACTIVITY_EVENTS', 'org.>', 3600);
is($nats->wait_for_count(1, subject => 'org.b.y'), 1, 'durable: published once the stream captures it');
ok(wait_until('the outbox to drain', 60, sub {
    $node->safe_psql('postgres', 'SELECT events FROM state_hub_events.backlog()') eq '0' }),
    'durable: the outbox drains');

$node->stop;
$nats->stop;
done_testing();
