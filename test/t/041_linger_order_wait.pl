
# 041_linger_order_wait.pl
#    linger() promises to hold a take back for at most batch_linger (1 ms
#    by default).  But the take it calls may wait up to ORDER_WAIT_MS
#    (200 ms) per order ticket for a transaction that is visible and not
#    handed over yet, and meanwhile the events already taken -- here a
#    commit that waits for its acknowledgement -- stay unpublished.  Without
#    linger they would have been published at once.
#    Sequence (NATS paused so that the publisher is busy with a commit Z
#    while the others queue; state_hub_events.test_commit_delay_ms keeps X
#    visible and not handed over):
#      A (waits) hands over, ticket 1; X draws ticket 2, becomes visible,
#      sleeps 5 s before its hand-over; C hands over, ticket 3, behind A.
#      NATS resumes: the take is {A} (C is held for X); linger: X is in
#      flight and C is in the ring, so it takes again, and that take waits
#      200 ms for X before it gives up; only then is A published.
#    Timed (the difference is 200 ms against a 1 ms setting): A's COMMIT
#    must return within 150 ms of NATS resuming; the control round with
#    batch_linger = 0 shows that it does without linger.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('linger_order', $nats, conf => q{
state_hub_events.publish_timeout = '30s'
});
$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.warmup')});
wait_for_messages($nats, 1, 'ACTIVITY_EVENTS');

sub round_trip
{
    my ($tag) = @_;
    my $z = $node->background_psql('postgres');
    my $a = $node->background_psql('postgres');
    my $x = $node->background_psql('postgres');
    # Z keeps the publisher busy (NATS paused) while A, X and C commit
    $nats->pause;
    $z->{stdin} .= "SELECT state_hub_events.publish('org.t.$tag.z');\n";
    $z->{run}->pump_nb;
    ok($node->poll_query_until('postgres',
        qq{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query ~ 'org.t.$tag.z'}),
        'the publisher is busy with Z');
    # A (waits) hands over, ticket 1
    $a->{stdin} .= "SELECT state_hub_events.publish('org.t.$tag.a');\nSELECT 'done=' || extract(epoch FROM clock_timestamp());\n";
    $a->{run}->pump_nb;
    ok($node->poll_query_until('postgres',
        qq{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'Extension' AND query ~ 'org.t.$tag.a'}),
        'A waits for its acknowledgement');
    # X draws ticket 2, becomes visible and does not hand over for 5 s
    $x->query_safe(q{SET state_hub_events.test_commit_delay_ms = 5000; SET state_hub_events.wait_for_ack = off});
    $x->{stdin} .= "SELECT state_hub_events.publish('org.t.$tag.x');\n";
    $x->{run}->pump_nb;
    usleep(300_000);
    # C, ticket 3, queued behind A
    $node->safe_psql('postgres', qq{SET state_hub_events.wait_for_ack = off; SELECT state_hub_events.publish('org.t.$tag.c')});
    my $resumed = time();
    $nats->resume;
    my $out = $a->query_safe(q{SELECT 'sync'});
    my ($done) = $out =~ /done=([\d.]+)/;
    $z->quit;
    $a->quit;
    $x->quit;
    return int(($done - $resumed) * 1000);
}

my $took = round_trip('one');
note("A's COMMIT returned $took ms after NATS resumed");
cmp_ok($took, '<', 150,
    "a taken commit is not held by linger's take waiting for another transaction's order ticket");
is($nats->wait_for_count(4, subject => 'org.t.one.*'), 4, 'all four events are published');

# control: the same with batch_linger = 0 (no linger) passes on main
$node->safe_psql('postgres', q{ALTER SYSTEM SET state_hub_events.batch_linger = 0});
$node->reload;
ok(wait_until('the reload', 30, sub {
    $node->safe_psql('postgres', 'SHOW state_hub_events.batch_linger') eq '0' }), 'batch_linger = 0');
$took = round_trip('zero');
note("without linger, A's COMMIT returned $took ms after NATS resumed");
cmp_ok($took, '<', 150, 'without linger the taken commit is published at once (control)');

$node->stop;
$nats->stop;
done_testing();
