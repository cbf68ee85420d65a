# 101_durable_extension_recreated.pl
#    Durable mode: a transaction buffered its events, and before its
#    COMMIT the extension was dropped and created again by another session
#    (its outbox was empty, so the drop guard let it go; publish() takes no
#    lock).  At pre-commit the backend looked up the schema, the outbox and
#    its sequence in caches that had not yet seen the drop, so the COMMIT
#    failed with an internal error ("could not open relation with OID
#    ...").  The events must go to the outbox that exists at COMMIT, and
#    be published; a session that wrote through the old outbox before
#    (its insert plan kept) must too, and so must later commits.
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
my $node = she_node('durable_ext_recreated', $nats, conf => q{
state_hub_events.database = 'postgres'
state_hub_events.delivery = 'durable'
});
ok(wait_until('the worker', 60, sub {
    $node->safe_psql('postgres', 'SELECT worker_pid IS NOT NULL FROM state_hub_events.worker_status()') eq 't' }),
    'the worker runs');
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.r.first')});
is($nats->wait_for_count(1, subject => 'org.r.first'), 1, 'the first event is published');

sub drained
{
    return wait_until('the outbox to drain', 60, sub {
        $node->safe_psql('postgres', 'SELECT count(*) FROM state_hub_events.outbox') eq '0' });
}

sub recreate
{
    ok(drained(), 'the outbox is empty');
    $node->safe_psql('postgres', 'DROP EXTENSION state_hub_events; CREATE EXTENSION state_hub_events;');
}

# a session that has not written to the outbox yet
my $a = $node->background_psql('postgres', on_error_stop => 0);
$a->query_safe('BEGIN');
$a->query_safe(q{SELECT state_hub_events.publish('org.r.fresh', '{"n": 1}')});
recreate();
$a->{stderr} = '';
$a->query('COMMIT');
is($a->{stderr}, '', 'COMMIT of a transaction that spans DROP and CREATE EXTENSION succeeds');
is($nats->wait_for_count(1, subject => 'org.r.fresh'), 1, 'and its event is published');

# a session whose insert plans were made for the old outbox
$a->query_safe(q{SELECT state_hub_events.publish('org.r.plan', '{"n": 1}')});
$a->query_safe(q{SELECT state_hub_events.publish('org.r.plan', '{"n": 2}') FROM generate_series(1, 3)});
is($nats->wait_for_count(4, subject => 'org.r.plan'), 4, 'the session wrote through the outbox');
$a->query_safe('BEGIN');
$a->query_safe(q{SELECT state_hub_events.publish('org.r.kept', '{"n": 1}')});
$a->query_safe(q{SELECT state_hub_events.publish('org.r.kept', '{"n": 2}')});
recreate();
$a->{stderr} = '';
$a->query('COMMIT');
is($a->{stderr}, '', 'COMMIT with kept plans across DROP and CREATE EXTENSION succeeds');
is($nats->wait_for_count(2, subject => 'org.r.kept'), 2, 'and both events are published');

# later commits of that session, one event and several
recreate();
$a->{stderr} = '';
$a->query('SELECT state_hub_events.publish(\'org.r.after\')');
is($a->{stderr}, '', 'a later commit of one event succeeds');
$a->{stderr} = '';
$a->query(q{SELECT state_hub_events.publish('org.r.after') FROM generate_series(1, 3)});
is($a->{stderr}, '', 'a later commit of three events succeeds');
is($nats->wait_for_count(4, subject => 'org.r.after'), 4, 'and the four events are published');
$a->quit;

ok(drained(), 'the outbox drains');
is($nats->count('ACTIVITY_EVENTS', subject => 'org.r.>'), 12, 'the stream holds each event once');

$node->stop;
$nats->stop;
done_testing();
