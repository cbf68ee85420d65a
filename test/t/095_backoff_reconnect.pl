# 095_backoff_reconnect.pl
#    Immediate mode: a group the server answered not at all (nats-server
#    hung) starts the publisher's retry_interval back-off, during which
#    groups are refused at once ("NATS was unavailable").  That back-off is
#    for a server that stays hung; once nats.c has connected again (the
#    server was restarted), the server answers, and the next commit must
#    be published, not refused for the rest of retry_interval while the
#    publisher is connected and ping() answers.  (Before the fix, every
#    commit until retry_interval ran out was lost with "NATS was
#    unavailable ...; the next attempt is in N ms".)  A server that stays
#    hung keeps the back-off: the next commit is refused at once.
#
# Copyright (c) 2026, state_hub_events contributors

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
# a back-off far longer than the test, so only a reconnect can end it
my $node = she_node('backoff', $nats, conf => q{
state_hub_events.publish_timeout = '1s'
state_hub_events.connect_timeout = '1s'
state_hub_events.retry_interval = '30min'
});
is($node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.first') IS NOT NULL}),
    't', 'the stream exists');
is($nats->wait_for_count(1, subject => 'org.t.first'), 1, 'the first event landed');

# psql -c $sql; returns its stderr
sub commit_err
{
    my ($sql) = @_;
    my ($o, $e) = ('', '');
    IPC::Run::run([ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', $sql ],
        '>', \$o, '2>', \$e);
    return $e;
}

# --- the server hangs: a group without any answer starts the back-off
$nats->pause;
my $e = commit_err(q{SELECT state_hub_events.publish('org.t.hung')});
like($e, qr/1 of 1 events were sent but not confirmed/, 'hung server: the event is unconfirmed');
$e = commit_err(q{SELECT state_hub_events.publish('org.t.during')});
like($e, qr/1 of 1 events of the committed transaction were not published.*\n.*NATS was unavailable/,
    'while it stays hung the next commit is refused at once (back-off)');

# --- the server is restarted: nats.c connects again
$nats->kill9;
$nats->start;
ok(wait_until('the publisher to answer ping() through the restarted server', 60, sub {
    my ($ret, $o) = $node->psql('postgres', q{SELECT state_hub_events.ping() ? 'rtt_us'});
    return $ret == 0 && $o eq 't'; }), 'the publisher is connected again');
$e = commit_err(q{SELECT state_hub_events.publish('org.t.back')});
is($e, '', 'after the reconnect a commit is published without a WARNING');
is($nats->wait_for_count(1, subject => 'org.t.back', timeout => 30), 1, 'and its event is in the stream');
my ($pub, $fail, $unc) = split /\|/, $node->safe_psql('postgres',
    'SELECT published, failed, unconfirmed FROM state_hub_events.stats()');
is("$pub|$fail|$unc", '2|1|1', 'stats(): first and back published, during failed, hung unconfirmed');

$node->stop;
$nats->stop;
done_testing();
