# 102_durable_session_stream.pl
#    Durable mode: the outbox has no stream column, so the worker publishes
#    every event to its own state_hub_events.stream.  A session that set
#    another stream (SET, ALTER ROLE ... SET) had its events stored in the
#    worker's stream instead, silently; with stream_subjects of its own,
#    an event the worker's stream does not capture sat at the head of the
#    outbox and held every later event back.  publish() must refuse a
#    stream other than the worker's at the call (22023), as it refuses
#    durable publishing from a database the worker does not serve.  A
#    stream from the server's configuration is the worker's too (allowed
#    even before the worker has read a reload); the worker's own stream,
#    and immediate mode, go on as before.
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
my $node = she_node('durable_session_stream', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
state_hub_events.retry_interval = '1s'
});
ok(wait_until('the worker', 60, sub {
    $node->safe_psql('postgres', 'SELECT worker_pid IS NOT NULL FROM state_hub_events.worker_status()') eq 't' }),
    'the worker runs');
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.s.first')});
is($nats->wait_for_count(1, subject => 'org.s.first'), 1, 'the first event is published');

my ($ret, $out, $err) = $node->psql('postgres', q{
SET state_hub_events.stream = 'OTHER';
SELECT state_hub_events.publish('org.s.other')}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($ret, 0, 'durable: publish() to another stream than the worker\'s fails');
like($err, qr/ERROR:  22023: cannot publish durably to stream "OTHER"/, 'at the call, with 22023');
like($err, qr/DETAIL:  The durable worker publishes every event of the outbox to stream "ACTIVITY_EVENTS"/,
    'the DETAIL names the worker\'s stream');

# a role whose settings name another stream and subjects
$node->safe_psql('postgres', q{
CREATE ROLE app LOGIN SUPERUSER;
ALTER ROLE app SET state_hub_events.stream = 'COM';
ALTER ROLE app SET state_hub_events.stream_subjects = 'com.>';});
($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('com.x')},
    extra_params => [ '-U', 'app' ]);
like($err, qr/cannot publish durably to stream "COM"/, 'a role\'s own stream is refused too');

# the worker's stream: published, nothing held back
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.s.after')});
is($nats->wait_for_count(1, subject => 'org.s.after'), 1, 'the worker\'s stream goes on');
ok(wait_until('the outbox to drain', 60, sub {
    $node->safe_psql('postgres', 'SELECT count(*) FROM state_hub_events.outbox') eq '0' }),
    'the outbox drains');
is($nats->count('ACTIVITY_EVENTS', subject => 'org.s.other'), 0, 'the refused event is nowhere');

# the server's configuration changes the stream: allowed at once, even
# before the worker has read the reload, and the worker follows it
$node->safe_psql('postgres', q{
ALTER SYSTEM SET state_hub_events.stream = 'NEWER';
ALTER SYSTEM SET state_hub_events.stream_subjects = 'new.>';
SELECT pg_reload_conf();});
($ret, $out, $err) = $node->psql('postgres', q{SELECT state_hub_events.publish('new.x')});
is($ret, 0, 'a stream from the server configuration is allowed right after the reload');
is($nats->wait_for_count(1, stream => 'NEWER', subject => 'new.x'), 1,
    'and the worker publishes it to that stream');
$node->safe_psql('postgres', q{
ALTER SYSTEM RESET state_hub_events.stream;
ALTER SYSTEM RESET state_hub_events.stream_subjects;
SELECT pg_reload_conf();});

# immediate mode keeps its per-session stream
($ret, $out, $err) = $node->psql('postgres', q{
SET state_hub_events.delivery = 'immediate';
SET state_hub_events.stream = 'OTHER';
SET state_hub_events.stream_subjects = 'oth.>';
SELECT state_hub_events.publish('oth.x')});
is($ret, 0, 'immediate mode: another stream is fine');
is($nats->wait_for_count(1, stream => 'OTHER', subject => 'oth.x'), 1, 'and the event is in it');

$node->stop;
$nats->stop;
done_testing();
