
# 039_linger_waiter.pl
#    A commit that waits for its acknowledgements (wait_for_ack = on) must
#    not be held for batch_linger (README: "a take that a session waits for
#    is held only while other transactions are between pre-commit and
#    hand-over").  When the publisher is lingering over a take nobody waits
#    for, it does not announce itself idle, so the waiting commit's
#    hand-over does not set its latch, and the waiting commit sits out the
#    rest of the linger (up to batch_linger, at most 1 s).
#    With batch_linger = 1 s the difference is 1 s against a few ms: the
#    bound below (500 ms) is half the linger, as in 033.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use NatsServer;
use SheTest;

my $nats = NatsServer->new->start;
my $node = she_node('linger_waiter', $nats, conf => q{
state_hub_events.batch_linger = '1000ms'
state_hub_events.publish_timeout = '30s'
});

$node->safe_psql('postgres', q{SELECT state_hub_events.publish('org.t.warmup')});
wait_for_messages($nats, 1, 'ACTIVITY_EVENTS');

my $worst = 0;
for my $round (1 .. 3)
{
    # one commit nobody waits for starts a linger; the next commit, which
    # waits, arrives a few ms later in the same session
    my $out = $node->safe_psql('postgres', qq{
SET state_hub_events.wait_for_ack = off;
SELECT state_hub_events.publish('org.t.nowait', '{"r": $round}');
SET state_hub_events.wait_for_ack = on;
SELECT clock_timestamp() AS t0 \\gset
SELECT state_hub_events.publish('org.t.wait', '{"r": $round}');
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000);
});
    my ($ms) = (split /\n/, $out)[-1];
    note("round $round: the waiting commit took $ms ms");
    $worst = $ms if $ms > $worst;
}
cmp_ok($worst, '<', 500,
    "a waiting commit behind a lingering take is not held for the linger (worst $worst ms, batch_linger 1000 ms)");
is($nats->wait_for_count(3, subject => 'org.t.wait'), 3, 'the waiting events are published');

$node->stop;
$nats->stop;
done_testing();
